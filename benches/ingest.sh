#!/usr/bin/env bash
# benches/ingest.sh: ingest throughput of two Oasis builds, alternating runs.
#
#   bash benches/ingest.sh OLD_BIN NEW_BIN [--files N] [--size BYTES] [--rounds R] [--dir DIR]
#
# Makes N files of BYTES random bytes once (default 400 x 1 MiB), then in each round imports
# them with `oasis import` into a fresh data directory under DIR (default: a temp directory on
# the file system of /tmp; put it on the disk you care about) with OLD and NEW in turn, the order
# rotating every round. Every object is fsynced, renamed and committed as an upload is, so this
# measures the ingest path, catalog commits included. Prints each run's MB/s and, at the end, the
# median of NEW/OLD with its range over the rounds. Use it to price a change to the ingest order
# (e.g. the object record written with each file).
set -euo pipefail
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 2 ]] || usage
OLD=$(realpath "$1") NEW=$(realpath "$2"); shift 2
FILES=400 SIZE=$((1024 * 1024)) ROUNDS=5 DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --files) FILES=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --dir) DIR=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "ingest.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
WORK=$(mktemp -d "${DIR:-/tmp}/oasis-ingest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
for ((i = 0; i < FILES; i++)); do
  head -c "$SIZE" /dev/urandom >"$WORK/src/$(printf 'f%05d.bin' "$i")"
done
total_mb=$(awk -v n="$FILES" -v s="$SIZE" 'BEGIN { printf "%.1f", n * s / 1e6 }')
echo "ingest: $FILES files of $SIZE bytes ($total_mb MB), $ROUNDS rounds"

run() { # bin label -> MB/s
  local bin=$1 data="$WORK/data-$2"
  rm -rf "$data"
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" import "$WORK/src" --data-dir "$data" >/dev/null 2>&1
  t1=$(date +%s.%N)
  awk -v mb="$total_mb" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", mb / (b - a) }'
}

ratios=()
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then
    old=$(run "$OLD" old); new=$(run "$NEW" new)
  else
    new=$(run "$NEW" new); old=$(run "$OLD" old)
  fi
  ratio=$(awk -v a="$new" -v b="$old" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  echo "round $((r + 1)): old $old MB/s, new $new MB/s, new/old $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
  { v[NR] = $1 }
  END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "new/old median %.3f (range %.3f-%.3f, n=%d)\n", m, v[1], v[NR], NR }'
