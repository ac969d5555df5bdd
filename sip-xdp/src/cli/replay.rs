//! `sip-xdp replay CAPTURE`: the library's replay, printed.
use std::io::{IsTerminal as _, Write as _};

use anyhow::{Context as _, Result};

use super::{OutputFormat, ReplayArgs, load_settings, require_privileges};
use crate::replay::{self, ReplayOptions, ReplayReport, RunReport};

pub(super) fn replay(args: &ReplayArgs) -> Result<()> {
    require_privileges("replay")?;
    let capture = replay::read(&args.capture)?;
    if capture.frames.is_empty() {
        return Err(replay::ReplayError::Empty {
            path: args.capture.clone(),
        }
        .into());
    }
    let (settings, path) = load_settings(args.config.as_deref())?;
    let servers = if args.servers.is_empty() {
        replay::infer_servers(&capture, &settings)
    } else {
        args.servers.clone()
    };
    let tty = std::io::stderr().is_terminal();
    let show = |done: usize, total: usize| {
        if tty && total >= 10_000 {
            eprint!(
                "\rreplaying: {done}/{total} frames ({}%)",
                done * 100 / total
            );
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    };
    let name = |path: Option<&std::path::Path>| {
        path.map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        )
    };
    let run_with = |settings: &crate::config::Settings, path: Option<&std::path::Path>| {
        replay::replay(
            &capture,
            &ReplayOptions {
                settings,
                config_name: name(path),
                servers: &servers,
                allow: &args.allow,
                progress: Some(&show),
            },
        )
    };
    let run = run_with(&settings, path.as_deref()).context("replaying the capture")?;
    let second = match &args.compare {
        Some(file) => {
            let (settings, path) = load_settings(Some(file))?;
            Some(
                run_with(&settings, path.as_deref())
                    .context("replaying the capture with the second config")?,
            )
        }
        None => None,
    };
    let first_ns = capture.frames.first().map_or(0, |f| f.ts_ns);
    let last_ns = capture.frames.last().map_or(0, |f| f.ts_ns);
    let report = ReplayReport {
        capture: replay::CaptureSummary {
            file: args.capture.clone(),
            format: capture.format,
            link_types: capture.link_types.clone(),
            frames: capture.frames.len() as u64,
            duration_secs: last_ns.saturating_sub(first_ns) as f64 / 1e9,
            servers,
            snapped: capture.frames.iter().filter(|f| f.snapped).count() as u64,
        },
        comparison: second.as_ref().map(|second| replay::compare(&run, second)),
        run,
        second,
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_text(&report),
    }
    Ok(())
}

fn print_run(run: &RunReport) {
    println!("config: {}", run.config);
    println!(
        "  frames: {} to the server (XDP), {} from it (TC egress), {} answers skipped (their \
         request was dropped), {} answers dropped",
        run.ingress_frames, run.egress_frames, run.answers_skipped, run.answers_dropped
    );
    let mut verdicts: Vec<(&str, u64)> = Vec::new();
    for count in &run.packets {
        match verdicts.iter_mut().find(|(v, _)| *v == count.verdict) {
            Some((_, n)) => *n += count.packets,
            None => verdicts.push((count.verdict, count.packets)),
        }
    }
    println!("  packets by verdict:");
    for (verdict, n) in &verdicts {
        let classes: Vec<String> = run
            .packets
            .iter()
            .filter(|c| c.verdict == *verdict)
            .map(|c| format!("{}={}", c.class, c.packets))
            .collect();
        println!("    {verdict:<16} {n:>9}  ({})", classes.join(", "));
    }
    println!("  bans: {}", run.bans.len());
    for ban in run.bans.iter().take(50) {
        println!(
            "    {:>9.3}s  {:<40} {} {} ({}), {}s, strike {}",
            ban.at_secs,
            ban.source,
            ban.kind,
            ban.origin,
            ban.cause,
            ban.duration_secs,
            ban.strikes
        );
    }
    if run.bans.len() > 50 {
        println!(
            "    ... {} more (--output json lists them all)",
            run.bans.len() - 50
        );
    }
    if run.banned_then_succeeded.is_empty() {
        println!("  banned, then logged in: none");
    } else {
        println!(
            "  banned, then logged in (the server accepted their credentials later; false \
             positives this config risks):"
        );
        for fp in &run.banned_then_succeeded {
            println!(
                "    {}  banned at {:.3}s, accepted at {:.3}s",
                fp.source, fp.banned_at_secs, fp.succeeded_at_secs
            );
        }
    }
    if run.events_lost > 0 {
        println!("  warning: {} ban events were lost", run.events_lost);
    }
}

fn print_text(report: &ReplayReport) {
    let c = &report.capture;
    let servers: Vec<String> = c.servers.iter().map(|s| s.to_string()).collect();
    println!(
        "capture: {} ({}, {}), {} frames over {:.1}s; server {}",
        c.file.display(),
        c.format,
        c.link_types.join("/"),
        c.frames,
        c.duration_secs,
        if servers.is_empty() {
            "unknown (none received SIP)".to_owned()
        } else {
            servers.join(", ")
        }
    );
    if c.snapped > 0 {
        println!(
            "warning: {} frames were cut by the capture's snap length; their verdicts may differ \
             from the live program's (capture with `tcpdump -s 0`)",
            c.snapped
        );
    }
    print_run(&report.run);
    if let (Some(second), Some(diff)) = (&report.second, &report.comparison) {
        println!();
        print_run(second);
        println!();
        println!("what the second config changes:");
        if diff.verdicts.is_empty() {
            println!("  verdicts: the same");
        }
        for (verdict, a, b) in &diff.verdicts {
            println!("  {verdict:<16} {a:>9} -> {b}");
        }
        println!(
            "  banned by the first only: {}; by the second only: {}",
            list(&diff.banned_only_first),
            list(&diff.banned_only_second)
        );
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else if items.len() > 20 {
        format!("{} and {} more", items[..20].join(", "), items.len() - 20)
    } else {
        items.join(", ")
    }
}
