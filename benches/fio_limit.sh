#!/usr/bin/env bash
# What fio (ioengine=io_uring) reaches on the file and block sizes of benches/read_path.rs: the
# limit those numbers are compared to. Sequential reads of the whole 256 MiB file, buffered (hot:
# fio is told not to invalidate the page cache) and O_DIRECT, at the same queue depth.
#
# Usage: benches/fio_limit.sh [FILE]
#   FILE           default: $OASIS_BENCH_DATA or target/bench-data, read_path_256MiB.bin (the
#                  file `cargo bench --bench read_path` creates; created here if missing)
#   FIO_IODEPTH    in-flight reads, default 8 (read_path.rs keeps 8 in flight)
#   FIO_LOOPS      passes over the file per job, default 4
#   FIO_COLD=1     evict the file before each job (fio invalidate=1) and make one pass: cold
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
data_dir="${OASIS_BENCH_DATA:-$root/target/bench-data}"
file="${1:-$data_dir/read_path_256MiB.bin}"
iodepth="${FIO_IODEPTH:-8}"
loops="${FIO_LOOPS:-4}"
invalidate=0
if [[ "${FIO_COLD:-0}" == 1 ]]; then
    # fio evicts the file once per job, so later passes would be hot again: one pass only.
    invalidate=1
    loops=1
fi

if ! command -v fio >/dev/null; then
    echo "fio not found: installing it with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi

size_bytes=$((256 << 20))
if [[ ! -f "$file" || "$(stat -c %s "$file")" != "$size_bytes" ]]; then
    echo "creating $file (256 MiB)" >&2
    mkdir -p "$(dirname "$file")"
    dd if=/dev/urandom of="$file" bs=1M count=256 status=none conv=fsync
fi

echo "fio $(fio --version | sed 's/^fio-//'), io_uring, iodepth $iodepth, $loops passes over $file"
echo "kernel $(uname -r), $(nproc) cpus"
printf '%-8s %-10s %12s\n' block mode GiB/s
for direct in 0 1; do
    mode=buffered
    [[ $direct == 1 ]] && mode=direct
    for bs in 64k 256k 1m 2m; do
        gib_s=$(fio --name=read_path --filename="$file" --readonly --ioengine=io_uring \
            --rw=read --bs="$bs" --iodepth="$iodepth" --direct="$direct" \
            --invalidate="$invalidate" --size=256M --loops="$loops" --numjobs=1 \
            --output-format=json |
            python3 -c 'import json, sys; print("%.2f" % (json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"] / 2**30))')
        printf '%-8s %-10s %12s\n' "$bs" "$mode" "$gib_s"
    done
done
