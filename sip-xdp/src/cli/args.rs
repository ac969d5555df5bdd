//! The `sip-xdp` command line's definitions: every clap type lives here, and nothing else does.
//! The commands (one module each beside this one) turn them into the library's plain options.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};
use ipnet::IpNet;

use crate::{
    config::{self, LogFormat},
    control::Lift,
    loader::{self, AttachMode, DEFAULT_PIN_DIR},
    state::{BanOrigin, DEFAULT_STATE_DIR},
};

#[derive(Parser, Debug)]
#[command(
    name = "sip-xdp",
    version,
    about = "XDP rate limiter for SIP edges: drops REGISTER/INVITE floods and scanners at the NIC",
    after_help = "Quick start:\n  sudo sip-xdp attach --iface eth0      # filter now, no daemon needed\n  \
                  sudo sip-xdp status\n  sudo sip-xdp run --iface eth0         # the service: events, metrics, reload"
)]
pub struct Cli {
    /// bpffs directory holding the pinned maps and links (created if missing; bpffs is mounted
    /// there only from the host's mount namespace, see "From another namespace" in the README).
    #[arg(long, global = true, env = "SIP_XDP_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Directory of the state file (allow/deny lists and manual bans that survive reboots).
    #[arg(long, global = true, env = "SIP_XDP_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Log line format; overrides `log.format` in the config file.
    #[arg(long, global = true, value_enum, env = "SIP_XDP_LOG_FORMAT")]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service in the foreground: attach, pin, log ban events, serve metrics.
    ///
    /// Adopts an existing pinned attachment without losing counters, bans or lists.
    /// SIGHUP reloads the config file; SIGINT/SIGTERM detach and exit (unless --keep-attached).
    #[command(
        after_help = "Example:\n  sudo sip-xdp run --iface eth0 --config /etc/sip-xdp/sip-xdp.toml"
    )]
    Run(RunArgs),
    /// Attach to interfaces and exit; the filter keeps working with no process running.
    #[command(after_help = "Example:\n  sudo sip-xdp attach --iface eth0 --mode auto")]
    Attach(AttachArgs),
    /// Detach from interfaces; pinned maps (bans, counters, lists) stay for the next attach.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp detach --iface eth0\n  sudo sip-xdp detach --all --purge   # also drop pinned maps"
    )]
    Detach(DetachArgs),
    /// Show attachments, the config in force, counters, bans and table fill.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp status --output json\n  sip-xdp status --require-attached >/dev/null   (a start check, e.g. fail2ban's action)"
    )]
    Status(StatusArgs),
    /// Sources that are never limited (a NAT'd office, your own trunks).
    #[command(
        subcommand,
        after_help = "Examples:\n  sudo sip-xdp allow add 198.51.100.0/24 --comment office\n  sudo sip-xdp allow list"
    )]
    Allow(ListAction),
    /// Sources that are always dropped on SIP ports.
    #[command(
        subcommand,
        after_help = "Examples:\n  sudo sip-xdp deny add 203.0.113.0/24\n  sudo sip-xdp deny del 203.0.113.0/24"
    )]
    Deny(ListAction),
    /// Sources held to their rate limits but never banned, so never signalled to CrowdSec
    /// either: a SIP trunk, a registrar peer, a monitoring host. A forged burst in their name
    /// costs them the excess packets, not a ban.
    #[command(
        subcommand,
        after_help = "Examples:
  sudo sip-xdp protect add 198.51.100.200/32 --comment \"carrier trunk\"
  sudo sip-xdp protect list"
    )]
    Protect(ListAction),
    /// Manual bans (with an expiry), and lifting automatic bans.
    #[command(
        subcommand,
        after_help = "Examples:\n  sudo sip-xdp ban add 203.0.113.7 --for 2h\n  sudo sip-xdp ban del 203.0.113.7\n  sudo sip-xdp ban list --output json"
    )]
    Ban(BanAction),
    /// Scanner fingerprints and trap accounts the kernel bans on at the first request: list
    /// them with their hits, add or remove some at runtime (in force at once, kept across
    /// restarts in the state file; config entries too).
    #[command(
        subcommand,
        after_help = "Examples:
  sudo sip-xdp signature list
  sudo sip-xdp signature add fingerprint sipvicious-ng
  sudo sip-xdp signature add trap 100 admin
  sudo sip-xdp signature del trap admin
  sudo sip-xdp signature list --kind trap --output json"
    )]
    Signature(SignatureAction),
    /// Check or show the configuration.
    #[command(
        subcommand,
        after_help = "Examples:\n  sip-xdp config check /etc/sip-xdp/sip-xdp.toml\n  sip-xdp config show"
    )]
    Config(ConfigAction),
    /// Load the XDP program into the kernel (running the verifier) without attaching it.
    #[command(after_help = "Example:\n  sudo sip-xdp check")]
    Check,
    /// Run a capture through the real programs (private maps, the capture's clock) and report
    /// what a config would have done: verdicts, bans, and bans of clients that later logged in.
    ///
    /// Nothing attached is touched. Frames from the server addresses go through the TC egress
    /// program (the server's answers), the others through the XDP program.
    #[command(
        after_help = "Examples:\n  sudo tcpdump -i eth0 -w edge.pcap udp port 5060 or tcp port 5060 or tcp port 5061\n  \
                      sudo sip-xdp replay edge.pcap\n  \
                      sudo sip-xdp replay edge.pcap --config /etc/sip-xdp/sip-xdp.toml --compare strict.toml --output json"
    )]
    Replay(ReplayArgs),
    /// Show the kernel's decision for each packet of some sources as it happens: class,
    /// verdict, lists matched, bucket left, ban. Until Ctrl-C or --for; costs the datapath one
    /// compare per SIP packet while no trace runs.
    #[command(after_help = "Examples:\n  sudo sip-xdp trace 198.51.100.7\n  \
                      sudo sip-xdp trace 203.0.113.0/24 2001:db8::/64 --for 30s --output json")]
    Trace(TraceArgs),
    /// Why an address is treated as it is: the lists, bans, buckets and verification that
    /// apply to it, and the verdict its next REGISTER, INVITE, OPTIONS or TCP SYN would get.
    ///
    /// Reads the pinned maps (never writes them) and the state file; the daemon need not run.
    /// The verdicts are predicted from the maps, following the program's order.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp explain 203.0.113.7\n  sudo sip-xdp explain 2001:db8::7 --output json | jq .predictions"
    )]
    Explain(ExplainArgs),
    /// A live view of what hits the edge and what the filter does: rates by verdict and
    /// class, top sources, bans in force, table fill; keys to sort, filter and act.
    ///
    /// Reads the pinned maps about once a second (walks of SOURCES are bounded); ban, unban
    /// and allow go through the same calls as `sip-xdp ban` and `sip-xdp allow`, each
    /// confirmed first.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp top\n  sudo sip-xdp top --filter 203.0.113.0/24 --interval 2s\n\nKeys: s sort, / filter, j/k or arrows select, b ban (for a time you type), u unban, a allow, q quit"
    )]
    Top(TopArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The address (IPv4 or IPv6, one host).
    #[arg(value_name = "ADDR")]
    pub address: String,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Refresh period.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_arg)]
    pub interval: Duration,
    /// Show only sources inside this address or CIDR (the `/` key changes it).
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    pub filter: Option<IpNet>,
    /// Sources read from SOURCES per refresh, at most (the walk is bounded).
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_sources: usize,
    /// The daemon's config file, for the address of its metrics (CrowdSec's health). Default:
    /// /etc/sip-xdp/sip-xdp.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Sources to follow: addresses or CIDRs (up to 64).
    #[arg(value_name = "ADDR|CIDR", required = true, value_parser = parse_net)]
    pub nets: Vec<IpNet>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// `json`: one object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked or raw IP).
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,
    /// Config file (TOML). Default: /etc/sip-xdp/sip-xdp.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A second config to run the same capture through, and report what it changes.
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// The SIP server's address (repeat for several). Default: the address most SIP-port
    /// packets in the capture go to.
    #[arg(long = "server", value_name = "ADDR")]
    pub servers: Vec<IpAddr>,
    /// Allowlist a CIDR for the replay (repeat), as `sip-xdp allow add` does live.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<IpNet>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Interface to filter (repeat for several).
    #[arg(long = "iface", value_name = "IFACE", required = true)]
    pub ifaces: Vec<String>,
    /// Config file (TOML). Default: /etc/sip-xdp/sip-xdp.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// XDP mode: native (driver), skb (generic, slower, works everywhere), or auto.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    pub mode: AttachMode,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Leave the program attached when the daemon stops (the filter keeps running).
    #[arg(long)]
    pub keep_attached: bool,
    /// Serve metrics on this address instead of the config's `metrics.listen`.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_metrics")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// Interface to detach from (repeat for several).
    #[arg(
        long = "iface",
        value_name = "IFACE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ifaces: Vec<String>,
    /// Detach from every interface sip-xdp is attached to.
    #[arg(long)]
    pub all: bool,
    /// With --all: also remove the pinned maps (automatic bans, strikes and counters are lost;
    /// lists and manual bans stay in the state file).
    #[arg(long, requires = "all")]
    pub purge: bool,
}

#[derive(Args, Debug, Default)]
pub struct OutputArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Default)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Exit non-zero, naming the fix, unless the program is attached to at least one interface
    /// present in this network namespace (for start checks such as the fail2ban action's).
    #[arg(long)]
    pub require_attached: bool,
}

#[derive(Subcommand, Debug)]
pub enum ListAction {
    /// Add CIDRs (a bare address means one host).
    #[command(
        after_help = "Examples:\n  sudo sip-xdp allow add 198.51.100.0/24 --comment \"office NAT\"\n  sudo sip-xdp deny add 203.0.113.0/24 2001:db8:bad::/48"
    )]
    Add {
        #[arg(value_name = "CIDR", required = true, value_parser = parse_net)]
        nets: Vec<IpNet>,
        /// Free text kept in the state file (who, why).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove CIDRs.
    #[command(after_help = "Example:\n  sudo sip-xdp allow del 198.51.100.0/24")]
    Del {
        #[arg(value_name = "CIDR", required = true, value_parser = parse_net)]
        nets: Vec<IpNet>,
    },
    /// List entries (live in the kernel, saved in the state file, or both).
    #[command(after_help = "Example:\n  sudo sip-xdp deny list --output json")]
    List(OutputArgs),
}

/// `ban add --origin`: every ban-list origin, straight from [`BanOrigin::ALL`], so a new origin is
/// one variant there.
impl ValueEnum for BanOrigin {
    fn value_variants<'a>() -> &'a [Self] {
        &BanOrigin::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// `ban del --origin`: a ban-list origin, the rate limiter's own bans, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelOrigin {
    /// The rate limiter's bans of sources inside the address or CIDR.
    Rate,
    /// The bans for failed authentication (address and phone bans) inside it.
    Auth,
    /// The bans of prefixes (`[prefixes]`) inside it; with no address, every prefix ban.
    Prefix,
    /// The bans for a scanner's fingerprint inside it (`[signatures]`).
    Fingerprint,
    /// The bans for a request to a trap account inside it.
    Trap,
    Of(BanOrigin),
    /// Every origin.
    All,
}

impl ValueEnum for DelOrigin {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: std::sync::OnceLock<Vec<DelOrigin>> = std::sync::OnceLock::new();
        VARIANTS.get_or_init(|| {
            [
                DelOrigin::Rate,
                DelOrigin::Auth,
                DelOrigin::Prefix,
                DelOrigin::Fingerprint,
                DelOrigin::Trap,
            ]
            .into_iter()
            .chain(BanOrigin::ALL.into_iter().map(DelOrigin::Of))
            .chain(std::iter::once(DelOrigin::All))
            .collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            DelOrigin::Rate => PossibleValue::new("rate")
                .help("the rate limiter's bans of sources inside the address or CIDR"),
            DelOrigin::Auth => PossibleValue::new("auth")
                .help("the bans for failed authentication (of addresses and of phones) inside it"),
            DelOrigin::Prefix => PossibleValue::new("prefix")
                .help("the bans of whole prefixes inside it; without an address, every prefix ban"),
            DelOrigin::Fingerprint => PossibleValue::new("fingerprint")
                .help("the bans for a scanner's fingerprint inside it"),
            DelOrigin::Trap => PossibleValue::new("trap")
                .help("the bans for a request to a trap account inside it"),
            DelOrigin::Of(origin) => PossibleValue::new(origin.name()),
            DelOrigin::All => PossibleValue::new("all").help("every origin"),
        })
    }
}

/// What `ban del --origin ...` lifts.
pub fn lift_for(origins: &[DelOrigin]) -> Lift {
    if origins.is_empty() {
        return Lift::local();
    }
    if origins.contains(&DelOrigin::All) {
        return Lift::all();
    }
    let mut lift = Lift {
        rate: false,
        prefix: false,
        origins: Vec::new(),
    };
    for origin in origins {
        match *origin {
            // The kernel's own bans, rate, auth and signature alike: one table holds them.
            DelOrigin::Rate | DelOrigin::Auth | DelOrigin::Fingerprint | DelOrigin::Trap => {
                lift.rate = true
            }
            DelOrigin::Prefix => lift.prefix = true,
            DelOrigin::Of(origin) => lift.origins.push(origin),
            DelOrigin::All => {}
        }
    }
    lift
}

#[derive(Subcommand, Debug)]
pub enum BanAction {
    /// Ban addresses or CIDRs now; the ban expires in the kernel.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp ban add 203.0.113.7 2001:db8::66 --for 2h --reason \"password guessing\"\n  sip-xdp ban add 203.0.113.7 --for 600s --origin fail2ban --reason asterisk   (what the fail2ban action runs)"
    )]
    Add {
        /// Addresses or CIDRs to ban.
        #[arg(value_name = "ADDR", required = true, value_parser = parse_net)]
        nets: Vec<IpNet>,
        /// How long, e.g. 30m, 2h, 7d. Default: `bans.manual_default` (1h).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration_arg)]
        duration: Option<Duration>,
        /// Free text kept in the state file.
        #[arg(long)]
        reason: Option<String>,
        /// Who imposes the ban. Bans of different origins are kept apart: lifting one never
        /// lifts another.
        #[arg(long, value_enum, default_value_t = BanOrigin::Manual)]
        origin: BanOrigin,
        /// Exit with status 3 (after saving the ban) unless it is in force now: sip-xdp attached
        /// to an interface in this network namespace. For callers that must know (fail2ban's
        /// action); without it a ban while nothing is attached is saved, noted, and exits 0.
        #[arg(long)]
        require_enforced: bool,
    },
    /// Lift bans of these addresses. Without --origin: the bans this node made itself (manual,
    /// the rate limiter's and the prefix bans inside them, with their strike history);
    /// fail2ban's and CrowdSec's stay.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp ban del 203.0.113.7\n  sudo sip-xdp ban del 198.51.100.0/24   (a prefix ban, as `ban list` shows it)\n  sudo sip-xdp ban del --origin prefix   (every prefix ban)\n  sudo sip-xdp ban del 203.0.113.7 --origin fail2ban --missing-ok\n  sudo sip-xdp ban del 203.0.113.7 --origin all"
    )]
    Del {
        /// Addresses or CIDRs; may be left out with `--origin prefix` alone (every prefix ban).
        #[arg(value_name = "ADDR", value_parser = parse_net)]
        nets: Vec<IpNet>,
        /// Which origins to lift (repeat or comma-separate). A CrowdSec ban lifted here comes
        /// back while its decision lives: delete it with `cscli decisions delete`.
        #[arg(long, value_enum, value_delimiter = ',')]
        origin: Vec<DelOrigin>,
        /// Exit 0 even if an address had no ban of these origins (for scripts such as fail2ban's
        /// unban, which may run after the ban already expired).
        #[arg(long)]
        missing_ok: bool,
    },
    /// List manual and automatic bans in force.
    #[command(after_help = "Example:\n  sudo sip-xdp ban list --output json")]
    List(OutputArgs),
}

/// `signature ... KIND`: what a signature proves.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SignatureKindArg {
    /// A scanner's name: a whole token of User-Agent, or of the From/To display name or user.
    Fingerprint,
    /// A decoy account: the Request-URI or To user of a REGISTER, INVITE or OPTIONS.
    Trap,
}

impl From<SignatureKindArg> for sip_xdp_common::SignatureKind {
    fn from(kind: SignatureKindArg) -> Self {
        match kind {
            SignatureKindArg::Fingerprint => Self::Fingerprint,
            SignatureKindArg::Trap => Self::Trap,
        }
    }
}

#[derive(Args, Debug)]
pub struct SignatureConfigArg {
    /// Config file whose [signatures] lists stand in until an attach has recorded its own.
    /// Default: /etc/sip-xdp/sip-xdp.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum SignatureAction {
    /// List the signatures in force: token, kind, from the config or added at runtime, hits
    /// and the last hit.
    #[command(
        after_help = "Example:\n  sudo sip-xdp signature list --kind fingerprint --output json"
    )]
    List {
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<SignatureKindArg>,
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
        #[command(flatten)]
        config: SignatureConfigArg,
    },
    /// Add tokens (whole tokens, any case), in force at once.
    #[command(
        after_help = "Examples:\n  sudo sip-xdp signature add fingerprint sipvicious-ng\n  sudo sip-xdp signature add trap 1 100 admin"
    )]
    Add {
        #[arg(value_enum)]
        kind: SignatureKindArg,
        #[arg(value_name = "TOKEN", required = true)]
        tokens: Vec<String>,
        #[command(flatten)]
        config: SignatureConfigArg,
    },
    /// Remove tokens, config entries included (kept out until added again).
    #[command(after_help = "Example:\n  sudo sip-xdp signature del fingerprint smap")]
    Del {
        #[arg(value_enum)]
        kind: SignatureKindArg,
        #[arg(value_name = "TOKEN", required = true)]
        tokens: Vec<String>,
        #[command(flatten)]
        config: SignatureConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate a config file; prints the problem with its line, exits non-zero.
    #[command(after_help = "Example:\n  sip-xdp config check /etc/sip-xdp/sip-xdp.toml")]
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the effective config (file merged with defaults), every key.
    #[command(after_help = "Example:\n  sip-xdp config show --config /etc/sip-xdp/sip-xdp.toml")]
    Show {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

impl Cli {
    /// Parses the command line, then settles the directories (see [`Cli::settle_dirs`]).
    pub fn parse_settled() -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let defaulted =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::DefaultValue);
        cli.settle_dirs(defaulted("pin_dir"), defaulted("state_dir"));
        cli
    }

    /// Outside PID 1's network namespace (`ip netns exec NS`, `nsenter --net`), the default
    /// directories are the namespace's own, so two namespaces with an `eth0` each never share
    /// pins or state: /sys/fs/bpf/sip-xdp-netns-NS and /var/lib/sip-xdp/netns-NS (NS being the
    /// `ip netns` name, else `ino<inode>`). Directories given with --pin-dir/--state-dir or the
    /// environment are kept. Then the pin directory is made reachable from this mount
    /// namespace ([`loader::reachable_pin_dir`]).
    pub fn settle_dirs(&mut self, pin_dir_defaulted: bool, state_dir_defaulted: bool) {
        if let Some(label) = crate::namespaces::netns_label() {
            if pin_dir_defaulted {
                self.pin_dir = crate::namespaces::netns_pin_dir(&self.pin_dir, &label);
            }
            if state_dir_defaulted {
                self.state_dir = crate::namespaces::netns_state_dir(&self.state_dir, &label);
            }
        }
        self.pin_dir = loader::reachable_pin_dir(&self.pin_dir);
    }
}

fn parse_mode(s: &str) -> Result<AttachMode, String> {
    s.parse()
}

/// A CIDR or a bare address (one host). Host bits are cleared: 10.1.2.3/8 means 10.0.0.0/8.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!(
        "{s:?} is not an IP address or CIDR (examples: 203.0.113.7, 198.51.100.0/24, 2001:db8::/32)"
    ))
}

pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}
