#!/usr/bin/env python3
"""benches/report.py RESULTS_DIR: turn the raw JSON of one compare.sh run into summary.md and plots.

Reads RESULTS_DIR/raw/*.json (one oasis-loadgen object per file, named LABEL__SERVER.json),
*.wrk.txt, fio-cold.json and iperf3-*.json; writes RESULTS_DIR/summary.md (absolute numbers and
the ratios Oasis/nginx and Oasis/limit), RESULTS_DIR/summary.json (the same rows with every
repetition's values and ratios) and PNG + SVG bar charts when matplotlib is present.
Never invents a number: a missing or failed run shows as "n/a" with the reason.

Repetitions (compare.sh --repeat N) are labelled LABEL.rK; they are grouped by LABEL. A grouped
row shows the median per server and the median of the per-repetition Oasis/nginx ratios with
their min-max range, e.g. "1.07 (0.98-1.15, n=3)". Without repetitions the output is one run's.

Scenarios 5 and 9 (viewer capacity, 2x overload) have their own tables: report_viewers.py.

Scenario 8 (signed links) is Oasis alone: its labels end in -public or -signed (before .rK), and
its table gives the median of the per-repetition signed/public ratios the same way.
"""
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_viewers import capacity_lines, overload_lines  # noqa: E402

REP_RE = re.compile(r"^(.*)\.r(\d+)$")


def load_raw(raw, ext, parse):
    """{(label, server): {repetition: parsed}} for raw/LABEL[.rK]__SERVER<ext>; repetition 0 = none."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*__*" + ext))):
        label, server = os.path.basename(path)[: -len(ext)].split("__", 1)
        m = REP_RE.match(label)
        label, rep = (m.group(1), int(m.group(2))) if m else (label, 0)
        runs.setdefault((label, server), {})[rep] = parse(path)
    return runs


def parse_json(path):
    try:
        with open(path) as f:
            run = json.loads(f.readline())
    except (OSError, ValueError) as e:
        return {"na": f"unreadable: {e}"}
    # compare.sh writes the server's CPU seconds over the run beside it (LABEL__SERVER.cpu).
    try:
        with open(path[: -len(".json")] + ".cpu") as f:
            cpu = float(f.read().strip())
    except (OSError, ValueError):
        cpu = None
    if cpu is not None and "na" not in run:
        run["server_cpu_s"] = cpu
        gb = run.get("bytes_received", 0) / 1e9
        if gb > 0:
            run["server_cpu_s_per_gb"] = cpu / gb
        # Cores the server and the client had between them: on a shared box, what other work
        # left this run (2.0 = both cores of a 2-core machine).
        if is_num(run.get("client_cpu_s")) and run.get("elapsed_s"):
            run["cores_used"] = (cpu + run["client_cpu_s"]) / run["elapsed_s"]
    return run


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
    if unit == "s/GB":
        return f"{v:.3f} s/GB"
    if unit == "cores":
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}"


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ratio(a, b):
    if is_num(a) and is_num(b) and b:
        return f"{a / b:.2f}"
    return "n/a"


def median_or_reason(values):
    """Median of the numeric values; else the first reason (string) or None."""
    nums = [v for v in values if is_num(v)]
    if nums:
        return statistics.median(nums)
    return next((v for v in values if v is not None), None)


def combine(rn, ro, get, sides=("nginx", "oasis")):
    """One row over its repetitions. rn, ro: {repetition: run} of the base side (nginx, or
    public reads) and the measured one (Oasis, or signed reads), or None; get(run) -> number,
    reason string or None. Ratios are measured/base; sides names the two in the row."""
    rn, ro = rn or {}, ro or {}
    base, measured = sides
    reps = sorted(set(rn) | set(ro))
    vn = [get(rn.get(r)) for r in reps]
    vo = [get(ro.get(r)) for r in reps]
    per_rep = [o / n if is_num(n) and is_num(o) and n else None for n, o in zip(vn, vo)]
    ratios = [x for x in per_rep if x is not None]
    return {
        "repetitions": reps,
        base: vn,
        measured: vo,
        "ratios": per_rep,
        f"{base}_median": median_or_reason(vn),
        f"{measured}_median": median_or_reason(vo),
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "n": len(ratios),
    }


def ratio_cell(row):
    """Oasis/nginx: one run's ratio, or with repetitions the median (min-max, n)."""
    if row["ratio_median"] is None:
        return "n/a"
    if row["repetitions"] == [0]:
        return f"{row['ratio_median']:.2f}"
    return f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}, n={row['n']})"


def error_sum(runs, key="errors_total"):
    """A count (errors_total, responses_non2xx) summed over the repetitions that report it, or 'n/a'."""
    errs = [metric(r, key) for r in (runs or {}).values()]
    errs = [e for e in errs if isinstance(e, int)]
    return sum(errs) if errs else "n/a"


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
    ("s1-hot-c100", "server_cpu_s_per_gb", "s/GB", None, "1 hot 2 MiB, 100 conns: server CPU per GB"),
    ("s1-hot-c1000", "server_cpu_s_per_gb", "s/GB", None, "1 hot 2 MiB, 1000 conns: server CPU per GB"),
    ("s1-hot-c1000", "client_cpu_s_per_gb", "s/GB", None, "1 hot 2 MiB, 1000 conns: client CPU per GB"),
    ("s2-small-c100", "requests_per_s", "", None, "2 hot 64 KiB, 100 conns: requests/s"),
    ("s2-small-c100", "ttfb_us.p99", "us", None, "2 hot 64 KiB, 100 conns: TTFB p99"),
    ("s2-small-c100", "server_cpu_s_per_gb", "s/GB", None, "2 hot 64 KiB, 100 conns: server CPU per GB"),
    ("s3-cold", "bytes_per_s", "B/s", "fio", "3 cold sweep: throughput"),
    ("s4-mixed-small", "total_us.p99", "us", None, "4 mixed: hot-small p99 during cold sweep"),
    ("s4-mixed-cold", "bytes_per_s", "B/s", "fio", "4 mixed: cold sweep throughput"),
    ("s6-idle", "idle_accepted_by_server", "", None, "6 idle: connections accepted and held"),
    ("s6-idle", "total_us.p99", "us", None, "6 idle: active request p99 while held"),
    ("s6-idle", "rss_bytes_per_idle_conn", "B", None, "6 idle: server RSS per idle connection"),
]

# Scenario 8, Oasis alone, public against signed: (label suffix, metric key, unit, description)
SIGNED_ROWS = [
    ("s8-hot-c100", "bytes_per_s", "B/s", "8 hot 2 MiB, 100 conns: throughput"),
    ("s8-hot-c100", "server_cpu_s_per_gb", "s/GB", "8 hot 2 MiB, 100 conns: server CPU per GB"),
    ("s8-hot-c100", "total_us.p99", "us", "8 hot 2 MiB, 100 conns: full-response p99"),
    ("s8-hot-c100", "cores_used", "cores", "8 hot 2 MiB, 100 conns: server + client CPU, cores"),
    ("s8-small-c100", "requests_per_s", "", "8 hot 64 KiB, 100 conns: requests/s"),
    ("s8-small-c100", "server_cpu_s_per_gb", "s/GB", "8 hot 64 KiB, 100 conns: server CPU per GB"),
    ("s8-small-c100", "ttfb_us.p99", "us", "8 hot 64 KiB, 100 conns: TTFB p99"),
    ("s8-small-c100", "cores_used", "cores", "8 hot 64 KiB, 100 conns: server + client CPU, cores"),
]


def signed_table(layout, runs, json_rows):
    """Scenario 8's table lines (none when it did not run) and its non-2xx responses in all."""
    lines, non2xx = [], {}
    for suffix, key, unit, desc in SIGNED_ROWS:
        label = f"{layout}-{suffix}"
        rp, rs = runs.get((f"{label}-public", "oasis")), runs.get((f"{label}-signed", "oasis"))
        if rp is None and rs is None:
            continue
        if not lines:
            lines = ["Signed links against public reads (scenario 8, Oasis alone; signed/public is the "
                     "median of the per-repetition ratios, with their min-max and n):", "",
                     "| run | public | signed | signed/public | errors public / signed | not 2xx public / signed |",
                     "|---|---|---|---|---|---|"]
        row = combine(rp, rs, lambda run, k=key: metric(run, k), sides=("public", "signed"))
        counts = [(error_sum(r), error_sum(r, "responses_non2xx")) for r in (rp, rs)]
        non2xx[label] = sum(n for _, n in counts if isinstance(n, int))
        lines.append(
            f"| {desc} | {fmt(row['public_median'], unit)} | {fmt(row['signed_median'], unit)} | "
            f"{ratio_cell(row)} | {counts[0][0]} / {counts[1][0]} | {counts[0][1]} / {counts[1][1]} |"
        )
        json_rows.append(dict(layout=layout, client="loadgen", label=label, metric=key, unit=unit,
                              description=desc, **row))
    return lines, sum(non2xx.values())


def main():
    out_dir = sys.argv[1]
    raw = os.path.join(out_dir, "raw")
    runs = load_raw(raw, ".json", parse_json)
    wrks = load_raw(raw, ".wrk.txt", parse_wrk)
    repeated = any(rep for reps in list(runs.values()) + list(wrks.values()) for rep in reps)
    limits = {"fio": fio_limit(raw), "loopback": iperf_limit(raw)}
    layouts = sorted({label.split("-s", 1)[0] for label, _ in runs}) or ["combined"]
    lines = ["# Oasis vs nginx: load-run summary", ""]
    machine = ""
    try:
        machine = open(os.path.join(out_dir, "machine.txt")).read().strip()
        lines += ["```", machine, "```", ""]
    except OSError:
        pass
    notes = ""
    try:
        notes = open(os.path.join(out_dir, "notes.txt")).read().strip()
    except OSError:
        pass
    reasons = sorted({r["na"] for reps in runs.values() for r in reps.values() if isinstance(r, dict) and "na" in r})
    notes = "\n".join([n for n in [notes] if n] + [f"n/a cells: {r}" for r in reasons])
    if notes:
        lines += ["**Notes:**", ""] + [f"- {n}" for n in notes.splitlines()] + [""]
    lines += [
        "Limits: loopback (iperf3 -Z, one pair per core, summed) = " + fmt(limits["loopback"], "B/s")
        + "; cold read (fio io_uring, O_DIRECT, same files) = " + fmt(limits["fio"], "B/s"),
        "",
    ]
    if repeated:
        lines += [
            "Repeated runs: nginx and Oasis are medians over the repetitions; Oasis/nginx is the median of "
            "the per-repetition ratios (min-max, n = repetitions with both numbers); limit ratios use the "
            "medians; errors are summed over the repetitions. Every repetition is in `summary.json`.",
            "",
        ]
    plot_rows = []
    latency_rows = []
    json_rows = []
    for layout in layouts:
        lines += [f"## Layout `{layout}`", ""]
        for suffix, key, unit, lim, desc in ROWS:
            label = f"{layout}-{suffix}"
            rn, ro = runs.get((label, "nginx")), runs.get((label, "oasis"))
            if rn is None and ro is None:
                continue
            if not lines[-1].startswith("|"):
                lines += ["| scenario | nginx | Oasis | Oasis/nginx | limit | nginx/limit | Oasis/limit | errors nginx / Oasis |",
                          "|---|---|---|---|---|---|---|---|"]
            row = combine(rn, ro, lambda run, k=key: metric(run, k))
            vn, vo = row["nginx_median"], row["oasis_median"]
            limit = limits.get(lim) if lim else None
            en, eo = error_sum(rn), error_sum(ro)
            lines.append(
                f"| {desc} | {fmt(vn, unit)} | {fmt(vo, unit)} | {ratio_cell(row)} | "
                f"{fmt(limit, unit) if lim else '-'} | {ratio(vn, limit) if lim else '-'} | "
                f"{ratio(vo, limit) if lim else '-'} | {en} / {eo} |"
            )
            json_rows.append(dict(layout=layout, client="loadgen", label=label, metric=key, unit=unit,
                                  description=desc, limit=limit, errors_nginx=en, errors_oasis=eo, **row))
            if unit == "B/s":
                plot_rows.append((f"{layout} {desc.split(':')[0]}", vn, vo, limit))
            if unit == "us":
                latency_rows.append((f"{layout} {desc.split(':')[0]}", vn, vo))
        wrk_rows = []
        for label, server in sorted(wrks):
            if server != "nginx" or not (label.startswith(f"{layout}-") and label.endswith("-wrk")):
                continue
            wn, wo = wrks[(label, "nginx")], wrks.get((label, "oasis"))
            cells = {}
            for key in ("requests_per_s", "bytes_per_s", "p99_us"):
                row = combine(wn, wo, lambda w, k=key: (w or {}).get(k, (w or {}).get("na")))
                cells[key] = row
                json_rows.append(dict(layout=layout, client="wrk", label=label, metric=key, **row))
            med = lambda key, side: cells[key][f"{side}_median"]
            wrk_rows.append(
                f"| {label} | {fmt(med('requests_per_s', 'nginx'))} | {fmt(med('requests_per_s', 'oasis'))} | "
                f"{ratio_cell(cells['requests_per_s'])} | "
                f"{fmt(med('bytes_per_s', 'nginx'), 'B/s')} | {fmt(med('bytes_per_s', 'oasis'), 'B/s')} | "
                f"{fmt(med('p99_us', 'nginx'), 'us')} | {fmt(med('p99_us', 'oasis'), 'us')} |"
            )
        if wrk_rows:
            lines += ["", "wrk (independent client, one URL):", "",
                      "| run | nginx req/s | Oasis req/s | Oasis/nginx | nginx | Oasis | nginx p99 | Oasis p99 |",
                      "|---|---|---|---|---|---|---|---|"] + wrk_rows
        viewer_lines = capacity_lines(layout, runs, machine, json_rows, metric) + overload_lines(layout, runs, json_rows, metric)
        if viewer_lines:
            lines += ([""] if lines[-1] else []) + viewer_lines
        signed_lines, non2xx = signed_table(layout, runs, json_rows)
        if signed_lines:
            lines += ([""] if lines[-1] else []) + signed_lines
        if non2xx:
            # compare.sh --quick fails on this sentence: scenario 8 must measure served reads.
            lines += ["", f"**Scenario 8 had non-2xx responses**: {non2xx} in all (see raw/)."]
        lines.append("")
    lines += ["Raw data: `raw/` (one JSON object per run; `*.wrk.txt`, `fio-cold.json`, `iperf3-*.json`); "
              "every row with each repetition's values and ratios: `summary.json`.", ""]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"repeated": repeated, "limits": limits, "rows": json_rows}, f, indent=1)
        f.write("\n")
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
