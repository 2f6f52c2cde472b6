#!/usr/bin/env bash
# Benchmark of the embedded (namespace) pool, side by side in one run:
#   overhead = wall time of the runner − time inside ping and iperf3 (summary.json tool_time_s)
#   fidelity = our reported tcp_stream ipv4 throughput ÷ a direct iperf3 run with the same
#              arguments between two namespaces joined exactly like the runner joins them
#              (veth → bridge in a switch namespace → veth), alternating with the runner runs.
#   focused fidelity = the same comparison for a single 3 s tcp_stream ipv4 flow, FOCUS pairs
#              in ABBA order (ours first in odd pairs, direct first in even ones), ratio of the
#              medians: on a machine whose throughput jumps between levels from one run to the
#              next, many short pairs estimate the ratio better than a few long ones.
#   traceability = our reported figure ÷ the mean of iperf3's own end.sum_sent of its
#              iterations, read back from the run's raw/ files (must be 1).
#              The same with 16 KiB writes (FOCUS_LARGE pairs), where the tool's own run-to-run
#              spread is small enough to show a ratio within a few per cent.
# Needs root, iperf3, iproute2. Writes bench/embedded-report.md. PAIRS=3, FOCUS=20,
# FOCUS_LARGE=10 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-3}
FOCUS=${FOCUS:-20}
FOCUS_LARGE=${FOCUS_LARGE:-10}
cargo build --release --bins >/dev/null 2>&1
work=$(mktemp -d)
trap 'ip netns del lnstb-a 2>/dev/null || true; ip netns del lnstb-b 2>/dev/null || true; ip netns del lnstb-sw 2>/dev/null || true; rm -rf "$work"' EXIT
PARAMS="perf_iterations=2;perf_duration=2;perf_tests=['tcp_stream','udp_stream'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'},{'gro':'off','gso':'on','tso':'on','tx':'on','rx':'on'}];net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=5;ping_interval=0.2"

# direct_once DURATION ITERATIONS: mean bit/s of ITERATIONS direct iperf3 runs.
direct_once() {
    local dur=${1:-2} its=${2:-2} msg=${3:-123}
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
    for it in $(seq 1 "$its"); do
        ip netns exec lnstb-b iperf3 -s -B 198.18.20.2 -J -p 12000 -1 >/dev/null &
        local spid=$!
        sleep 0.3
        ip netns exec lnstb-a iperf3 -c 198.18.20.2 -b 0/1000 -J -t "$dur" -l "$msg" -p 12000 --cport 12000 >"$work/direct$it.json"
        wait $spid || true
    done
    python3 - "$work"/direct*.json <<'PY'
import json, sys
bits = secs = 0.0
for f in sys.argv[1:]:
    d = json.load(open(f))
    for iv in d["intervals"]:
        for s in iv["streams"]:
            bits += s["bytes"] * 8; secs += s["seconds"]
print(bits / secs)
PY
    rm -f "$work"/direct*.json
    for n in lnstb-a lnstb-b lnstb-sw; do ip netns del $n; done
}

# ours_once RESULTS PARAMS: run the runner; print wall s, tool s, first tcp_stream ipv4
# generator bit/s, overall result, and reported ÷ iperf3's own figures.
ours_once() {
    local res=$1 params=$2
    rm -rf "$res"; mkdir -p "$work/pool"
    local t0 t1
    t0=$(date +%s.%N)
    env -i PATH="$PATH" HOME="$work" LNST_POOL_DIR="$work/pool" LNST_RESULTS_DIR="$res" \
        RECIPE=SimpleNetworkRecipe RECIPE_PARAMS="$params" target/release/lnst-runner >/dev/null 2>&1
    t1=$(date +%s.%N)
    python3 - "$res" "$t0" "$t1" <<'PY'
import glob, json, re, sys
res, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = json.load(open(f"{res}/summary.json"))
tool = s["tests"][0]["tool_time_s"]
d = json.load(open(f"{res}/0_SimpleNetworkRecipe/run-data-0.json"))
flows = [r for r in d if r.get("measurement_type") == "flow"]
tcp4 = [f for f in flows if f["details"]["flow"]["kind"] == "tcp_stream" and f["details"]["flow"]["receiver_bind"].startswith("198.18.")]
ours = tcp4[0]["data"]["generator_results"]
# The same flow's raw client outputs (sub-configuration 1, one file per iteration).
raw = sorted(glob.glob(f"{res}/0_SimpleNetworkRecipe/raw/sub1_tcp_stream_ipv4_*_flow1_client.json"))
own = [json.load(open(f))["end"]["sum_sent"]["bits_per_second"] for f in raw]
print(t1 - t0, tool, ours, s["overall"], ours / (sum(own) / len(own)))
PY
}

rows=""
for i in $(seq 1 "$PAIRS"); do
    ours=$(ours_once "$work/res$i" "$PARAMS")
    direct=$(direct_once 2 2)
    rows="$rows$i $ours $direct"$'\n'
    echo "pair $i: $ours direct=$direct" >&2
done

# focus_series MSG N: N ABBA pairs of one 3 s tcp_stream ipv4 flow with MSG-byte writes.
focus_series() {
    local msg=$1 n=$2 o d params
    params="perf_iterations=1;perf_duration=3;perf_tests=['tcp_stream'];perf_msg_sizes=[$msg];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'}];ip_versions=('ipv4',);net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=1;ping_interval=0.2"
    for i in $(seq 1 "$n"); do
        if [ $((i % 2)) = 1 ]; then
            o=$(ours_once "$work/focus" "$params"); d=$(direct_once 3 1 "$msg")
        else
            d=$(direct_once 3 1 "$msg"); o=$(ours_once "$work/focus" "$params")
        fi
        echo "$msg $i $(echo "$o" | awk '{print $3, $5}') $d"
        echo "focus msg $msg pair $i: ours=$(echo "$o" | awk '{print $3}') direct=$d" >&2
    done
}
focus="$(focus_series 16384 "$FOCUS_LARGE")"$'\n'"$(focus_series 123 "$FOCUS")"

python3 - "$rows" "$focus" > bench/embedded-report.md <<'PY'
import sys, statistics, platform
rows = [r.split() for r in sys.argv[1].strip().splitlines()]
focus = [r.split() for r in sys.argv[2].strip().splitlines()]
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
trace = []
for i, wall, tool, ours, overall, tr, direct in rows:
    trace.append(float(tr))
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
          "(the agent reports a server started once it listens), "
          "result export and teardown. Tool time includes the 0.25 s pause between servers "
          "and clients of each iteration (upstream: 2 s), 4 s of this run's 16 iterations.", "",
          f"Traceability: every reported figure above ÷ the mean of iperf3's own "
          f"`end.sum_sent.bits_per_second` in that run's raw/ files: "
          f"{', '.join(f'{t:.6f}' for t in trace)}."]
# Focused fidelity: single 3 s flows, ABBA pairs, per write size.
import random
lines += ["", "## Focused fidelity", "",
          "Pairs of one 3 s tcp_stream ipv4 flow (the runner with `perf_iterations=1;"
          "perf_duration=3;perf_tests=['tcp_stream'];perf_msg_sizes=[MSG];ip_versions=('ipv4',)` "
          "and the first sub-configuration's offloads) against one direct 3 s iperf3 run with "
          "`-l MSG`, in ABBA order (ours first in odd pairs). Fidelity is the ratio of the "
          "medians, with a bootstrap 90 % interval.", "",
          "| write size | pairs | ours median bit/s | direct median bit/s | **fidelity** | 90 % interval | ratio of means | runs at the fast level, ours / direct | traceability |",
          "|---|---|---|---|---|---|---|---|---|"]
sorted_lines = []
for msg in sorted({r[0] for r in focus}, key=int, reverse=True):
    rs = [r for r in focus if r[0] == msg]
    fo = [float(r[2]) for r in rs]; ft = [float(r[3]) for r in rs]; fd = [float(r[4]) for r in rs]
    mo, md = statistics.median(fo), statistics.median(fd)
    rng = random.Random(1)
    boot = sorted(statistics.median([rng.choice(fo) for _ in fo]) /
                  statistics.median([rng.choice(fd) for _ in fd]) for _ in range(2000))
    lo, hi = boot[int(0.05 * len(boot))], boot[int(0.95 * len(boot)) - 1]
    # Two-level flows: "fast" = above the middle of the pooled range.
    mid = (min(fo + fd) + max(fo + fd)) / 2
    fast = (sum(v > mid for v in fo), sum(v > mid for v in fd))
    two_level = max(fo + fd) > 1.4 * min(fo + fd)
    lines.append(f"| {msg} B | {len(rs)} | {mo:.4g} | {md:.4g} | **{mo / md:.3f}** | {lo:.3f}–{hi:.3f} | "
                 f"{statistics.mean(fo) / statistics.mean(fd):.3f} | "
                 + (f"{fast[0]} / {fast[1]}" if two_level else "one level") +
                 f" | {min(ft):.6f}–{max(ft):.6f} |")
    sorted_lines.append(f"- {msg} B, sorted Mbit/s — ours: " + ", ".join(f"{v/1e6:.0f}" for v in sorted(fo)) +
                        "; direct: " + ", ".join(f"{v/1e6:.0f}" for v in sorted(fd)) + ".")
lines += [""] + sorted_lines + ["",
          "With 123-byte writes on this machine (2 KVM vCPUs) the flow is CPU-bound and runs at "
          "one of two levels, about 3 × 10⁸ or about 5 × 10⁸ bit/s, steady within a run and "
          "changing between runs, for ours and direct alike and with or without CPU pinning "
          "(the same `taskset` pinning gave 2.3 and 4.2 × 10⁸). In the low level the receiving "
          "iperf3 wakes for every few segments (tens of thousands of voluntary context "
          "switches per second), in the high level the sender blocks on a full socket buffer "
          "and the receiver reads in large batches (the sender's veth carries ~750-byte packets "
          "in the first, ~40 KB GSO packets in the second). Which level a run gets is not ours "
          "to choose, so single pairs scatter and the 123-byte ratio carries a wide interval; "
          "what must match is how often each side reaches the fast level. "
          "With 16 KiB writes the tool's own spread is a few per cent, and that row is the "
          "precise fidelity figure.", "",
          "This benchmark found a real bias: clients used to start the moment the agent saw "
          "the server listening, a few milliseconds after the server's start, and in that case "
          "the 123-byte flow took the slow level in 20 of 20 runs (direct by hand: 12 of 20 "
          "fast); a direct run with a 20 ms gap did the same (0 of 8 fast), with 0.1 s or more "
          "about half were fast. The runner now pauses 0.25 s after its servers listen "
          "(`SERVER_SETTLE`; upstream sleeps 2 s), counted in the tool time like upstream's "
          "pause."]
print("\n".join(lines))
PY
cat bench/embedded-report.md
