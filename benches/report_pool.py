"""benches/report_pool.py: summary.md of benches/pool.sh from its raw/results.tsv.

Rows (tab-separated, after '#' header lines that carry the command and settings):
  agg   REP N GBPS ERRORS                      N nodes loaded at once, aggregate Gbit/s
  proxy REP direct|proxy GBPS ERRORS CPU_S GB  one node's object, direct or through node 3
  redirect REP holder|redirect REQ_PER_S MEAN_US ERRORS   64 B: 200 from node 1, 307 from node 2
  repl  REP GB T_DOWN_S T_DONE_S ROWS          kill -9 of node 1: loss seen, count restored
Every ratio is taken within one repetition, then summarised as median (min-max).

usage: python3 benches/report_pool.py raw/results.tsv > summary.md
"""
import math
import statistics
import sys

from report_viewers import _spread


def spread(values, fmt="{:.2f}"):
    """'median (min-max)' of the values that are numbers (report_viewers' format)."""
    return _spread([v for v in values if v is not None and not math.isnan(v)], fmt)


def verdict(ratios, goal):
    nums = [r for r in ratios if r is not None]
    if not nums:
        return "n/a"
    med = statistics.median(nums)
    if min(nums) >= goal:
        return f"meets >= {goal} in every repetition"
    if med >= goal:
        return f"median meets >= {goal}, not every repetition"
    return f"short of {goal}"


def main(path):
    header, agg, proxy, repl, redirect = [], {}, {}, [], {}
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        if line.startswith("#"):
            header.append(line[1:].strip())
            continue
        f = line.split("\t")
        if f[0] == "agg":
            agg.setdefault(int(f[1]), {})[int(f[2])] = (float(f[3]), int(f[4]))
        elif f[0] == "proxy":
            proxy.setdefault(int(f[1]), {})[f[2]] = (float(f[3]), int(f[4]), float(f[5]), float(f[6]))
        elif f[0] == "redirect":
            redirect.setdefault(int(f[1]), {})[f[2]] = (float(f[3]), float(f[4]), int(f[5]))
        elif f[0] == "repl":
            repl.append(tuple(float(x) for x in f[2:5]) + (int(f[5]),))
    reps = sorted(agg)
    out = ["# Pool benchmarks (benches/pool.sh)", ""]
    out += [f"    {h}" for h in header] + [""]

    out += ["## Aggregate GET throughput, N nodes loaded at once", ""]
    out += ["| nodes | Gbit/s | aggregate / (N x one node) | errors |", "| --- | --- | --- | --- |"]
    ratios3 = []
    for n in (1, 2, 3):
        rates = [agg[r].get(n, (None, 0))[0] for r in reps]
        ratios = [
            agg[r][n][0] / (n * agg[r][1][0]) if n in agg[r] and agg[r].get(1, (0,))[0] else None
            for r in reps
        ]
        if n == 3:
            ratios3 = ratios
        errors = sum(agg[r].get(n, (0, 0))[1] for r in reps)
        out.append(f"| {n} | {spread(rates, '{:.3f}')} | {spread(ratios)} | {errors} |")
    for n in (2, 3):
        rs = [agg[r][n][0] / (n * agg[r][1][0]) for r in reps if n in agg[r] and agg[r].get(1)]
        out.append("")
        out.append(f"{n} nodes against the goal >= 0.9 x N: {verdict(rs, 0.9)}.")
    out.append("")

    out += ["## Proxy mode against direct (client -> node 3 -> holder node 1, vs client -> node 1)", ""]
    out += ["| path | Gbit/s | node CPU s per GB | errors |", "| --- | --- | --- | --- |"]
    preps = sorted(proxy)
    per_gb = {}
    for mode in ("direct", "proxy"):
        rows = [proxy[r].get(mode) for r in preps]
        per_gb[mode] = [x[2] / x[3] if x and x[3] else None for x in rows]
        out.append(
            f"| {mode} | {spread([x[0] if x else None for x in rows], '{:.3f}')} | "
            f"{spread(per_gb[mode], '{:.3f}')} | {sum(x[1] for x in rows if x)} |"
        )
    ratio = [
        proxy[r]["proxy"][0] / proxy[r]["direct"][0]
        if "proxy" in proxy[r] and "direct" in proxy[r] and proxy[r]["direct"][0]
        else None
        for r in preps
    ]
    extra = [p - d if p is not None and d is not None else None for p, d in zip(per_gb["proxy"], per_gb["direct"])]
    out.append("")
    out.append(f"proxy / direct: {spread(ratio)} ({verdict(ratio, 0.8)}); extra node CPU per GB "
               f"in proxy mode: {spread(extra, '{:.3f}')} s.")
    out.append("")

    if redirect:
        # Time per request by Little's law over the busy connections; wrk's own mean latency
        # (raw column 5) disagreed with it by orders of magnitude on this box and is not used.
        conns = next((int(w.split("=")[1]) for h in header for w in h.split() if w.startswith("connections=")), 0)
        out += ["## Redirect against a hit: 64-byte object, 200 from its holder, 307 from node 2", ""]
        out += [f"| answer | requests/s | us per request ({conns} connections / rate) | errors |",
                "| --- | --- | --- | --- |"]
        rreps = sorted(redirect)
        for mode in ("holder", "redirect"):
            rows = [redirect[r].get(mode) for r in rreps]
            per = [conns * 1e6 / x[0] if x and x[0] else None for x in rows]
            out.append(
                f"| {mode} | {spread([x[0] if x else None for x in rows], '{:,.0f}')} | "
                f"{spread(per, '{:,.0f}')} | {sum(x[2] for x in rows if x)} |"
            )
        both = [redirect[r] for r in rreps if "holder" in redirect[r] and "redirect" in redirect[r]]
        rate = [b["redirect"][0] / b["holder"][0] if b["holder"][0] else None for b in both]
        serial = [1e6 / b["redirect"][0] if b["redirect"][0] else None for b in both]
        out.append("")
        out.append(f"redirect / holder requests per second: {spread(rate, '{:.3f}')}; one redirect per "
                   f"{spread(serial, '{:,.0f}')} us of the node's time (1 / rate).")
        out.append("")

    out += ["## Replica count restored after kill -9 of a holder", ""]
    out += ["| GB lost | loss seen after s | restored after s | repair s (restored - seen) | repair s per GB | survivors' rows |",
            "| --- | --- | --- | --- | --- | --- |"]
    for gb, down, done, rows in repl:
        rep_s = done - down
        out.append(f"| {gb:.3f} | {down:.1f} | {done:.1f} | {rep_s:.1f} | {rep_s / gb:.1f} | {rows} |")
    if repl:
        out.append("")
        out.append(
            "median: restored after " + spread([r[2] for r in repl], "{:.1f}") + " s from the kill; "
            "repair " + spread([(r[2] - r[1]) / r[0] for r in repl], "{:.1f}") + " s per GB after the loss was seen; "
            "total " + spread([r[2] / r[0] for r in repl], "{:.1f}") + " s per GB from the kill."
        )
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
