//! `[signatures]`: scanner fingerprints and trap accounts the scan program bans on at the first
//! request (`sip_xdp_common::SignatureKind`), with the shortest ban a match imposes.
//!
//! Each entry is one whole token as the program cuts headers into tokens (runs of
//! [`is_token_byte`] bytes, lowercased), so `VaxSIPUserAgent` matches `VaxSIPUserAgent/3.1` and
//! `sipcli` never matches `sipclient`. What the program can never match is refused here.
use std::{collections::BTreeSet, fmt, time::Duration};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, SeqAccess, Visitor},
};
use sip_xdp_common::{
    DEFAULT_SIGNATURE_BAN_NS, MAX_SIGNATURE_LEN, MAX_SIGNATURES, SignatureError, SignatureKey,
    SignatureKind, is_token_byte,
};

use super::{
    parse::CrossFieldProblem,
    units::{de_positive_duration, format_duration, ser_duration},
};

/// The scanners' own names, as they put them in User-Agent or in the From/To display name.
/// Each is a single token no phone, PBX or SDK sends (a unit test tokenizes ~30 real user
/// agents against it). Sources: Kamailio's stock config and secfilter examples, honeypot
/// reports, fail2ban and CrowdSec SIP filters. Left out on purpose: `sipsak` and `sipp`
/// (operators' own monitoring and test tools), and spoofed softphone names (`eyebeam`,
/// `x-lite`): scanners borrow them, but so do real users.
pub const DEFAULT_FINGERPRINTS: &[&str] = &[
    // SIPVicious (svmap, svwar, svcrack) and what it sends: "friendly-scanner" in User-Agent,
    // "sipvicious" in From, "friendly-request" in some forks.
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "svmap",
    "svwar",
    "svcrack",
    // sipcli (a brute-forcer's CLI client), the VaxVoIP SDK demo scanners.
    "sipcli",
    "vaxsipuseragent",
    "vaxipuseragent",
    // pplsip, sip-scan / sipscan, sundayddr (and the honeypot-seen spelling sundayaddr).
    "pplsip",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "sundayaddr",
    // iWar (war dialer), SIVuS (vulnerability scanner), smap (SIP mapper), SIP Army Knife
    // (fuzzer), SIPPTS (Pepelux's pentest suite), Mr.SIP.
    "iwar",
    "sivus",
    "smap",
    "siparmyknife",
    "sippts",
    "mr.sip",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [signatures] table")]
pub struct SignaturesSection {
    /// False: no scan program is loaded and no request is scanned.
    pub enabled: bool,
    /// Shortest ban a match imposes; escalation (`[bans] factor`) applies on top.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub ban: Duration,
    /// Tokens of User-Agent and of From/To display names and users, any case.
    #[serde(deserialize_with = "de_fingerprints")]
    pub fingerprints: Vec<String>,
    /// Users of decoy accounts (Request-URI or To user of REGISTER, INVITE, OPTIONS).
    #[serde(deserialize_with = "de_traps")]
    pub traps: Vec<String>,
}

impl Default for SignaturesSection {
    fn default() -> Self {
        Self {
            enabled: true,
            ban: Duration::from_nanos(DEFAULT_SIGNATURE_BAN_NS),
            fingerprints: DEFAULT_FINGERPRINTS.iter().map(|&t| t.to_owned()).collect(),
            traps: Vec::new(),
        }
    }
}

/// The config key of a kind's list.
pub const fn list_key(kind: SignatureKind) -> &'static str {
    match kind {
        SignatureKind::Fingerprint => "fingerprints",
        SignatureKind::Trap => "traps",
    }
}

/// Why `token` can never match, in one sentence naming the token and the fix; `None` when it
/// can. `place` names where it was written ("signatures.fingerprints", "the command line").
pub fn token_problem(kind: SignatureKind, token: &str, place: &str) -> Option<String> {
    let err = SignatureKey::new(kind, token.as_bytes()).err()?;
    Some(match err {
        SignatureError::Empty => format!(
            "{place} holds an empty {} token, which never matches; remove it",
            kind.name()
        ),
        SignatureError::TooLong => format!(
            "{place} holds {token:?}, {} bytes long: the program compares tokens of at most \
             {MAX_SIGNATURE_LEN} bytes, so it never matches; shorten it to a distinctive part \
             that stands as a token of its own",
            token.len()
        ),
        SignatureError::BadByte(at) => {
            let bad = token.as_bytes()[at];
            let parts: Vec<&str> = token
                .split(|c: char| !c.is_ascii() || !is_token_byte(c as u8))
                .filter(|part| !part.is_empty())
                .collect();
            format!(
                "{place} holds {token:?}, whose byte {:?} (at {at}) separates tokens: the \
                 program matches single tokens only (letters, digits and -_.!~*'+%), so it \
                 never matches; list one of its tokens instead ({})",
                char::from(bad),
                if parts.is_empty() {
                    "it has none".to_owned()
                } else {
                    parts
                        .iter()
                        .map(|p| format!("{:?}", p.to_ascii_lowercase()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                }
            )
        }
    })
}

/// The key of a token already checked by [`token_problem`] (or by parsing).
pub fn signature_key(kind: SignatureKind, token: &str) -> Option<SignatureKey> {
    SignatureKey::new(kind, token.as_bytes()).ok()
}

impl SignaturesSection {
    /// The tokens of `kind`, lowercased, each once, in the order the file lists them.
    pub fn tokens(&self, kind: SignatureKind) -> Vec<String> {
        let list = match kind {
            SignatureKind::Fingerprint => &self.fingerprints,
            SignatureKind::Trap => &self.traps,
        };
        let mut seen = BTreeSet::new();
        list.iter()
            .map(|t| t.to_ascii_lowercase())
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    /// Every configured signature as the kernel's key, each once.
    pub fn keys(&self) -> Vec<SignatureKey> {
        SignatureKind::ALL
            .iter()
            .flat_map(|&kind| {
                self.tokens(kind)
                    .into_iter()
                    .filter_map(move |t| signature_key(kind, &t))
            })
            .collect()
    }

    /// Duplicate entries (after lowercasing), one sentence each.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for kind in SignatureKind::ALL {
            let list = match kind {
                SignatureKind::Fingerprint => &self.fingerprints,
                SignatureKind::Trap => &self.traps,
            };
            let mut seen = BTreeSet::new();
            let mut twice = BTreeSet::new();
            for token in list {
                let lower = token.to_ascii_lowercase();
                if !seen.insert(lower.clone()) {
                    twice.insert(lower);
                }
            }
            if !twice.is_empty() {
                let names: Vec<String> = twice.iter().map(|t| format!("{t:?}")).collect();
                warnings.push(format!(
                    "signatures.{} lists {} more than once (tokens match in any case); each is \
                     kept once, remove the repeats",
                    list_key(kind),
                    names.join(", ")
                ));
            }
        }
        if self.enabled && self.keys().is_empty() {
            warnings.push(
                "signatures.enabled is on but signatures.fingerprints and signatures.traps are \
                 empty: nothing is scanned until `sip-xdp signature add` puts an entry in"
                    .to_owned(),
            );
        }
        warnings
    }

    /// `ban` at most `bans.max`; the two lists together at most [`MAX_SIGNATURES`].
    pub(super) fn check(&self, ban_max: Duration) -> Result<(), CrossFieldProblem> {
        if self.ban > ban_max {
            return Err(CrossFieldProblem {
                keys: vec![&["signatures", "ban"], &["bans", "max"]],
                message: format!(
                    "signatures.ban ({}) is longer than bans.max ({}), which caps every ban; \
                     lower signatures.ban or raise bans.max",
                    format_duration(self.ban),
                    format_duration(ban_max)
                ),
            });
        }
        let total = self.keys().len();
        if total > MAX_SIGNATURES as usize {
            return Err(CrossFieldProblem {
                keys: vec![&["signatures", "fingerprints"], &["signatures", "traps"]],
                message: format!(
                    "signatures.fingerprints and signatures.traps hold {total} distinct tokens \
                     together, more than the {MAX_SIGNATURES} the kernel's SIGNATURES table \
                     holds; remove some"
                ),
            });
        }
        Ok(())
    }
}

/// One token of a list, checked in its own visitor so the error points at the element.
struct TokenValue(String);

struct TokenVisitor(SignatureKind);

impl Visitor<'_> for TokenVisitor {
    type Value = TokenValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token string such as \"friendly-scanner\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenValue, E> {
        match token_problem(self.0, v, "must only hold single tokens, but the list") {
            None => Ok(TokenValue(v.to_owned())),
            Some(problem) => Err(E::custom(problem)),
        }
    }
}

struct TokensVisitor(SignatureKind);

/// Deserializes one token with the kind's visitor.
struct Token(SignatureKind);

impl<'de> de::DeserializeSeed<'de> for Token {
    type Value = TokenValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TokenValue, D::Error> {
        d.deserialize_str(TokenVisitor(self.0))
    }
}

impl<'de> Visitor<'de> for TokensVisitor {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SignatureKind::Fingerprint => {
                f.write_str("a list of tokens such as [\"friendly-scanner\", \"sipcli\"]")
            }
            SignatureKind::Trap => {
                f.write_str("a list of users such as [\"1\", \"100\", \"admin\"]")
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut tokens = Vec::new();
        while let Some(TokenValue(token)) = seq.next_element_seed(Token(self.0))? {
            tokens.push(token);
        }
        Ok(tokens)
    }
}

fn de_fingerprints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(TokensVisitor(SignatureKind::Fingerprint))
}

fn de_traps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(TokensVisitor(SignatureKind::Trap))
}

/// The tokens the scan program would cut `text` into: maximal runs of token bytes, lowercased
/// (for tests and for `signature add`'s hint).
pub fn tokenize(text: &str) -> Vec<String> {
    text.as_bytes()
        .split(|&b| !is_token_byte(b))
        .filter(|run| !run.is_empty())
        .map(|run| String::from_utf8_lossy(run).to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use sip_xdp_common::{MAX_SIGNATURES, SignatureKind, flags};

    use super::{DEFAULT_FINGERPRINTS, tokenize};
    use crate::config::{
        Settings,
        tests::{at, parse, reject},
    };

    /// User agents real phones, PBXes, SDKs and test tools send (from their own docs and
    /// captures); no default fingerprint may be one of their tokens.
    const REAL_USER_AGENTS: &[&str] = &[
        "Asterisk PBX 20.5.2",
        "Asterisk PBX certified-18.9-cert5",
        "FPBX-16.0.40.7(18.20.0)",
        "FreeSWITCH-mod_sofia/1.10.11-release~64bit",
        "kamailio (5.7.4 (x86_64/linux))",
        "OpenSIPS (3.4.3 (x86_64/linux))",
        "Yealink SIP-T46S 66.86.0.15",
        "Yealink SIP-W70B 146.85.0.20",
        "PolycomVVX-VVX_411-UA/6.4.3.5018",
        "Poly/Edge E220 8.1.3.1301",
        "Cisco/SPA504G-7.6.2f",
        "Cisco-CP8845/12.8.1",
        "Grandstream GXP2170 1.0.11.23",
        "Grandstream HT801 1.0.43.11",
        "snom D785/10.1.159.12",
        "snomPA1/8.7.3.7",
        "Fanvil X4U 2.12.2.2",
        "Linphone/5.2.0 (belle-sip/5.2.0)",
        "LinphoneAndroid/5.1.2 (Pixel 7) LinphoneSDK/5.2.98",
        "Z 5.6.3 v2.10.19.9",
        "Zoiper rv2.10.19.9-mod",
        "MicroSIP/3.21.3",
        "Bria 6 release 6.7.1 stamp 117050",
        "Bria iOS release 6.18.0 stamp 112",
        "Jitsi2.10.5550Windows 10",
        "OBIHAI/OBi200-3.2.2.5921EX",
        "Ooma/Telo 1.13",
        "3CXPhoneSystem 18.0.9.20 (18.0.9.20)",
        "3CX Phone 6.0.26523.0",
        "Telephone 1.6",
        "baresip v3.10.1 (x86_64/Linux)",
        "PJSUA v2.14 Linux-6.1/x86_64/glibc-2.36",
        "sipp",
        "sipsak 0.9.8.1",
        "Avaya one-X Deskphone",
        "AudioCodes-Sip-Gateway-MP-118 FXS/v.6.60A.367.004",
        "Sangoma S705 V3.0.4.87",
        "Mitel-6867i 6.2.0.1010",
        "Gigaset N510 IP PRO/42.250.00.000.000",
        "AVM FRITZ!Box 7590 154.07.57 (Feb 12 2024)",
        "eyeBeam release 1011d stamp 40820",
        "X-Lite release 5.8.3 stamp 102651",
        "MizuPhone 2.5.0.1",
        "PortSIP VoIP SDK 19.2",
    ];

    /// What scanners send, in their own words (User-Agent, or the From display name).
    const SCANNER_USER_AGENTS: &[(&str, &str)] = &[
        ("friendly-scanner", "friendly-scanner"),
        ("sipvicious", "\"sipvicious\" <sip:100@1.1.1.1>"),
        ("friendly-request", "friendly-request"),
        ("sipcli", "sipcli/v1.8"),
        ("vaxsipuseragent", "VaxSIPUserAgent/3.1"),
        ("vaxipuseragent", "VaxIPUserAgent/3.5"),
        ("pplsip", "pplsip"),
        ("sip-scan", "sip-scan"),
        ("sipscan", "SIPScan 1.0"),
        ("sundayddr", "sundayddr"),
        ("iwar", "iWar"),
        ("sivus", "SIVuS Scanner 1.09"),
        ("smap", "smap 0.6.0"),
        ("siparmyknife", "siparmyknife"),
        ("sippts", "SIPPTS"),
        ("mr.sip", "Mr.SIP"),
        ("svmap", "svmap"),
    ];

    #[test]
    fn no_default_fingerprint_is_a_token_of_a_real_user_agent() {
        let defaults = Settings::default()
            .signatures
            .tokens(SignatureKind::Fingerprint);
        assert_eq!(defaults.len(), DEFAULT_FINGERPRINTS.len());
        for ua in REAL_USER_AGENTS {
            for token in tokenize(ua) {
                assert!(
                    !defaults.contains(&token),
                    "the default fingerprint {token:?} is a token of the real user agent {ua:?}"
                );
            }
        }
        for (expected, ua) in SCANNER_USER_AGENTS {
            let tokens = tokenize(ua);
            assert!(tokens.contains(&expected.to_string()), "{ua:?}: {tokens:?}");
            assert!(
                tokens.iter().any(|t| defaults.contains(t)),
                "the scanner's {ua:?} matches no default fingerprint ({tokens:?})"
            );
        }
        // Whole tokens only.
        assert_eq!(tokenize("sipclient/2.0"), ["sipclient", "2.0"]);
        assert!(!defaults.contains(&"sipclient".to_owned()));
    }

    #[test]
    fn defaults_reach_the_kernel_config() {
        let s = Settings::default();
        assert!(s.signatures.enabled);
        assert!(s.signatures.traps.is_empty());
        let k = s.kernel_config();
        assert_eq!(k.signature_ban_ns, 3600 * 1_000_000_000);
        assert!(k.has_flag(flags::SIGNATURES));
        assert_eq!(s.signatures.keys().len(), DEFAULT_FINGERPRINTS.len());
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    #[test]
    fn lists_are_lowercased_kept_once_and_say_so() {
        let s = parse(
            "[signatures]\nban = \"2h\"\nfingerprints = [\"Friendly-Scanner\", \"friendly-scanner\", \"SIPcli\"]\n\
             traps = [\"100\", \"Admin\"]\n[bans]\nmax = \"24h\"\n",
        )
        .unwrap();
        let sig = &s.signatures;
        assert_eq!(
            sig.tokens(SignatureKind::Fingerprint),
            ["friendly-scanner", "sipcli"]
        );
        assert_eq!(sig.tokens(SignatureKind::Trap), ["100", "admin"]);
        let keys = sig.keys();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[3].token_bytes(), b"admin");
        assert_eq!(keys[3].kind, SignatureKind::Trap as u8);
        assert_eq!(s.kernel_config().signature_ban_ns, 2 * 3600 * 1_000_000_000);
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .contains("signatures.fingerprints lists \"friendly-scanner\" more than once"),
            "{warnings:?}"
        );
        // `config show` writes it back so that it reads the same.
        let shown = s.to_toml();
        assert!(shown.contains("ban = \"2h\""), "{shown}");
        assert_eq!(parse(&shown).unwrap(), s, "{shown}");
    }

    #[test]
    fn off_or_empty_sets_no_flag() {
        let s = parse("[signatures]\nenabled = false\n").unwrap();
        assert!(!s.kernel_config().has_flag(flags::SIGNATURES));
        let s = parse("[signatures]\nfingerprints = []\n").unwrap();
        assert!(!s.kernel_config().has_flag(flags::SIGNATURES));
        let warnings = s.warnings();
        assert!(
            warnings.iter().any(|w| w.contains("nothing is scanned")),
            "{warnings:?}"
        );
        let s = parse("[signatures]\nfingerprints = []\ntraps = [\"1\"]\n").unwrap();
        assert!(s.kernel_config().has_flag(flags::SIGNATURES));
    }

    #[test]
    fn bad_tokens_and_lengths_are_refused_at_their_line() {
        let long = "a".repeat(33);
        let too_long = format!("[signatures]\ntraps = [\"{long}\"]\n");
        let many: Vec<String> = (0..=MAX_SIGNATURES).map(|i| format!("\"t{i}\"")).collect();
        let too_many = format!(
            "[signatures]\nfingerprints = []\ntraps = [{}]\n",
            many.join(", ")
        );
        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[signatures]\nfingerprints = [\"sipcli\", \"Asterisk PBX\"]\n", 2, 27, "signatures.fingerprints must only hold single tokens, but the list holds \"Asterisk PBX\", whose byte ' ' (at 8) separates tokens"),
            ("[signatures]\nfingerprints = [\"VaxSIPUserAgent/3.1\"]\n", 2, 17, "list one of its tokens instead (\"vaxsipuseragent\" or \"3.1\")"),
            ("[signatures]\ntraps = [\"\"]\n", 2, 10, "signatures.traps must only hold single tokens, but the list holds an empty trap token"),
            (&too_long, 2, 10, "33 bytes long: the program compares tokens of at most 32 bytes"),
            ("[signatures]\ntraps = [1]\n", 2, 10, "a token string"),
            ("[signatures]\ntraps = \"1\"\n", 2, 9, "a list of users"),
            ("[signatures]\nban = \"0s\"\n", 2, 7, "signatures.ban"),
            ("[signatures]\nban = \"2d\"\n[bans]\nmax = \"1d\"\n", 2, 7, "signatures.ban (48h) is longer than bans.max (24h)"),
            (&too_many, 2, 16, "4097 distinct tokens together, more than the 4096"),
            ("[signatures]\nfingerprint = []\n", 2, 1, "`signatures.fingerprint`"),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert!(message.contains(needle), "{text:.80}: {message}");
            assert_eq!(location, at(line, column), "{text:.80}: {message}");
        }
    }
}
