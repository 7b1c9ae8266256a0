"""The benchmark suite in its quick mode: every section runs, every figure is a sane number, the
same-result checks pass and the report names each comparison. No timing is asserted."""
import copy
import math

import pytest
import torch

from tvexplorer.cli import load_bench_suite

bench = load_bench_suite()  # benchmarks/bench/, as `python -m tvexplorer bench` finds it
from bench import workers  # noqa: E402  (importable once load_bench_suite put benchmarks/ on the path)

POSITIVE = ("_s", "_gbps", "_per_s", "_bytes", "_multiple")  # durations, rates and sizes


@pytest.fixture(scope="module")
def result():
    return bench.run(quick=True, device="cpu")


def numbers(tree, path=""):
    """(path, value) for every number in a nested result, lists included."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_every_section_runs(result):
    assert result["mode"] == "quick"
    assert result["sections"] == list(bench.SECTIONS)
    assert set(result["merge"]["methods"]) == set(bench.MERGES)
    for method, row in result["merge"]["methods"].items():
        assert row["error"] is None, (method, row["error"])
    for key in ("machine", "bandwidth", "evaluation", "cache", "app", "targets", "fusionbench"):
        assert key in result
    assert result["machine"]["device"] == "cpu" and result["machine"]["ram_bytes"] > 0


def test_every_figure_is_finite_and_durations_rates_sizes_positive(result):
    found = list(numbers(result))
    assert len(found) > 50
    for path, x in found:
        assert math.isfinite(x), path
        if path.split("[")[0].endswith(POSITIVE) or ".seconds" in path:
            assert x > 0, path


def test_same_result_checks_pass(result):
    fb = result["fusionbench"]
    if fb["available"]:
        for method, row in fb["methods"].items():
            assert row["error"] is None, (method, row["error"])
            assert row["same"], (method, row["rel_l2_diff"])
    assert result["cache"]["checkpoints_rel_l2_diff"] < 1e-4


def test_the_report_names_each_comparison(result):
    text = bench.format_report(result)
    for phrase in ("Memory bandwidth", "of bandwidth", "x task vectors", "Against FusionBench", "plain float32 visual(x) loop",
                   "overhead", "Cache.open", "torch.load of", "cold", "hot", "/evaluate round trip",
                   "bare Evaluator.evaluate", "Targets"):
        assert phrase in text, phrase
    for target in result["targets"]:
        assert target["goal"] in text


def test_without_fusionbench_the_report_says_how_to_install_it(result, tmp_path):
    skipped = copy.deepcopy(result)
    skipped["fusionbench"] = bench.bench_fusionbench(None, bench.QUICK, {}, {}, 1.0, tmp_path, None)
    skipped["targets"] = bench.targets(skipped)
    text = bench.format_report(skipped)
    assert "FusionBench is not installed" in text and "benchmarks/setup.sh" in text
    assert not any("FusionBench" in t["goal"] for t in skipped["targets"])


def test_unknown_sections_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="unknown benchmark section"):
        bench.run(quick=True, only=["merge", "nope"])


def test_an_allocation_past_the_memory_guard_is_reported_not_fatal():
    baseline = workers._status_bytes("VmRSS")
    record, merged = workers._measure(lambda: torch.empty(1 << 40, dtype=torch.uint8), 1, 1 << 30, baseline)
    assert merged is None and record["out_of_memory"] and "memory" in record["error"].lower()
    record, _ = workers._measure(lambda: 1 / 0, 1, 1 << 30, baseline)
    assert record["error"].startswith("ZeroDivisionError") and not record["out_of_memory"]
