"""benches/report_viewers.py: the viewer tables of summary.md (scenarios 5 and 9), for report.py.

Scenario 5: per bitrate, viewers sustained without a stall by nginx and Oasis, side by side with
the limit of the same run (min(loopback / bitrate, descriptor limit), from machine.txt), the
server's CPU per viewer and RSS per viewer at the sustained step, with the ratios Oasis/nginx and
Oasis/limit. Scenario 9: viewers offered, admitted, refused (with or without Retry-After) and
stalled for each server, with the server's RSS. Repetitions (LABEL.rK) give the median and the
min-max of each figure and of each per-repetition ratio. Reads runs already parsed by report.py
(with its `metric` accessor); writes nothing itself.
"""
import re
import statistics

S5_RE = re.compile(r"-s5-hls-(\d+)k$")


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _spread(values, fmt="{:,.0f}"):
    """'median' or 'median (min-max)' of the numeric values; 'n/a' when there are none."""
    nums = [v for v in values if _num(v)]
    if not nums:
        return "n/a"
    med = fmt.format(statistics.median(nums))
    if len(nums) == 1:
        return med
    return f"{med} ({fmt.format(min(nums))}-{fmt.format(max(nums))})"


def _ratios(a_vals, b_vals):
    return [a / b if _num(a) and _num(b) and b else None for a, b in zip(a_vals, b_vals)]


def _series(reps, key, metric):
    """Each repetition's value of a dotted key (report.py's `metric`: a number, a reason or None)."""
    return [metric(reps.get(r), key) for r in sorted(reps)] if reps else []


def limits_from_machine(text):
    """{kbps: viewer limit} and the run's loopback bit/s and descriptor limit, from machine.txt."""
    per_rate, loopback, nofile = {}, None, None
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["viewer_limit"] and len(parts) == 3:
            per_rate[parts[1].rstrip("k")] = int(parts[2])
        elif parts[:1] == ["viewer_limits"]:
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            loopback, nofile = int(kv.get("loopback_bps", 0)) or None, kv.get("nofile")
    return per_rate, loopback, nofile


def capacity_lines(layout, runs, machine_text, json_rows, metric):
    """Scenario 5's table (no lines when it did not run)."""
    per_rate, loopback, nofile = limits_from_machine(machine_text)
    rates = sorted({int(m.group(1)) for (label, _), _ in runs.items()
                    if label.startswith(layout + "-") and (m := S5_RE.search(label))})
    if not rates:
        return []
    lines = [
        "Viewer capacity (scenario 5: HLS players, 4 s segments, 8 s buffer; viewers added step by "
        "step until one stalls; CPU and RSS at the last step without a stall, over its second half). "
        f"Limit = min(loopback {loopback / 1e9 if loopback else 0:.1f} Gbit/s / bitrate, "
        f"descriptors {nofile}). Medians over repetitions with (min-max); ratios are per repetition.",
        "",
        "| bitrate | nginx viewers | Oasis viewers | Oasis/nginx | limit | Oasis/limit | "
        "nginx CPU ms per viewer-s | Oasis CPU ms per viewer-s | Oasis/nginx CPU | "
        "nginx RSS per viewer | Oasis RSS per viewer | capped (n/O) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kbps in rates:
        label = f"{layout}-s5-hls-{kbps}k"
        rn, ro = runs.get((label, "nginx")) or {}, runs.get((label, "oasis")) or {}
        vn, vo = _series(rn, "streams_sustained", metric), _series(ro, "streams_sustained", metric)
        cn = _series(rn, "at_sustained.server_cpu_ms_per_viewer_s", metric)
        co = _series(ro, "at_sustained.server_cpu_ms_per_viewer_s", metric)
        mn = _series(rn, "at_sustained.server_rss_bytes_per_viewer", metric)
        mo = _series(ro, "at_sustained.server_rss_bytes_per_viewer", metric)
        limit = per_rate.get(str(kbps))
        capped = [sum(1 for r in reps.values() if metric(r, "capped_without_stall") is True) for reps in (rn, ro)]
        lines.append(
            f"| {kbps / 1000:g} Mbit/s | {_spread(vn)} | {_spread(vo)} | {_spread(_ratios(vo, vn), '{:.2f}')} | "
            f"{limit if limit is not None else 'n/a'} | "
            f"{_spread(_ratios(vo, [limit] * len(vo)), '{:.2f}')} | "
            f"{_spread(cn, '{:.3f}')} | {_spread(co, '{:.3f}')} | {_spread(_ratios(co, cn), '{:.2f}')} | "
            f"{_spread([m / 1024 if _num(m) else None for m in mn], '{:.1f} KiB')} | "
            f"{_spread([m / 1024 if _num(m) else None for m in mo], '{:.1f} KiB')} | "
            f"{capped[0]}/{capped[1]} |"
        )
        json_rows.append(dict(layout=layout, client="loadgen", label=label, metric="viewers",
                              limit=limit, nginx=vn, oasis=vo, nginx_cpu_ms=cn, oasis_cpu_ms=co,
                              nginx_rss_b=mn, oasis_rss_b=mo))
    lines += ["", "capped: repetitions that reached --max-streams without a stall (the number is then a floor).", ""]
    return lines


def overload_lines(layout, runs, json_rows, metric):
    """Scenario 9's table (no lines when it did not run)."""
    labels = sorted({label for (label, _), _ in runs.items()
                     if label.startswith(layout + "-") and "-s9-overload-" in label})
    lines = []
    for label in labels:
        if not lines:
            lines = [
                "2x overload (scenario 9: progressive MP4 viewers; Oasis's bandwidth_bps fits C of "
                "them at bitrate x factor_progressive, 2C offered to each server). Medians over "
                "repetitions with (min-max).",
                "",
                "| run | server | offered | admitted | refused, never admitted | refusals / with Retry-After | "
                "admitted viewers that stalled | stalls | server RSS before / max (MiB) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
        for server in ("nginx", "oasis"):
            reps = runs.get((label, server)) or {}
            col = lambda k: _spread(_series(reps, k, metric))
            rss = (_spread([v / 1024 if _num(v) else None for v in _series(reps, "at_sustained.server_rss_kib_before_run", metric)], "{:.1f}")
                   + " / " + _spread([v / 1024 if _num(v) else None for v in _series(reps, "server_rss_kib_max", metric)], "{:.1f}"))
            lines.append(
                f"| {label.split('-s9-', 1)[1]} | {server} | {col('viewers.viewers')} | {col('viewers.admitted')} | "
                f"{col('viewers.refused_never_admitted')} | {col('viewers.refusals')} / "
                f"{col('viewers.refusals_with_retry_after')} | {col('viewers.admitted_stalled')} | "
                f"{col('viewers.stalls_total')} | {rss} |"
            )
            json_rows.append(dict(layout=layout, client="loadgen", label=label, metric="overload",
                                  server=server, viewers=_series(reps, "viewers", metric)))
    return lines + ([""] if lines else [])
