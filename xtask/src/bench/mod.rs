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

//!
//! The [`cases`] are measured ([`measurement`]) in interleaved rounds and written up
//! ([`report`]).
mod cases;
mod measurement;
mod report;

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, ensure};
use sip_xdp::reference::{REF_LRU_PROGRAM, REF_PASS_PROGRAM};

use self::{
    cases::{Lists, Subject, cases},
    measurement::{Bench, MIN_REPEAT, facts},
    report::{Method, environment, report},
};
use crate::host;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// BPF_PROG_TEST_RUN repeat count per measurement (at least 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Measurements per case; the table reports their median and best.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to write the markdown report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// CPU to pin the benchmark to (default: the CPU it starts on).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Do not raise the benchmark thread to SCHED_FIFO while measuring.
    #[arg(long)]
    pub no_realtime: bool,
    /// Allow repeat counts under 1,000,000 (quick checks; the report says so).
    #[arg(long)]
    pub allow_short: bool,
    /// Benchmark this build of the sip-xdp object instead of the one embedded in sip-xdp (for
    /// trying a change to the XDP program; the report names the file).
    #[arg(long)]
    pub object: Option<PathBuf>,
    /// After loading, print the program ids and keep them loaded this many seconds (for
    /// `bpftool prog dump xlated/jited id N`).
    #[arg(long, hide = true)]
    pub hold_secs: Option<u64>,
    /// Skip the action and verdict-counter checks (for experimental --object builds that skip
    /// work; their figures are not comparable verdict for verdict).
    #[arg(long, hide = true)]
    pub unchecked: bool,
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
    let egress_facts = facts(
        sip_xdp_common::EGRESS_PROGRAM_NAME,
        sip_xdp::loader::egress_program(bench.ebpf())?.info()?,
    );
    // Tail-called by sip_xdp for passed requests while signatures are on.
    let scan_facts = facts(
        sip_xdp_common::SCAN_PROGRAM_NAME,
        sip_xdp::loader::scan_program(bench.ebpf())?.info()?,
    );
    let pass_facts = facts(REF_PASS_PROGRAM, bench.program(Subject::RefPass)?.info()?);
    let lru_facts = facts(REF_LRU_PROGRAM, bench.program(Subject::RefLru)?.info()?);

    bench.set_lists(Lists::WithAllowEntry)?;
    match bench.ban_source().and_then(|()| bench.verify_source()) {
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

    let cpu = match args.cpu {
        Some(cpu) => cpu,
        None => host::current_cpu()?,
    };
    host::pin_to_cpu(cpu)?;
    // Warm-up: creates per-source state, faults in the maps, and checks every case once.
    let warmup = (args.repeat / 10).max(1);
    for case in &cases {
        bench
            .measure(case, warmup)
            .with_context(|| format!("warm-up of {}", case.name))?;
    }
    let realtime = !args.no_realtime && host::set_realtime(true);
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
        host::set_realtime(false);
    }
    measured?;

    let method = Method {
        repeat: args.repeat,
        runs: args.runs,
        cpu,
        realtime,
        object: args.object.as_deref(),
        unchecked: args.unchecked,
    };
    let report = report(
        &environment(),
        &method,
        &cases,
        &[sip_facts, egress_facts, scan_facts, pass_facts, lru_facts],
    );
    print!("{report}");
    fs::write(&output, &report).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
