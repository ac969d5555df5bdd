//! Builds the XDP program (`sip-xdp-ebpf`) for bpfel-unknown-none and leaves the object in
//! OUT_DIR, where `src/loader.rs` embeds it.
//!
//! The eBPF build needs Debian's rustc with core sources (linked as the rustup toolchain named by
//! `SIP_XDP_EBPF_TOOLCHAIN`, default `sip-xdp-ebpf`) and bpf-linker; `scripts/setup-toolchain.sh`
//! installs both. Without them (say, `cargo clippy` on a laptop) this script writes an empty
//! object and warns: the host code still checks and builds, and the binary says what is missing
//! when asked to load the program.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "sip-xdp-ebpf";
const OBJECT_NAME: &str = "sip-xdp-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SIP_XDP_EBPF_TOOLCHAIN");
    println!("cargo:rustc-check-cfg=cfg(sip_xdp_no_ebpf)");
    let toolchain =
        env::var("SIP_XDP_EBPF_TOOLCHAIN").unwrap_or_else(|_| "sip-xdp-ebpf".to_owned());

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    if let Some(missing) = missing_ebpf_tool(&toolchain) {
        println!(
            "cargo:warning=building sip-xdp WITHOUT its XDP program: {missing}; \
             run scripts/setup-toolchain.sh (as root) and rebuild"
        );
        println!("cargo:rustc-cfg=sip_xdp_no_ebpf");
        fs::write(out_dir.join(OBJECT_NAME), [])?;
        return Ok(());
    }
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("eBPF manifest has no parent directory")?
        .as_str()
        .to_owned();

    // Debian's rustc is a stable compiler; building `core` for the BPF target with
    // -Z build-std needs unstable features, which RUSTC_BOOTSTRAP=1 unlocks for that child build
    // only (aya-build passes the environment on).
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// Names the first missing piece of the eBPF toolchain, if any.
fn missing_ebpf_tool(toolchain: &str) -> Option<String> {
    if which::which("bpf-linker").is_err() {
        return Some("bpf-linker is not on PATH".to_owned());
    }
    match Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let core_src = sysroot.join("lib/rustlib/src/rust/library/core");
            if core_src.is_dir() {
                None
            } else {
                Some(format!(
                    "toolchain {toolchain} has no core sources at {}",
                    core_src.display()
                ))
            }
        }
        Ok(_) => Some(format!("rustup has no toolchain named {toolchain}")),
        Err(e) => Some(format!("cannot run rustup: {e}")),
    }
}
