#!/usr/bin/env bash
# Compares two builds of countersign on one scenario, alternating them so that the machine's
# drift (on the 2-CPU VMs here its speed moves by ±15 % from one minute to the next) falls on
# both alike. Each round runs A, B, B, A; the summary gives each build's median and mean
# requests/s and the ratio of the medians. It prints figures only, like `make bench`.
#
#   scripts/bench-ab.sh snapshot DIR     # copy spin.toml, the components and the host binary
#                                        # as built now into DIR
#   scripts/bench-ab.sh [-n ROUNDS] [-s SCENARIO] [-d DURATION] DIR_A DIR_B
#
# A snapshot folder serves its own components (its spin.toml's `source` paths resolve inside
# it) with its own host binary. Build, snapshot, change, build, snapshot, then compare.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${1:-}" = snapshot ]; then
    dir=${2:?usage: bench-ab.sh snapshot DIR}
    mkdir -p "$dir/target/wasm32-wasip2/release"
    cp "$top/spin.toml" "$dir/"
    cp "$top"/target/wasm32-wasip2/release/*.wasm "$dir/target/wasm32-wasip2/release/"
    cp "$top/target/release/countersign" "$dir/"
    echo "bench-ab: snapshot of the current build in $dir"
    exit 0
fi

rounds=3 scenario="routine decision saturation" duration=8s
while getopts "n:s:d:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        s) scenario=$OPTARG ;;
        d) duration=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { echo "usage: bench-ab.sh [-n ROUNDS] [-s SCENARIO] [-d DURATION] DIR_A DIR_B" >&2; exit 2; }
a=$1 b=$2
bench="$top/target/release/countersign-bench"
[ -x "$bench" ] || (cd "$top" && cargo build --release -p countersign-bench)

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One measured run of `scenario` on a snapshot folder; prints its requests/s.
run() {
    local dir=$1 rate
    rate=$("$bench" --bin "$dir/countersign" --app-manifest "$dir/spin.toml" \
        --duration "$duration" --scenario "$scenario" --ratio-to 1 2>/dev/null |
        awk -F'|' -v s="$scenario" '$2 == " " s " " { gsub(/ /, "", $5); print $5 }')
    echo "${rate:?no figure for \"$scenario\" from $dir}"
}

for round in $(seq 1 "$rounds"); do
    for v in A B B A; do
        dir=$a
        [ "$v" = B ] && dir=$b
        rate=$(run "$dir")
        echo "$v $rate" >>"$results"
        echo "round $round: $v $rate req/s"
    done
done

# Median and mean of each build, and the ratio of the medians.
sort -k1,1 -k2,2n "$results" | awk '
    { v[$1, ++n[$1]] = $2; sum[$1] += $2 }
    END {
        split("A B", order, " ")
        for (i = 1; i <= 2; i++) {
            k = order[i]; c = n[k]
            med[k] = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
            printf "%s: median %.0f req/s, mean %.0f, %d runs\n", k, med[k], sum[k] / c, c
        }
        printf "B/A (medians): %.3f\n", med["B"] / med["A"]
    }'
