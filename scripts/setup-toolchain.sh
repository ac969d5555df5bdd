#!/usr/bin/env bash
# Installs what building the eBPF half of sip-xdp needs on a fresh Debian machine, from Debian's
# packages and crates.io only (no rustup downloads). Idempotent: skips what is already present and
# prints what it installs.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
EBPF_TOOLCHAIN=sip-xdp-ebpf   # rustup name given to Debian's rustc-web, which ships rust-src

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (apt-get install, BPF tests); rerun with sudo" >&2
    exit 1
fi

# Build: Debian's rustc with core sources, LLVM for bpf-linker. Tests: iproute2 and util-linux
# (nsenter, setpriv) for the namespaces, sip-tester (sipp) for the SIP scenarios. Benchmark:
# nftables and iptables for the head-to-head, a font for the chart. Operator integrations, each
# tested against the real thing: fail2ban, crowdsec (its Local API), prometheus (with promtool).
# Kernel matrix (scripts/kernel-matrix.sh): QEMU, a static busybox for the VM's initramfs, jq, xz
# (Debian 6.12's modules are xz-compressed); the kernels themselves are downloaded, not installed.
apt_pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in rustc-web rust-web-src "llvm-${LLVM_MAJOR}-dev" libpolly-${LLVM_MAJOR}-dev libzstd-dev zlib1g-dev \
         iproute2 util-linux \
         sip-tester nftables iptables fonts-dejavu-core \
         fail2ban crowdsec prometheus openssl \
         qemu-system-x86 busybox-static jq xz-utils ${SIP_XDP_EXTRA_APT:-}; do
    have_pkg "$p" || apt_pkgs+=("$p")
done
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    log "installing apt packages: ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # fail2ban, crowdsec and prometheus would start their services on install: fail2ban's default
    # sshd jail alone would put firewall rules on this host. The tests start their own instances
    # inside network namespaces, so no service may start here.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    # crowdsec's postinst registers with the online Central API unless this file has content
    # (Debian's README.Debian); the tests use only a Local API of their own, offline.
    if [ ! -s /etc/crowdsec/online_api_credentials.yaml ]; then
        mkdir -p /etc/crowdsec
        echo "# Central API registration skipped by sip-xdp's setup (offline Local API only)" \
            >/etc/crowdsec/online_api_credentials.yaml
    fi
    apt-get update -qq
    status=0
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null || status=$?
    [ -n "$own_policy" ] && rm -f "$policy"
    [ "$status" = 0 ] || exit "$status"
else
    log "apt packages present"
fi

if ! rustup toolchain list | grep -q "^${EBPF_TOOLCHAIN}"; then
    log "linking Debian's rustc as rustup toolchain ${EBPF_TOOLCHAIN}"
    rustup toolchain link "${EBPF_TOOLCHAIN}" /usr
else
    log "rustup toolchain ${EBPF_TOOLCHAIN} present"
fi

if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q "${BPF_LINKER_VERSION}"; then
    log "building bpf-linker ${BPF_LINKER_VERSION} against LLVM ${LLVM_MAJOR}"
    LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo install --locked bpf-linker --version "${BPF_LINKER_VERSION}" \
        --no-default-features --features "llvm-${LLVM_MAJOR}"
else
    log "bpf-linker ${BPF_LINKER_VERSION} present"
fi
