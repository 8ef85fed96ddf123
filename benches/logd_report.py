#!/usr/bin/env python3
"""benches/logd_report.py RESULTS_DIR: the summary of one benches/logd.sh run, as markdown.

Reads RESULTS_DIR/raw/LABEL.rK.json (one JSON object each; LABEL.rK.cpu beside a run holds the
server's CPU seconds over it) and prints, per scenario, the median and range over the
repetitions of each side and of the per-repetition ratio, with the target and a verdict:
"meets" only when the low end of the ratio's range clears the target, "misses" when its high end
does not, "mixed" otherwise. A missing or failed run shows as "n/a"; nothing is invented.
"""
import glob
import json
import os
import re
import statistics
import sys

REP = re.compile(r"^(.*)\.r(\d+)$")


def load(raw):
    """{label: {rep: run}} for raw/LABEL.rK.json, with "cpu_s" from LABEL.rK.cpu."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        if name.endswith(".send"):
            continue
        m = REP.match(name)
        if not m:
            continue
        try:
            with open(path) as f:
                run = json.loads(f.readline())
        except (OSError, ValueError):
            continue
        try:
            with open(path[: -len(".json")] + ".cpu") as f:
                run["cpu_s"] = float(f.read().strip())
        except (OSError, ValueError):
            pass
        runs.setdefault(m.group(1), {})[int(m.group(2))] = run
    return runs


def spread(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med) + " (n=1)"
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))}, n={len(values)})"


def field(runs, label, key, scale=1.0):
    """{rep: value} of one field."""
    out = {}
    for rep, run in runs.get(label, {}).items():
        v = run
        for k in key.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            out[rep] = v * scale
    return out


def ratios(a, b):
    return [a[r] / b[r] for r in sorted(a) if r in b and b[r]]


def verdict(rs, target):
    if not rs:
        return "n/a"
    if min(rs) >= target:
        return "meets"
    if max(rs) < target:
        return "misses"
    return "mixed (not met)"


def cpu_per_gb(runs, label):
    out = {}
    for rep, run in runs.get(label, {}).items():
        if run.get("cpu_s") is not None and run.get("bytes"):
            out[rep] = run["cpu_s"] / (run["bytes"] / 1e9)
    return out


def throughput_row(runs, what, a, b, target):
    mb_a = field(runs, a, "bytes_per_s", 1e-6)
    mb_b = field(runs, b, "bytes_per_s", 1e-6)
    rs = ratios(mb_a, mb_b)
    return (
        f"| {what} | {spread(list(mb_a.values()), '{:.0f}')} | {spread(list(mb_b.values()), '{:.0f}')} "
        f"| {spread(rs)} | >= {target} | {verdict(rs, target)} |"
    )


def main():
    out_dir = sys.argv[1]
    runs = load(os.path.join(out_dir, "raw"))
    try:
        with open(os.path.join(out_dir, "machine.txt")) as f:
            machine = f.read().strip()
    except OSError:
        machine = ""
    print("# logd benchmarks\n")
    print("```\n" + machine + "\n```\n")
    print("Throughput in MB/s (10^6 bytes), median (range, n) over the repetitions; the ratio is")
    print("taken per repetition, then its median and range.\n")
    print("| comparison | logd MB/s | reference MB/s | logd / reference | target | verdict |")
    print("|---|---|---|---|---|---|")
    if "s1-logd" in runs:
        print(throughput_row(runs, "1 durable acks vs the sink (same bytes, same fdatasync cadence)", "s1-logd", "s1-sink", 0.8))
    if "s2-logd" in runs:
        print(throughput_row(runs, "2 no fsync vs `nc -l > file`", "s2-logd", "s2-nc", 0.9))
    if "s3-logd" in runs:
        print(throughput_row(runs, "3 durable acks vs rsyslog imptcp->omfile", "s3-logd", "s3-rsyslog", 2.0))
        print(throughput_row(runs, "3 no fsync vs rsyslog imptcp->omfile", "s3-logd-nofsync", "s3-rsyslog", 2.0))
        print()
        print("Server CPU seconds per GB received, median (range, n):\n")
        print("| server | CPU s/GB |")
        print("|---|---|")
        for label, name in [("s3-logd", "logd, durable"), ("s3-logd-nofsync", "logd, no fsync"),
                            ("s3-rsyslog", "rsyslog"), ("s1-sink", "sink (fdatasync)"),
                            ("s2-logd", "logd, no fsync (scenario 2)"), ("s2-nc", "nc")]:
            if label in runs:
                print(f"| {name} | {spread(list(cpu_per_gb(runs, label).values()))} |")
        ack = field(runs, "s1-logd", "ack_p99_us", 1e-3)
        if ack:
            print(f"\nlogd ACK p99 under full ingest (scenario 1): {spread(list(ack.values()), '{:.1f}')} ms")
    if "s4-logd" in runs or "s4-rsyslog" in runs:
        print("\n## kill -9 mid-run (lines)\n")
        print("| server | repetition | sent | held | lost | duplicated | corrupt |")
        print("|---|---|---|---|---|---|---|")
        for label, name in [("s4-logd", "logd + oasis log-ship"), ("s4-rsyslog", "rsyslog + plain TCP (reconnecting)")]:
            for rep, run in sorted(runs.get(label, {}).items()):
                print(f"| {name} | {rep} | {run.get('sent')} | {run.get('held')} | {run.get('lost')} "
                      f"| {run.get('duplicated')} | {run.get('corrupt')} |")
        lost = [r.get("lost", 1) + r.get("duplicated", 1) + r.get("corrupt", 1)
                for r in runs.get("s4-logd", {}).values()]
        if lost:
            print(f"\nlogd loses and repeats nothing: {'meets' if max(lost) == 0 else 'misses'}")
    if "s5-hold" in runs:
        h = runs["s5-hold"]
        conns = sorted({r.get("conns") for r in h.values()})
        print(f"\n## {conns} shippers held by one logd\n")
        print("| metric | median (range, n) |")
        print("|---|---|")
        rows = [
            ("connect time, s", "connect_s", 1.0, "{:.1f}"),
            ("server RSS per connection, idle, bytes", "rss_bytes_per_conn_idle", 1.0, "{:.0f}"),
            ("server RSS per connection, at half load, bytes", "rss_bytes_per_conn_half_load", 1.0, "{:.0f}"),
            ("peak, MB/s", "peak_bytes_per_s", 1e-6, "{:.1f}"),
            ("peak ACK p99, ms", "peak_ack.p99_us", 1e-3, "{:.1f}"),
            ("half load, MB/s", "half_bytes_per_s", 1e-6, "{:.1f}"),
            ("each shipper sends a frame every, ms", "half_interval_ms_per_conn", 1.0, "{:.0f}"),
            ("ACK p50 at half load, ms", "half_ack.p50_us", 1e-3, "{:.2f}"),
            ("ACK p99 at half load, ms", "half_ack.p99_us", 1e-3, "{:.2f}"),
            ("ACK max at half load, ms", "half_ack.max_us", 1e-3, "{:.1f}"),
        ]
        for name, key, scale, fmt in rows:
            print(f"| {name} | {spread(list(field(runs, 's5-hold', key, scale).values()), fmt)} |")


if __name__ == "__main__":
    main()
