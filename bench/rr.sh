#!/usr/bin/env bash
# Benchmark of the agent's built-in request/response generator (tcp_rr, tcp_crr, udp_rr)
# against the same workload written the simplest way (examples/rr_reference.rs: one blocking
# socket pair, same message sizes, same duration), side by side in one run:
#   ratio   = our client's transactions/s ÷ the reference client's, per pair; reported as the
#             median of the pairs' ratios and as the ratio of the medians (target ≥ 0.95);
#   CPU/tx  = CPU time of both agent processes (utime + stime from /proc/<pid>/stat around the
#             jobs) ÷ transactions, beside the reference's two processes (getrusage) and our
#             generator threads' own figure from the reports.
# Two settings: loopback (client and server in one namespace, 127.0.0.1) and a veth pair
# between two namespaces (198.18.88.1 → 198.18.88.2). Each combination runs PAIRS pairs in
# ABBA order (ours first in odd pairs), so a load change hits both sides alike; the load
# average is recorded with every run.
# Placement: both programs' client and server threads are pinned the same way (PLACE=same:
# all on CPU 1, the default; PLACE=split: client on CPU 0, server on CPU 1; PLACE=none: the
# kernel decides). Unpinned, each run lands by chance in a fast mode (both sides on one CPU)
# or a slow one (a cross-CPU wake-up per message), which swamps the comparison.
# Needs root, iproute2, python3. Writes bench/rr-report.md. PAIRS=6, SECONDS_PER_RUN=3.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-6}
PLACE=${PLACE:-same}
case $PLACE in
    same) CCPU=1 SCPU=1 ;;
    split) CCPU=0 SCPU=1 ;;
    none) CCPU="" SCPU="" ;;
    *) echo "PLACE must be same, split or none" >&2; exit 2 ;;
esac
DUR=${SECONDS_PER_RUN:-3}
WORKLOADS=${WORKLOADS:-"tcp_rr udp_rr tcp_crr"}
SIZES=${SIZES:-"1 1024"}
cargo build --release --bin lnst-agent --example rr_bench --example rr_reference >/dev/null 2>&1
AGENT=target/release/lnst-agent
BENCH=target/release/examples/rr_bench
REF=target/release/examples/rr_reference
work=$(mktemp -d)
A=lnstrr-a B=lnstrr-b
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for n in $A $B; do ip netns del $n 2>/dev/null || true; ip netns add $n; ip -n $n link set lo up; done
ip -n $A link add eth0 type veth peer name eth0 netns $B
ip -n $A addr add 198.18.88.1/24 dev eth0; ip -n $A link set eth0 up
ip -n $B addr add 198.18.88.2/24 dev eth0; ip -n $B link set eth0 up
sleep 0.5
ip netns exec $A ping -c 1 -W 2 198.18.88.2 >/dev/null

out="$work/runs.jsonl"
: >"$out"
port=20000
load() { cut -d' ' -f1 /proc/loadavg; }

ours() { # setting workload size pair cns sns ip
    port=$((port + 1))
    local l; l=$(load)
    local j; j=$($BENCH "$AGENT" "$2" "$5" "$6" "$7" $port "$3" "$3" "$DUR" $CCPU $SCPU)
    echo "{\"setting\":\"$1\",\"workload\":\"$2\",\"size\":$3,\"pair\":$4,\"side\":\"ours\",\"load\":$l,\"r\":$j}" >>"$out"
}

reference() { # setting workload size pair cns sns ip
    port=$((port + 1))
    local l; l=$(load)
    ip netns exec "$6" ${SCPU:+taskset -c $SCPU} $REF server "$2" "$7" $port "$3" "$3" >"$work/srv.json" &
    local spid=$!
    sleep 0.3
    local c; c=$(ip netns exec "$5" ${CCPU:+taskset -c $CCPU} $REF client "$2" "$7" $port "$3" "$3" "$DUR")
    local waited=0
    while kill -0 $spid 2>/dev/null && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
    kill $spid 2>/dev/null || true
    wait $spid 2>/dev/null || true
    local s; s=$(cat "$work/srv.json")
    echo "{\"setting\":\"$1\",\"workload\":\"$2\",\"size\":$3,\"pair\":$4,\"side\":\"ref\",\"load\":$l,\"r\":$c,\"srv\":${s:-null}}" >>"$out"
}

load0=$(cat /proc/loadavg)
t0=$(date +%s)
for setting in loopback veth; do
    if [ $setting = loopback ]; then cns=$A sns=$A ip=127.0.0.1; else cns=$A sns=$B ip=198.18.88.2; fi
    for w in $WORKLOADS; do
        for size in $SIZES; do
            for p in $(seq 1 "$PAIRS"); do
                if [ $((p % 2)) = 1 ]; then
                    ours $setting "$w" "$size" "$p" $cns $sns $ip
                    reference $setting "$w" "$size" "$p" $cns $sns $ip
                else
                    reference $setting "$w" "$size" "$p" $cns $sns $ip
                    ours $setting "$w" "$size" "$p" $cns $sns $ip
                fi
            done
            echo "done: $setting $w $size" >&2
        done
    done
done
t1=$(date +%s)
load1=$(cat /proc/loadavg)

python3 - "$out" "$PAIRS" "$DUR" "$load0" "$load1" "$((t1 - t0))" "$(nproc)" "$(uname -r)" "$PLACE" >bench/rr-report.md <<'PY'
import json, statistics as st, sys
path, pairs, dur, load0, load1, wall, ncpu, kernel, place = sys.argv[1:]
placement = {"same": "client and server threads of both programs pinned to CPU 1 (`taskset -c 1`; jobs with `cpus: [1]`)",
             "split": "clients on CPU 0, servers on CPU 1, for both programs",
             "none": "not pinned: the kernel places both programs' threads"}[place]
runs = [json.loads(l) for l in open(path)]
def key(r): return (r["setting"], r["workload"], r["size"])
combos = []
for r in runs:
    if key(r) not in combos:
        combos.append(key(r))
med = st.median
print("# Built-in RR generator benchmark\n")
print(f"Machine: {ncpu} CPUs, kernel {kernel}; release build. Load average (1, 5, 15 min) "
      f"at the start: {' '.join(load0.split()[:3])}, at the end: {' '.join(load1.split()[:3])}; "
      f"mean 1-min load over the runs: {st.mean(r['load'] for r in runs):.1f} "
      f"(other helpers compiling on the same {ncpu} CPUs). {pairs} pairs of {dur} s runs per row "
      f"in ABBA order, {wall} s in all.\n")
print("Ours: two `lnst-agent --stdio` processes, an RrServer and an RrClient job of one flow "
      "through the protocol, rate from the client's report. Reference: "
      "`examples/rr_reference.rs`, one blocking socket pair in two processes. Same message size "
      f"both ways (request = response), same duration, same namespaces. Placement: {placement}.\n")
print("| setting | workload | size B | ours tx/s (median) | reference tx/s (median) | **ratio** (median of pair ratios) | ratio of medians | pair ratios | agent CPU µs/tx | generator threads µs/tx | reference CPU µs/tx | mean load |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
worst = None
for k in combos:
    o = sorted((r for r in runs if key(r) == k and r["side"] == "ours"), key=lambda r: r["pair"])
    f = sorted((r for r in runs if key(r) == k and r["side"] == "ref"), key=lambda r: r["pair"])
    orate = [r["r"]["rate"] for r in o]
    frate = [r["r"]["rate"] for r in f]
    ratios = [a / b for a, b in zip(orate, frate)]
    ocpu = [r["r"]["cpu_s"] * 1e6 / r["r"]["transactions"] for r in o]
    gcpu = [r["r"]["gen_cpu_s"] * 1e6 / r["r"]["transactions"] for r in o]
    fcpu = [(r["r"]["cpu_s"] + (r["srv"] or {}).get("cpu_s", 0)) * 1e6 / r["r"]["transactions"] for r in f]
    loads = [r["load"] for r in o + f]
    m = med(ratios)
    worst = m if worst is None else min(worst, m)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {med(orate):,.0f} | {med(frate):,.0f} | **{m:.3f}** | "
          f"{med(orate) / med(frate):.3f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
          f"{med(ocpu):.1f} | {med(gcpu):.1f} | {med(fcpu):.1f} | {st.mean(loads):.1f} |")
print(f"\nLowest median ratio: **{worst:.3f}** (target ≥ 0.95).\n")
print("CPU columns are medians over the pairs: agent CPU is both agent processes' utime + stime "
      "(/proc/<pid>/stat, 10 ms ticks) over the jobs, RPC and sampling included; generator "
      "threads is the `cpu_s` the two reports give (the job's own threads only); reference is "
      "the two reference processes' getrusage.")
PY
cat bench/rr-report.md
