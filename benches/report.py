#!/usr/bin/env python3
"""benches/report.py RESULTS_DIR: turn the raw JSON of one compare.sh run into summary.md and plots.

Reads RESULTS_DIR/raw/*.json (one oasis-loadgen object per file, named LABEL__SERVER.json),
*.wrk.txt, fio-cold.json and iperf3-*.json; writes RESULTS_DIR/summary.md (absolute numbers and
the ratios Oasis/nginx and Oasis/limit) and PNG + SVG bar charts when matplotlib is present.
Never invents a number: a missing or failed run shows as "n/a" with the reason.
"""
import glob
import json
import os
import re
import sys


def load_runs(raw):
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*__*.json"))):
        label, server = os.path.basename(path)[: -len(".json")].split("__", 1)
        try:
            with open(path) as f:
                runs[(label, server)] = json.loads(f.readline())
        except (OSError, ValueError) as e:
            runs[(label, server)] = {"na": f"unreadable: {e}"}
    return runs


def parse_wrk(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    if text.startswith("n/a"):
        return {"na": text.strip()}
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["requests_per_s"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    if m:
        mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
        out["bytes_per_s"] = float(m.group(1)) * mult
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    if m:
        mult = {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)]
        out["p99_us"] = float(m.group(1)) * mult
    m = re.search(r"Socket errors: (.*)", text)
    if m:
        out["socket_errors"] = m.group(1).strip()
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out or {"na": "wrk output not understood"}


def fio_limit(raw):
    try:
        text = open(os.path.join(raw, "fio-cold.json")).read()
        d = json.loads(text[text.index("{"):])  # fio may print notices before the JSON
        return d["jobs"][0]["read"]["bw_bytes"]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def iperf_limit(raw):
    """Sum of the parallel iperf3 pairs (one per core), bytes/s."""
    total = 0.0
    paths = glob.glob(os.path.join(raw, "iperf3-*.json"))
    for path in paths:
        try:
            d = json.load(open(path))
            total += d["end"]["sum_received"]["bits_per_second"] / 8
        except (OSError, ValueError, KeyError):
            return None
    return total if paths else None


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return "n/a" if v.startswith("n/a") else v
    if unit == "B/s":
        return f"{v / 1e9 * 8:.2f} Gbit/s"
    if unit == "us":
        return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"
    if unit == "B":
        return f"{v / 1024:.1f} KiB" if v >= 1024 else f"{v:.0f} B"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}"
    return "n/a"


def metric(run, key):
    """Value of a dotted key in a run, or the reason it is missing."""
    if run is None:
        return None
    if "na" in run:
        return run["na"]
    v = run
    for part in key.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v


# (label suffix, metric key, unit, limit name, description)
ROWS = [
    ("s1-hot-c100", "bytes_per_s", "B/s", "loopback", "1 hot 2 MiB, 100 conns: throughput"),
    ("s1-hot-c100", "total_us.p99", "us", None, "1 hot 2 MiB, 100 conns: full-response p99"),
    ("s1-hot-c1000", "bytes_per_s", "B/s", "loopback", "1 hot 2 MiB, 1000 conns: throughput"),
    ("s1-hot-c1000", "total_us.p99", "us", None, "1 hot 2 MiB, 1000 conns: full-response p99"),
    ("s2-small-c100", "requests_per_s", "", None, "2 hot 64 KiB, 100 conns: requests/s"),
    ("s2-small-c100", "ttfb_us.p99", "us", None, "2 hot 64 KiB, 100 conns: TTFB p99"),
    ("s3-cold", "bytes_per_s", "B/s", "fio", "3 cold sweep: throughput"),
    ("s4-mixed-small", "total_us.p99", "us", None, "4 mixed: hot-small p99 during cold sweep"),
    ("s4-mixed-cold", "bytes_per_s", "B/s", "fio", "4 mixed: cold sweep throughput"),
    ("s5-paced", "streams_sustained", "", None, "5 paced 4 Mbit/s: streams sustained"),
    ("s6-idle", "idle_accepted_by_server", "", None, "6 idle: connections accepted and held"),
    ("s6-idle", "total_us.p99", "us", None, "6 idle: active request p99 while held"),
    ("s6-idle", "rss_bytes_per_idle_conn", "B", None, "6 idle: server RSS per idle connection"),
]


def main():
    out_dir = sys.argv[1]
    raw = os.path.join(out_dir, "raw")
    runs = load_runs(raw)
    limits = {"fio": fio_limit(raw), "loopback": iperf_limit(raw)}
    layouts = sorted({label.split("-s", 1)[0] for label, _ in runs}) or ["combined"]
    lines = ["# Oasis vs nginx: load-run summary", ""]
    try:
        lines += ["```", open(os.path.join(out_dir, "machine.txt")).read().strip(), "```", ""]
    except OSError:
        pass
    notes = ""
    try:
        notes = open(os.path.join(out_dir, "notes.txt")).read().strip()
    except OSError:
        pass
    reasons = sorted({r["na"] for r in runs.values() if isinstance(r, dict) and "na" in r})
    notes = "\n".join([n for n in [notes] if n] + [f"n/a cells: {r}" for r in reasons])
    if notes:
        lines += ["**Notes:**", ""] + [f"- {n}" for n in notes.splitlines()] + [""]
    lines += [
        "Limits: loopback (iperf3 -Z, one pair per core, summed) = " + fmt(limits["loopback"], "B/s")
        + "; cold read (fio io_uring, O_DIRECT, same files) = " + fmt(limits["fio"], "B/s"),
        "",
    ]
    plot_rows = []
    latency_rows = []
    for layout in layouts:
        lines += [f"## Layout `{layout}`", ""]
        lines += ["| scenario | nginx | Oasis | Oasis/nginx | limit | nginx/limit | Oasis/limit | errors nginx / Oasis |",
                  "|---|---|---|---|---|---|---|---|"]
        for suffix, key, unit, lim, desc in ROWS:
            label = f"{layout}-{suffix}"
            rn, ro = runs.get((label, "nginx")), runs.get((label, "oasis"))
            if rn is None and ro is None:
                continue
            vn, vo = metric(rn, key), metric(ro, key)
            limit = limits.get(lim) if lim else None
            en = metric(rn, "errors_total")
            eo = metric(ro, "errors_total")
            lines.append(
                f"| {desc} | {fmt(vn, unit)} | {fmt(vo, unit)} | {ratio(vo, vn)} | "
                f"{fmt(limit, unit) if lim else '-'} | {ratio(vn, limit) if lim else '-'} | "
                f"{ratio(vo, limit) if lim else '-'} | {en if isinstance(en, int) else 'n/a'} / "
                f"{eo if isinstance(eo, int) else 'n/a'} |"
            )
            if unit == "B/s":
                plot_rows.append((f"{layout} {desc.split(':')[0]}", vn, vo, limit))
            if unit == "us":
                latency_rows.append((f"{layout} {desc.split(':')[0]}", vn, vo))
        wrk_rows = []
        for path in sorted(glob.glob(os.path.join(raw, f"{layout}-*-wrk__nginx.wrk.txt"))):
            label = os.path.basename(path).split("__")[0]
            wn = parse_wrk(path)
            wo = parse_wrk(path.replace("__nginx.", "__oasis."))
            get = lambda w, k: (w or {}).get(k, (w or {}).get("na"))
            wrk_rows.append(
                f"| {label} | {fmt(get(wn, 'requests_per_s'))} | {fmt(get(wo, 'requests_per_s'))} | "
                f"{ratio(get(wo, 'requests_per_s'), get(wn, 'requests_per_s'))} | "
                f"{fmt(get(wn, 'bytes_per_s'), 'B/s')} | {fmt(get(wo, 'bytes_per_s'), 'B/s')} | "
                f"{fmt(get(wn, 'p99_us'), 'us')} | {fmt(get(wo, 'p99_us'), 'us')} |"
            )
        if wrk_rows:
            lines += ["", "wrk (independent client, one URL):", "",
                      "| run | nginx req/s | Oasis req/s | Oasis/nginx | nginx | Oasis | nginx p99 | Oasis p99 |",
                      "|---|---|---|---|---|---|---|---|"] + wrk_rows
        lines.append("")
    lines += ["Raw data: `raw/` (one JSON object per run; `*.wrk.txt`, `fio-cold.json`, `iperf3-*.json`).", ""]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    plot(out_dir, plot_rows, latency_rows)


def plot(out_dir, rows, latency_rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", file=sys.stderr)
        return
    w = 0.28
    if rows:
        plot_throughput(out_dir, plt, rows, w)
    if latency_rows:
        plot_latency(out_dir, plt, latency_rows, w)


def plot_throughput(out_dir, plt, rows, w):
    num = lambda v: v * 8 / 1e9 if isinstance(v, (int, float)) else 0.0
    names = [r[0] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(rows)), 4))
    ax.bar([x - w for x in xs], [num(r[1]) for r in rows], w, label="nginx")
    ax.bar(list(xs), [num(r[2]) for r in rows], w, label="Oasis (0 = n/a)")
    ax.bar([x + w for x in xs], [num(r[3]) for r in rows], w, label="limit (iperf3 / fio)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("Gbit/s")
    ax.set_title("Throughput: Oasis vs nginx vs limit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"throughput.{ext}"))
    plt.close(fig)


def plot_latency(out_dir, plt, latency_rows, w):
    ms = lambda v: v / 1000 if isinstance(v, (int, float)) else 0.0
    xs = range(len(latency_rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(latency_rows)), 4))
    ax.bar([x - w / 2 for x in xs], [ms(r[1]) for r in latency_rows], w, label="nginx")
    ax.bar([x + w / 2 for x in xs], [ms(r[2]) for r in latency_rows], w, label="Oasis (0 = n/a)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r[0] for r in latency_rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("p99, ms (log)")
    ax.set_yscale("log")
    ax.set_title("p99 latency: Oasis vs nginx (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"latency_p99.{ext}"))
    plt.close(fig)


if __name__ == "__main__":
    main()
