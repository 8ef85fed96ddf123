#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECS seconds (default 20), from an empty corpus
# kept under fuzz/corpus/. Installs cargo-fuzz when missing; needs the nightly toolchain.
# Longer runs: `bash fuzz/run.sh 3600`, or one target: `cargo +nightly fuzz run range`.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cargo +nightly fuzz build --release 2>&1 | tail -n 3
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run --release "$target" "corpus/$target" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $target: $runs executions in ${secs} s, no crash"
  rm -f "$log"
done
