#!/bin/bash
# /init of the kernel matrix's initramfs (scripts/kernel-matrix.sh copies it in). Runs the checks
# on the booted kernel, prints one `KM-STEP name: ok|FAILED ...` line per check and a closing
# `KM-RESULT pass|fail`, then powers the VM off. Addresses: 198.51.100.0/24 only, on a veth pair
# inside this VM.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/tmp RUST_BACKTRACE=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /sys/fs/bpf
mount -t bpf bpf /sys/fs/bpf
ip link set lo up

failures=()
step() { # step NAME ok|FAILED DETAIL
    echo "KM-STEP $1: $2${3:+ ($3)}"
    [ "$2" = ok ] || failures+=("$1")
}
finish() {
    if [ ${#failures[@]} -eq 0 ]; then
        echo "KM-RESULT pass"
    else
        echo "KM-RESULT fail: ${failures[*]}"
    fi
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 10
}

echo "KM-KERNEL $(uname -r)"
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || step "insmod $m" FAILED
done

# 1. The verifier.
out=$(sip-xdp check 2>&1)
rc=$?
if [ $rc = 0 ]; then
    xdp=$(echo "$out" | sed -n 's/^XDP program.*verified insns: \([0-9a-z]*\).*/\1/p')
    egress=$(echo "$out" | sed -n 's/^TC egress program.*verified insns: \([0-9a-z]*\).*/\1/p')
    scan=$(echo "$out" | sed -n 's/^Scan program.*verified insns: \([0-9a-z]*\).*/\1/p')
    step check ok "verified insns: XDP $xdp, TC egress $egress, scan $scan"
else
    echo "$out"
    step check FAILED "sip-xdp check exit status $rc"
fi

# 2. The BPF_PROG_TEST_RUN suite, every test of tests/tests/datapath.rs.
out=$(/bin/datapath --test-threads=2 2>&1)
rc=$?
summary=$(echo "$out" | grep '^test result:' | tail -n 1)
if [ $rc = 0 ] && [ -n "$summary" ]; then
    step datapath ok "${summary#test result: }"
else
    echo "$out" | grep -v '^test .* ok$'
    step datapath FAILED "exit status $rc; ${summary:-no summary}"
fi

# 3. A real attach on veth, the flood sent from a second namespace.
# Under TCG every program load takes seconds: the scan's generated requests are fewer here.
export SIP_XDP_SIGNATURE_CASES=500
for suite in answers differential_answers tcp_prefix signatures; do
    out=$(/bin/$suite --test-threads=2 2>&1)
    rc=$?
    summary=$(echo "$out" | grep '^test result:' | tail -n 1)
    if [ $rc = 0 ] && [ -n "$summary" ]; then
        step $suite ok "${summary#test result: }"
    else
        echo "$out" | grep -v '^test .* ok$'
        step $suite FAILED "exit status $rc; ${summary:-no summary}"
    fi
done

udp_noports() { # this namespace's count of UDP datagrams that found no socket
    awk '/^Udp:/ { if (!col) { for (i = 1; i <= NF; i++) if ($i == "NoPorts") col = i } else print $col }' \
        /proc/net/snmp
}
attach_test() {
    local pins=/sys/fs/bpf/km state=/tmp/km-state srv=km-srv egress_how=
    ip netns add cli || return 1
    ip link add "$srv" type veth peer name km-cli || return 1
    ip link set km-cli netns cli || return 1
    ip addr add 198.51.100.1/24 dev "$srv" && ip link set "$srv" up || return 1
    ip -n cli addr add 198.51.100.2/24 dev km-cli && ip -n cli link set km-cli up &&
        ip -n cli link set lo up || return 1
    # Static neighbours: no ARP exchange to wait for or to count.
    local mac_srv mac_cli
    mac_srv=$(cat /sys/class/net/$srv/address)
    mac_cli=$(ip netns exec cli cat /sys/class/net/km-cli/address)
    ip neigh replace 198.51.100.2 lladdr "$mac_cli" dev "$srv"
    ip -n cli neigh replace 198.51.100.1 lladdr "$mac_srv" dev km-cli
    sip-xdp --pin-dir "$pins" --state-dir "$state" attach --iface "$srv" --mode native || {
        echo "attach failed"
        return 1
    }
    local link
    link=$(ip -d link show dev "$srv")
    echo "$link"
    echo "$link" | grep -q 'prog/xdp id' || {
        echo "ip -d link show $srv shows no XDP program"
        return 1
    }
    # The egress program: a TCX link (pinned) from 6.6 on, a clsact filter before.
    local egress
    egress=$(tc filter show dev "$srv" egress)
    echo "tc filter show dev $srv egress: $egress"
    if [ -e "$pins/link_tc-egress_$srv" ]; then
        egress_how=tcx
    elif echo "$egress" | grep -q 'sip_xdp_egress'; then
        egress_how=netlink
    else
        echo "no egress program on $srv (no TCX link pinned, no clsact filter)"
        return 1
    fi
    # 100 REGISTERs from one source, one datagram each: bash opens the /dev/udp socket and cat
    # writes the file in one write() (bash's own printf is line-buffered, one datagram per line).
    # The default burst is
    # 40 at 5/s, so 40 pass (a few more if sending takes long enough for tokens to refill under
    # emulation) and the rest are dropped, by the rate limit and then by the ban.
    printf 'REGISTER sip:198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5070;branch=z9hG4bK-km\r\nCall-ID: km-flood\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n' >/tmp/register.sip
    local noports_before
    noports_before=$(udp_noports)
    ip netns exec cli bash -c '
        for i in $(seq 1 100); do
            cat /tmp/register.sip >/dev/udp/198.51.100.1/5060 || exit 1
        done' || {
        echo "sending the flood failed"
        return 1
    }
    local status
    status=$(sip-xdp --pin-dir "$pins" --state-dir "$state" status --output json) || return 1
    echo "$status" | jq -M -c '{attached, packets, tables: {active_bans: .tables.active_bans}}'
    local passed rate banned bans
    passed=$(echo "$status" | jq '.packets.pass.register // 0')
    rate=$(echo "$status" | jq '.packets.drop_rate.register // 0')
    # A banned source's REGISTERs are dropped before their payload is read: method `unread`.
    banned=$(echo "$status" | jq '.packets.drop_banned.unread // 0')
    bans=$(echo "$status" | jq '.tables.active_bans')
    # What passed reached this namespace's UDP layer (no socket listens: UDP NoPorts counts it),
    # what was dropped did not.
    local delivered=$(($(udp_noports) - noports_before))
    attach_detail="egress by $egress_how; of 100 REGISTERs: $passed passed, $rate drop_rate, $banned drop_banned; $bans ban; $delivered reached UDP"
    [ "$passed" -ge 40 ] && [ "$passed" -le 50 ] && [ "$rate" -ge 1 ] &&
        [ $((passed + rate + banned)) = 100 ] && [ "$bans" = 1 ] && [ "$delivered" = "$passed" ] || {
        echo "counters: expected 40 to 50 passed, the rest dropped (drop_rate at least 1), one ban, and UDP NoPorts up by the passed count"
        return 1
    }
    sip-xdp --pin-dir "$pins" --state-dir "$state" detach --iface "$srv" || return 1
    ip -d link show dev "$srv" | grep -q 'prog/xdp' && {
        echo "the XDP program is still on $srv after detach"
        return 1
    }
    if tc filter show dev "$srv" egress | grep -q sip_xdp_egress || [ -e "$pins/link_tc-egress_$srv" ]; then
        echo "the egress program is still on $srv after detach"
        return 1
    fi
    return 0
}
attach_detail=
if attach_test; then
    step attach ok "$attach_detail"
else
    step attach FAILED "$attach_detail"
fi

finish
