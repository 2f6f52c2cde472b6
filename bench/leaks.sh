#!/usr/bin/env bash
# Leak figures: 100 embedded runs, 100 pool-XML runs against the same long-lived agents, and
# 20 Podman runs, each followed by a comparison with the baseline (tests/leaks.rs does the
# work and prints one LEAK line per run). Needs root, the Podman API service and the images
# (.ci/podman-setup.sh, container_files/build-images.sh). Writes bench/leaks-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/lnst-runner/containers.conf}
export LNST_LEAK_RUNS=${LNST_LEAK_RUNS:-100}
export LNST_LEAK_POOL_RUNS=${LNST_LEAK_POOL_RUNS:-100}
export LNST_LEAK_PODMAN_RUNS=${LNST_LEAK_PODMAN_RUNS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
CI=true cargo test --release --test leaks -- --test-threads=1 --nocapture 2>&1 | tee "$log" || status=$?
python3 - "$log" "$status" "$(git rev-parse --short HEAD)" > bench/leaks-report.md <<'PY'
import re, sys
log, status, commit = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
lines = [l for l in log.splitlines() if l.startswith("LEAK ")]
out = ["# Leak report", "",
       f"`bash bench/leaks.sh` at commit `{commit}`; test exit status {status} "
       f"({'all runs back to the baseline' if status == 0 else 'FAILED, see below'}).", "",
       "After every run the test compares with the baseline taken before the first run: network "
       "namespaces (held by any process or bound under /run/netns), root-namespace links, "
       "processes named lnst-agent / iperf3 / ping, files under /run/lnst-runner, and for "
       "Podman the labelled containers and networks; for the pool runs also the long-lived "
       "agents' open fds and threads. Machine-wide process and open-file counts are shown for "
       "context only (other programs move them), and so is Podman's conmon count: Podman keeps the "
       "conmon of every exec session made through its API for 300 s (`--exit-delay 300`) after "
       "the session ends, even when the container is gone. Runs make no exec session (the agent "
       "is the container's command, reached through an attach), so after a run the count "
       "should be back where it was.", ""]
for kind in ("embedded", "pool", "podman"):
    runs = [l for l in log.splitlines() if re.search(rf"LEAK {kind} run \d+:", l)]
    runs = [l[l.index("LEAK "):] for l in runs]
    summary = [l for l in lines if l.startswith(f"LEAK {kind} summary")]
    if not runs:
        continue
    bad = [l for l in runs if l.endswith("DIFFERS")]
    checked = [l for l in runs if not l.startswith(f"LEAK {kind} run 0:")]
    out += [f"## {kind}", "", f"- runs checked: {len(checked)}; differing from the baseline: {len(bad)}"]
    rss = [(int(m.group(1)), m.group(2)) for m in
           (re.search(r"run (\d+):.*rss_kib=(\[[^\]]*\])", l) for l in runs) if m]
    if rss:
        n = rss[-1][0]
        marks = sorted({0, n // 4, n // 2, 3 * n // 4, n})
        out += ["- long-lived agents' RSS (KiB) after run " +
                ", ".join(f"{i}: {r}" for i, r in rss if i in marks)]
    out += [f"- {s[len('LEAK '):]}" for s in summary]
    out += ["", "First and last lines:", "", "```"] + runs[:3] + ["..."] + runs[-2:] + ["```", ""]
print("\n".join(out))
PY
echo "wrote bench/leaks-report.md (status $status)"
exit "$status"
