//! `cargo xtask bench`: per-packet cost of the XDP program under BPF_PROG_TEST_RUN, as ratios to
//! two reference programs measured in the same run on the same REGISTER frame:
//!
//! * `ref_pass` returns XDP_PASS and nothing else: the floor of the test-run loop itself;
//! * `ref_lru` does one LRU-hash lookup + one update keyed by the IPv4 source: the least a
//!   per-source limiter can do.
//!
//! Every case is checked before and during measurement: the program must return the expected
//! action and bump exactly the expected (verdict, class) counter `repeat` times, so a figure can
//! never silently come from another path (say, a bucket that ran dry and banned the source).
use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
};

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
use sip_xdp_common::{Config, LimitClass, MethodClass, RateLimit, Verdict, map_names};
use sip_xdp_tests::{
    harness::{XDP_DROP, XDP_PASS},
    packet::{self, Frame, IPPROTO_TCP},
};

use crate::BenchArgs;

const SECOND_NS: u64 = 1_000_000_000;
const MIN_REPEAT: u32 = 1_000_000;

/// Which program a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    SipXdp,
    RefPass,
    RefLru,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Self::SipXdp => "sip_xdp",
            Self::RefPass => REF_PASS_PROGRAM,
            Self::RefLru => REF_LRU_PROGRAM,
        }
    }
}

/// A target: the case's median at most `max_ratio` times the reference's median.
#[derive(Clone, Copy, Debug)]
struct Target {
    reference: Subject,
    max_ratio: f64,
}

/// What a case needs from the maps besides its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lists {
    /// The allowlist holds the allowlisted bench source (a /32): the usual state.
    WithAllowEntry,
    /// Both tries empty.
    Empty,
}

struct Case {
    name: &'static str,
    frame_desc: String,
    subject: Subject,
    frame: Vec<u8>,
    config: Config,
    lists: Lists,
    action: u32,
    /// The (verdict, class) counter each run must bump (sip-xdp cases only).
    counter: Option<(Verdict, MethodClass)>,
    target: Option<Target>,
    /// Extra rows that explain where the cost goes; no target.
    variant: bool,
    samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Mean ns per run as the kernel timed it (an integer: the kernel divides and truncates).
    kernel_ns: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    median: f64,
    best: f64,
    worst: f64,
}

fn stats(mut values: Vec<f64>) -> Stats {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Stats::default();
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Stats {
        median,
        best: values[0],
        worst: values[n - 1],
    }
}

impl Case {
    fn kernel(&self) -> Stats {
        stats(self.samples.iter().map(|s| s.kernel_ns).collect())
    }
}

// Sources, one per case family, so each case finds exactly the per-source state it expects.
const SRC_BUDGET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SRC_ALLOWED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const SRC_BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
const SRC_MALFORMED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
const SRC_VLAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const SRC_STATELESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 60);
const SRC_LONG_URI: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 70);
const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x10);
const DST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 1);

/// Default config, except the buckets: ~4.3e9 packets/s (interval 1 ns) with a burst of 2^40.
/// Every packet still walks its bucket (lookup, GCRA check, TAT write), but no run of this
/// benchmark can drain it: each packet moves the TAT 1 ns, and 2^40 ns is about 18 minutes.
fn budget_config() -> Config {
    let mut config = Config::DEFAULT;
    config.limits = [RateLimit::per_second(u32::MAX as u64, 1 << 40); LimitClass::COUNT];
    config
}

/// REGISTER at 1/s with a burst of 1 and a one-hour first ban: the second REGISTER bans.
fn ban_config() -> Config {
    let mut config = Config::DEFAULT;
    config.limits[LimitClass::Register as usize] = RateLimit::per_second(1, 1);
    config.ban_base_ns = 3600 * SECOND_NS;
    config.ban_max_ns = 24 * 3600 * SECOND_NS;
    config
}

/// REGISTER not limited at all: the program keeps no per-source state for it.
fn unlimited_register_config() -> Config {
    let mut config = Config::DEFAULT;
    config.limits[LimitClass::Register as usize] = RateLimit::UNLIMITED;
    config
}

fn v4(src: Ipv4Addr) -> IpAddr {
    IpAddr::V4(src)
}

fn register_frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::sip(v4(src), v4(DST_V4), &packet::register("100", 1)).build()
}

fn cases() -> Vec<Case> {
    let register = packet::register("100", 1);
    let register_v4 = register_frame(SRC_BUDGET);
    let register_desc = format!("IPv4/UDP 5060, REGISTER, {} B frame", register_v4.len());
    let dns = Frame::udp(v4(SRC_BUDGET), v4(DST_V4), 53, &[0x5a; 40]).build();
    let mut tcp = Frame::sip(v4(SRC_BUDGET), v4(DST_V4), &[]);
    tcp.protocol = IPPROTO_TCP;
    let tcp = tcp.build();
    let malformed_payload = b"XYZZY sip:100@example.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n";
    let malformed = Frame::sip(v4(SRC_MALFORMED), v4(DST_V4), malformed_payload).build();
    let binary: Vec<u8> = (0..200u32).map(|i| (i * 7 + 0x41) as u8 | 0x80).collect();
    let malformed_binary = Frame::sip(v4(SRC_MALFORMED), v4(DST_V4), &binary).build();
    let register_v6 = Frame::sip(IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6), &register).build();
    let register_vlan = Frame::sip(v4(SRC_VLAN), v4(DST_V4), &register)
        .vlan(100)
        .build();
    let long_user = "1".repeat(150);
    let register_long = Frame::sip(
        v4(SRC_LONG_URI),
        v4(DST_V4),
        &packet::register(&long_user, 1),
    )
    .build();
    let response = Frame::sip(v4(SRC_STATELESS), v4(DST_V4), &packet::response(200, "OK")).build();

    let vs_pass = |max_ratio| {
        Some(Target {
            reference: Subject::RefPass,
            max_ratio,
        })
    };
    let vs_lru = |max_ratio| {
        Some(Target {
            reference: Subject::RefLru,
            max_ratio,
        })
    };
    let case = |name: &'static str,
                frame_desc: String,
                frame: Vec<u8>,
                config: Config,
                action: u32,
                counter: (Verdict, MethodClass),
                target: Option<Target>| Case {
        name,
        frame_desc,
        subject: Subject::SipXdp,
        frame,
        config,
        lists: Lists::WithAllowEntry,
        action,
        counter: Some(counter),
        target,
        variant: false,
        samples: Vec::new(),
    };
    let variant = |name, frame_desc, frame, config, action, counter| Case {
        variant: true,
        ..case(name, frame_desc, frame, config, action, counter, None)
    };
    let reference = |subject: Subject, name: &'static str| Case {
        name,
        frame_desc: register_desc.clone(),
        subject,
        frame: register_v4.clone(),
        config: budget_config(),
        lists: Lists::WithAllowEntry,
        action: XDP_PASS,
        counter: None,
        target: None,
        variant: false,
        samples: Vec::new(),
    };

    vec![
        reference(Subject::RefPass, "ref_pass (bare XDP_PASS)"),
        reference(Subject::RefLru, "ref_lru (1 LRU lookup + 1 update)"),
        case(
            "non-SIP pass",
            format!("IPv4/UDP to port 53, {} B frame", dns.len()),
            dns,
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
            vs_pass(1.3),
        ),
        case(
            "allowlisted REGISTER",
            "as ref frame, source in ALLOWLIST (/32)".to_owned(),
            register_frame(SRC_ALLOWED),
            budget_config(),
            XDP_PASS,
            (Verdict::PassAllowlisted, MethodClass::Register),
            None,
        ),
        case(
            "REGISTER within budget",
            format!("the ref frame ({} B), tracked source", register_v4.len()),
            register_v4.clone(),
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            vs_lru(1.5),
        ),
        case(
            "banned drop",
            "as ref frame, source banned for 1 h".to_owned(),
            register_frame(SRC_BANNED),
            ban_config(),
            XDP_DROP,
            (Verdict::DropBanned, MethodClass::Register),
            vs_lru(1.5),
        ),
        case(
            "malformed drop",
            format!(
                "IPv4/UDP 5060, unknown method `XYZZY`, {} B frame",
                malformed.len()
            ),
            malformed,
            budget_config(),
            XDP_DROP,
            (Verdict::DropMalformed, MethodClass::Malformed),
            None,
        ),
        case(
            "IPv6 REGISTER",
            format!(
                "IPv6/UDP 5060, REGISTER, {} B frame, tracked",
                register_v6.len()
            ),
            register_v6,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        case(
            "VLAN REGISTER",
            format!(
                "802.1Q + IPv4/UDP 5060, REGISTER, {} B frame, tracked",
                register_vlan.len()
            ),
            register_vlan,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        variant(
            "non-SIP TCP",
            format!("IPv4/TCP SYN to port 5060, {} B frame", tcp.len()),
            tcp,
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
        ),
        variant(
            "non-IP (ARP)",
            "ARP request, 60 B frame".to_owned(),
            packet::arp_frame(),
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
        ),
        variant(
            "SIP response (its own bucket)",
            "IPv4/UDP 5060, `SIP/2.0 200 OK`, tracked source".to_owned(),
            response,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Response),
        ),
        variant(
            "REGISTER, class unlimited",
            "as ref frame, REGISTER not limited: no bucket, untracked".to_owned(),
            register_frame(SRC_STATELESS),
            unlimited_register_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
        ),
        Case {
            lists: Lists::Empty,
            ..variant(
                "REGISTER within budget, empty ALLOWLIST",
                "the ref frame; both LPM tries empty".to_owned(),
                register_v4.clone(),
                budget_config(),
                XDP_PASS,
                (Verdict::Pass, MethodClass::Register),
            )
        },
        variant(
            "REGISTER within budget, 150-char user",
            format!(
                "REGISTER sip:1…1@example.com, request line {} B, {} B frame",
                "REGISTER sip:@example.com SIP/2.0".len() + long_user.len(),
                register_long.len()
            ),
            register_long,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
        ),
        variant(
            "malformed drop, 200 B binary",
            "IPv4/UDP 5060, 200 B without CR/LF (full 192 B line scan)".to_owned(),
            malformed_binary,
            budget_config(),
            XDP_DROP,
            (Verdict::DropMalformed, MethodClass::Malformed),
        ),
    ]
}

/// The three loaded programs and sip-xdp's maps.
struct Bench {
    sip: Ebpf,
    maps: SipMaps,
    ref_pass: Ebpf,
    ref_lru: Ebpf,
    config: Option<Config>,
    lists: Option<Lists>,
    check_counters: bool,
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
    Ok(ebpf)
}

impl Bench {
    fn load(object: Option<&Path>) -> Result<Self> {
        let mut sip = load_sip_xdp(object)?;
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

    fn program(&mut self, subject: Subject) -> Result<&mut Xdp> {
        match subject {
            Subject::SipXdp => Ok(loader::xdp_program(&mut self.sip)?),
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

    fn set_lists(&mut self, lists: Lists) -> Result<()> {
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
        let program = self.program(subject)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let result = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok((
            result.return_value,
            Sample {
                kernel_ns: result.duration.as_nanos() as f64,
            },
        ))
    }

    /// Measures `case` once, checking its action and its counter.
    fn measure(&mut self, case: &Case, repeat: u32) -> Result<Sample> {
        if case.subject == Subject::SipXdp {
            self.set_config(&case.config)?;
            self.set_lists(case.lists)?;
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

    /// Bans SRC_BANNED: a burst of 1, so the second REGISTER drains the bucket.
    fn ban_source(&mut self) -> Result<()> {
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
        Ok(())
    }
}

/// Facts about one loaded program, from BPF_OBJ_GET_INFO_BY_FD.
struct ProgramFacts {
    name: &'static str,
    verified_insns: Option<u32>,
    xlated_bytes: Option<u32>,
    jited_bytes: u32,
}

fn facts(name: &'static str, info: ProgramInfo) -> ProgramFacts {
    ProgramFacts {
        name,
        verified_insns: info.verified_instruction_count(),
        xlated_bytes: info.size_translated(),
        jited_bytes: info.size_jitted(),
    }
}

fn pin_to_cpu(cpu: Option<usize>) -> Result<usize> {
    let cpu = match cpu {
        Some(cpu) => cpu,
        None => {
            // SAFETY: no preconditions.
            let current = unsafe { libc::sched_getcpu() };
            ensure!(current >= 0, "sched_getcpu failed");
            current as usize
        }
    };
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(cpu)
}

/// SCHED_FIFO priority 1 while measuring, so other work on this CPU (builds, say) does not run
/// in the middle of a measurement; the kernel's RT throttling still leaves it 5% of each second.
fn set_realtime(on: bool) -> bool {
    let param = libc::sched_param {
        sched_priority: if on { 1 } else { 0 },
    };
    let policy = if on {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: valid pointer to a sched_param.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Environment {
    date: String,
    kernel: String,
    cpu_model: String,
    cpus: usize,
    mitigations: String,
    jit: String,
    bpf_stats: String,
    commit: String,
}

fn environment() -> Environment {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let mut cpu_model = field("model name").unwrap_or_else(|| "unknown".to_owned());
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        let _ = write!(cpu_model, " (family {family}, model {model})");
    }
    // Return-thunk and retpoline mitigations change what calls cost, in BPF code too.
    let mitigations = ["spectre_v2", "spec_rstack_overflow", "retbleed"]
        .iter()
        .map(|name| {
            format!(
                "{name}: {}",
                read_trimmed(&format!("/sys/devices/system/cpu/vulnerabilities/{name}"))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    // Not available_parallelism(): that follows this thread's affinity, which pinning narrows.
    // SAFETY: no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize;
    let commit = match command_output("git", &["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty =
                command_output("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + uncommitted changes")
            } else {
                rev
            }
        }
        None => "unknown".to_owned(),
    };
    Environment {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown".to_owned()),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu_model,
        cpus,
        mitigations,
        jit: read_trimmed("/proc/sys/net/core/bpf_jit_enable"),
        bpf_stats: read_trimmed("/proc/sys/kernel/bpf_stats_enabled"),
        commit,
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.repeat >= MIN_REPEAT || args.allow_short,
        "--repeat must be at least {MIN_REPEAT} (pass --allow-short for a quick check)"
    );
    sip_xdp_tests::harness::require_root();
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(
                || PathBuf::from("BENCHMARKS.md"),
                |p| p.join("BENCHMARKS.md"),
            )
    });

    let mut bench = Bench::load(args.object.as_deref())?;
    bench.check_counters = !args.unchecked;
    let sip_facts = facts("sip_xdp", bench.program(Subject::SipXdp)?.info()?);
    let pass_facts = facts(REF_PASS_PROGRAM, bench.program(Subject::RefPass)?.info()?);
    let lru_facts = facts(REF_LRU_PROGRAM, bench.program(Subject::RefLru)?.info()?);

    bench.set_lists(Lists::WithAllowEntry)?;
    match bench.ban_source() {
        Err(e) if args.unchecked => eprintln!("warning: {e:#}"),
        other => other?,
    }
    if let Some(secs) = args.hold_secs {
        for subject in [Subject::SipXdp, Subject::RefPass, Subject::RefLru] {
            let id = bench.program(subject)?.info()?.id();
            eprintln!(
                "{} is program id {id} (bpftool prog dump xlated id {id})",
                subject.name()
            );
        }
        eprintln!("holding the programs for {secs} s");
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let mut cases = cases();

    let cpu = pin_to_cpu(args.cpu)?;
    // Warm-up: creates per-source state, faults in the maps, and checks every case once.
    let warmup = (args.repeat / 10).max(1);
    for case in &cases {
        bench
            .measure(case, warmup)
            .with_context(|| format!("warm-up of {}", case.name))?;
    }
    let realtime = !args.no_realtime && set_realtime(true);
    eprintln!(
        "measuring {} cases × {} runs × {} repeats on CPU {cpu}{}",
        cases.len(),
        args.runs,
        args.repeat,
        if realtime { " (SCHED_FIFO)" } else { "" }
    );
    // Rounds interleave the cases, so slow drift (frequency, noisy neighbours) hits all alike.
    let measured = (|| -> Result<()> {
        for _ in 0..args.runs {
            for case in cases.iter_mut() {
                let sample = bench
                    .measure(case, args.repeat)
                    .with_context(|| format!("measuring {}", case.name))?;
                case.samples.push(sample);
            }
        }
        Ok(())
    })();
    if realtime {
        set_realtime(false);
    }
    measured?;

    let report = report(
        &environment(),
        args,
        cpu,
        realtime,
        &cases,
        &[sip_facts, pass_facts, lru_facts],
    );
    print!("{report}");
    fs::write(&output, &report).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

fn report(
    env: &Environment,
    args: &BenchArgs,
    cpu: usize,
    realtime: bool,
    cases: &[Case],
    programs: &[ProgramFacts],
) -> String {
    let reference = |subject| {
        cases
            .iter()
            .find(|c| c.subject == subject)
            .map_or(f64::NAN, |c| c.kernel().median)
    };
    let ref_pass = reference(Subject::RefPass);
    let ref_lru = reference(Subject::RefLru);

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# sip-xdp benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `cargo xtask bench` (xtask/src/bench.rs); rerun it to refresh this file.\n"
    );
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Date | {} |", env.date);
    let _ = writeln!(w, "| Kernel | {} |", env.kernel);
    let _ = writeln!(w, "| CPU | {}, {} CPUs online |", env.cpu_model, env.cpus);
    let _ = writeln!(w, "| Mitigations | {} |", env.mitigations);
    let _ = writeln!(
        w,
        "| BPF JIT | bpf_jit_enable={}, bpf_stats_enabled={} |",
        env.jit, env.bpf_stats
    );
    let _ = writeln!(w, "| Commit | {} |", env.commit);
    let _ = writeln!(
        w,
        "| sip-xdp object | {} |",
        match &args.object {
            Some(path) => format!("`{}` (--object)", path.display()),
            None => "embedded in sip-xdp (built by sip-xdp/build.rs)".to_owned(),
        }
    );
    let _ = writeln!(
        w,
        "| Method | BPF_PROG_TEST_RUN, {} repeats per measurement, {} measurements per case, \
         cases interleaved, pinned to CPU {cpu}{} |",
        args.repeat,
        args.runs,
        if realtime { ", SCHED_FIFO" } else { "" }
    );
    if args.unchecked {
        let _ = writeln!(
            w,
            "\n**Experimental: run with --unchecked, actions and verdicts were not verified.**"
        );
    }
    if args.repeat < MIN_REPEAT {
        let _ = writeln!(
            w,
            "\n**Quick check only: fewer than {MIN_REPEAT} repeats per measurement.**"
        );
    }

    let _ = writeln!(w, "\n## Per-packet cost\n");
    let _ = writeln!(
        w,
        "ns/packet is the kernel's own timing of the BPF_PROG_TEST_RUN loop: total time over the \
         repeat count, truncated to whole ns by the kernel (median of the measurements; best and \
         worst alongside). It includes the loop's own per-run overhead, which `ref_pass` measures \
         alone. Ratios divide medians by the references' medians from the same run (so they carry \
         the ±1 ns of the kernel's truncation). (The \
         syscall's wall-clock time is no better: every call with repeat > 1 also swaps the XDP \
         dispatcher in and out, a fixed cost of milliseconds.)\n"
    );
    let _ = writeln!(
        w,
        "| Case | Frame | Verdict | ns/pkt | best–worst | × ref_pass | × ref_lru | Target |"
    );
    let _ = writeln!(w, "|---|---|---|---:|---:|---:|---:|---|");
    let row = |w: &mut String, case: &Case, with_target: bool| {
        let kernel = case.kernel();
        let verdict = match case.counter {
            Some((verdict, class)) => format!("{}/{}", verdict.name(), class.name()),
            None => "pass".to_owned(),
        };
        let target = match case.target {
            Some(t) => {
                let base = if t.reference == Subject::RefPass {
                    ref_pass
                } else {
                    ref_lru
                };
                let ratio = kernel.median / base;
                format!(
                    "≤ {:.1}× {}: **{}**",
                    t.max_ratio,
                    t.reference.name(),
                    if ratio <= t.max_ratio { "PASS" } else { "MISS" }
                )
            }
            None => String::new(),
        };
        let _ = write!(
            w,
            "| {} | {} | {} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} |",
            case.name,
            case.frame_desc,
            verdict,
            kernel.median,
            kernel.best,
            kernel.worst,
            kernel.median / ref_pass,
            kernel.median / ref_lru,
        );
        if with_target {
            let _ = write!(w, " {target} |");
        }
        let _ = writeln!(w);
    };
    for case in cases.iter().filter(|c| !c.variant) {
        row(w, case, true);
    }

    let _ = writeln!(w, "\n### Variants (where the cost goes)\n");
    let _ = writeln!(
        w,
        "| Case | Frame | Verdict | ns/pkt | best–worst | × ref_pass | × ref_lru |"
    );
    let _ = writeln!(w, "|---|---|---|---:|---:|---:|---:|");
    for case in cases.iter().filter(|c| c.variant) {
        row(w, case, false);
    }

    let _ = writeln!(w, "\n## Program size and verifier\n");
    let _ = writeln!(
        w,
        "From BPF_OBJ_GET_INFO_BY_FD after load: `verified insns` is the verifier's processed \
         instruction count (`processed N insns` in its log; limit 1,000,000), `xlated` the \
         program after verifier rewrites (8 bytes per instruction slot), `jited` the x86-64 code.\n"
    );
    let _ = writeln!(
        w,
        "| Program | verified insns | xlated insns | xlated bytes | jited bytes |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for p in programs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            p.name,
            opt(p.verified_insns),
            opt(p.xlated_bytes.map(|b| b / 8)),
            opt(p.xlated_bytes),
            p.jited_bytes
        );
    }

    let _ = writeln!(w, "\n## Setup\n");
    let _ = writeln!(
        w,
        "* One sip-xdp instance (default config, 131,072-entry SOURCES) with `{SRC_ALLOWED}/32` in \
         ALLOWLIST, DENYLIST empty; every case checks, on every measurement, that the program \
         returned the expected action and bumped exactly the expected verdict/class counter once \
         per repeat."
    );
    let _ = writeln!(
        w,
        "* **REGISTER within budget** (also IPv6 and VLAN): REGISTER limited to \
         `RateLimit::per_second(u32::MAX, 2^40)`, i.e. a 1 ns interval and a burst tolerance of \
         ~18 minutes. The packet takes the full tracked-source path — SOURCES lookup, state \
         update, GCRA check and TAT write — but millions of back-to-back repeats cannot drain the \
         bucket, which a realistic limit (5/s, burst 40) would after 40 packets."
    );
    let _ = writeln!(
        w,
        "* **banned drop**: REGISTER at 1/s with a burst of 1 and a 1 h first ban; the source is \
         banned by a second REGISTER during setup, then measured (ban path: SOURCES lookup and \
         ban check, then no list lookup, as the ban is read first; no extension write since the \
         ban outlasts `ban_extend_ns`)."
    );
    let _ = writeln!(
        w,
        "* **malformed drop**: an unknown method from an untracked source (no SOURCES entry is \
         created for malformed traffic)."
    );
    let _ = writeln!(
        w,
        "* References: `ref_pass` returns XDP_PASS; `ref_lru` reads the IPv4 source, looks up a \
         16-byte IPv4-mapped key in a 131,072-entry LRU hash (`get_ptr`) and writes the counter \
         back with `insert` (one lookup + one update), both on the REGISTER frame."
    );
    md
}
