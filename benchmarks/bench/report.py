"""The targets a run checks, and the report printed from a run's figures."""
from __future__ import annotations

from .plan import GB, SAME_RESULT_RTOL


def targets(result: dict) -> list[dict]:
    """The goals this benchmark checks; met is None where a figure is missing."""
    out = []
    merge, fb = result.get("merge", {}).get("methods", {}), result.get("fusionbench", {})
    ta = merge.get("task_arithmetic", {})
    if "bandwidth_fraction" in ta:
        out.append({"goal": "task arithmetic at >= 0.5 x the measured memory bandwidth",
                    "measured": f"{ta['bandwidth_fraction']:.2f} x", "met": ta["bandwidth_fraction"] >= 0.5})
    for m in ("ties", "tsv", "iso_c"):
        row = fb.get("methods", {}).get(m)
        if not fb.get("available") or row is None:
            continue
        used = row if "speedup" in row else row.get("fallback", {})
        if "speedup" in used:
            where = "" if used is row else f" (FusionBench out of memory at {row['tasks']} tasks; at {used['tasks']})"
            same = (f"same but for the exact-zero-sum rule at {used['differing_entries']} entries" if used.get("explained")
                    else f"same={used.get('same')}")
            out.append({"goal": f"{m} >= 10x faster than FusionBench, same result",
                        "measured": f"{used['speedup']:.1f}x, {same}{where}",
                        "met": used["speedup"] >= 10 and bool(used.get("same") or used.get("explained"))})
        else:
            out.append({"goal": f"{m} >= 10x faster than FusionBench, same result",
                        "measured": f"not comparable: {row.get('error')}", "met": None})
    peaks = {m: r["peak_multiple"] for m, r in merge.items() if "peak_multiple" in r}
    if peaks:
        worst = max(peaks, key=peaks.get)
        out.append({"goal": "peak memory of every merge <= 2 x the task vectors",
                    "measured": f"worst {worst} {peaks[worst]:.2f} x", "met": peaks[worst] <= 2})
    for key in ("evaluation", "evaluation_demo"):
        ev = result.get(key)
        if not ev:
            continue
        where = "the demo" if key == "evaluation_demo" else result.get("inputs", {}).get("model", "the synthetic cache")
        out.append({"goal": f"exact evaluation on {where} <= 0.5 x a plain float32 visual(x) loop",
                    "measured": f"{ev['fast_vs_bare']:.2f} x in {ev['precision']}", "met": ev["fast_vs_bare"] <= 0.5})
        out.append({"goal": f"{ev['precision']} predictions agree with float32 on >= 99.5 % of {where}'s images",
                    "measured": f"{100 * ev['agreement']:.2f} %", "met": ev["agreement"] >= 0.995})
        out.append({"goal": f"float32 Evaluator overhead over the bare loop <= 10 % ({where})",
                    "measured": f"{ev['float32_overhead_pct']:.1f} %", "met": ev["float32_overhead_pct"] <= 10})
    a = result.get("app")
    if a and "skipped" not in a:
        out.append({"goal": "the app adds <= 60 ms to an evaluation (/evaluate round trip - bare call, medians)",
                    "measured": f"{1000 * a['overhead_median_diff']:.0f} ms", "met": a["overhead_median_diff"] <= 0.060})
    c = result.get("cache")
    if c:
        worst = max(c["open_cold_s"], c["open_hot_s"])
        out.append({"goal": "Cache.open < 1 s", "measured": f"{worst * 1000:.1f} ms (cold or hot, the slower)",
                    "met": worst < 1})
    return out


def _gb(x) -> str:
    return "-" if x is None else f"{x / GB:.2f} GB"


def _s(x) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _pct(x) -> str:
    return "unknown" if x is None else f"{100 * x:.0f} %"


def _table(rows: list[list], header: list[str], text_last: bool = False) -> list[str]:
    """Numbers right-aligned; the first column, and the last when it holds text, left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 1} if text_last else {0}
    return ["  ".join(str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def _indent(lines: list[str]) -> list[str]:
    return ["  " + x for x in lines]


def _report_header(result: dict) -> list[str]:
    m, code = result["machine"], result["code"]
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    edits = f", with uncommitted {', '.join(code['uncommitted'])}" if code["uncommitted"] else ""
    lines = [(f"tvexplorer bench ({result['mode']}): {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
              f"{_gb(m['ram_bytes'])} RAM ({_gb(m['available_at_start_bytes'])} available), torch {m['torch']}, device {m['device']}{gpu}"),
             (f"Code: commit {code['commit'] or '?'}{edits}; load average {m['load_average_at_start']:.2f} at start, "
              f"{m['load_average_at_end']:.2f} at end (1-minute averages; they count this benchmark's own processes too)")]
    if "inputs" in result:
        i = result["inputs"]
        lines.append(f"Inputs: {i['tasks']} task vectors of {i['parameters']:,} parameters ({i['model']}, random), "
                     f"{i['dtype']}, {_gb(i['vector_bytes'])} in all")
    return lines


def _report_merge(result: dict) -> list[str]:
    merge, bw = result["merge"], result["bandwidth"]
    process = "a fresh process per merge" if merge["fresh_process"] else "one process for all"
    rows = []
    for m, r in merge["methods"].items():
        if r.get("error"):
            rows.append([m, "failed", "", "", "", "", "", "", r["error"][:80]])
        else:
            rows.append([m, _s(r["best_s"]), f"({_s(r['first_s'])})", r["calls"], f"{r['gbps']:.2f}",
                         _pct(r["bandwidth_fraction"]), _gb(r.get("peak_bytes")),
                         f"{r['peak_multiple']:.2f} x" if "peak_multiple" in r else "-", _pct(r["others_cpu_share"])])
    return ["", f"Merge (ours; CPU; memory-mapped float32 inputs; best of n calls, the first, after mapping, in brackets; {process})",
            (f"  against the memory bandwidth: {bw['copy_gbps']:.1f} GB/s (dst.copy_(src) of {_gb(bw['buffer_bytes'])}, "
             "read + write counted, best of 5)"),
            *_indent(_table(rows, ["method", "time", "(first)", "n", "GB/s read", "of bandwidth", "peak memory",
                                   "x task vectors", "others' CPU"])),
            ("  peak memory: the merge process's peak resident size above its size before it touched an input; "
             "it includes the input pages read; others' CPU: share of all cores other processes used meanwhile")]


def _fb_row(name: str, r: dict) -> list:
    multiple = lambda k: f"{r[k]:.2f} x" if r.get(k) is not None else "-"
    theirs = _s(r["theirs_s"]) if "theirs_s" in r else ("out of memory" if r.get("out_of_memory") else "failed")
    if r.get("out_of_memory"):
        same = f"- (out of memory: it may allocate {_gb(r.get('guard_bytes'))} beyond its inputs, and needed more)"
    elif r.get("explained"):
        same = (f"yes but {r['differing_entries']} entries, where ours is 0 (the exact-zero-sum rule, note 2) "
                f"({r['rel_max_diff']:.1e}, {r['rel_l2_diff']:.1e})")
    elif "same" in r:
        same = f"{'yes' if r['same'] else 'NO'} ({r['rel_max_diff']:.1e}, {r['rel_l2_diff']:.1e})"
    else:
        same = (r.get("error") or "-")[:90]
    others = f"{_pct(r.get('ours_others_cpu_share'))} / {_pct(r.get('theirs_others_cpu_share'))}"
    return [name, r["tasks"], _s(r.get("ours_s")), theirs, f"{r['ratio']:.3f}" if "ratio" in r else "-",
            f"{r['speedup']:.1f}x" if "speedup" in r else "-", multiple("ours_peak_multiple"),
            multiple("theirs_peak_multiple"), others, same]


def _report_fusionbench(result: dict) -> list[str]:
    fb = result["fusionbench"]
    if not fb["available"]:
        return ["", "Against FusionBench: skipped, FusionBench is not installed; install it with", f"    {fb['install']}"]
    rows = []
    for m, r in fb["methods"].items():
        rows.append(_fb_row(m, r))
        if "fallback" in r:
            rows.append(_fb_row(f"  {m}, first {r['fallback']['tasks']} tasks", r["fallback"]))
    guard = (f"; guarded at the memory available minus {_gb(fb['reserve_bytes'])}, an allocation past it is reported "
             "as out of memory")
    return ["", (f"Against FusionBench {fb.get('version') or '?'} (its own functions on the same inputs, accelerator cpu, "
                 f"one call each{guard})"),
            *_indent(_table(rows, ["method", "tasks", "ours", "FusionBench", "ours/theirs", "speedup", "peak ours",
                                   "peak theirs", "others' CPU", "same weights (rel max|d|, rel L2)"], text_last=True)),
            f"  same weights: |ours - theirs| / |ours| (L2) <= {SAME_RESULT_RTOL:g}; rel max|d| is max|ours - theirs| / max|ours|",
            "  semantic differences, read from both sources:", *[f"  {i}. {n}" for i, n in enumerate(fb["notes"], 1)]]


def _report_evaluation(result: dict, key: str = "evaluation") -> list[str]:
    ev = result[key]
    n = ev["images"]
    rate = lambda s: f"{n / s:8.1f} images/s ({_s(s)})"
    what = ev["cache"] if key == "evaluation_demo" else f"the synthetic cache ({result['inputs']['model']})"
    return ["", (f"Evaluation of {what} "
                 f"({n} images at {ev['image_size']} px, device {ev['device']}, best of {ev['calls']} calls of each, alternated)"),
            f"  plain float32 visual(x) loop:        {rate(ev['bare_s'])}",
            f"  Evaluator.accuracy, float32:         {rate(ev['float32_s'])}: {ev['float32_overhead_pct']:+.1f} %",
            f"  Evaluator.accuracy, {ev['precision']:<16s} {rate(ev['fast_s'])}: {ev['fast_vs_bare']:.2f} x the plain loop",
            f"  predictions equal to float32's: {100 * ev['agreement']:.2f} % of the images"]


def _report_cache(result: dict) -> list[str]:
    c = result["cache"]
    rows = [[label, _s(c[f"{k}_cold_s"]), _pct(c[f"{k}_cold_resident_fraction"]), _s(c[f"{k}_hot_s"]),
             _pct(c[f"{k}_hot_resident_fraction"])]
            for k, label in (("open", "Cache.open"), ("open_merge", "Cache.open + task arithmetic"),
                             ("checkpoints_merge", f"torch.load of {c['checkpoints']} checkpoints + task arithmetic"))]
    return ["", (f"Opening a cache ({_gb(c['cache_bytes'])}, of which vector files holding tau, tau1 and g0 "
                 f"{_gb(c['vector_file_bytes'])}; the checkpoints {_gb(c['checkpoint_bytes'])})"),
            *_indent(_table(rows, ["", "cold", "resident", "hot", "resident"])),
            ("  cold: the files evicted with posix_fadvise(DONTNEED) first; resident: share of the files' pages in the "
             "page cache (mincore) just before timing"),
            (f"  the first use of each vector file checks its sha256: {_s(c['hash_s'])} for all of them "
             f"(hot, {_pct(c['hash_resident_fraction'])} resident)"),
            (f"  same merged weights from the checkpoints: rel L2 difference {c['checkpoints_rel_l2_diff']:.1e} "
             "(float32 rounding of theta0 + tau)")]


def _report_app(result: dict) -> list[str]:
    a = result["app"]
    if "skipped" in a:
        return ["", f"App: skipped ({a['skipped']})"]
    row = lambda label, s: [label, _s(s["median_s"]), _s(s["min_s"]), _s(s["p90_s"]), _s(s["max_s"])]
    rows = [row("/evaluate round trip (HTTP + event stream)", a["round_trip"]),
            row("  of which server-side evaluate", a["server"]),
            row("/info round trip (computes nothing)", a["noop_round_trip"]),
            row("/evaluate through gradio_client", a["round_trip_gradio_client"]),
            row("bare Evaluator.evaluate in-process", a["bare"])]
    return ["", f"App: slider release to numbers ({a['cache']}, {a['requests']} requests with new settings, device {a['device']})",
            *_indent(_table(rows, ["", "median", "min", "p90", "max"])),
            f"  the app's cost over the bare call (medians): {a['overhead_median_diff'] * 1000:.1f} ms"]


def format_report(result: dict) -> str:
    lines = _report_header(result)
    lines.append(f"Memory bandwidth: {result['bandwidth']['copy_gbps']:.1f} GB/s")
    for key, part in (("merge", _report_merge), ("fusionbench", _report_fusionbench), ("evaluation", _report_evaluation),
                      ("evaluation_demo", lambda r: _report_evaluation(r, "evaluation_demo")),
                      ("cache", _report_cache), ("app", _report_app)):
        if key in result:
            lines += part(result)
    lines += ["", "Wall time: " + ", ".join(f"{k} {_s(v)}" for k, v in result["wall_s"].items()),
              ("CPU used by other processes during each part (share of all cores): "
               + ", ".join(f"{k} {_pct(v)}" for k, v in result["others_cpu_share"].items())),
              "", "Targets"]
    for t in result["targets"]:
        mark = {True: "met", False: "NOT MET", None: "unknown"}[t["met"]]
        lines.append(f"  [{mark}] {t['goal']}: {t['measured']}")
    return "\n".join(lines)
