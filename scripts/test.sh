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
cargo clippy --all-targets --features sip-xdp-tests/system --quiet -- -D warnings
echo "== cargo build (the sip-xdp binary that tests/tests/cli_daemon.rs runs)" >&2
cargo build --quiet --package sip-xdp --bin sip-xdp
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ $# -gt 0 ]; then
    # The caller picks the tests (e.g. `-p sip-xdp-tests --test datapath`): both tiers built.
    echo "== cargo test --features sip-xdp-tests/system $*" >&2
    cargo test --features sip-xdp-tests/system "$@" 2>&1 | tee "$log"
else
    # Tier 1: unit tests and the kernel tests (the real program on crafted frames and maps).
    echo "== cargo test (unit and kernel tests)" >&2
    cargo test 2>&1 | tee "$log"
    # Tier 2: the system tests (packages, namespaces, services, the binary), tests/Cargo.toml.
    echo "== cargo test --features system (system tests)" >&2
    # Every `[[test]]` of tests/Cargo.toml that requires the `system` feature, read from there so
    # that a new suite cannot be left out.
    system_tests=()
    for t in $(awk '/^\[\[test\]\]/ { name = "" } /^name = / { gsub(/"/, "", $3); name = $3 }
                    /^required-features = \["system"\]/ && name != "" { print name }' tests/Cargo.toml); do
        system_tests+=(--test "$t")
    done
    # And the suites that run in both tiers with a system part of their own.
    for f in tests/tests/*.rs; do
        t=$(basename "$f" .rs)
        if grep -q 'cfg(feature = "system")' "$f" && [[ " ${system_tests[*]} " != *" $t "* ]]; then
            system_tests+=(--test "$t")
        fi
    done
    [ ${#system_tests[@]} -ge 10 ] || { echo "test.sh: found only ${system_tests[*]} in tests/Cargo.toml" >&2; exit 1; }
    cargo test -p sip-xdp-tests --features system "${system_tests[@]}" 2>&1 | tee -a "$log"
fi
# Debian 12's own kernels (6.1 and 6.12) under QEMU: the verifier, the datapath suite and a veth
# attach on each (scripts/kernel-matrix.sh). It ends in `kernel-matrix: N passed, M failed`, one
# test per kernel; the VMs' own test lines are not printed, so the total counts each kernel once.
matrix=0
if [ "${SIP_XDP_KERNEL_MATRIX:-1}" != 0 ]; then
    echo "== kernel matrix (SIP_XDP_KERNEL_MATRIX=0 skips it)" >&2
    ./scripts/kernel-matrix.sh 2>&1 | tee -a "$log" || matrix=$?
fi
# One closing line over every test binary (cargo prints one summary per binary, the last of
# which is often an empty doc-test run) and the kernel matrix.
awk '/^test result:/ { p += $4; f += $6 }
     /^kernel-matrix: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$matrix"
