#!/usr/bin/env bash
# A recipe list back to back on VM agents with smoke parameters: by default the soft-device
# catalogue (tests/data/catalogue-smoke.json, the list tests/e2e_catalogue_vm.rs runs);
# `bench/catalogue.sh RUNS bench/tunnels-all-smoke.json` all 21 tunnel, MACsec and IPsec
# recipes (the e2e tests' smoke parameters; tests/data/tunnels-smoke.json is the first 7,
# which tests/e2e_tunnels.rs runs). The wall time of
# the whole run and, per recipe, where its time went:
#   agents_s   making and removing the VMs (QEMU boot to a connected agent, teardown)
#   tool_s     inside ping runs and iperf3 iterations (the traffic)
#   outside_s  everything else — the runner's own overhead — split by summary.json phases_s:
#              connect (handshakes, snapshots), configure (devices, addresses), sub_configure,
#              deconfigure, end (agents restored), and the rest (job start/stop around the
#              tools, CPU samplers, iperf3 server settle, evaluation, export)
# Target: outside_s <= 1 s per recipe on TCG (issue 11). Writes bench/<list>-report.md
# (bench/catalogue-report.md, bench/tunnels-report.md).
#
# Needs root, QEMU and the guest kernel (.ci/vm-kernel.sh). Usage: bench/catalogue.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
list="${2:-tests/data/catalogue-smoke.json}"
[ -f "$list" ] || { echo "bench/catalogue.sh: no recipe list $list" >&2; exit 2; }
name=$(basename "$list" -smoke.json)
# LNST_VM_PRELOAD=1 (the module preload, off by default, docs/VM.md) writes
# bench/<name>-preload-report.md.
preload="${LNST_VM_PRELOAD:-}"
[ "$preload" = 1 ] && name="$name-preload"
cargo build --release --bins -q
eval "$(bash .ci/vm-kernel.sh)"
export LNST_VM_KERNEL LNST_VM_MODULES
out="bench/$name-report.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/db.json" "$list" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[2]))
json.dump([{"recipe_name": r["recipe_name"], "params": r["params"]} for r in rows], open(sys.argv[1], "w"))
EOF
for i in $(seq 1 "$runs"); do
    home="$work/home$i"
    mkdir -p "$home/pool"
    t0=$(date +%s.%N)
    env -i PATH="$PATH" HOME="$home" LNST_AGENTS=vm LNST_VM_KERNEL="$LNST_VM_KERNEL" \
        LNST_VM_MODULES="$LNST_VM_MODULES" LNST_VM_PRELOAD="$preload" LNST_AGENT_BIN="$PWD/target/release/lnst-agent" \
        LNST_POOL_DIR="$home/pool" LNST_RESULTS_DIR="$home/results" TEST_DB="$work/db.json" \
        target/release/lnst-runner >"$work/out$i.txt" 2>&1 || {
        cp "$work/out$i.txt" bench/catalogue-failed-run.txt
        grep -E "^== test|FAIL" "$work/out$i.txt" | tail -40
        echo "catalogue run $i failed (whole output: bench/catalogue-failed-run.txt)" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    echo "$t0 $t1" >"$home/wall"
done
python3 - "$work" "$runs" "$out" "$list" <<'EOF'
import json, sys, statistics, subprocess
work, runs, out, lst = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PH = ["connect", "configure", "sub_configure", "deconfigure", "end"]
per = {}
walls = []
for i in range(1, runs + 1):
    t0, t1 = map(float, open(f"{work}/home{i}/wall").read().split())
    walls.append(t1 - t0)
    s = json.load(open(f"{work}/home{i}/results/summary.json"))
    assert s["overall"] == "PASS", s
    for t in s["tests"]:
        d = per.setdefault(t["recipe"], {"hosts": len(t["runs"][0]["agents"]), "dur": [], "agents": [], "tool": [], "outside": [], **{k: [] for k in PH}, "rest": []})
        d["dur"].append(t["duration_s"]); d["agents"].append(t["agents_s"]); d["tool"].append(t["tool_time_s"])
        outside = t["duration_s"] - t["agents_s"] - t["tool_time_s"]
        d["outside"].append(outside)
        ph = t.get("phases_s", {})
        for k in PH:
            d[k].append(ph.get(k, 0.0))
        d["rest"].append(outside - sum(ph.get(k, 0.0) for k in PH))
med = statistics.median
lines = [f"# {lst}: the recipes on VM agents, back to back (bench/catalogue.sh)", ""]
cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
kern = open("/proc/sys/kernel/osrelease").read().strip()
# The runner's own line per provisioning: "2 VM(s) under tcg, 1 vCPU(s) and 512 MiB each".
import re
vms = sorted(set(m.group(1) + " VMs: " + m.group(2) for i in range(1, runs + 1)
                 for m in re.finditer(r"(\d+) VM\(s\) under \w+, (\d+ vCPU\(s\) and \d+ MiB) each", open(f"{work}/out{i}.txt").read())),
             key=lambda s: int(s.split()[0]))
lines += [f"Machine: {cpu} CPUs, host kernel {kern}; guests: Debian 6.1 kernel under TCG; " + ("; ".join(vms) or "vCPUs not reported") + ".",
          f"{len(per)} recipes with {lst} (smoke parameters: 1 s tcp_stream per IP version, a few pings per endpoint pair and IP version), {runs} run(s); medians.", "",
          f"Wall time of the whole TEST_DB run: {med(walls):.1f} s (runs: {', '.join(f'{w:.1f}' for w in walls)}).", "",
          "| recipe | VMs | total s | agents s (boot + teardown) | traffic s | outside traffic s | connect | configure | sub-config | deconfigure | end | rest |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
worst = 0.0
for r, d in per.items():
    o = med(d["outside"]); worst = max(worst, o)
    phases = " | ".join(f"{med(d[k]):.2f}" for k in PH + ["rest"])
    lines.append(f"| {r} | {d['hosts']} | {med(d['dur']):.2f} | {med(d['agents']):.2f} | {med(d['tool']):.2f} | {o:.2f} | {phases} |")
tot = [sum(x) for x in zip(*[d["outside"] for d in per.values()])]
lines += ["", f"Outside traffic, worst recipe: {worst:.2f} s (target <= 1 s); all recipes together: {med(tot):.2f} s."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
