#!/usr/bin/env bash
# Quick start: SimpleNetworkRecipe on the embedded namespace pool (needs root).
set -euo pipefail
cd "$(dirname "$0")"
need=""
for p in iperf3:iperf3 ip:iproute2 ethtool:ethtool ping:iputils-ping; do
    command -v "${p%%:*}" >/dev/null 2>&1 || need="$need ${p#*:}"
done
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -q && apt-get install -y -q --no-install-recommends $need
fi
cargo build --release --bins
export RECIPE=SimpleNetworkRecipe
# The default is a plain variable: inside "${RECIPE_PARAMS:-...}" the first '}' of a dict would
# end the expansion and cut the parameters short.
default_params="perf_iterations=2;perf_duration=2;perf_tests=['tcp_stream','udp_stream'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'}];net_ipv4='198.18.20.0/24';net_ipv6='fd00:1:2::/64';ping_count=5;ping_interval=0.2"
if [ -z "${RECIPE_PARAMS:-}" ]; then
    RECIPE_PARAMS=$default_params
fi
export RECIPE_PARAMS
export LNST_RESULTS_DIR="${LNST_RESULTS_DIR:-$PWD/results}"
export LNST_POOL_DIR="${LNST_POOL_DIR:-$PWD/.quickstart-empty-pool}"
mkdir -p "$LNST_POOL_DIR"
exec target/release/lnst-runner
