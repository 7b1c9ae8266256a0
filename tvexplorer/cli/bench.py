"""`bench`: the benchmark suite of the source checkout."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import UserError


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_bench_suite():
    """The benchmark suite, which lives in the source checkout's benchmarks/, not in the installed package."""
    if not (BENCHMARKS / "bench" / "__init__.py").is_file():
        raise UserError(f"bench runs from a source checkout: no {BENCHMARKS / 'bench'}")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import bench
    return bench


def cmd_bench(args):
    bench = load_bench_suite()
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - set(bench.SECTIONS))
    if unknown:
        raise UserError(f"--only {args.only!r}: unknown section(s) {', '.join(unknown)}; choose from {', '.join(bench.SECTIONS)}")
    return bench.run(quick=args.quick, only=only, device=args.device, app_cache=args.app_cache)


def _print_bench(result: dict) -> None:
    print(load_bench_suite().format_report(result))


def register(command) -> None:
    c = command("bench", cmd_bench, _print_bench,
                "benchmarks: merging against memory bandwidth and FusionBench, evaluation, opening a cache, the app")
    c.add_argument("--quick", action="store_true", help="a small smoke run (seconds) instead of ViT-B/32 sizes")
    c.add_argument("--only", default=None, help="comma-separated sections: merge, fusionbench, evaluation, cache, app")
    c.add_argument("--app-cache", default=None, help="the cache the app section serves (default: the shipped demo)")
