//! Loads the embedded XDP object into the kernel.
use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp},
};
use sip_xdp_common::{DEFAULT_MAX_SOURCES, PROGRAM_NAME, map_names};
use thiserror::Error;

/// The XDP program, built from `sip-xdp-ebpf` by build.rs. Empty when the eBPF toolchain was
/// missing at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp-ebpf"));

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error(
        "this sip-xdp binary was built without its XDP program (the eBPF toolchain was missing at \
         build time); run scripts/setup-toolchain.sh as root, then rebuild"
    )]
    NoObject,
    #[error(
        "cannot load the sip-xdp eBPF object: {0} (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Object(#[from] aya::EbpfError),
    #[error(
        "the kernel rejected the sip-xdp XDP program: {0} (kernel 5.15 or newer with XDP support is required)"
    )]
    Program(#[from] ProgramError),
    #[error("the sip-xdp eBPF object has no program named {PROGRAM_NAME}; rebuild sip-xdp")]
    MissingProgram,
    #[error("max_sources must be between 1 and {max}, got {got}")]
    BadMaxSources { got: u32, max: u32 },
}

/// What can be chosen before the program is loaded (map sizes are fixed at creation).
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Capacity of the per-source LRU map; the least recently seen source is evicted past it.
    pub max_sources: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Upper bound for `max_sources`: about 1.4 GiB of kernel memory at 88+16 bytes per entry.
pub const MAX_SOURCES_LIMIT: u32 = 16 * 1024 * 1024;

/// Loads the object and the XDP program into the kernel (running the verifier), unattached.
pub fn load(options: &LoadOptions) -> Result<Ebpf, LoaderError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoaderError::NoObject);
    }
    if options.max_sources == 0 || options.max_sources > MAX_SOURCES_LIMIT {
        return Err(LoaderError::BadMaxSources {
            got: options.max_sources,
            max: MAX_SOURCES_LIMIT,
        });
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::SOURCES, options.max_sources)
        .load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The sip-xdp XDP program inside a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoaderError::MissingProgram)?;
    Ok(program.try_into()?)
}

/// How to attach: native (driver) XDP, generic (skb) XDP, or native falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("network interface {0} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error("cannot attach XDP to {iface} in {mode:?} mode: {source}")]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Attaches the loaded program to `iface`. Returns the mode that took effect.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode), AttachError> {
    use aya::programs::XdpMode;
    // Resolved in the caller's network namespace (unlike /sys/class/net, which shows the
    // namespace sysfs was mounted in).
    let name = std::ffi::CString::new(iface)
        .map_err(|_| AttachError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: valid NUL-terminated string.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        return Err(AttachError::NoSuchInterface(iface.to_owned()));
    }
    let program = xdp_program(ebpf)?;
    let attached = match mode {
        AttachMode::Native => program.attach(iface, XdpMode::Driver).map(|id| (id, mode)),
        AttachMode::Skb => program.attach(iface, XdpMode::Skb).map(|id| (id, mode)),
        AttachMode::Auto => program
            .attach(iface, XdpMode::Driver)
            .map(|id| (id, AttachMode::Native))
            .or_else(|_| {
                program
                    .attach(iface, XdpMode::Skb)
                    .map(|id| (id, AttachMode::Skb))
            }),
    };
    attached.map_err(|source| AttachError::Attach {
        iface: iface.to_owned(),
        mode,
        source,
    })
}
