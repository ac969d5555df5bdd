//! The measuring: the three programs loaded once (`Bench`), one BPF_PROG_TEST_RUN of a case
//! checked against its action and counter, the banned source set up, and the programs' sizes.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramInfo, TestRun as _, TestRunOptions, Xdp},
};
use ipnet::IpNet;
use sip_xdp::{
    loader::{self, LoadOptions},
    maps::{Counters, SipMaps, addr_key},
    reference::{REF_LRU_OBJECT, REF_LRU_PROGRAM, REF_PASS_OBJECT, REF_PASS_PROGRAM},
    time::monotonic_now_ns,
};
use sip_xdp_common::{Config, map_names};
use sip_xdp_tests::harness::XDP_DROP;

use super::cases::{
    Case, Lists, SECOND_NS, SRC_ALLOWED, SRC_BANNED, SRC_GUESSER, SRC_PREFIX_FIRST,
    SRC_PREFIX_SECOND, SRC_SPENDER, SRC_VERIFIED, Sample, Subject, answer_frame, answers_config,
    ban_config, budget_config, prefix_ban_config, register_frame, spent_admission_config, v4,
};

pub(super) const MIN_REPEAT: u32 = 1_000_000;

/// The three loaded programs and sip-xdp's maps.
pub(super) struct Bench {
    sip: Ebpf,
    maps: SipMaps,
    ref_pass: Ebpf,
    ref_lru: Ebpf,
    config: Option<Config>,
    lists: Option<Lists>,
    pub(super) check_counters: bool,
}

fn reference_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("reference object has no program {name}"))?;
    Ok(program.try_into()?)
}

fn load_reference(object: &[u8], name: &str) -> Result<Ebpf> {
    ensure!(
        !object.is_empty(),
        "sip-xdp was built without its eBPF objects (toolchain missing at build time); run \
         scripts/setup-toolchain.sh as root and rebuild"
    );
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .with_context(|| format!("loading the {name} object"))?;
    reference_program(&mut ebpf, name)?
        .load()
        .with_context(|| format!("loading program {name}"))?;
    Ok(ebpf)
}

/// sip-xdp as the daemon loads it (`sip_xdp::loader`), or another build of it from a file.
fn load_sip_xdp(object: Option<&Path>) -> Result<Ebpf> {
    let Some(path) = object else {
        return loader::load(&LoadOptions::default()).context("loading the sip-xdp program");
    };
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::SOURCES, LoadOptions::default().max_sources)
        .load(&bytes)
        .with_context(|| format!("loading {}", path.display()))?;
    loader::xdp_program(&mut ebpf)?
        .load()
        .with_context(|| format!("loading the program in {}", path.display()))?;
    loader::egress_program(&mut ebpf)?
        .load()
        .with_context(|| format!("loading the egress program in {}", path.display()))?;
    Ok(ebpf)
}

/// Signatures for the scan program to look up: a scanner list the size of the default one and a
/// trap account. Only a lookup per token costs, whatever the list's length.
fn write_signatures(ebpf: &mut Ebpf) -> Result<()> {
    use sip_xdp_common::{SignatureEntry, SignatureKey, SignatureKind};
    let map = ebpf
        .map_mut(map_names::SIGNATURES)
        .context("the object declares SIGNATURES")?;
    let mut signatures: aya::maps::HashMap<_, SignatureKey, SignatureEntry> =
        aya::maps::HashMap::try_from(map)?;
    let tokens = [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "vaxsipuseragent",
        "pplsip",
        "sip-scan",
        "sundayddr",
        "iwar",
        "sivus",
        "smap",
        "sipsak",
        "voipscanner",
    ];
    for token in tokens {
        let key = SignatureKey::new(SignatureKind::Fingerprint, token.as_bytes())
            .map_err(|e| anyhow::anyhow!("bench token {token}: {e:?}"))?;
        signatures.insert(key, SignatureEntry::default(), 0)?;
    }
    let trap = SignatureKey::new(SignatureKind::Trap, b"trap-account")
        .map_err(|e| anyhow::anyhow!("bench trap: {e:?}"))?;
    signatures.insert(trap, SignatureEntry::default(), 0)?;
    // A trace of a CIDR no bench source is in, for the case that runs with a trace on.
    let traced = ebpf
        .map_mut(map_names::TRACED)
        .context("the object declares TRACED")?;
    let mut traced: aya::maps::LpmTrie<_, [u8; 16], u32> = aya::maps::LpmTrie::try_from(traced)?;
    traced.insert(
        &sip_xdp::maps::cidr_key("203.0.113.128/25".parse().expect("a CIDR")),
        1,
        0,
    )?;
    Ok(())
}

impl Bench {
    pub(super) fn load(object: Option<&Path>) -> Result<Self> {
        let mut sip = load_sip_xdp(object)?;
        if object.is_none() {
            write_signatures(&mut sip)?;
        }
        let mut maps = SipMaps::take_from(&mut sip)?;
        maps.write_config(&budget_config())?;
        Ok(Self {
            sip,
            maps,
            ref_pass: load_reference(REF_PASS_OBJECT, REF_PASS_PROGRAM)?,
            ref_lru: load_reference(REF_LRU_OBJECT, REF_LRU_PROGRAM)?,
            config: Some(budget_config()),
            lists: None,
            check_counters: true,
        })
    }

    /// The loaded sip-xdp object (both programs).
    pub(super) fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.sip
    }

    pub(super) fn program(&mut self, subject: Subject) -> Result<&mut Xdp> {
        match subject {
            Subject::SipXdp => Ok(loader::xdp_program(&mut self.sip)?),
            Subject::SipXdpEgress => bail!("the egress program is not an XDP program"),
            Subject::RefPass => reference_program(&mut self.ref_pass, REF_PASS_PROGRAM),
            Subject::RefLru => reference_program(&mut self.ref_lru, REF_LRU_PROGRAM),
        }
    }

    fn set_config(&mut self, config: &Config) -> Result<()> {
        if self.config.as_ref() != Some(config) {
            self.maps.write_config(config)?;
            self.config = Some(*config);
        }
        Ok(())
    }

    pub(super) fn set_lists(&mut self, lists: Lists) -> Result<()> {
        if self.lists == Some(lists) {
            return Ok(());
        }
        let allowed = IpNet::new(v4(SRC_ALLOWED), 32)?;
        match lists {
            Lists::WithAllowEntry => self.maps.allow(allowed)?,
            Lists::Empty => {
                self.maps.unallow(allowed)?;
            }
        }
        self.lists = Some(lists);
        Ok(())
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.maps.counters()?)
    }

    /// One BPF_PROG_TEST_RUN of `repeat` runs on `frame`: (action, sample).
    fn test_run(&mut self, subject: Subject, frame: &[u8], repeat: u32) -> Result<(u32, Sample)> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let result = if subject == Subject::SipXdpEgress {
            loader::egress_program(&mut self.sip)?.test_run(opts)
        } else {
            self.program(subject)?.test_run(opts)
        }
        .context("BPF_PROG_TEST_RUN")?;
        Ok((
            result.return_value,
            Sample {
                kernel_ns: result.duration.as_nanos() as f64,
            },
        ))
    }

    /// Measures `case` once, checking its action and its counter.
    pub(super) fn measure(&mut self, case: &Case, repeat: u32) -> Result<Sample> {
        if matches!(case.subject, Subject::SipXdp | Subject::SipXdpEgress) {
            self.set_config(&case.config)?;
            self.set_lists(case.lists)?;
            // The banned prefix stays banned throughout; whether the program's check before the
            // payload runs follows the case.
            let until = if case.prefix_ban_in_force {
                monotonic_now_ns() + 3000 * SECOND_NS
            } else {
                0
            };
            self.maps.set_prefix_bans_until_for_measurement(until)?;
        }
        let before = match case.counter {
            Some(_) if self.check_counters => Some(self.counters()?),
            _ => None,
        };
        let (action, sample) = self.test_run(case.subject, &case.frame, repeat)?;
        ensure!(
            action == case.action || !self.check_counters,
            "{}: {} returned action {action}, expected {}",
            case.name,
            case.subject.name(),
            case.action
        );
        if let (Some((verdict, class)), Some(before)) = (case.counter, before) {
            let after = self.counters()?;
            let delta = after.packets(verdict, class) - before.packets(verdict, class);
            let total = after.total() - before.total();
            ensure!(
                delta == u64::from(repeat) && total == u64::from(repeat),
                "{}: expected {repeat} × {}/{}, counters moved {delta} there and {total} in all",
                case.name,
                verdict.name(),
                class.name()
            );
        }
        Ok(sample)
    }

    /// Verifies SRC_VERIFIED the way a phone gets there (REGISTER, 401, REGISTER, 200), and
    /// opens SRC_GUESSER's challenge so each later 401 to it is a failure.
    pub(super) fn verify_source(&mut self) -> Result<()> {
        self.set_config(&answers_config())?;
        let register = register_frame(SRC_VERIFIED);
        self.test_run(Subject::SipXdp, &register, 1)?;
        for frame in [
            answer_frame(SRC_VERIFIED, 401, "Unauthorized", "REGISTER"),
            answer_frame(SRC_VERIFIED, 200, "OK", "REGISTER"),
            answer_frame(SRC_GUESSER, 401, "Unauthorized", "REGISTER"),
        ] {
            self.test_run(Subject::SipXdpEgress, &frame, 1)?;
        }
        // Spend the one-an-hour admission budget of the spent-budget case, so the forged source
        // it measures is never admitted (and never tracked).
        self.set_config(&spent_admission_config())?;
        self.test_run(Subject::SipXdp, &register_frame(SRC_SPENDER), 1)?;
        let verified = self
            .maps
            .verified_source(addr_key(v4(SRC_VERIFIED)))?
            .context("the bench's verified source was not verified")?;
        ensure!(
            verified.verified_until_ns > monotonic_now_ns() + 3000 * SECOND_NS,
            "the bench's source is verified for less than an hour: {verified:?}"
        );
        Ok(())
    }

    /// Bans SRC_BANNED: a burst of 1, so the second REGISTER drains the bucket.
    pub(super) fn ban_source(&mut self) -> Result<()> {
        self.set_config(&ban_config())?;
        let frame = register_frame(SRC_BANNED);
        let mut dropped = false;
        for _ in 0..10 {
            if self.test_run(Subject::SipXdp, &frame, 1)?.0 == XDP_DROP {
                dropped = true;
                break;
            }
        }
        ensure!(dropped, "could not get {SRC_BANNED} banned");
        let state = self
            .maps
            .source(addr_key(v4(SRC_BANNED)))?
            .context("banned source has no state")?;
        ensure!(
            state.banned_until_ns > monotonic_now_ns() + 3000 * SECOND_NS,
            "banned source's ban is shorter than expected: {state:?}"
        );
        // And the banned prefix: its bucket of one REGISTER, spent by two sources.
        self.set_config(&prefix_ban_config())?;
        self.test_run(Subject::SipXdp, &register_frame(SRC_PREFIX_FIRST), 1)?;
        let (action, _) = self.test_run(Subject::SipXdp, &register_frame(SRC_PREFIX_SECOND), 1)?;
        ensure!(
            action == XDP_DROP,
            "could not get the prefix of {SRC_PREFIX_SECOND} banned"
        );
        Ok(())
    }
}

/// Facts about one loaded program, from BPF_OBJ_GET_INFO_BY_FD.
pub(super) struct ProgramFacts {
    pub(super) name: &'static str,
    pub(super) verified_insns: Option<u32>,
    pub(super) xlated_bytes: Option<u32>,
    pub(super) jited_bytes: u32,
}

pub(super) fn facts(name: &'static str, info: ProgramInfo) -> ProgramFacts {
    ProgramFacts {
        name,
        verified_insns: info.verified_instruction_count(),
        xlated_bytes: info.size_translated(),
        jited_bytes: info.size_jitted(),
    }
}
