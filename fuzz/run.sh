#!/usr/bin/env bash
# Bounded fuzzing of lnst-runner's untrusted-input parsers (targets in fuzz/fuzz_targets/,
# findings and figures in fuzz/REPORT.md).
#
#   fuzz/run.sh [SECONDS_PER_TARGET]          (default 20)
#
# Installs cargo-fuzz when missing, builds every target once on the stable toolchain
# (RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes), then runs each target for the
# given time starting from its committed seeds (fuzz/seeds/<target>) plus whatever corpus an
# earlier run left in fuzz/corpus/<target> (not committed). Prints the executions per target
# and exits non-zero on any crash, panic, timeout or out-of-memory; the reproducer is then in
# fuzz/artifacts/<target>/ and the libFuzzer log in fuzz/artifacts/<target>.log.
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: "params pool_xml frame")
#   FUZZ_SANITIZER  cargo-fuzz sanitizer (default: none; the fuzzed code is safe Rust, and
#                   panics, overflows, stack overflows, hangs and OOM are caught without one;
#                   "address" builds ASan at about half the speed)
#   FUZZ_RUNS       stop each target after this many executions instead of (or before) the
#                   time limit (default: unlimited)
set -euo pipefail

secs="${1:-20}"
case "$secs" in
    '' | *[!0-9]*)
        echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2
        exit 2
        ;;
esac
targets="${FUZZ_TARGETS:-params pool_xml frame}"
sanitizer="${FUZZ_SANITIZER:-none}"
runs="${FUZZ_RUNS:--1}"

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
mkdir -p fuzz/artifacts
if ! cargo fuzz build -s "$sanitizer" >fuzz/artifacts/build.log 2>&1; then
    grep -v '^ *Compiling ' fuzz/artifacts/build.log >&2 || true
    echo "fuzz/run.sh: build failed" >&2
    exit 1
fi
echo "fuzz/run.sh: build took $(($(date +%s) - start)) s"

failed=""
summary=""
for t in $targets; do
    case "$t" in
        frame) max_len=65536 ;;
        *) max_len=16384 ;;
    esac
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t.log"
    echo "fuzz/run.sh: $t for ${secs} s (max_len $max_len)"
    rc=0
    cargo fuzz run -s "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -runs="$runs" -max_len="$max_len" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    # libFuzzer's last words: "#N DONE cov: C ft: F ... exec/s: R" and "Done N runs in S
    # second(s)".
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/p' "$log" | tail -n 1)
    took=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/p' "$log" | tail -n 1)
    cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$done_line")
    line="$t: ${execs:-?} executions in ${took:-?} s, cov ${cov:-?}, ft ${ft:-?}"
    if [ "$rc" != 0 ] || [ -z "$execs" ]; then
        line="$line: FAILED (exit $rc, log $log)"
        failed="$failed $t"
        echo "---- $log (tail) ----" >&2
        tail -n 60 "$log" >&2
        echo "---- artifacts: $(ls "fuzz/artifacts/$t" 2>/dev/null | tr '\n' ' ')" >&2
    fi
    echo "fuzz/run.sh: $line"
    summary="$summary$line"$'\n'
done

echo "fuzz/run.sh: summary ($(($(date +%s) - start)) s in all)"
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz/run.sh: crashes in:$failed" >&2
    exit 1
fi
