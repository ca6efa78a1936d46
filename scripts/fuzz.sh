#!/bin/sh
# Runs every fuzz target of fuzz/ in turn for SECONDS each (default 60; the issue's long run
# is 600) and prints each one's executions. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Corpora and crashes stay under fuzz/ (gitignored).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-$(cargo +nightly fuzz list)}
for t in $targets; do
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t FAILED (crash input under fuzz/artifacts/$t)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $t clean, $runs executions in ${secs}s"
    rm -f "$log"
done
