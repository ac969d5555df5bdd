//! `cargo xtask deb`: the Debian package, staged by hand and packed with `dpkg-deb` (no
//! cargo-deb to install, so CI stays fast). The man pages and shell completions are generated
//! from the same clap definitions the binary parses its arguments with, so they cannot drift.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::{
    Man,
    roff::{Roff, bold, italic, roman},
};
use sip_xdp::cli::Cli;

const PACKAGE: &str = "sip-xdp";
/// Installed as conffiles: dpkg keeps the operator's edits across upgrades and asks on conflicts.
const CONFFILES: &[&str] = &[
    "/etc/sip-xdp/sip-xdp.toml",
    "/etc/default/sip-xdp",
    "/etc/fail2ban/action.d/sip-xdp.conf",
];
const MAN_SECTION: &str = "8";

/// Builds `target/debian/sip-xdp_VERSION_ARCH.deb` and prints its path on stdout.
pub fn run() -> Result<()> {
    let deb = build()?;
    println!("{}", deb.display());
    Ok(())
}

fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let version = Cli::command()
        .get_version()
        .context("the sip-xdp command has no version")?
        .to_owned();
    let arch = command_stdout(Command::new("dpkg").arg("--print-architecture"))
        .context("cannot ask dpkg for the architecture (is this a Debian system?)")?;

    eprintln!("== cargo build --release --package sip-xdp --bin sip-xdp");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_cmd(
        Command::new(cargo)
            .args([
                "build",
                "--release",
                "--package",
                "sip-xdp",
                "--bin",
                "sip-xdp",
            ])
            .current_dir(&root),
    )?;
    let binary = target.join("release/sip-xdp");
    if fs::metadata(&binary).is_err() {
        bail!("cargo built sip-xdp but {} is missing", binary.display());
    }

    let out_dir = target.join("debian");
    let stage = out_dir.join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    eprintln!("== staging {}", stage.display());

    let sbin = stage.join("usr/sbin/sip-xdp");
    copy(&binary, &sbin, 0o755)?;
    run_cmd(Command::new("strip").arg("--strip-unneeded").arg(&sbin))
        .context("cannot strip the binary (apt-get install binutils)")?;

    let units = stage.join("lib/systemd/system");
    copy(
        &root.join("etc/sip-xdp.service"),
        &units.join("sip-xdp.service"),
        0o644,
    )?;
    copy(
        &root.join("etc/sip-xdp@.service"),
        &units.join("sip-xdp@.service"),
        0o644,
    )?;
    copy(
        &root.join("etc/sip-xdp.toml"),
        &stage.join("etc/sip-xdp/sip-xdp.toml"),
        0o644,
    )?;
    copy(
        &root.join("etc/default/sip-xdp"),
        &stage.join("etc/default/sip-xdp"),
        0o644,
    )?;

    // Where fail2ban looks for actions, so a jail needs only `action = sip-xdp`; harmless
    // without fail2ban.
    copy(
        &root.join("contrib/fail2ban/action.d/sip-xdp.conf"),
        &stage.join("etc/fail2ban/action.d/sip-xdp.conf"),
        0o644,
    )?;
    // The jail example, the Prometheus rules and the Grafana dashboard, as shipped in the repo.
    copy_tree(
        &root.join("contrib"),
        &stage.join("usr/share/sip-xdp/contrib"),
    )?;
    write(
        &stage.join("usr/share/doc/sip-xdp/copyright"),
        COPYRIGHT,
        0o644,
    )?;

    write_completions(&stage)?;
    write_man_pages(&stage.join("usr/share/man/man8"))?;

    let debian = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &root.join("packaging/deb").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    write(
        &debian.join("conffiles"),
        &CONFFILES
            .iter()
            .map(|c| format!("{c}\n"))
            .collect::<String>(),
        0o644,
    )?;
    write_md5sums(&stage)?;
    let template = fs::read_to_string(root.join("packaging/deb/control"))
        .context("cannot read packaging/deb/control")?;
    let control = template
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@MAINTAINER@", &maintainer())
        .replace(
            "@INSTALLED_SIZE@",
            &installed_size_kib(&stage, &debian)?.to_string(),
        );
    ensure!(
        !has_placeholder(&control),
        "packaging/deb/control has a placeholder xtask does not fill:\n{control}"
    );
    write(&debian.join("control"), &control, 0o644)?;
    normalize_dirs(&stage)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    eprintln!("== dpkg-deb --build {}", deb.display());
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&stage)
            .arg(&deb),
    )
    .with_context(|| format!("dpkg-deb could not pack {}", stage.display()))?;
    Ok(deb)
}

fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

/// `@NAME@`, as the control template spells what xtask fills in.
fn has_placeholder(text: &str) -> bool {
    let parts: Vec<&str> = text.split('@').collect();
    // Text between two '@' signs; the first and last parts have only one.
    parts.len() > 2
        && parts[1..parts.len() - 1].iter().any(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
}

/// DEBFULLNAME and DEBEMAIL as dch uses them, else the project's address.
fn maintainer() -> String {
    match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) if !name.is_empty() && !email.is_empty() => {
            format!("{name} <{email}>")
        }
        _ => "sip-xdp maintainers <sip-xdp@example.org>".to_owned(),
    }
}

fn write_completions(stage: &Path) -> Result<()> {
    let targets = [
        (Shell::Bash, "usr/share/bash-completion/completions/sip-xdp"),
        (Shell::Zsh, "usr/share/zsh/vendor-completions/_sip-xdp"),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d/sip-xdp.fish",
        ),
    ];
    for (shell, path) in targets {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), PACKAGE, &mut script);
        let mut script = String::from_utf8(script).context("completion script is not UTF-8")?;
        if shell == Shell::Bash {
            // clap_complete's bash script spells the state of `sip-xdp run` two ways when the
            // binary's name has a hyphen (clap-rs/clap#6421): the word loop sets
            // sip__xdp__subcmd__run, the case arms wait for sip__subcmd__xdp__subcmd__run, so
            // nothing after a subcommand completes. Spell the arms the way the loop does.
            script = script.replace("sip__subcmd__xdp", "sip__xdp");
        }
        write(&stage.join(path), &script, 0o644)?;
    }
    Ok(())
}

/// sip-xdp(8) with every subcommand listed, plus one page per subcommand (sip-xdp-run(8),
/// sip-xdp-allow-add(8), ...) with its options, the way git does it.
fn write_man_pages(dir: &Path) -> Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Sets the subcommands' display names (sip-xdp-run) the pages are named and linked by.
    cmd.build();
    let mut main = Vec::new();
    man(&cmd).render(&mut main)?;
    main.extend_from_slice(extra_sections().as_bytes());
    write_gz(&dir.join(format!("{PACKAGE}.{MAN_SECTION}")), &main)?;

    let mut pending: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    while let Some(sub) = pending.pop() {
        if sub.is_hide_set() {
            continue;
        }
        pending.extend(sub.get_subcommands().cloned());
        let page = man(&sub);
        let mut roff = Vec::new();
        page.render(&mut roff)?;
        write_gz(&dir.join(page.get_filename()), &roff)?;
    }
    Ok(())
}

fn man(cmd: &clap::Command) -> Man {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(MAN_SECTION)
        .manual("System Manager's Manual")
}

/// FILES and SEE ALSO for sip-xdp(8): what the package installs and where state lives, which
/// clap does not know about.
fn extra_sections() -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    let files: &[(&str, &str)] = &[
        (
            "/etc/sip-xdp/sip-xdp.toml",
            "The configuration (TOML, every key optional; the shipped file is the commented \
             built-in default). \"sip-xdp config check\" validates it, \"systemctl reload \
             sip-xdp\" applies it.",
        ),
        (
            "/etc/default/sip-xdp",
            "SIP_XDP_IFACES (the --iface flags; sip-xdp.service refuses to start while it is \
             empty) and SIP_XDP_ARGS for sip-xdp.service.",
        ),
        (
            "/etc/default/sip-xdp@IFACE",
            "Optional settings of the instance sip-xdp@IFACE.service: SIP_XDP_CONFIG, \
             SIP_XDP_METRICS (metrics are off by default for instances), SIP_XDP_ARGS.",
        ),
        (
            "/var/lib/sip-xdp/state.json",
            "Allow and deny lists, manual bans and saved automatic bans; an instance keeps its \
             own under /var/lib/sip-xdp/IFACE/.",
        ),
        (
            "/sys/fs/bpf/sip-xdp/",
            "The pinned program links and maps (bpffs); an instance uses /sys/fs/bpf/sip-xdp-IFACE/.",
        ),
        (
            "/lib/systemd/system/sip-xdp.service, /lib/systemd/system/sip-xdp@.service",
            "The daemon on the interfaces of /etc/default/sip-xdp, and one daemon per interface.",
        ),
    ];
    for (path, what) in files {
        roff.control("TP", []);
        roff.text([italic(*path)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("ip-link"),
        roman("(8), "),
        bold("bpftool"),
        roman("(8)"),
    ]);
    roff.render()
}

/// md5sums of every shipped file except the conffiles, which dpkg tracks itself.
fn write_md5sums(stage: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    files.retain(|f| {
        !f.starts_with("DEBIAN/") && !CONFFILES.iter().any(|c| c.trim_start_matches('/') == f)
    });
    files.sort();
    let sums = command_stdout(Command::new("md5sum").args(&files).current_dir(stage))?;
    write(&stage.join("DEBIAN/md5sums"), &format!("{sums}\n"), 0o644)
}

fn installed_size_kib(stage: &Path, debian: &Path) -> Result<u64> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    let mut kib = 0;
    for f in files.iter().filter(|f| !stage.join(f).starts_with(debian)) {
        let len = fs::metadata(stage.join(f))?.len();
        kib += len.div_ceil(1024);
    }
    Ok(kib)
}

/// Paths of regular files under `dir`, relative to `base`.
fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            let rel = path.strip_prefix(base).expect("under base");
            out.push(rel.to_str().context("non-UTF-8 path")?.to_owned());
        }
    }
    Ok(())
}

/// 0755 on every directory, whatever the umask made of them.
fn normalize_dirs(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            normalize_dirs(&path)?;
        }
    }
    Ok(())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sip-xdp

Files: *
Copyright: the sip-xdp authors
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
 The MIT license: Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the \"Software\"), to deal in the
 Software without restriction, including without limitation the rights to use, copy, modify,
 merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
 persons to whom the Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or
 substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
 INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
 PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
 FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
 OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
 DEALINGS IN THE SOFTWARE.
";

/// Copies the regular files under `from` to `to`, keeping the layout (mode 0644).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(from, from, &mut files)?;
    for rel in files {
        copy(&from.join(&rel), &to.join(&rel), 0o644)?;
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file =
        fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", to.display()))
}

/// Writes `path.gz`; `-n` leaves name and time out, so the same page gives the same bytes.
fn write_gz(path: &Path, bytes: &[u8]) -> Result<()> {
    write_bytes(path, bytes, 0o644)?;
    run_cmd(Command::new("gzip").args(["-9", "-n", "-f"]).arg(path))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

fn command_stdout(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)
        .context("output is not UTF-8")?
        .trim()
        .to_owned())
}
