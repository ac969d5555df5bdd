//! The setups the flood meets at the server: no filter, the nftables and iptables rulesets of
//! bench/h2h/, sip-xdp attached through its own CLI, and the two drop floors. Each is installed
//! in a fresh server namespace and goes with it.
use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, ensure};
use sip_xdp::{loader::PinDir, maps::SipMaps};
use sip_xdp_common::{MethodClass, Verdict};
use sip_xdp_tests::netns::{SERVER_IF, VethPair};

use super::{bpf, context::Context};

/// In every setup's allowlist, never sends: the lookup costs what it costs in production.
pub(super) const ALLOWLISTED: &str = "198.51.100.200/32";

/// The limits in all three filters (sip-xdp's defaults).
pub(super) const REGISTER_RATE_PER_S: f64 = 5.0;
pub(super) const REGISTER_BURST: u64 = 40;
const SIP_XDP_CONFIG: &str = "\
# cargo xtask h2h: the same limits as bench/h2h/nftables.nft and iptables.rules (the defaults)
[limits.register]
rate = \"5/s\"
burst = 40

[limits.invite]
rate = \"5/s\"
burst = 20
";

static NEXT_INSTALL: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Setup {
    NoFilter,
    Nftables,
    Iptables,
    SipXdp,
    /// References: the least each hook costs when it drops every packet to the SIP port.
    NftDropFloor,
    XdpDropFloor,
}

impl Setup {
    /// The head-to-head proper.
    pub(super) const MAIN: [Setup; 4] = [
        Setup::NoFilter,
        Setup::Nftables,
        Setup::Iptables,
        Setup::SipXdp,
    ];
    pub(super) const ALL: [Setup; 6] = [
        Setup::NoFilter,
        Setup::Nftables,
        Setup::Iptables,
        Setup::SipXdp,
        Setup::NftDropFloor,
        Setup::XdpDropFloor,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::Nftables => "nftables",
            Setup::Iptables => "iptables",
            Setup::SipXdp => "sip-xdp",
            Setup::NftDropFloor => "floor: nft drop",
            Setup::XdpDropFloor => "floor: XDP_DROP",
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            Setup::NoFilter => "nothing between the veth and the socket",
            Setup::Nftables => {
                "[nftables.nft](nftables.nft): netdev ingress on the server veth, `udp dport 5060` \
                 to a chain with the allowlist set, `@th,64,64` REGISTER compare, per-source \
                 dynamic set `limit rate over 5/second burst 40 packets` → drop"
            }
            Setup::Iptables => {
                "[iptables.rules](iptables.rules): raw PREROUTING, `--dport 5060` to a chain with \
                 the allowlist, `u32` REGISTER compare, `hashlimit --hashlimit-above 5/sec \
                 --hashlimit-burst 40 --hashlimit-mode srcip` → DROP"
            }
            Setup::SipXdp => {
                "`sip-xdp attach --mode native` (own pin and state dirs), REGISTER 5/s burst 40 \
                 (the defaults), allowlist entry added with `sip-xdp allow add`"
            }
            Setup::NftDropFloor => {
                "reference, not a limiter: one nftables rule at the same netdev ingress hook, \
                 `udp dport 5060 drop` — the least any nftables filter there costs per drop"
            }
            Setup::XdpDropFloor => {
                "reference, not a limiter: a two-instruction XDP program (`return XDP_DROP`) \
                 attached natively to the same veth — the least any XDP program there costs per \
                 drop, veth's own XDP overhead included"
            }
        }
    }

    pub(super) fn limits(self) -> bool {
        matches!(self, Setup::Nftables | Setup::Iptables | Setup::SipXdp)
    }

    pub(super) fn is_floor(self) -> bool {
        matches!(self, Setup::NftDropFloor | Setup::XdpDropFloor)
    }
}

/// Runs `program args` inside the namespace `netns` (`ip netns exec`), stdin from `stdin`.
fn netns_exec(netns: &str, program: &str, args: &[&str], stdin: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]).args(args);
    if let Some(path) = stdin {
        cmd.stdin(fs::File::open(path).with_context(|| format!("opening {}", path.display()))?);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running `ip netns exec {netns} {program}`"))?;
    ensure!(
        out.status.success(),
        "`ip netns exec {netns} {program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A sip-xdp installation of its own (pin dir, state dir, config file) driven through its CLI in
/// the server namespace; detached and purged on drop.
pub(super) struct SipXdpInstall {
    bin: PathBuf,
    netns: PathBuf,
    pub(super) pin_dir: PathBuf,
    state_dir: PathBuf,
    pub(super) config: PathBuf,
}

impl SipXdpInstall {
    pub(super) fn new(ctx: &Context, net: &VethPair) -> Result<Self> {
        let tag = format!(
            "sxdp-h2h-{}-{}",
            std::process::id(),
            NEXT_INSTALL.fetch_add(1, Ordering::Relaxed)
        );
        let state_dir = std::env::temp_dir().join(&tag);
        let install = Self {
            bin: ctx.bin.clone(),
            netns: net.server.path(),
            pin_dir: Path::new("/sys/fs/bpf").join(&tag),
            config: state_dir.join("sip-xdp.toml"),
            state_dir,
        };
        fs::create_dir_all(&install.state_dir)
            .with_context(|| format!("creating {}", install.state_dir.display()))?;
        fs::write(&install.config, SIP_XDP_CONFIG)
            .with_context(|| format!("writing {}", install.config.display()))?;
        Ok(install)
    }

    pub(super) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(&self.bin)
            .args(args)
            .env("SIP_XDP_PIN_DIR", &self.pin_dir)
            .env("SIP_XDP_STATE_DIR", &self.state_dir)
            .env_remove("SIP_XDP_LOG_FORMAT");
        cmd
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {} {}", self.bin.display(), args.join(" ")))?;
        ensure!(
            out.status.success(),
            "`sip-xdp {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(super) fn attach(&self) -> Result<()> {
        self.ok(&["allow", "add", ALLOWLISTED, "--comment", "h2h"])?;
        let config = self.config.to_str().context("config path is not UTF-8")?;
        self.ok(&[
            "attach", "--iface", SERVER_IF, "--mode", "native", "--config", config,
        ])?;
        Ok(())
    }

    /// Packets the program saw and dropped (all verdicts and methods), from the pinned
    /// counters.
    pub(super) fn counted(&self) -> Result<(u64, u64)> {
        let maps = SipMaps::open_pinned(&PinDir::new(&self.pin_dir))?;
        let counters = maps.counters()?;
        let sum = |drops_only: bool| -> u64 {
            Verdict::ALL
                .iter()
                .filter(|v| !drops_only || v.is_drop())
                .flat_map(|&v| MethodClass::ALL.map(|c| counters.packets(v, c)))
                .sum()
        };
        Ok((sum(false), sum(true)))
    }
}

impl Drop for SipXdpInstall {
    fn drop(&mut self) {
        // Also runs while an error unwinds: best effort, no panics.
        let _ = self.command(&["detach", "--all", "--purge"]).output();
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.state_dir);
    }
}

/// What a setup left in place that needs more than the namespace's deletion to go.
pub(super) enum Installed {
    Nothing,
    SipXdp(SipXdpInstall),
    /// The program's and the link's fds: closing the link detaches the program.
    XdpFloor(#[allow(dead_code)] (OwnedFd, OwnedFd)),
}

/// Loads the setup's filter into the fresh server namespace. The netfilter rules go with the
/// namespace; the sip-xdp installation detaches and purges when dropped.
pub(super) fn install(setup: Setup, ctx: &Context, net: &VethPair) -> Result<Installed> {
    let rules = ctx.root.join("bench/h2h");
    match setup {
        Setup::NoFilter => Ok(Installed::Nothing),
        Setup::Nftables => {
            let file = rules.join("nftables.nft");
            let file = file.to_str().context("path is not UTF-8")?;
            netns_exec(net.server.name(), "nft", &["-f", file], None)?;
            Ok(Installed::Nothing)
        }
        Setup::Iptables => {
            netns_exec(
                net.server.name(),
                "iptables-restore",
                &[],
                Some(&rules.join("iptables.rules")),
            )?;
            Ok(Installed::Nothing)
        }
        Setup::SipXdp => {
            let install = SipXdpInstall::new(ctx, net)?;
            install.attach()?;
            Ok(Installed::SipXdp(install))
        }
        Setup::NftDropFloor => {
            for command in [
                "add table netdev floor",
                "add chain netdev floor ingress { type filter hook ingress device \"sxdp-srv\" \
                 priority -500; policy accept; }",
                "add rule netdev floor ingress udp dport 5060 drop",
            ] {
                netns_exec(net.server.name(), "nft", &[command], None)?;
            }
            Ok(Installed::Nothing)
        }
        Setup::XdpDropFloor => Ok(Installed::XdpFloor(
            net.server
                .run(bpf::attach_xdp_drop)
                .context("attaching the XDP_DROP reference")?,
        )),
    }
}
