//! Runs sipp (Debian's `sip-tester`) inside a test namespace and reads back what it measured:
//! its exit code, the cumulative counters of its `-trace_stat` CSV, the final screen it prints,
//! its error log, and (with `-trace_msg`) every message it sent and received.
//!
//! Each run gets its own directory (stat file, error log, message log, stdout), so failures can
//! quote what sipp printed. A run is bounded twice: by sipp's own `-timeout` and by a deadline
//! enforced here, after which the process is killed by its pid and the test fails.
use std::{
    collections::HashMap,
    fmt,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// Where the XML scenarios and injection files live.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// The absolute path of `tests/sipp/NAME`, as a string for sipp's command line.
pub fn scenario(name: &str) -> String {
    let path = scenario_dir().join(name);
    assert!(
        path.exists(),
        "sipp scenario file {} is missing",
        path.display()
    );
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Panics with the fix when sipp is not installed.
pub fn require_sipp() {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "sipp is not installed: run scripts/setup-toolchain.sh (or `apt-get install sip-tester`)"
    );
}

const STAT_FILE: &str = "stat.csv";
const ERROR_FILE: &str = "errors.log";
const MESSAGE_FILE: &str = "messages.log";
const STDOUT_FILE: &str = "stdout.txt";

/// A sipp process started by [`Sipp::spawn`].
pub struct Sipp {
    label: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    started: Instant,
}

impl Sipp {
    /// Starts `sipp args` in `ns` (`ip netns exec`, which execs sipp in place, so the child's
    /// pid is sipp's). Adds `-nostdin`, the stat file (written every second, and once more on
    /// exit), the error log, the message file name (used when `args` has `-trace_msg`) and
    /// `-timeout` of `limit` as sipp's own bound; [`Sipp::wait`] enforces it again.
    pub fn spawn(ns: &Netns, label: &str, args: &[&str], limit: Duration) -> Self {
        require_sipp();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sipp-{label}-"))
            .tempdir()
            .expect("a directory for sipp's files");
        let mut full: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        full.extend(
            [
                "-nostdin",
                "-trace_stat",
                "-stf",
                STAT_FILE,
                "-fd",
                "1",
                "-trace_err",
                "-error_file",
                ERROR_FILE,
                "-message_file",
                MESSAGE_FILE,
                "-timeout",
            ]
            .map(str::to_owned),
        );
        full.push(format!("{}s", limit.as_secs().max(1)));
        let stdout = File::create(dir.path().join(STDOUT_FILE)).expect("sipp's stdout file");
        let stderr = stdout.try_clone().expect("sipp's stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sipp"])
            .args(&full)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting sipp ({label}) in {}: {e}", ns.name()));
        Self {
            label: label.to_owned(),
            child: Some(child),
            dir,
            args: full,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// True once sipp has written its first statistics row: its sockets are bound and it is
    /// processing its scenario.
    pub fn ready(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join(STAT_FILE))
            .map(|s| s.lines().count() >= 2)
            .unwrap_or(false)
    }

    /// Waits until [`Sipp::ready`], or fails with what sipp printed.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ready() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let run = self.finish(status);
                panic!("sipp ({}) exited before it was ready:\n{run}", run.label);
            }
            assert!(
                Instant::now() < deadline,
                "sipp ({}) wrote no statistics within 10 s",
                self.label
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for sipp to finish by itself (`-m` calls done, or its `-timeout`), at most
    /// `limit`; past it sipp is killed and the test fails with what it printed.
    pub fn wait(mut self, limit: Duration) -> SippRun {
        let deadline = self.started + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return self.finish(status);
            }
            if Instant::now() >= deadline {
                let status = self.kill(libc::SIGKILL);
                let run = self.finish(status);
                panic!(
                    "sipp ({}) still running after {limit:?}, killed:\n{run}",
                    run.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops a server-side sipp (it never finishes by itself) with SIGTERM, on which it writes
    /// its final statistics and exits; SIGKILL if it does not within 5 s.
    pub fn stop(mut self) -> SippRun {
        let status = self.kill(libc::SIGTERM);
        self.finish(status)
    }

    fn kill(&mut self, signal: libc::c_int) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        // SAFETY: the pid of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(&mut self, status: ExitStatus) -> SippRun {
        self.child = None;
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        let stats = read(STAT_FILE)
            .ok()
            .and_then(|csv| Stats::parse(&csv))
            .unwrap_or_default();
        let messages = read(MESSAGE_FILE)
            .map(|log| parse_messages(&log))
            .unwrap_or_default();
        SippRun {
            label: self.label.clone(),
            args: self.args.join(" "),
            status,
            elapsed: self.started.elapsed(),
            stats,
            stdout: read(STDOUT_FILE).unwrap_or_default(),
            errors: read(ERROR_FILE).unwrap_or_default(),
            messages,
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        // A test that fails while sipp runs must not leave it behind.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last row of sipp's `-trace_stat` CSV, by column name.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    columns: HashMap<String, String>,
}

impl Stats {
    fn parse(csv: &str) -> Option<Self> {
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next()?;
        let last = lines.next_back()?;
        let columns = header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Self { columns })
    }

    /// The cumulative value of counter `name` (`SuccessfulCall`, `FailedCall`,
    /// `Retransmissions`, `IncomingCall`, ...), i.e. column `name(C)`.
    pub fn total(&self, name: &str) -> Option<u64> {
        self.columns.get(&format!("{name}(C)"))?.trim().parse().ok()
    }
}

/// One message in sipp's `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct TracedMessage {
    pub received: bool,
    /// The request or status line.
    pub start_line: String,
    /// The host of the topmost Via header (who sent the request, for sipp's own clients).
    pub via_host: Option<String>,
    /// The port of the topmost Via header, when it names one.
    pub via_port: Option<u16>,
    /// The user part of the From header's URI (`sip:USER@...`): the extension a REGISTER is
    /// for, and the one its answer names.
    pub from_user: Option<String>,
    /// The message carries an Authorization header (a REGISTER answering a challenge).
    pub credentials: bool,
}

impl TracedMessage {
    /// The method of a request, `None` for a response.
    pub fn method(&self) -> Option<&str> {
        if self.start_line.starts_with("SIP/2.0") {
            return None;
        }
        self.start_line.split(' ').next()
    }
}

fn parse_messages(log: &str) -> Vec<TracedMessage> {
    let mut messages = Vec::new();
    let mut blocks = log.split("\n-----------------------------------------------");
    // A message log starts with a separator line too.
    if let Some(first) = blocks.next()
        && let Some(m) = parse_block(first.trim_start_matches('-'))
    {
        messages.push(m);
    }
    messages.extend(blocks.filter_map(parse_block));
    messages
}

/// A block is ` <timestamp>\n<UDP message received|sent ...>\n\n<message>`.
fn parse_block(block: &str) -> Option<TracedMessage> {
    let mut lines = block.lines().skip(1);
    let direction = lines.next()?;
    let received = direction.contains("message received");
    if !received && !direction.contains("message sent") {
        return None;
    }
    let mut lines = lines.skip_while(|l| l.trim().is_empty());
    let start_line = lines.next()?.trim().to_owned();
    let headers: Vec<&str> = lines.take_while(|l| !l.trim().is_empty()).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|l| l.to_ascii_lowercase().starts_with(name))
            .copied()
    };
    let from_user = header("from:").and_then(|from| {
        let (_, rest) = from.split_once("sip:")?;
        Some(rest.split_once('@')?.0.to_owned())
    });
    let credentials = header("authorization:").is_some();
    // "Via: SIP/2.0/UDP host:port;branch=..."
    let sent_by = header("via:").and_then(|via| {
        let sent_by = via.split_whitespace().nth(2)?;
        Some(sent_by.split(';').next()?.to_owned())
    });
    let (via_host, via_port) = match sent_by.as_deref().map(|s| (s, s.rsplit_once(':'))) {
        Some((_, Some((host, port)))) if port.chars().all(|c| c.is_ascii_digit()) => {
            (Some(host.to_owned()), port.parse().ok())
        }
        Some((host_port, _)) => (Some(host_port.to_owned()), None),
        None => (None, None),
    };
    Some(TracedMessage {
        received,
        start_line,
        via_host,
        via_port,
        from_user,
        credentials,
    })
}

/// What a finished sipp run left behind.
pub struct SippRun {
    pub label: String,
    pub args: String,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stats: Stats,
    pub stdout: String,
    pub errors: String,
    /// Empty unless the run had `-trace_msg`.
    pub messages: Vec<TracedMessage>,
}

impl SippRun {
    /// sipp's exit code: 0 all calls succeeded, 1 some failed, 97 internal exit, 99 no calls,
    /// 255/254 fatal errors; `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Cumulative counter `name` from the stat file; fails naming the run when it is missing.
    pub fn total(&self, name: &str) -> u64 {
        self.stats
            .total(name)
            .unwrap_or_else(|| panic!("sipp ({}) reported no {name}(C):\n{self}", self.label))
    }

    pub fn successful(&self) -> u64 {
        self.total("SuccessfulCall")
    }

    pub fn failed(&self) -> u64 {
        self.total("FailedCall")
    }

    pub fn retransmissions(&self) -> u64 {
        self.total("Retransmissions")
    }

    /// Requests with `method` this sipp received whose top Via names `via_host`.
    pub fn received_requests(&self, method: &str, via_host: &str) -> usize {
        self.messages
            .iter()
            .filter(|m| {
                m.received && m.method() == Some(method) && m.via_host.as_deref() == Some(via_host)
            })
            .count()
    }

    /// Responses this sipp sent whose status line starts with `status` (e.g. "403").
    pub fn sent_responses(&self, status: &str) -> usize {
        let prefix = format!("SIP/2.0 {status}");
        self.messages
            .iter()
            .filter(|m| !m.received && m.start_line.starts_with(&prefix))
            .count()
    }

    /// The distinct Via ports of the requests with `method` this sipp received from `via_host`:
    /// how many sockets (phones behind a NAT) sent them.
    pub fn via_ports(&self, method: &str, via_host: &str) -> std::collections::BTreeSet<u16> {
        self.messages
            .iter()
            .filter(|m| {
                m.received && m.method() == Some(method) && m.via_host.as_deref() == Some(via_host)
            })
            .filter_map(|m| m.via_port)
            .collect()
    }

    /// REGISTERs this sipp received that carried credentials (answered a challenge): the
    /// passwords a guesser got to try.
    pub fn received_with_credentials(&self, method: &str) -> usize {
        self.messages
            .iter()
            .filter(|m| m.received && m.method() == Some(method) && m.credentials)
            .count()
    }

    /// Requests with `method` this sipp received, from every sender.
    pub fn received_total(&self, method: &str) -> usize {
        self.messages
            .iter()
            .filter(|m| m.received && m.method() == Some(method))
            .count()
    }

    /// The distinct users (From) of the responses this sipp sent whose status line starts with
    /// one of `statuses`: the extensions a scanner had answered.
    pub fn users_answered(&self, statuses: &[&str]) -> std::collections::BTreeSet<String> {
        self.messages
            .iter()
            .filter(|m| {
                !m.received
                    && statuses
                        .iter()
                        .any(|s| m.start_line.starts_with(&format!("SIP/2.0 {s}")))
            })
            .filter_map(|m| m.from_user.clone())
            .collect()
    }

    /// Responses this sipp sent whose status line starts with `status`, to requests of user
    /// `user` (From).
    pub fn sent_responses_to(&self, status: &str, user: &str) -> usize {
        let prefix = format!("SIP/2.0 {status}");
        self.messages
            .iter()
            .filter(|m| {
                !m.received
                    && m.start_line.starts_with(&prefix)
                    && m.from_user.as_deref() == Some(user)
            })
            .count()
    }

    /// Asserts the exit code, quoting the run when it differs.
    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code(),
            Some(expected),
            "sipp ({}) should have exited with {expected}:\n{self}",
            self.label
        );
    }
}

impl fmt::Display for SippRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let head = |text: &str, n: usize| text.lines().take(n).collect::<Vec<_>>().join("\n");
        writeln!(
            f,
            "--- sipp ({}) {}, after {:.1?}: sipp {}",
            self.label, self.status, self.elapsed, self.args
        )?;
        writeln!(f, "--- last screen:\n{}", tail(&self.stdout, 45))?;
        writeln!(f, "--- first errors:\n{}", head(&self.errors, 12))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_read_the_last_cumulative_row() {
        let csv = "A;SuccessfulCall(P);SuccessfulCall(C);FailedCall(C);\n\
                   x;0;0;0;\n\
                   y;3;17;2;\n";
        let stats = Stats::parse(csv).unwrap();
        assert_eq!(stats.total("SuccessfulCall"), Some(17));
        assert_eq!(stats.total("FailedCall"), Some(2));
        assert_eq!(stats.total("Retransmissions"), None);
    }

    #[test]
    fn message_log_blocks_give_direction_start_line_and_via() {
        let log = "----------------------------------------------- 2026-01-01 00:00:00.1\n\
                   UDP message received [348] bytes :\n\n\
                   REGISTER sip:203.0.113.1 SIP/2.0\n\
                   Via: SIP/2.0/UDP 198.51.100.10:5061;branch=z9hG4bK-1\n\
                   From: <sip:200@sip-xdp.test>\n\n\n\
                   ----------------------------------------------- 2026-01-01 00:00:00.2\n\
                   UDP message sent (331 bytes):\n\n\
                   SIP/2.0 401 Unauthorized\n\
                   Via: SIP/2.0/UDP 198.51.100.10:5061;branch=z9hG4bK-1\n\n";
        let messages = parse_messages(log);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].received);
        assert_eq!(messages[0].method(), Some("REGISTER"));
        assert_eq!(messages[0].via_host.as_deref(), Some("198.51.100.10"));
        assert_eq!(messages[0].via_port, Some(5061));
        assert_eq!(messages[0].from_user.as_deref(), Some("200"));
        assert!(!messages[1].received);
        assert_eq!(messages[1].method(), None);
        assert_eq!(messages[1].start_line, "SIP/2.0 401 Unauthorized");
    }
}
