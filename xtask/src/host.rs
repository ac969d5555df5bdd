//! The machine `bench` and `h2h` run on: the facts their reports open with (`Machine`), and the
//! calling thread's placement while it measures (pinned to one CPU, SCHED_FIFO).
use std::{fmt::Write as _, fs, io, process::Command};

use anyhow::{Result, bail, ensure};

/// What every report states about the machine and the tree it was measured from.
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub commit: String,
}

/// Whether files git does not track make the tree count as changed in `Machine::commit`.
#[derive(Clone, Copy, Debug)]
pub enum Untracked {
    /// `git status --porcelain`: an untracked file is an uncommitted change.
    Count,
    /// `git status --porcelain --untracked-files=no`: only tracked files count.
    Ignore,
}

impl Machine {
    pub fn read(untracked: Untracked) -> Self {
        Self {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            cpu_model: cpu_model(),
            cpus: online_cpus(),
            commit: commit(untracked),
        }
    }
}

fn unknown() -> String {
    "unknown".to_owned()
}

/// The CPU's model name from /proc/cpuinfo, with its family and model numbers.
fn cpu_model() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let mut cpu_model = field("model name").unwrap_or_else(unknown);
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        let _ = write!(cpu_model, " (family {family}, model {model})");
    }
    cpu_model
}

/// The short hash of HEAD, marked when the tree has uncommitted changes.
fn commit(untracked: Untracked) -> String {
    let Some(rev) = command_output("git", &["rev-parse", "--short", "HEAD"]) else {
        return unknown();
    };
    let status: &[&str] = match untracked {
        Untracked::Count => &["status", "--porcelain"],
        Untracked::Ignore => &["status", "--porcelain", "--untracked-files=no"],
    };
    if command_output("git", status).is_some_and(|s| !s.is_empty()) {
        format!("{rev} + uncommitted changes")
    } else {
        rev
    }
}

/// CPUs online. Not available_parallelism(): that follows this thread's affinity, which
/// pinning narrows.
pub fn online_cpus() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// A command's standard output, trimmed; None when it cannot run or fails.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A /proc or /sys file, trimmed; "unknown" when it cannot be read.
pub fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| unknown())
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> Result<usize> {
    // SAFETY: no preconditions.
    let current = unsafe { libc::sched_getcpu() };
    ensure!(current >= 0, "sched_getcpu failed");
    Ok(current as usize)
}

/// Pins the calling thread (only it) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it. Only the calling thread is affected.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin a thread to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// SCHED_FIFO priority 1 for the calling thread while it measures (`on`), so other work on its
/// CPU (builds, say) does not run in the middle of a measurement; the kernel's RT throttling
/// still leaves that work 5% of each second. SCHED_OTHER again when not `on`. False when the
/// kernel refused.
pub fn set_realtime(on: bool) -> bool {
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
