#!/usr/bin/env bash
# The kernel matrix (issue 10): boots Debian 12's own kernels under QEMU (TCG; KVM does not work
# on these machines) and runs there what the host's tests run on the host's kernel:
#   - `sip-xdp check` (the verifier, with its processed-instruction count),
#   - the BPF_PROG_TEST_RUN datapath suites (the compiled tests/tests/datapath.rs,
#     tests/tests/answers.rs, tests/tests/differential_answers.rs, tests/tests/tcp_prefix.rs and
#     tests/tests/signatures.rs,
#     every test),
#   - a real attach on veth: `sip-xdp attach` on one end, a REGISTER flood larger than the burst
#     sent from a second network namespace, `ip -d link show` showing the program, and the
#     counters read back (`sip-xdp status --output json`): the burst passed, the rest dropped.
# Kernels: the newest linux-image-6.1.0-N-amd64-unsigned (Debian 12's default kernel) and the
# newest linux-image-6.12.N+deb12-amd64-unsigned (bookworm-security) in apt's lists, fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` (never installed). The host's own kernel is
# covered by the normal tests. Downloads and extracted kernels are cached under
# target/kernel-matrix/, so a rerun only rebuilds the initramfs.
#
# Usage: sudo ./scripts/kernel-matrix.sh            (scripts/test.sh calls it)
#   SIP_XDP_KM_KERNELS="linux-image-...-unsigned ..."  boot these packages instead
#   SIP_XDP_KM_TIMEOUT=600                              seconds per kernel before the VM is killed
# Last line: `kernel-matrix: N passed, M failed`; exit status 1 if any kernel failed.
set -euo pipefail
cd "$(dirname "$0")/.."

root=target/kernel-matrix
timeout_s=${SIP_XDP_KM_TIMEOUT:-600}
log() { printf 'kernel-matrix: %s\n' "$*" >&2; }
die() {
    log "$*"
    echo "kernel-matrix: 0 passed, 1 failed"
    exit 1
}

for tool in qemu-system-x86_64 busybox apt-get dpkg-deb jq strip xz; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: run ./scripts/setup-toolchain.sh (installs qemu-system-x86, busybox-static, jq, xz-utils)"
done

# Newest package of a family in apt's lists or, offline, among the cached downloads (sort -V
# orders 6.1.0-9 before 6.1.0-57).
newest() {
    { apt-cache search --names-only "$1" | awk '{print $1}'; { ls "$root/debs" 2>/dev/null || true; } | sed 's/_.*//'; } |
        grep -E "$1" | sort -V | tail -n 1
}
if [ -n "${SIP_XDP_KM_KERNELS:-}" ]; then
    read -r -a packages <<<"$SIP_XDP_KM_KERNELS"
else
    k61=$(newest '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$')
    k612=$(newest '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$')
    [ -n "$k61" ] || die "no linux-image-6.1.0-*-amd64-unsigned in apt's lists: run apt-get update"
    [ -n "$k612" ] || die "no linux-image-6.12.*+deb12-amd64-unsigned in apt's lists: add bookworm-security to /etc/apt/sources.list and run apt-get update"
    packages=("$k61" "$k612")
fi

# Older kernels of the cache, superseded by newer packages in apt's lists, go.
if [ -z "${SIP_XDP_KM_KERNELS:-}" ]; then
    for cached in "$root"/debs/*.deb "$root"/kernels/*; do
        [ -e "$cached" ] || continue
        name=$(basename "$cached")
        name=${name%%_*}
        case " ${packages[*]} " in *" $name "*) ;; *)
            log "removing the superseded $(basename "$cached") from the cache"
            rm -rf "$cached" "$root/initramfs-$name.cpio" "$root/modules-$name"
            ;;
        esac
    done
fi

# Downloads the package (once) and keeps its vmlinuz and the modules the VM loads (veth, the
# clsact qdisc and the bpf classifier, and what they depend on, decompressed) under
# $root/kernels/PACKAGE/.
fetch_kernel() {
    local pkg=$1 dir=$root/kernels/$1
    # The marker names what the directory holds: a cache from before the egress program's
    # modules were kept is fetched again.
    [ -f "$dir/ready-tc" ] && return 0
    mkdir -p "$root/debs"
    local deb
    deb=$(ls "$root/debs/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "downloading $pkg"
        (cd "$root/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
            { log "apt-get download $pkg failed"; return 1; }
        deb=$(ls "$root/debs/${pkg}"_*.deb | head -n 1)
    fi
    log "extracting $(basename "$deb")"
    local tmp=$root/kernels/$pkg.tmp
    rm -rf "$tmp" "$dir"
    mkdir -p "$tmp"
    dpkg-deb -x "$deb" "$tmp"
    mkdir -p "$dir/modules"
    cp "$tmp"/boot/vmlinuz-* "$dir/vmlinuz"
    local moddir
    moddir=$(echo "$tmp"/lib/modules/*)
    # veth and its dependencies, in load order (dependencies first), from each module's
    # `depends=` field; Debian 6.12 ships them xz-compressed, 6.1 plain. The clsact qdisc
    # (sch_ingress) and the bpf classifier (cls_bpf) carry the egress program where the kernel
    # has no TCX; a kernel that builds them in has no module for them, which is fine.
    local queue=(veth sch_ingress cls_bpf) optional=" sch_ingress cls_bpf " order=() seen=" " name file deps
    while [ ${#queue[@]} -gt 0 ]; do
        name=${queue[0]}
        queue=("${queue[@]:1}")
        case "$seen" in *" $name "*) continue ;; esac
        seen+="$name "
        file=$(find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "${name//_/-}.ko" \
            -o -name "${name//_/-}.ko.xz" \) | head -n 1)
        if [ -z "$file" ]; then
            case "$optional" in *" $name "*) continue ;; esac
            log "$pkg: module $name not found"
            return 1
        fi
        case "$file" in
        *.xz) xz -dc "$file" >"$dir/modules/$name.ko" ;;
        *) cp "$file" "$dir/modules/$name.ko" ;;
        esac
        order=("$name" "${order[@]}")
        deps=$(busybox modinfo -F depends "$dir/modules/$name.ko" 2>/dev/null | tr ',' ' ')
        for d in $deps; do queue+=("$d"); done
    done
    printf '%s\n' "${order[@]}" | awk '!seen[$0]++' >"$dir/modules/order"
    basename "$moddir" >"$dir/release"
    rm -rf "$tmp"
    touch "$dir/ready-tc"
}

# --- the initramfs part shared by every kernel ---------------------------------------------------
log "building sip-xdp and the datapath test binary"
# Paths from cargo's own messages, wherever the target directory is.
executable() { # executable TARGET-NAME < cargo's JSON messages
    jq -r --arg name "$1" \
        'select(.reason == "compiler-artifact" and .target.name == $name and .executable != null) | .executable' |
        tail -n 1
}
sip_xdp=$(cargo build --quiet --package sip-xdp --bin sip-xdp --message-format=json | executable sip-xdp)
[ -x "$sip_xdp" ] || die "could not find the sip-xdp binary (cargo build --package sip-xdp)"
datapath=$(cargo test --quiet --package sip-xdp-tests --test datapath --no-run --message-format=json |
    executable datapath)
[ -x "$datapath" ] || die "could not find the datapath test binary (cargo test --no-run)"
answers=$(cargo test --quiet --package sip-xdp-tests --test answers --no-run --message-format=json |
    executable answers)
[ -x "$answers" ] || die "could not find the answers test binary (cargo test --no-run)"
differential_answers=$(cargo test --quiet --package sip-xdp-tests --test differential_answers --no-run \
    --message-format=json | executable differential_answers)
[ -x "$differential_answers" ] || die "could not find the differential_answers test binary"
tcp_prefix=$(cargo test --quiet --package sip-xdp-tests --test tcp_prefix --no-run \
    --message-format=json | executable tcp_prefix)
[ -x "$tcp_prefix" ] || die "could not find the tcp_prefix test binary"
signatures=$(cargo test --quiet --package sip-xdp-tests --test signatures --no-run \
    --message-format=json | executable signatures)
[ -x "$signatures" ] || die "could not find the signatures test binary"

rootfs=$root/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,etc,var,modules}
ln -s ../run "$rootfs/var/run"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
# busybox for everything but the tools copied whole: bash (its /dev/udp sends the flood) and
# iproute2's ip (busybox's ip knows no netns or veth).
for applet in $(busybox --list); do
    case "$applet" in busybox | ip | tc | bash | sh) continue ;; esac
    ln -sf busybox "$rootfs/bin/$applet"
done
strip --strip-debug -o "$rootfs/bin/sip-xdp" "$sip_xdp"
strip --strip-debug -o "$rootfs/bin/datapath" "$datapath"
strip --strip-debug -o "$rootfs/bin/answers" "$answers"
strip --strip-debug -o "$rootfs/bin/differential_answers" "$differential_answers"
strip --strip-debug -o "$rootfs/bin/tcp_prefix" "$tcp_prefix"
strip --strip-debug -o "$rootfs/bin/signatures" "$signatures"
bins=("$rootfs/bin/sip-xdp" "$rootfs/bin/datapath" "$rootfs/bin/answers" "$rootfs/bin/differential_answers"
    "$rootfs/bin/tcp_prefix" "$rootfs/bin/signatures")
for tool in bash ip jq tc; do
    path=$(command -v "$tool")
    cp "$path" "$rootfs/bin/$tool"
    bins+=("$rootfs/bin/$tool")
done
ln -s bash "$rootfs/bin/sh"
for bin in "${bins[@]}"; do
    ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'
done | sort -u | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
cp scripts/kernel-matrix-init.sh "$rootfs/init"
chmod 755 "$rootfs/init"
common_cpio=$root/common.cpio
(cd "$rootfs" && find . | busybox cpio -o -H newc 2>/dev/null) >"$common_cpio"

# --- one VM per kernel ---------------------------------------------------------------------------
passed=0
failed=0
mkdir -p "$root/logs"
for pkg in "${packages[@]}"; do
    if ! fetch_kernel "$pkg"; then
        log "$pkg: FAILED (could not fetch or unpack the kernel package)"
        failed=$((failed + 1))
        continue
    fi
    kdir=$root/kernels/$pkg
    release=$(cat "$kdir/release")
    # A second archive appended to the first: the kernel unpacks both into one rootfs.
    mods=$root/modules-$pkg
    rm -rf "$mods"
    mkdir -p "$mods/modules"
    cp "$kdir"/modules/* "$mods/modules/"
    echo "$release" >"$mods/modules/release"
    initrd=$root/initramfs-$pkg.cpio
    { cat "$common_cpio"; (cd "$mods" && find . | busybox cpio -o -H newc 2>/dev/null); } >"$initrd"
    vmlog=$root/logs/$pkg.log
    log "$release: booting (TCG, at most ${timeout_s}s; serial log in $vmlog)"
    start=$(date +%s)
    rc=0
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
        -nographic -no-reboot -nic none \
        -kernel "$kdir/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init" \
        </dev/null >"$vmlog" 2>&1 || rc=$?
    secs=$(($(date +%s) - start))
    tr -d '\r' <"$vmlog" >"$vmlog.txt" && mv "$vmlog.txt" "$vmlog"
    result=$(grep -a '^KM-RESULT ' "$vmlog" | tail -n 1 || true)
    # Every step's own line, for the summary.
    grep -a '^KM-STEP ' "$vmlog" | sed "s/^KM-STEP /kernel-matrix: $release: /" >&2 || true
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        log "$release: FAILED: the VM did not power off within ${timeout_s}s (killed); last lines:"
        tail -n 30 "$vmlog" | sed 's/^/  | /' >&2
        failed=$((failed + 1))
    elif [ "$result" = "KM-RESULT pass" ]; then
        log "$release: passed in ${secs}s"
        passed=$((passed + 1))
    else
        log "$release: FAILED in ${secs}s (${result:-no KM-RESULT line, qemu exit $rc}); verifier and test output:"
        grep -av '^KM-' "$vmlog" | tail -n 60 | sed 's/^/  | /' >&2
        failed=$((failed + 1))
    fi
done
log "the host's own kernel ($(uname -r)) is covered by the normal tests"
echo "kernel-matrix: $passed passed, $failed failed"
[ "$failed" = 0 ]
