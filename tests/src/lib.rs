//! Test support for sip-xdp: frame builders, a BPF_PROG_TEST_RUN harness, network namespaces,
//! and the reference model the differential test compares the program with.
pub mod crowdsec;
pub mod harness;
pub mod host;
pub mod model;
pub mod netns;
pub mod packet;
pub mod raw;
pub mod registrar;
pub mod rng;
pub mod sipp;

/// Returns from the calling test, saying so on stderr, unless it runs as root: the kernel and
/// system tests load real BPF programs, make network namespaces and start services. A plain
/// `cargo test` by a user then reports them skipped rather than failed on an EPERM.
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::harness::is_root() {
            eprintln!(
                "skipped {}: needs root (it loads real BPF programs); run the tests with sudo",
                module_path!()
            );
            return;
        }
    };
}
