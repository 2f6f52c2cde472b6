#!/usr/bin/env bash
# Benchmark of the embedded (namespace) pool, side by side in one run:
#   overhead = wall time of the runner − time inside ping and iperf3 (summary.json tool_time_s)
#   fidelity = our reported tcp_stream ipv4 throughput ÷ a direct iperf3 run with the same
#              arguments between two namespaces joined exactly like the runner joins them
#              (veth → bridge in a switch namespace → veth), alternating with the runner runs.
# Needs root, iperf3, iproute2. Writes bench/embedded-report.md. PAIRS=3 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-3}
cargo build --release --bins >/dev/null 2>&1
work=$(mktemp -d)
trap 'ip netns del lnstb-a 2>/dev/null || true; ip netns del lnstb-b 2>/dev/null || true; ip netns del lnstb-sw 2>/dev/null || true; rm -rf "$work"' EXIT
PARAMS="perf_iterations=2;perf_duration=2;perf_tests=['tcp_stream','udp_stream'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'},{'gro':'off','gso':'on','tso':'on','tx':'on','rx':'on'}];net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=5;ping_interval=0.2"

direct_once() {
    for n in lnstb-a lnstb-b lnstb-sw; do ip netns del $n 2>/dev/null || true; ip netns add $n; ip -n $n link set lo up; done
    ip -n lnstb-sw link add br0 type bridge stp_state 0 forward_delay 0
    ip -n lnstb-sw link set br0 up
    for x in a b; do
        ip -n lnstb-$x link add eth0 type veth peer name p$x netns lnstb-sw
        ip -n lnstb-sw link set p$x master br0 up
    done
    # The offloads of the runner's first sub-configuration (veth defaults differ: GRO is off).
    for x in a b; do ip netns exec lnstb-$x ethtool -K eth0 gro on gso on tso on tx on rx on >/dev/null 2>&1; done
    ip -n lnstb-a addr add 198.18.20.1/24 dev eth0; ip -n lnstb-a link set eth0 up
    ip -n lnstb-b addr add 198.18.20.2/24 dev eth0; ip -n lnstb-b link set eth0 up
    sleep 0.5
    local sum=0
    for it in 1 2; do
        ip netns exec lnstb-b iperf3 -s -B 198.18.20.2 -J -p 12000 -1 >/dev/null &
        local spid=$!
        sleep 0.3
        ip netns exec lnstb-a iperf3 -c 198.18.20.2 -b 0/1000 -J -t 2 -l 123 -p 12000 --cport 12000 >"$work/direct$it.json"
        wait $spid || true
    done
    python3 - "$work/direct1.json" "$work/direct2.json" <<'PY'
import json, sys
bits = secs = 0.0
for f in sys.argv[1:]:
    d = json.load(open(f))
    for iv in d["intervals"]:
        for s in iv["streams"]:
            bits += s["bytes"] * 8; secs += s["seconds"]
print(bits / secs)
PY
    for n in lnstb-a lnstb-b lnstb-sw; do ip netns del $n; done
}

rows=""
for i in $(seq 1 "$PAIRS"); do
    res="$work/res$i"; mkdir -p "$work/pool"
    t0=$(date +%s.%N)
    env -i PATH="$PATH" HOME="$work" LNST_POOL_DIR="$work/pool" LNST_RESULTS_DIR="$res" \
        RECIPE=SimpleNetworkRecipe RECIPE_PARAMS="$PARAMS" target/release/lnst-runner >/dev/null 2>&1
    t1=$(date +%s.%N)
    ours=$(python3 - "$res" "$t0" "$t1" <<'PY'
import json, sys
res, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = json.load(open(f"{res}/summary.json"))
tool = s["tests"][0]["tool_time_s"]
d = json.load(open(f"{res}/0_SimpleNetworkRecipe/run-data-0.json"))
flows = [r for r in d if r.get("measurement_type") == "flow"]
tcp4 = [f for f in flows if f["details"]["flow"]["kind"] == "tcp_stream" and f["details"]["flow"]["receiver_bind"].startswith("198.18.")]
print(t1 - t0, tool, tcp4[0]["data"]["generator_results"], s["overall"])
PY
)
    direct=$(direct_once)
    rows="$rows$i $ours $direct"$'\n'
    echo "pair $i: $ours direct=$direct" >&2
done

python3 - "$rows" > bench/embedded-report.md <<'PY'
import sys, statistics, platform
rows = [r.split() for r in sys.argv[1].strip().splitlines()]
lines = ["# Embedded pool benchmark", "",
         f"Machine: {platform.machine()}, kernel {platform.release()}; release build; "
         "SimpleNetworkRecipe with the issue's parameters (2 offload sub-configurations × "
         "ipv4/ipv6 × tcp_stream/udp_stream × 2 iterations of 2 s, 5 pings at 0.2 s), "
         "alternating with a direct iperf3 run (same arguments: `-b 0/1000 -J -t 2 -l 123`, "
         "2 iterations) between two namespaces joined like the runner joins them, with the "
         "offloads of the runner's first sub-configuration (`gro gso tso tx rx` on; a veth's "
         "default has GRO off), compared with our first tcp_stream ipv4 flow (that "
         "sub-configuration).", "",
         "| pair | wall s | tool s | overhead s | ours tcp ipv4 bit/s | direct bit/s | fidelity | result |",
         "|---|---|---|---|---|---|---|---|"]
ov, fi = [], []
for i, wall, tool, ours, overall, direct in rows:
    wall, tool, ours, direct = map(float, (wall, tool, ours, direct))
    o = wall - tool; f = ours / direct
    ov.append(o); fi.append(f)
    lines.append(f"| {i} | {wall:.2f} | {tool:.2f} | {o:.2f} | {ours:.4g} | {direct:.4g} | {f:.3f} | {overall} |")
lines += ["", f"Median overhead: **{statistics.median(ov):.2f} s** (target < 1 s). "
          f"Median fidelity: **{statistics.median(fi):.3f}** (target ≥ 0.97).", "",
          "Overhead is wall time minus the time spent inside ping runs and iperf3 iterations "
          "(`tool_time_s` in summary.json, measured by the runner from the first job start "
          "to the last client finish of each phase): it covers namespace and agent start-up, "
          "connection, address and offload configuration, iperf3 server readiness "
          "(the agent waits until the server listens instead of upstream's fixed 2 s), "
          "result export and teardown."]
print("\n".join(lines))
PY
cat bench/embedded-report.md
