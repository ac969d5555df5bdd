//! Tests of the file as a whole: the embedded example, every section overridden at once, errors
//! located in the text, and the round trip through [`Settings::to_toml`].
use std::time::Duration;

use sip_xdp_common::{CONFIG_VERSION, Config, DEFAULT_MAX_SOURCES, LimitClass, RateLimit, flags};

use super::{
    ConfigError, DEFAULT_CONFIG_PATH, EMBEDDED_DEFAULT_TOML, Limit, Location, LogFormat, Rate,
    RatePeriod, Settings,
    limits::DEFAULT_OPTIONS_LIMIT,
    units::{HOUR_NS, MINUTE_NS, SECOND_NS},
};

pub(super) fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml_str(text, "test.toml")
}

/// The error's location and message; panics (failing the test) when `text` parses.
pub(super) fn reject(text: &str) -> (Option<Location>, String) {
    match parse(text) {
        Ok(settings) => panic!("accepted {text:?} as {settings:?}"),
        Err(ConfigError::Invalid {
            location, message, ..
        }) => (location, message),
        Err(other) => panic!("unexpected error {other}"),
    }
}

pub(super) fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}

#[test]
fn embedded_file_is_the_default_and_matches_the_kernel_default() {
    let settings = parse(EMBEDDED_DEFAULT_TOML).expect("embedded default parses");
    assert_eq!(settings, Settings::default());
    // The program's own default (no config written) leaves the answers off: it cannot know that
    // an egress program is there to verify anyone. The file turns them on, and `attach` puts
    // the egress program on with it.
    assert_eq!(
        settings.kernel_config(),
        Config {
            flags: Config::DEFAULT.flags | flags::ANSWERS | flags::SIGNATURES,
            ..Config::DEFAULT
        }
    );
    assert_eq!(settings.datapath.max_sources, DEFAULT_MAX_SOURCES);
    assert_eq!(settings.manual_ban_default(), Duration::from_secs(3600));
}

#[test]
fn embedded_file_sets_every_key() {
    // Each key of the effective config must appear in the example, so operators see it.
    let effective: toml::Table = toml::from_str(&Settings::default().to_toml()).unwrap();
    let example: toml::Table = toml::from_str(EMBEDDED_DEFAULT_TOML).unwrap();
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
                _ => out.push(path),
            }
        }
    }
    let (mut want, mut have) = (Vec::new(), Vec::new());
    keys(&effective, "", &mut want);
    keys(&example, "", &mut have);
    want.sort();
    have.sort();
    assert_eq!(have, want);
    let before_tcp_and_prefixes = 47 + 1 + 8 + 3 * 2 + 8 * 2;
    // datapath.tcp_ports; limits.connection and answers.verified_limits.connection (rate and
    // burst each); prefixes.ipv4 and ipv6; prefixes.limits.* (9 classes, rate and burst);
    // crowdsec.signals.prefix_bans; signatures.* (4) and crowdsec.signals.signature_bans.
    assert_eq!(
        want.len(),
        before_tcp_and_prefixes + 1 + 2 * 2 + 2 + 9 * 2 + 1 + 4 + 1
    );
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(parse("").unwrap(), Settings::default());
    assert_eq!(parse("# only a comment\n").unwrap(), Settings::default());
}

#[test]
fn every_section_overrides() {
    let text = r#"
[sip]
ports = [5060, 5080]
ipv6_source_prefix = 64

[limits.register]
rate = "300/min"
burst = 10
[limits.invite]
rate = "unlimited"
[limits.options]
burst = 7
[limits.other]
rate = "1000/h"
burst = 2

[bans]
base = "30s"
factor = 3
max = "2h"
strike_decay = "10m"
extend_while_active = false
extend = "5s"
manual_default = "1h30m"

[datapath]
monitor = true
drop_malformed = false
drop_unknown_fragments = true
pass_unparsed = true
limit_in_dialog = true
limit_responses = true
max_sources = 1000

[metrics]
enabled = false
listen = "[::1]:9000"

[log]
format = "json"
ban_lines_per_sec = 3
ban_lines_burst = 4
summary_interval = "500ms"
"#;
    let s = parse(text).unwrap();
    assert_eq!(s.sip.ports, vec![5060, 5080]);
    assert_eq!(s.sip.ipv6_source_prefix, 64);
    assert_eq!(
        s.limits.register,
        Limit {
            rate: Rate::Limited {
                count: 300,
                per: RatePeriod::Minute
            },
            burst: 10
        }
    );
    // A partial table keeps its own class's default for the missing key.
    assert_eq!(s.limits.invite.rate, Rate::Unlimited);
    assert_eq!(s.limits.invite.burst, 20);
    assert_eq!(s.limits.options.rate, DEFAULT_OPTIONS_LIMIT.rate);
    assert_eq!(s.limits.options.burst, 7);
    assert_eq!(s.bans.base, Duration::from_secs(30));
    assert_eq!(s.bans.factor, 3);
    assert_eq!(s.bans.max, Duration::from_secs(7200));
    assert_eq!(s.bans.strike_decay, Duration::from_secs(600));
    assert!(!s.bans.extend_while_active);
    assert_eq!(s.bans.extend, Duration::from_secs(5));
    assert_eq!(s.manual_ban_default(), Duration::from_secs(5400));
    assert!(s.datapath.monitor);
    assert!(!s.datapath.drop_malformed);
    assert_eq!(s.datapath.max_sources, 1000);
    assert!(!s.metrics.enabled);
    assert_eq!(s.metrics.listen, "[::1]:9000".parse().unwrap());
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.log.ban_lines_per_sec, 3);
    assert_eq!(s.log.ban_lines_burst, 4);
    assert_eq!(s.log.summary_interval, Duration::from_millis(500));

    let k = s.kernel_config();
    assert_eq!(k.version, CONFIG_VERSION);
    assert_eq!(k.sip_ports, [5060, 5080, 0, 0, 0, 0, 0, 0]);
    let mut mask = [0u8; 16];
    mask[..8].fill(0xff);
    assert_eq!(k.ipv6_source_mask, mask);
    assert_eq!(
        k.flags,
        flags::MONITOR
            | flags::DROP_UNKNOWN_FRAGMENTS
            | flags::PASS_UNPARSED
            | flags::ANSWERS
            | flags::SIGNATURES
    );
    assert_eq!(
        k.limits[LimitClass::Register as usize].interval_ns,
        200_000_000
    );
    assert_eq!(k.limits[LimitClass::Register as usize].burst(), 10);
    assert_eq!(k.limits[LimitClass::Invite as usize], RateLimit::UNLIMITED);
    assert_eq!(
        k.limits[LimitClass::Options as usize],
        RateLimit::per_second(5, 7)
    );
    assert_eq!(
        k.limits[LimitClass::Other as usize],
        RateLimit::per_interval(1000, HOUR_NS, 2)
    );
    assert_eq!(k.ban_factor, 3);
    assert_eq!(k.ban_base_ns, 30 * SECOND_NS);
    assert_eq!(k.ban_max_ns, 2 * HOUR_NS);
    assert_eq!(k.strike_decay_ns, 10 * MINUTE_NS);
    assert_eq!(k.ban_extend_ns, 5 * SECOND_NS);
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let (location, message) = reject("[bans]\nbase = \"1m\"\nfactr = 3\n");
    assert_eq!(location, at(3, 1));
    assert!(message.contains("`bans.factr`"), "{message}");
    assert!(message.contains("factor"), "{message}");

    let (location, message) = reject("[sip]\n[limit.register]\nrate = \"1/s\"\n");
    assert_eq!(location.map(|l| l.line), Some(2));
    assert!(message.contains("`limit`"), "{message}");

    let (location, message) = reject("[limits.register]\nrate = \"1/s\"\nbrust = 3\n");
    assert_eq!(location, at(3, 1));
    assert!(message.contains("limits.register.brust"), "{message}");
}

#[test]
fn the_example_error_reads_as_documented() {
    let mut text = String::from("[bans]\n");
    text.push_str(&"# padding\n".repeat(10));
    text.push_str("factor = 0\n");
    let err = Settings::from_toml_str(&text, DEFAULT_CONFIG_PATH).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/sip-xdp/sip-xdp.toml:12:10: bans.factor must be between 1 and 16, got 0 (0 \
         would make repeat bans zero-length)"
    );
}

#[test]
fn bad_values_are_rejected_at_their_line() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, usize, &str)] = &[
        ("[limits.invite]\nrate = \"5 per s\"\n", 2, 8, "limits.invite.rate must be a rate"),
        ("[limits.invite]\nrate = 5\n", 2, 8, "limits.invite.rate: invalid type"),
        ("[limits.other]\nburst = 0\n", 2, 9, "limits.other.burst must be between 1"),
        ("[bans]\nbase = \"soon\"\n", 2, 8, "bans.base must be a duration"),
        ("[bans]\nbase = 60\n", 2, 8, "a duration string"),
        ("[bans]\nbase = \"0s\"\n", 2, 8, "bans.base must be longer than zero"),
        ("[bans]\nextend = \"20y\"\n", 2, 10, "bans.extend must be at most"),
        ("[bans]\nfactor = 17\n", 2, 10, "bans.factor must be between 1 and 16, got 17"),
        ("[sip]\nports = [5060, 0]\n", 2, 16, "sip.ports must only hold ports between 1 and 65535, got 0"),
        ("[sip]\nports = [70000]\n", 2, 10, "got 70000"),
        ("[sip]\nports = [5060, 5080, 5060]\n", 2, 9, "5060 appears twice"),
        ("[sip]\nports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", 2, 9, "at most 8 ports"),
        ("[sip]\nports = []\n", 2, 9, "at least one port"),
        ("[sip]\nipv6_source_prefix = 0\n", 2, 22, "sip.ipv6_source_prefix must be"),
        ("[sip]\nipv6_source_prefix = 129\n", 2, 22, "got 129"),
        ("[datapath]\nmax_sources = 0\n", 2, 15, "datapath.max_sources must be"),
        ("[datapath]\nmax_sources = 16777217\n", 2, 15, "16777216"),
        ("[datapath]\nmonitor = \"yes\"\n", 2, 11, "datapath.monitor: invalid type"),
        ("[metrics]\nlisten = \"localhost\"\n", 2, 10, "metrics.listen must be an address"),
        ("[log]\nformat = \"xml\"\n", 2, 10, "log.format: unknown variant `xml`"),
        ("[log]\nban_lines_per_sec = 0\n", 2, 21, "log.ban_lines_per_sec must be"),
        ("[log]\nsummary_interval = \"0s\"\n", 2, 20, "longer than zero"),
        ("[bans]\nbase = \"2h\"\nmax = \"1h\"\n", 3, 7, "bans.max must be at least"),
        ("[bans]\nbase = \"48h\"\n", 2, 8, "bans.max must be at least bans.base (48h)"),
        ("[sip\n", 1, 5, ""),
    ];
    for &(text, line, column, needle) in cases {
        let (location, message) = reject(text);
        assert_eq!(location, at(line, column), "{text:?}: {message}");
        assert!(message.contains(needle), "{text:?}: {message}");
    }
}

#[test]
fn to_toml_round_trips() {
    assert_eq!(
        parse(&Settings::default().to_toml()).unwrap(),
        Settings::default()
    );

    let mut s = Settings::default();
    s.sip.ports = vec![5060, 5061, 5080];
    s.sip.ipv6_source_prefix = 56;
    s.limits.register.rate = Rate::Limited {
        count: 300,
        per: RatePeriod::Minute,
    };
    s.limits.invite.rate = Rate::Unlimited;
    s.limits.other.burst = 1;
    s.bans.base = Duration::from_millis(1500);
    s.bans.factor = 16;
    s.bans.max = Duration::from_secs(3 * 86_400 + 1);
    s.bans.strike_decay = Duration::ZERO;
    s.bans.extend_while_active = false;
    s.bans.manual_default = Duration::from_secs(5400);
    s.datapath.monitor = true;
    s.datapath.max_sources = 42;
    s.metrics.listen = "[::]:9999".parse().unwrap();
    s.log.format = LogFormat::Json;
    s.log.summary_interval = Duration::from_secs(7);
    let text = s.to_toml();
    assert!(text.contains("rate = \"300/min\""), "{text}");
    assert!(text.contains("base = \"1s500ms\""), "{text}");
    assert!(text.contains("manual_default = \"1h30m\""), "{text}");
    assert_eq!(parse(&text).unwrap(), s, "{text}");
}

#[test]
fn load_reads_files_and_names_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sip-xdp.toml");
    std::fs::write(&path, "[bans]\nfactor = 4\n").unwrap();
    assert_eq!(Settings::load(&path).unwrap().bans.factor, 4);

    std::fs::write(&path, "[bans]\nfactor = 0\n").unwrap();
    let err = Settings::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2:10: ", path.display())),
        "{err}"
    );

    let missing = dir.path().join("absent.toml");
    let err = Settings::load(&missing).unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains(&missing.display().to_string()));
}
