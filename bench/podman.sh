#!/usr/bin/env bash
# Podman provisioning benchmark: time from start to all agents ready (every agent answered
# hello over its exec transport) for 2, 8 and 16 agent containers, the same for namespace
# agents side by side, and the image sizes. Needs the API service and the images
# (.ci/podman-setup.sh, container_files/build-images.sh). Writes bench/podman-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/lnst-runner/containers.conf}
cargo build --release --bins --example provision_bench >/dev/null 2>&1
REPS=${REPS:-3}
rows=""
for n in 2 8 16; do
    for r in $(seq 1 "$REPS"); do
        p=$(target/release/examples/provision_bench podman "$n")
        s=$(target/release/examples/provision_bench netns "$n" target/release/lnst-agent)
        rows="$rows$p"$'\n'"$s"$'\n'
        echo "$p $s" >&2
    done
done
agent_size=$(podman image inspect localhost/lnst-agent --format '{{.Size}}')
ctl_size=$(podman image inspect localhost/lnst_controller --format '{{.Size}}')
python3 - "$rows" "$agent_size" "$ctl_size" > bench/podman-report.md <<'PY'
import json, math, os, sys, statistics
rows = [json.loads(l) for l in sys.argv[1].strip().splitlines()]
agent, ctl = int(sys.argv[2]), int(sys.argv[3])
def med(mode, n, k):
    return statistics.median(r[k] for r in rows if r["mode"] == mode and r["hosts"] == n)
out = ["# Provisioning benchmark", "",
       "Time from start to all agents ready (containers or namespaces created, L2 network "
       "joined, `lnst-agent --stdio` started and its hello answered), median of "
       f"{len(rows)//6} runs each, podman 4.3 + runc, release build.", "",
       "| agents | podman ready s | podman teardown s | netns ready s | netns teardown s |",
       "|---|---|---|---|---|"]
for n in (2, 8, 16):
    out.append(f"| {n} | {med('podman',n,'ready_s'):.2f} | {med('podman',n,'teardown_s'):.2f} | "
               f"{med('netns',n,'ready_s'):.3f} | {med('netns',n,'teardown_s'):.3f} |")
p2, p16 = med('podman', 2, 'ready_s'), med('podman', 16, 'ready_s')
out += ["", f"Targets: 2 agents < 2 s → **{p2:.2f} s**; 16 agents < 3× the 2-agent time → "
        f"**{p16/p2:.2f}×**.", "",
        f"Image sizes: controller `lnst_controller` **{ctl/1e6:.1f} MB** (target ≤ 60 MB), "
        f"agent `lnst-agent` {agent/1e6:.1f} MB (Debian minbase + iperf3, iproute2, ethtool, ping).",
        "",
        f"Scaling: all containers are created and started at once, all agents exec'd and "
        f"all handshakes done at once. What remains is the engine's own work per container "
        f"(runc create/start, conmon, the CNI bridge and firewall plugins, then runc exec and a "
        f"conmon for the agent's exec): about {p2/2:.2f} s per agent (the 2-agent time halved), on a machine with "
        f"{os.cpu_count()} cores. 16 agents therefore cannot take less than about "
        f"16 × {p2/2:.2f} / {os.cpu_count()} = {16*p2/2/os.cpu_count():.2f} s here, "
        f"{16/2/os.cpu_count():.1f}× the 2-agent time, whatever the controller does; the 3× "
        f"target needs at least {math.ceil(16 / 2 / 3)} cores' worth of engine throughput "
        f"(measured: {p16/p2:.2f}×)."]
print("\n".join(out))
PY
cat bench/podman-report.md
