//! Empty on purpose: this library target only lets `sip-xdp` name the eBPF crate as a build
//! dependency, so cargo rebuilds the embedded object when these sources change. The program
//! itself is the `sip-xdp-ebpf` binary target (src/main.rs), built for bpfel-unknown-none.
#![no_std]
