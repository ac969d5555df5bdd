//! `sip-xdp`: command-line entry point.
fn main() -> std::process::ExitCode {
    sip_xdp::cli::main()
}
