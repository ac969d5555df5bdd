#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, then checks formatting and lints
# and runs every test, including those that load and attach the real XDP program (root only).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-toolchain.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
# The eBPF crate is left out: it only builds for bpfel-unknown-none (through build.rs).
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo build (the sip-xdp binary that tests/tests/cli_daemon.rs runs)" >&2
cargo build --quiet --package sip-xdp --bin sip-xdp
echo "== cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one summary per binary, the last of
# which is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
