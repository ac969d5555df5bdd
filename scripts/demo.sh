#!/usr/bin/env bash
# The main command (README): installs what is missing, builds, and runs the demo on the embedded
# default config in two throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-toolchain.sh
cargo build --release --package xtask --package sip-xdp
exec cargo run --release --quiet --package xtask -- demo
