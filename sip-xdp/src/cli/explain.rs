//! `sip-xdp explain ADDR`.
use std::fmt::Write as _;

use anyhow::Result;

use super::{Cli, ExplainArgs, OutputFormat};
use crate::{
    explain::{self, BucketFill, Explanation, ListMatch},
    time::human_duration,
};

fn left(secs: u64) -> String {
    human_duration(std::time::Duration::from_secs(secs))
}

pub(super) fn explain(cli: &Cli, args: &ExplainArgs) -> Result<()> {
    let address = explain::parse_address(&args.address)?;
    let report = explain::explain_pinned(&cli.pin_dir, &cli.state_dir, address)?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", text(&report)),
    }
    Ok(())
}

fn buckets_line(buckets: &[BucketFill]) -> String {
    buckets
        .iter()
        .map(|b| format!("{} {}/{}", b.class, b.tokens_left, b.burst))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_line(m: &ListMatch) -> String {
    let mut line = m.cidr.to_string();
    match m.remaining_s {
        Some(remaining) => {
            let _ = write!(line, "  {} ban, {} left", m.origin, left(remaining));
        }
        None => {
            let _ = write!(line, "  {}", m.origin);
        }
    }
    if let Some(comment) = &m.comment {
        let _ = write!(line, "  \"{comment}\"");
    }
    if let Some(reason) = &m.reason {
        let _ = write!(line, "  ({reason})");
    }
    let place = match (m.live, m.saved) {
        (true, true) => "kernel + state file",
        (true, false) => "kernel only",
        (false, true) => "state file only, not in the kernel",
        (false, false) => "nowhere",
    };
    let _ = write!(
        line,
        "  [{place}{}]",
        if m.effective { ", in force" } else { "" }
    );
    line
}

/// `explain` as text: one fact a line, the predictions last.
pub(super) fn text(e: &Explanation) -> String {
    let mut out = String::new();
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    say!(
        "{}{}",
        e.address,
        if e.monitor_mode {
            "  (monitor mode: drops are counted, every packet passes)"
        } else {
            ""
        }
    );
    if e.attached == Some(false) {
        say!(
            "WARNING     sip-xdp is not attached to any interface here: nothing is filtered now; \
             the verdicts below apply once it is attached again"
        );
    }
    for (name, list) in [
        ("allowlist", &e.allowlist),
        ("protected", &e.protected),
        ("denylist", &e.denylist),
    ] {
        if list.is_empty() {
            say!("{name:<11} none");
        }
        for m in list {
            say!("{name:<11} {}", list_line(m));
        }
    }
    if e.bans.is_empty() {
        say!("{:<11} none", "bans");
    }
    for b in &e.bans {
        let strikes = b
            .strikes
            .map_or(String::new(), |s| format!(", strikes {s}"));
        let state = if b.active {
            format!("{} left", left(b.remaining_s))
        } else {
            "not in force".to_owned()
        };
        say!(
            "{:<11} {} ban of {}: {}; {state}{strikes}",
            "bans",
            b.origin,
            b.target,
            b.reason
        );
    }
    match &e.source {
        Some(s) => {
            say!(
                "{:<11} {}: packets {}, dropped {}, last seen {}s ago ({} limits)",
                "source",
                s.key,
                s.packets,
                s.dropped,
                s.last_seen_s_ago,
                s.limits
            );
            say!("{:<11} {}", "  buckets", buckets_line(&s.buckets));
        }
        None => say!(
            "{:<11} not tracked (no packet of a limited class lately)",
            "source"
        ),
    }
    for p in &e.prefixes {
        if p.tracked {
            say!(
                "{:<11} {}: packets {}, dropped {}; buckets {}",
                "prefix",
                p.prefix,
                p.packets,
                p.dropped,
                buckets_line(&p.buckets)
            );
        } else {
            say!("{:<11} {}: not tracked", "prefix", p.prefix);
        }
    }
    let a = &e.answers;
    let verified = if !a.answers_enabled {
        "no (the answers are not read: [answers] enabled = false)".to_owned()
    } else if a.verified {
        format!(
            "yes, {} left, {} successes",
            left(a.verified_remaining_s.unwrap_or(0)),
            a.successes.unwrap_or(0)
        )
    } else {
        "no".to_owned()
    };
    say!("{:<11} {verified}", "verified");
    if let Some(failures) = a.failures {
        say!(
            "{:<11} failures {failures}, open challenges {}, reflection drops {}",
            "answers",
            a.open_challenges.unwrap_or(0),
            a.reflection_drops.unwrap_or(0)
        );
    }
    say!("next packet (predicted from the maps now):");
    for p in &e.predictions {
        say!(
            "  {:<9} {:<17} as {:<9} {}",
            p.packet,
            p.verdict,
            p.counted_as,
            p.because
        );
    }
    out
}
