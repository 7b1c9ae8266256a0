"""The ATM settings search: runs ATM with several settings on copies of one built cache and prints one
row each, against the targets of issue 19 (the share of the TA -> FT gap closed, the worst task's
change from its own task-arithmetic accuracy).

    python benchmarks/atm_search.py assets/demo --rounds 10 --out /tmp/atm-search \
        --config paper='{"variant": "standard"}' \
        --config ls-loss='{"variant": "adaptive", "alpha_rule": "line_search", "weighting": "loss"}'

Each config is a variant and any Settings fields (science/atm.py). Runs are resumable: a copy that
already holds rounds continues from them. Rows are appended to OUT/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tvexplorer.core.cache import Cache
from tvexplorer.science.atm import new_settings, run_atm
from tvexplorer.science.atm_report import atm_report


def fresh_copy(source: Path, dest: Path) -> Cache:
    """A copy of `source` without its ATM runs (tensor files hard-linked where possible)."""
    if not dest.exists():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("atm", ".*"), copy_function=_link_or_copy)
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest.pop("atm", None)
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("atm/")}
        (dest / "manifest.json").unlink()  # a hard link to the source's manifest: never write through it
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return Cache.open(dest)


def _link_or_copy(src, dst):
    """Tensor files are only ever replaced, never written in place, so a hard link is safe for them."""
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def row(cache: Cache, variant: str) -> dict:
    """The search's columns, from the same report the app draws."""
    report = atm_report(cache)
    m = cache.manifest.metrics
    ta, ft, mt = m.average("task_arithmetic"), m.average("finetuned"), m.average("multitask")
    rounds = report["runs"][variant]["rounds"]
    out = {"TA": round(100 * ta, 1), "FT": round(100 * ft, 1), "multi-task": round(100 * mt, 1) if mt else None}
    for k in (1, 3, 5, 10):
        if len(rounds) >= k:
            out[f"ATM@{k}"] = round(100 * rounds[k - 1]["average"], 1)
            out[f"climb@{k}"] = round((rounds[k - 1]["average"] - ta) / (ft - ta), 2)
    gains = rounds[-1]["gain_vs_task_arithmetic"]
    worst = min(gains, key=gains.get)
    out["worst vs TA"] = f"{worst} {100 * gains[worst]:+.1f}"
    out["alphas"] = [round(r["alpha"] * len(cache.tasks), 2) for r in rounds]
    out["averages"] = [round(100 * r["average"], 1) for r in rounds]
    out["budget x FT"] = round(rounds[-1]["budget"], 2)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", type=Path)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", action="append", required=True, help="NAME=JSON")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.config:
        name, _, text = spec.partition("=")
        config = json.loads(text)
        variant = config.pop("variant", "standard")
        cache = fresh_copy(args.cache, args.out / name)
        done = len(cache.manifest.atm[variant].rounds) if variant in cache.manifest.atm else 0
        if done < args.rounds:
            run_atm(cache, args.rounds - done, variant=variant, settings=new_settings(variant, **config), device=args.device,
                    on_round=lambda r, name=name: print(f"{name} round {r['round']}: {100 * r['average']:.1f} "
                                             f"(alpha {r['alpha']:.3g})", file=sys.stderr, flush=True))
        result = {"config": name, "settings": {"variant": variant, **config}, **row(Cache.open(args.out / name), variant)}
        print(json.dumps(result), flush=True)
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
