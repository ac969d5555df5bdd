//! Test support for sip-xdp: frame builders, a BPF_PROG_TEST_RUN harness, network namespaces,
//! and the reference model the differential test compares the program with.
pub mod crowdsec;
pub mod harness;
pub mod host;
pub mod model;
pub mod netns;
pub mod packet;
pub mod raw;
pub mod sipp;
