//! The Debian package: `cargo xtask deb` builds it, `dpkg -i` installs it on this machine, and
//! what it installed is checked with the tools an operator uses (the binary itself, man, bash,
//! systemd-analyze, dpkg-query, systemctl); then `dpkg --purge` must detach what is still
//! attached and leave nothing behind.
//!
//! Root only. It refuses to run when sip-xdp is already installed here (as a package or by hand
//! under /usr/sbin, /etc or /var/lib): the purge at the end would take the operator's
//! installation with it. The checks of a unit's runtime state need systemd as PID 1; where init
//! is something else (this VM's is not systemd) they are skipped, and the test says so. The
//! units themselves are checked everywhere (systemd-analyze verify runs without a manager).
//!
//! The package holds the release build: from a cold target directory that build is most of
//! this test's time (about 5 minutes on 2 cores); warm, the test takes about 6 s.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use sip_xdp_tests::{
    harness::require_root,
    netns::{SERVER_IF, VethPair},
};

const PACKAGE: &str = "sip-xdp";
const BIN: &str = "/usr/sbin/sip-xdp";
const UNIT: &str = "/lib/systemd/system/sip-xdp.service";
const TEMPLATE: &str = "/lib/systemd/system/sip-xdp@.service";
const CONFIG: &str = "/etc/sip-xdp/sip-xdp.toml";
const DEFAULTS: &str = "/etc/default/sip-xdp";
const FAIL2BAN_ACTION: &str = "/etc/fail2ban/action.d/sip-xdp.conf";
const CONTRIB_DIR: &str = "/usr/share/sip-xdp";
const COPYRIGHT: &str = "/usr/share/doc/sip-xdp/copyright";
const MAN_DIR: &str = "/usr/share/man/man8";
const MAIN_PAGE: &str = "/usr/share/man/man8/sip-xdp.8.gz";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/sip-xdp";
const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_sip-xdp";
const FISH_COMPLETION: &str = "/usr/share/fish/vendor_completions.d/sip-xdp.fish";
/// Where the plain unit and the CLI keep their pins and state by default.
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sip-xdp";
const STATE_DIR: &str = "/var/lib/sip-xdp";

/// Every path the package installs or the purge must remove.
const OWNED_PATHS: &[&str] = &[
    BIN,
    UNIT,
    TEMPLATE,
    CONFIG,
    DEFAULTS,
    MAIN_PAGE,
    BASH_COMPLETION,
    ZSH_COMPLETION,
    FISH_COMPLETION,
    FAIL2BAN_ACTION,
    CONTRIB_DIR,
    COPYRIGHT,
    "/etc/sip-xdp",
    DEFAULT_PIN_DIR,
    STATE_DIR,
];

#[test]
fn deb_installs_documents_and_purges_cleanly() {
    sip_xdp_tests::needs_root!();
    require_root();
    refuse_if_installed();

    let root = workspace_root();
    let started = Instant::now();
    let deb = build_deb(&root);
    eprintln!(
        "built {} in {:.1} s",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    let version = env!("CARGO_PKG_VERSION");
    check_control(&deb, version);

    let installed = Installed::install(&deb);
    check_binary(&root, version);
    check_man_pages();
    check_completions();
    check_units(&root);
    check_conffiles(&root);
    check_nothing_started();
    purge_detaches_and_removes_everything(installed);
}

/// The purge at the end must only ever remove what this test installed.
fn refuse_if_installed() {
    let query = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let status = stdout(&query);
    assert!(
        !status.contains("installed") && !status.contains("config-files"),
        "the {PACKAGE} package is already on this machine ({status}); this test installs and \
         purges it, so it refuses to run here: `dpkg --purge {PACKAGE}` first if that copy may go"
    );
    for path in OWNED_PATHS {
        assert!(
            !Path::new(path).exists(),
            "{path} exists (a sip-xdp installed by hand, or a running one?); this test's purge \
             would remove it, so it refuses to run: move it away first"
        );
    }
}

fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_owned()
}

/// `cargo xtask deb`, the command the README gives; prints the .deb's path last.
fn build_deb(root: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = ok(Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--", "deb"])
        .current_dir(root));
    let path = PathBuf::from(
        out.lines()
            .last()
            .expect("xtask deb printed nothing")
            .trim(),
    );
    assert!(
        path.extension().is_some_and(|e| e == "deb") && path.is_file(),
        "xtask deb did not name a .deb: {out}"
    );
    assert!(path.starts_with(root.join("target/debian")), "{path:?}");
    path
}

fn check_control(deb: &Path, version: &str) {
    let field = |name: &str| {
        ok(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
            .trim()
            .to_owned()
    };
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(
        field("Depends").split(',').any(|d| d.trim() == "libc6"),
        "{}",
        field("Depends")
    );
    assert!(field("Maintainer").contains('<'), "{}", field("Maintainer"));
    assert!(
        field("Description").contains("SIP"),
        "{}",
        field("Description")
    );
    // --root-owner-group: nothing in the archive belongs to the build user.
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for line in contents.lines() {
        assert!(line.contains(" root/root "), "not owned by root: {line}");
    }
    for path in [
        BIN,
        UNIT,
        TEMPLATE,
        CONFIG,
        DEFAULTS,
        MAIN_PAGE,
        FAIL2BAN_ACTION,
        COPYRIGHT,
    ] {
        assert!(
            contents.contains(&format!(".{path}")),
            "{path} is not in the package:\n{contents}"
        );
    }
}

/// Installed by this test; purged on drop, so a failed assert does not leave it behind.
struct Installed {
    purged: bool,
}

impl Installed {
    fn install(deb: &Path) -> Self {
        let out = run(Command::new("dpkg").arg("-i").arg(deb));
        let installed = Self { purged: false };
        assert!(
            out.status.success(),
            "dpkg -i failed: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        installed
    }

    fn purge(&mut self) -> String {
        self.purged = true;
        ok(Command::new("dpkg").args(["--purge", PACKAGE]))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).status();
        }
    }
}

fn check_binary(root: &Path, version: &str) {
    assert_eq!(
        ok(Command::new(BIN).arg("--version")).trim(),
        format!("sip-xdp {version}")
    );
    // The release build carries a symbol table; the packaged copy must not.
    let sections = |path: &Path| ok(Command::new("readelf").arg("-S").arg("-W").arg(path));
    let release = root.join("target/release/sip-xdp");
    assert!(
        sections(&release).contains(".symtab"),
        "{} has no symbol table to strip",
        release.display()
    );
    assert!(
        !sections(Path::new(BIN)).contains(".symtab"),
        "{BIN} is not stripped"
    );

    // Without --config the installed binary finds the installed conffile; that file is the
    // commented default, so it must show exactly the built-in defaults (an empty file).
    let shown = ok(Command::new(BIN).args(["config", "show"]));
    let (header, body) = shown.split_once('\n').expect("config show output");
    assert!(header.contains(CONFIG), "{header}");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let defaults = ok(Command::new(BIN)
        .args(["config", "show", "--config"])
        .arg(empty.path()));
    assert_eq!(body, defaults.split_once('\n').unwrap().1);
    ok(Command::new(BIN).args(["config", "check", CONFIG]));
}

/// The subcommands `sip-xdp --help` lists (clap's own view), without `help`.
fn subcommands(args: &[&str]) -> Vec<String> {
    let help = ok(Command::new(BIN).args(args).arg("--help"));
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Long options `sip-xdp ARGS --help` lists (the option lines, not the prose).
fn long_options(args: &[&str]) -> Vec<String> {
    let help = ok(Command::new(BIN).args(args).arg("--help"));
    let mut options = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        let names = line.split("  ").next().unwrap();
        options.extend(
            names
                .split_whitespace()
                .filter(|w| w.starts_with("--"))
                .map(|w| {
                    w.trim_end_matches(',')
                        .split(['=', '<'])
                        .next()
                        .unwrap()
                        .to_owned()
                }),
        );
    }
    options
}

fn man(page: &str) -> String {
    let out = run(Command::new("man")
        .args(["--warnings", "-l", page])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8"));
    assert!(
        out.status.success(),
        "man -l {page}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "groff warns about {page}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn check_man_pages() {
    // man finds the page by name, not only by path.
    assert_eq!(
        ok(Command::new("man").args(["-w", "8", "sip-xdp"])).trim(),
        MAIN_PAGE
    );
    let main = man(MAIN_PAGE);
    assert!(main.starts_with("SIP-XDP(8)"), "{main}");
    let top = subcommands(&[]);
    assert!(top.len() >= 9, "sip-xdp --help lists {top:?}");
    for sub in &top {
        assert!(
            main.contains(&format!("sip-xdp-{sub}(8)")),
            "sip-xdp(8) does not list {sub}:\n{main}"
        );
        // Each subcommand (and sub-subcommand) has its page, with every option clap knows.
        let mut pages = vec![vec![sub.clone()]];
        pages.extend(
            subcommands(&[sub])
                .into_iter()
                .map(|s| vec![sub.clone(), s]),
        );
        for words in pages {
            let page = format!("{MAN_DIR}/sip-xdp-{}.8.gz", words.join("-"));
            let text = man(&page);
            let args: Vec<&str> = words.iter().map(String::as_str).collect();
            for option in long_options(&args) {
                assert!(text.contains(&option), "{page} lacks {option}:\n{text}");
            }
        }
    }
    for file in ["/etc/sip-xdp/sip-xdp.toml", "/etc/default/sip-xdp"] {
        assert!(main.contains(file), "sip-xdp(8) FILES lacks {file}");
    }
}

/// Completes `words` (the last one being typed) with the installed bash completion.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source {BASH_COMPLETION}
         spec=$(complete -p sip-xdp) || exit 3
         func=$(printf '%s\\n' \"$spec\" | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')
         COMP_WORDS=({words})
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
         COMP_LINE=\"${{COMP_WORDS[*]}}\"
         COMP_POINT=${{#COMP_LINE}}
         \"$func\" sip-xdp \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    ok(Command::new("bash").arg("--norc").arg("-c").arg(script))
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

fn check_completions() {
    let spec = ok(Command::new("bash").args([
        "--norc",
        "-c",
        &format!("source {BASH_COMPLETION} && complete -p sip-xdp"),
    ]));
    assert!(
        spec.contains(" -F ") && spec.trim_end().ends_with(" sip-xdp"),
        "{spec}"
    );
    let top = bash_complete(&["sip-xdp", ""]);
    for sub in subcommands(&[]) {
        assert!(top.contains(&sub), "bash completes {top:?}, not {sub}");
    }
    let run_opts = bash_complete(&["sip-xdp", "run", "--"]);
    for option in long_options(&["run"]) {
        assert!(
            run_opts.contains(&option),
            "bash completes `sip-xdp run --` to {run_opts:?}, not {option}"
        );
    }
    assert_eq!(bash_complete(&["sip-xdp", "ban", "l"]), ["list"]);

    for (shell, file) in [("zsh", ZSH_COMPLETION), ("fish", FISH_COMPLETION)] {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        for sub in subcommands(&[]) {
            assert!(text.contains(&sub), "{file} lacks {sub}");
        }
        // Syntax-checked only where the shell is installed (neither is on this VM).
        match Command::new(shell).arg("-n").arg(file).output() {
            Ok(out) => assert!(
                out.status.success(),
                "{shell} -n {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => eprintln!("{shell} is not installed: {file} not syntax-checked"),
        }
    }
}

fn check_units(root: &Path) {
    assert_eq!(
        std::fs::read(UNIT).unwrap(),
        std::fs::read(root.join("etc/sip-xdp.service")).unwrap()
    );
    assert_eq!(
        std::fs::read(TEMPLATE).unwrap(),
        std::fs::read(root.join("etc/sip-xdp@.service")).unwrap()
    );
    // verify loads each unit into a test-mode manager: syntax, unknown keys, and whether the
    // programs it runs exist. Warnings do not change its exit status, so any output fails too.
    for unit in [UNIT, TEMPLATE] {
        let out = run(Command::new("systemd-analyze").args(["verify", unit]));
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {unit}: {}\n{text}",
            out.status
        );
    }

    // The plain unit's refusal while no interface is configured. systemd turns `$$` into `$`
    // and hands the quoted script to /bin/sh; this does the same for that one line and runs it
    // with SIP_XDP_IFACES as the shipped /etc/default/sip-xdp sets it, then with an interface.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let script = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("the unit's ExecStartPre check")
        .replace("$$", "$");
    let shipped = ok(Command::new("sh").args([
        "-c",
        &format!(". {DEFAULTS}; printf '%s' \"$SIP_XDP_IFACES\""),
    ]));
    assert_eq!(shipped, "", "{DEFAULTS} must not name an interface");
    let refused = run(Command::new("sh")
        .args(["-c", &script])
        .env("SIP_XDP_IFACES", &shipped));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("/etc/default/sip-xdp"),
        "{}: {message}",
        refused.status
    );
    let accepted = run(Command::new("sh")
        .args(["-c", &script])
        .env("SIP_XDP_IFACES", "--iface eth0"));
    assert!(accepted.status.success(), "{:?}", accepted);
}

fn check_conffiles(root: &Path) {
    let listed = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    let conffiles: Vec<(&str, &str)> = listed
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    let paths: Vec<&str> = conffiles.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths, [CONFIG, DEFAULTS, FAIL2BAN_ACTION], "{listed}");
    for (path, md5) in conffiles {
        let sum = ok(Command::new("md5sum").arg(path));
        assert_eq!(sum.split_whitespace().next(), Some(md5), "{path}");
    }
    assert_eq!(
        std::fs::read(CONFIG).unwrap(),
        std::fs::read(root.join("etc/sip-xdp.toml")).unwrap()
    );
    // fail2ban finds the action where its jails look, and the rest of contrib/ ships as is.
    assert_eq!(
        std::fs::read(FAIL2BAN_ACTION).unwrap(),
        std::fs::read(root.join("contrib/fail2ban/action.d/sip-xdp.conf")).unwrap()
    );
    let example = "contrib/fail2ban/jail.d/sip-xdp-asterisk.conf.example";
    assert_eq!(
        std::fs::read(Path::new(CONTRIB_DIR).join(example)).unwrap(),
        std::fs::read(root.join(example)).unwrap()
    );
}

fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn check_nothing_started() {
    // Enablement is read from the unit files and /etc/systemd/system: no manager needed.
    for unit in ["sip-xdp.service", "sip-xdp@.service"] {
        let state = stdout(&run(Command::new("systemctl").args(["is-enabled", unit])));
        assert_eq!(state.trim(), "disabled", "{unit}");
    }
    let wants = Command::new("sh")
        .args(["-c", "ls /etc/systemd/system/*.wants/ 2>/dev/null"])
        .output()
        .unwrap();
    assert!(!stdout(&wants).contains("sip-xdp"), "{}", stdout(&wants));
    assert!(
        !Path::new(DEFAULT_PIN_DIR).exists() && !Path::new(STATE_DIR).exists(),
        "installing created {DEFAULT_PIN_DIR} or {STATE_DIR}: something ran"
    );
    // No process runs the installed binary.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(exe) = std::fs::read_link(entry.path().join("exe")) {
            assert_ne!(
                exe,
                Path::new(BIN),
                "pid {:?} runs {BIN}",
                entry.file_name()
            );
        }
    }

    if !systemd_is_pid1() {
        eprintln!(
            "systemd is not PID 1 here: skipped `systemctl is-active` and starting the unit \
             with no interface configured"
        );
        return;
    }
    for unit in ["sip-xdp.service", "sip-xdp@dummy.service"] {
        let state = stdout(&run(Command::new("systemctl").args(["is-active", unit])));
        assert_eq!(state.trim(), "inactive", "{unit}");
    }
    // With SIP_XDP_IFACES empty the unit must refuse, and say why in the journal.
    let start = run(Command::new("systemctl").args(["start", "sip-xdp.service"]));
    assert!(
        !start.status.success(),
        "sip-xdp.service started with no interface"
    );
    // journald may file the script's stderr a moment after systemctl has returned.
    let deadline = Instant::now() + Duration::from_secs(5);
    let journal = loop {
        let journal = ok(Command::new("journalctl").args([
            "-u",
            "sip-xdp.service",
            "--no-pager",
            "-n",
            "50",
        ]));
        if journal.contains("no interface to filter") || Instant::now() > deadline {
            break journal;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = run(Command::new("systemctl").args(["stop", "sip-xdp.service"]));
    let _ = run(Command::new("systemctl").args(["reset-failed", "sip-xdp.service"]));
    assert!(
        journal.contains("no interface to filter"),
        "journal of sip-xdp.service:\n{journal}"
    );
}

/// Something still attached at removal (`sip-xdp attach`, or a daemon run with
/// --keep-attached) is detached by the prerm; the purge removes pins, state and files.
fn purge_detaches_and_removes_everything(mut installed: Installed) {
    let net = VethPair::new().expect("test namespaces");
    let in_server = |args: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", net.server.path().display()))
            .arg("--")
            .arg(BIN)
            .args(args)
            .env_remove("SIP_XDP_PIN_DIR")
            .env_remove("SIP_XDP_STATE_DIR");
        ok(&mut cmd)
    };
    // The package's default directories, as an operator gets them in a network namespace of
    // its own: the namespace's (sip-xdp-netns-NAME, /var/lib/sip-xdp/netns-NAME), which the
    // prerm finds like an instance's.
    let attached = in_server(&["attach", "--iface", SERVER_IF]);
    let netns_pin_dir = format!("{DEFAULT_PIN_DIR}-netns-{}", net.server.name());
    assert!(attached.contains(&netns_pin_dir), "{attached}");
    in_server(&["ban", "add", "203.0.113.7", "--for", "1h"]);
    // `ip link` names an attached program as prog/xdp (the interface names contain "xdp").
    let link = net.server.ip(&["link", "show", SERVER_IF]).unwrap();
    assert!(link.contains("prog/xdp"), "{link}");
    assert!(
        Path::new(STATE_DIR)
            .join(format!("netns-{}", net.server.name()))
            .join("state.json")
            .is_file()
    );

    let log = installed.purge();
    assert!(
        log.contains(&format!("{SERVER_IF}: detached")),
        "the prerm did not detach {SERVER_IF}:\n{log}"
    );
    let link = net.server.ip(&["link", "show", SERVER_IF]).unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "still attached after purge: {link}"
    );
    for path in OWNED_PATHS {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    assert!(
        !Path::new(&netns_pin_dir).exists(),
        "{netns_pin_dir} is left after the purge"
    );
    let pages = std::fs::read_dir(MAN_DIR)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sip-xdp"))
        .count();
    assert_eq!(pages, 0, "man pages left in {MAN_DIR}");
    let status = stdout(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Status}",
        PACKAGE,
    ])));
    assert!(!status.contains("installed"), "{status}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs, asserts success, returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}
