//! `sip-xdp trace ADDR|CIDR...`: the library's trace, printed as it comes.
use std::{
    io::Write as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{Cli, OutputFormat, TraceArgs, require_privileges};
use crate::{
    loader::PinDir,
    time::human_duration,
    trace::{Trace, TraceRecord},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(super) fn trace(cli: &Cli, args: &TraceArgs) -> Result<()> {
    require_privileges("trace")?;
    let pins = PinDir::new(&cli.pin_dir);
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut trace = Trace::start(&pins, &args.nets).context("sip-xdp trace")?;
    let nets: Vec<String> = args.nets.iter().map(|n| n.to_string()).collect();
    // On stderr, so `--output json` keeps stdout to the events.
    eprintln!(
        "tracing {} ({}; Ctrl-C stops)",
        nets.join(", "),
        args.duration
            .map_or("until stopped".to_owned(), |d| format!(
                "for {}",
                human_duration(d)
            ))
    );
    let started = Instant::now();
    let mut renewed = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let result = (|| -> Result<()> {
        while !STOP.load(Ordering::Relaxed) && args.duration.is_none_or(|d| started.elapsed() < d) {
            for record in trace.poll()? {
                match args.output {
                    OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&record)?)?,
                    OutputFormat::Text => writeln!(stdout, "{}", line(&record))?,
                }
            }
            stdout.flush()?;
            if renewed.elapsed() >= Duration::from_secs(1) {
                trace.renew()?;
                renewed = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // What came in during the last sleep.
        for record in trace.poll()? {
            match args.output {
                OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&record)?)?,
                OutputFormat::Text => writeln!(stdout, "{}", line(&record))?,
            }
        }
        Ok(())
    })();
    trace.stop().context("ending the trace")?;
    result
}

fn line(r: &TraceRecord) -> String {
    if let Some(status) = r.answer {
        return format!(
            "{:>12.3} {}:{} <- the server's {status}: {}",
            r.at_mono_ns as f64 / 1e9,
            r.source,
            r.port,
            if r.answer_dropped {
                "dropped (reflection guard)"
            } else {
                "sent"
            }
        );
    }
    let mut text = format!(
        "{:>12.3} {}:{} {} -> {}",
        r.at_mono_ns as f64 / 1e9,
        r.source,
        r.port,
        r.class,
        r.verdict
    );
    if r.scanned {
        text.push_str(" (after the header scan)");
    }
    if let (Some(bucket), Some(left), Some(burst)) = (r.bucket, r.tokens_left, r.burst) {
        text.push_str(&format!("; {bucket} bucket {left}/{burst} left"));
    }
    if let Some(ban) = &r.ban {
        text.push_str(&format!(
            "; banned {}s more, {ban}, strike {}",
            r.banned_for_secs, r.strikes
        ));
    }
    let lists: Vec<&str> = [
        (r.allowlisted, "allowlisted"),
        (r.denylisted, "denylisted"),
        (r.protected, "protected"),
        (r.verified, "verified"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    if !lists.is_empty() {
        text.push_str(&format!("; {}", lists.join(", ")));
    }
    text
}
