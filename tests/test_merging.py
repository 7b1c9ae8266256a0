"""Tests for tvexplorer.merging: hand-worked examples per method, then shared properties and validation."""
import math
import warnings

import numpy as np
import pytest
import torch

from tvexplorer.core.layout import Layout
from tvexplorer.merging import METHODS, merge, merge_flat

ALL = ["task_arithmetic", "average", "ties", "dare", "tsv", "iso_c"]


def vec(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def flat_layout(n):
    return Layout(("w",), ((n,),))


def run(method, vectors, **kw):
    """merge_flat over plain 1-D vectors given as task -> tensor."""
    return merge_flat(method, vectors, flat_layout(next(iter(vectors.values())).numel()), **kw)


def close(a, b, atol=1e-5):
    return torch.allclose(a, torch.as_tensor(b, dtype=torch.float32), atol=atol, rtol=0)


def mixed_tasks(seed, n_tasks=3):
    """Small model-shaped deltas: a 2-D weight (SVD path), a bias and a scalar (averaged path)."""
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
                      "s": torch.randn((), generator=g)} for i in range(n_tasks)}


# --- registry --------------------------------------------------------------------------------------

def test_registry_lists_the_methods_with_papers_and_defaults():
    # the newer methods: test_merging_methods.py; RegMean, which needs Grams: test_regmean.py
    assert list(METHODS) == [*ALL, "iso_cts", "consensus", "tall_masks", "emr", "magmax", "cart", "lines", "wudi", "regmean"]
    assert {m: METHODS[m].default_scaling for m in ALL} == {
        "task_arithmetic": 0.3, "average": 1.0, "ties": 1.0, "dare": 0.3, "tsv": 1.0, "iso_c": 1.0}
    for name, spec in METHODS.items():
        assert spec.name == name and spec.label and spec.paper
        assert spec.paper.split()[0] in spec.fn.__doc__  # first author named in the function's docstring
        for p in spec.params:
            assert p.check(name, p.default) == p.default  # defaults lie in their own ranges
    assert [p.name for p in METHODS["ties"].params] == ["k", "fusionbench"]
    assert [p.name for p in METHODS["dare"].params] == ["p", "seed"]


# --- task arithmetic and averaging -----------------------------------------------------------------

def test_task_arithmetic_by_hand():
    a, b = vec(1, 2, 3), vec(10, 20, 30)
    # default scaling 0.3: 0.3 * ([1,2,3] + [10,20,30]) = 0.3 * [11,22,33]
    assert close(run("task_arithmetic", {"a": a, "b": b}), [3.3, 6.6, 9.9])
    # coefficient 2 on a is applied before summing, scaling 0.5 after: 0.5 * ([2,4,6] + [10,20,30]) = [6,12,18]
    assert close(run("task_arithmetic", {"a": a, "b": b}, coefficients={"a": 2}, scaling=0.5), [6, 12, 18])


def test_average_by_hand():
    a, b, c = vec(2, 4), vec(4, 0), vec(0, 8)
    # ([2,4] + [4,0] + [0,8]) / 3 = [2,4]
    assert close(run("average", {"a": a, "b": b, "c": c}), [2, 4])
    # b weighted 0.5: ([2,4] + [2,0] + [0,8]) / 3 = [4/3, 4]; times scaling 3 = [4, 12]
    assert close(run("average", {"a": a, "b": b, "c": c}, coefficients={"b": 0.5}, scaling=3), [4, 12])


# --- TIES ------------------------------------------------------------------------------------------

def test_ties_trim_elect_and_disjoint_mean_by_hand():
    # k=60% of 5 entries -> keep the top 3 magnitudes of each task (threshold = 3rd largest |x|):
    a = vec(3, -1, 2, 0.5, -4)   # |a| sorted 4,3,2,1,.5 -> threshold 2 -> trimmed [ 3,  0, 2, 0, -4]
    b = vec(-2, 5, -1, 1, -3)    # |b| sorted 5,3,2,1,1  -> threshold 2 -> trimmed [-2,  5, 0, 0, -3]
    c = vec(-4, -2, 0.1, 3, 1)   # |c| sorted 4,3,2,1,.1 -> threshold 2 -> trimmed [-4, -2, 0, 3,  0]
    # sum of trimmed = [-3, 3, 2, 3, -7] -> elected signs [-, +, +, +, -]
    # disjoint mean over agreeing nonzero values:
    #   e0: a=+3 disagrees, mean(-2, -4) = -3      e1: c=-2 disagrees, b=5 -> 5
    #   e2: a=2 -> 2    e3: c=3 -> 3               e4: mean(-4, -3) = -3.5
    out = run("ties", {"a": a, "b": b, "c": c}, k=60)
    assert close(out, [-3, 5, 2, 3, -3.5])


def test_ties_coefficients_act_before_sign_election_and_scaling_after():
    a, b = vec(2, 1), vec(-1, 1)
    # k=100 keeps everything. Sums [1, 2] -> signs [+, +]; e0 keeps only a=2, e1 = mean(1, 1) = 1
    assert close(run("ties", {"a": a, "b": b}, k=100), [2, 1])
    # b * 3 = [-3, 3]: sums [-1, 4] -> signs [-, +]; e0 = -3, e1 = mean(1, 3) = 2; scaling 0.5 -> [-1.5, 1]
    assert close(run("ties", {"a": a, "b": b}, k=100, coefficients={"b": 3}, scaling=0.5), [-1.5, 1])


def test_ties_keeps_entries_tied_at_the_threshold():
    # k=25% of 4 entries keeps 1, but three entries share the top magnitude 1: all three are kept.
    # One task agrees with itself everywhere, so the result is just the trimmed vector.
    assert close(run("ties", {"a": vec(1, -1, 1, 0.5)}, k=25), [1, -1, 1, 0])


def test_ties_keeps_every_task_on_disjoint_supports():
    # Each task's single nonzero entry is its top 20% (1 of 3 entries); no conflicts, so all survive
    # (an implementation that concatenates tasks instead of stacking them would keep only [1, 0, 0]).
    vs = {"a": vec(1, 0, 0), "b": vec(0, 2, 0), "c": vec(0, 0, -3)}
    assert close(run("ties", vs, k=20), [1, 2, -3])
    # k=100 gives each task a threshold of 0, so its zeros pass the trim, but only nonzero values
    # count in the disjoint mean: each entry is still its single task's value, not a third of it.
    assert close(run("ties", vs, k=100), [1, 2, -3])


def test_ties_entry_with_zero_sign_sum_merges_to_zero():
    # +1 and -1 sum to 0: no sign is elected and neither value is kept.
    assert close(run("ties", {"a": vec(1, 2), "b": vec(-1, 2)}, k=100), [0, 2])


# FusionBench's TIES (fusion_bench/method/ties_merging/ties_merging_utils.py): keep int(n k/100)+1 entries,
# give an entry whose trimmed values sum to exactly 0 the sign most entries elected, sum the agreeing values.

def test_ties_fusionbench_keeps_int_n_k_plus_one_entries():
    # n=5, k=40: the paper keeps ceil(2.0) = 2 entries (threshold |4|), FusionBench int(2.0)+1 = 3 (threshold |3|)
    a = vec(5, -4, 3, 2, 1)
    assert close(run("ties", {"a": a}, k=40), [5, -4, 0, 0, 0])
    assert close(run("ties", {"a": a}, k=40, fusionbench=1), [5, -4, 3, 0, 0])
    # n*k/100 = 1.5 is not whole: ceil = 2 and int + 1 = 2 keep the same entries
    assert close(run("ties", {"a": a}, k=30, fusionbench=1), run("ties", {"a": a}, k=30))


def test_ties_fusionbench_sums_the_agreeing_values():
    a, b, c = vec(3, 1, -1), vec(1, 1, -2), vec(-2, 1, 4)
    # k=100 keeps all; sums [2, 3, 1] elect [+, +, +]; agreeing values: e0 3+1, e1 1+1+1, e2 4
    assert close(run("ties", {"a": a, "b": b, "c": c}, k=100), [2, 1, 4])           # the paper's mean
    assert close(run("ties", {"a": a, "b": b, "c": c}, k=100, fusionbench=1), [4, 3, 4])  # FusionBench's sum


def test_ties_fusionbench_gives_a_zero_sign_sum_the_majority_sign():
    # entry 0: +1 and -1 sum to 0; entries 1-3 elect [-, -, +]: the majority is -, so entry 0 keeps -1
    a, b = vec(1, -2, -3, 4), vec(-1, -1, -1, 1)
    assert close(run("ties", {"a": a, "b": b}, k=100), [0, -1.5, -2, 2.5])
    assert close(run("ties", {"a": a, "b": b}, k=100, fusionbench=1), [-1, -3, -4, 5])
    # flip entries 1-2 to +: the majority is + and entry 0 keeps +1
    assert close(run("ties", {"a": -a, "b": -b}, k=100, fusionbench=1)[0:1], [1])


def test_ties_fusionbench_with_balanced_signs_selects_the_negative_values():
    # elected [0, +, -]: no majority (1 - 1 = 0); FusionBench's where(sign > 0, v > 0, v < 0) then takes v < 0
    a, b = vec(2, 1, -1), vec(-2, 1, -1)
    assert close(run("ties", {"a": a, "b": b}, k=100, fusionbench=1), [-2, 2, -2])


def reference_fusionbench_ties(vs, cs, k):
    """FusionBench's ties_merging(..., merge_func="sum") restated over a [T, n] stack in float64."""
    t = torch.stack([v.double() * c for v, c in zip(vs, cs)])
    n = t.shape[1]
    kth = t.abs().kthvalue(n - int(n * (k / 100)), dim=1, keepdim=True).values
    t = t * (t.abs() >= kth)
    sign = t.sum(0).sign()
    sign[sign == 0] = sign.sum().sign()
    return (t * torch.where(sign > 0, t > 0, t < 0)).sum(0)


@pytest.mark.parametrize("k", [0.5, 20, 63.7])
def test_blocked_fusionbench_ties_matches_its_formula(monkeypatch, k):
    import tvexplorer.merging.elementwise as merging
    monkeypatch.setattr(merging, "BLOCK", 1000)  # many blocks, the last one partial: the majority spans them
    g = torch.Generator().manual_seed(4)
    n = 12_345
    vs = [torch.randint(-3, 4, (n,), generator=g).float() for _ in range(3)]  # integers: many exact 0 sums
    vs[2] = vs[2].half()
    cs = [1.0, -1.0, 2.0]
    vectors = {f"t{i}": v for i, v in enumerate(vs)}
    got = run("ties", vectors, k=k, coefficients=dict(zip(vectors, cs)), scaling=1.0, fusionbench=1)
    want = reference_fusionbench_ties(vs, cs, k)
    assert torch.allclose(got.double(), want, atol=1e-9)
    assert not torch.allclose(got.double(), reference_ties(vs, cs, k), atol=1e-9)  # the conventions differ here


# --- DARE ------------------------------------------------------------------------------------------

def test_dare_with_p_zero_is_task_arithmetic():
    g = torch.Generator().manual_seed(0)
    vs = {t: torch.randn(50, generator=g) for t in "abc"}
    kw = dict(coefficients={"b": -0.5}, scaling=0.7)
    assert torch.equal(run("dare", vs, p=0, **kw), run("task_arithmetic", vs, **kw))


def test_dare_drops_or_rescales_each_entry():
    x = torch.arange(1.0, 201.0)
    # p=0.75 and coefficient 2, scaling 1: every entry is 0 (dropped) or 2 * x / (1 - 0.75) = 8x (kept)
    out = run("dare", {"a": x}, p=0.75, coefficients={"a": 2}, scaling=1)
    assert torch.all((out == 0) | (out == 8 * x))
    assert 0 < (out == 0).sum() < 200


def test_dare_is_deterministic_per_seed_and_masks_differ_across_seeds_and_tasks():
    x = torch.ones(1000)
    one = run("dare", {"a": x}, seed=3, scaling=1)
    assert torch.equal(one, run("dare", {"a": x}, seed=3, scaling=1))
    assert not torch.equal(one, run("dare", {"a": x}, seed=4, scaling=1))
    # Two identical tasks with p=0.5: entries are 0, 2 or 4. Some entries being exactly 2 shows the
    # two tasks drew different masks (seeded by task index), not one shared mask.
    two = run("dare", {"a": x, "b": x}, scaling=1)
    assert set(two.unique().tolist()) == {0.0, 2.0, 4.0}


def test_dare_preserves_the_expectation():
    p, seeds, n = 0.3, 200, 20_000
    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([run("dare", {"a": x}, p=p, seed=s, scaling=1) for s in range(seeds)])
    # Each draw of entry i is x_i * B / (1 - p), B ~ Bernoulli(1 - p): mean x_i, variance x_i^2 p / (1 - p).
    # So the mean over S seeds deviates from x_i by D_i with sd |x_i| sqrt(p / ((1 - p) S)).
    sd = x.abs() * math.sqrt(p / ((1 - p) * seeds))
    dev = draws.mean(0) - x
    # Per entry: |z| > 6 has probability ~2e-9, so ~4e-5 over 20k entries.
    assert (dev.abs() / sd).max() < 6
    # The sum of the independent D_i has sd sqrt(sum sd_i^2); a 5-sigma bound.
    assert dev.sum().abs() < 5 * sd.pow(2).sum().sqrt()
    # The drop rate itself is p: the fraction of zeros over S*n Bernoulli(p) draws, 5-sigma bound.
    rate = (draws == 0).float().mean()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / (seeds * n))


# --- TSV-M -----------------------------------------------------------------------------------------

def test_tsv_single_task_at_full_rank_reproduces_the_matrix():
    m = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    # T=1 -> k = min(5,3)//1 = 3, the full rank; U and V are already orthonormal, so U S V^T = M.
    # Coefficient 2 then scaling 0.5 cancel.
    out = merge("tsv", {"a": {"w": m}}, coefficients={"a": 2}, scaling=0.5)
    assert close(out["w"], m)


def test_tsv_on_orthogonal_tasks_by_hand():
    # Task a: diag(3, 2, 1, 0): singular triplets (3, e1, e1), (2, e2, e2), (1, e3, e3).
    # Task b (coefficient 0.5): 4 e3 e4^T + 5 e4 e3^T -> scaled triplets (2.5, e4, e3), (2, e3, e4).
    # T=2 -> k = 4//2 = 2 per task: a loses its third triplet (the 1). The concatenated
    # U = [e1, e2, e4, e3] and V = [e1, e2, e3, e4] are already orthonormal, so their polar factors
    # are themselves and the result is the sum of the kept rank-1 terms.
    wa = torch.diag(vec(3, 2, 1, 0))
    wb = torch.zeros(4, 4)
    wb[2, 3], wb[3, 2] = 4, 5
    out = merge("tsv", {"a": {"w": wa, "bias": vec(1, 2)}, "b": {"w": wb, "bias": vec(3, 6)}},
                coefficients={"b": 0.5})
    expected = torch.zeros(4, 4)
    expected[0, 0], expected[1, 1], expected[2, 3], expected[3, 2] = 3, 2, 2, 2.5
    assert close(out["w"], expected)
    # Non-matrix parameters: mean of [1, 2] and 0.5 * [3, 6] = ([1, 2] + [1.5, 3]) / 2
    assert close(out["bias"], [1.25, 2.5])


def test_tsv_orthogonalises_overlapping_singular_vectors_by_hand():
    # T=2, 2x2 -> k=1. a = 2 e1 e1^T; b = u v^T with u = (e1 + e2)/sqrt2 (45 degrees), v = e2.
    # U = [[1, r], [0, r]] with r = 1/sqrt2, V = I. The polar factor of a 2x2 matrix with positive
    # determinant is the rotation proportional to A + cof(A) = [[1 + r, r], [-r, 1 + r]]: here the
    # rotation by -22.5 degrees, pushing e1 to -22.5 and u to 67.5 degrees, 90 apart.
    # Result = U_o diag(2, 1) V^T = [[2 cos t, sin t], [-2 sin t, cos t]] with t = pi/8.
    r = 1 / math.sqrt(2)
    a = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, r], [0.0, r]])
    out = merge("tsv", {"a": {"w": a}, "b": {"w": b}})["w"]
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    assert close(out, [[2 * c, s], [-2 * s, c]])


def test_tsv_output_has_the_kept_singular_values():
    # With T*k <= min(m, n), U_o and V_o have orthonormal columns, so the merged singular values are
    # exactly the concatenated top-k singular values of each task (k = 5//2 = 2 here).
    g = torch.Generator().manual_seed(2)
    mats = [torch.randn(7, 5, generator=g) for _ in range(2)]
    out = merge("tsv", {f"t{i}": {"w": m} for i, m in enumerate(mats)})["w"]
    kept = torch.cat([torch.linalg.svdvals(m)[:2] for m in mats]).sort(descending=True).values
    assert close(torch.linalg.svdvals(out)[:4], kept, atol=1e-4)
    assert torch.linalg.matrix_rank(out) == 4


# --- Iso-C -----------------------------------------------------------------------------------------

def test_iso_c_by_hand():
    # diag(3, 0) + diag(0, 1) = diag(3, 1): spectrum (3, 1) -> mean 2, U V^T = I -> 2 I
    out = merge("iso_c", {"a": {"w": torch.diag(vec(3, 0))}, "b": {"w": torch.diag(vec(0, 1))}})
    assert close(out["w"], 2 * torch.eye(2))
    # [[0,4],[0,0]] + 2 * [[0,0],[1,0]] = [[0,4],[2,0]] = 4 e1 e2^T + 2 e2 e1^T -> mean 3
    # -> 3 (e1 e2^T + e2 e1^T) = [[0,3],[3,0]], doubled by scaling 2.
    # The bias is averaged, then scaled too: 2 * (1 + 2*2) / 2 = 5
    out = merge("iso_c", {"a": {"w": torch.tensor([[0.0, 4], [0, 0]]), "b": vec(1)},
                          "b": {"w": torch.tensor([[0.0, 0], [1, 0]]), "b": vec(2)}},
                coefficients={"b": 2}, scaling=2)
    assert close(out["w"], [[0, 6], [6, 0]])
    assert close(out["b"], [5])


def test_iso_c_flattens_the_spectrum_and_keeps_the_singular_vectors():
    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(6, 4, generator=g) for _ in range(3)]
    total = mats[0] + 2 * mats[1] + mats[2]
    out = merge("iso_c", {f"t{i}": {"w": m} for i, m in enumerate(mats)}, coefficients={"t1": 2})["w"]
    spectrum = torch.linalg.svdvals(total)
    # All singular values equal the mean of the summed spectrum ...
    assert close(torch.linalg.svdvals(out), spectrum.mean().expand(4), atol=1e-4)
    # ... and the singular vectors are the sum's: Q = out / mean is then the polar factor of the sum,
    # i.e. Q^T total = V S V^T is symmetric with eigenvalues the sum's singular values.
    h = (out / spectrum.mean()).T @ total
    assert close(h, h.T, atol=1e-4)
    assert close(torch.linalg.eigvalsh(h).flip(0), spectrum, atol=1e-4)


# --- shared properties -----------------------------------------------------------------------------

PARAMS = {"ties": {"k": 50}, "dare": {"p": 0.3, "seed": 1}}


@pytest.mark.parametrize("method", ALL)
def test_every_task_contributes(method):
    tasks = mixed_tasks(seed=4)
    base = merge(method, tasks, **PARAMS.get(method, {}))
    for i, task in enumerate(tasks):
        changed = dict(tasks, **{task: mixed_tasks(seed=10 + i, n_tasks=1)["t0"]})
        out = merge(method, changed, **PARAMS.get(method, {}))
        assert not torch.allclose(out["w"], base["w"]), f"changing {task} did not change the merge"
        assert not torch.allclose(out["b"], base["b"]), f"changing {task} did not change the merge"


@pytest.mark.parametrize("method", ALL)
def test_merge_and_merge_flat_agree(method):
    tasks = mixed_tasks(seed=5)
    kw = dict(coefficients={"t1": 0.5}, scaling=1.5, **PARAMS.get(method, {}))
    layout = Layout.of(tasks["t0"])
    flat = merge_flat(method, {t: layout.flatten(p) for t, p in tasks.items()}, layout, **kw)
    assert flat.dtype == torch.float32 and flat.shape == (layout.numel,)
    by_name = merge(method, tasks, **kw)
    assert list(by_name) == ["w", "b", "s"]
    for name, part in layout.unflatten(flat).items():
        assert torch.equal(by_name[name], part)


@pytest.mark.parametrize("method", ALL)
def test_float16_inputs_match_float32_and_are_not_modified(method):
    tasks = {t: {n: x.half() for n, x in p.items()} for t, p in mixed_tasks(seed=6).items()}
    copies = {t: {n: x.clone() for n, x in p.items()} for t, p in tasks.items()}
    kw = dict(coefficients={"t0": 2.0}, **PARAMS.get(method, {}))
    half = merge(method, tasks, **kw)
    full = merge(method, {t: {n: x.float() for n, x in p.items()} for t, p in tasks.items()}, **kw)
    for name in half:
        assert half[name].dtype == torch.float32
        assert torch.allclose(half[name], full[name], atol=1e-5)
    for t in tasks:
        for n in tasks[t]:
            assert torch.equal(tasks[t][n], copies[t][n])


@pytest.mark.parametrize("method", ALL)
def test_float32_flat_inputs_are_not_modified(method):
    tasks = mixed_tasks(seed=7)
    layout = Layout.of(tasks["t0"])
    vectors = {t: layout.flatten(p) for t, p in tasks.items()}
    copies = {t: v.clone() for t, v in vectors.items()}
    merge_flat(method, vectors, layout, coefficients={"t2": -3.0}, **PARAMS.get(method, {}))
    assert all(torch.equal(vectors[t], copies[t]) for t in vectors)


@pytest.mark.parametrize("method", ALL)
def test_read_only_memory_mapped_float16_inputs(method, tmp_path):
    tasks = mixed_tasks(seed=8)
    layout = Layout.of(tasks["t0"])
    vectors = {}
    for t, p in tasks.items():
        layout.flatten(p, dtype=torch.float16).numpy().tofile(tmp_path / t)
        with warnings.catch_warnings():  # torch warns that the array is not writable: that is the point
            warnings.simplefilter("ignore")
            vectors[t] = torch.from_numpy(np.memmap(tmp_path / t, dtype=np.float16, mode="r"))
    # A write into a read-only mapping would crash the process rather than fail quietly.
    out = merge_flat(method, vectors, layout, coefficients={"t1": 2.0}, **PARAMS.get(method, {}))
    expected = merge_flat(method, {t: v.clone() for t, v in vectors.items()}, layout,
                          coefficients={"t1": 2.0}, **PARAMS.get(method, {}))
    assert torch.equal(out, expected)


# --- validation ------------------------------------------------------------------------------------

AB = {"a": vec(1, 2, 3), "b": vec(4, 5, 6)}
L3 = flat_layout(3)


@pytest.mark.parametrize("call, message", [
    (lambda: merge_flat("soup", AB, L3),
     r"unknown merge method 'soup'; choose one of: task_arithmetic, average, ties, dare, tsv, iso_c, iso_cts, "),
    (lambda: merge_flat("ties", {}, L3), r"no task vectors given"),
    (lambda: merge("ties", {}), r"no task vectors given"),
    (lambda: merge_flat("average", AB, L3, coefficients={"z": 1.0}),
     r"coefficients name unknown task\(s\) \['z'\]; valid tasks: \['a', 'b'\]"),
    (lambda: merge_flat("average", AB, L3, coefficients={"a": float("nan")}),
     r"coefficient for task 'a' is nan; coefficients must be finite"),
    (lambda: merge_flat("average", AB, L3, coefficients={"b": float("-inf")}),
     r"coefficient for task 'b' is -inf"),
    (lambda: merge_flat("average", AB, L3, scaling=float("inf")), r"scaling is inf; it must be a finite number"),
    (lambda: merge_flat("ties", AB, L3, p=0.5), r"method 'ties' has no parameter 'p'; its parameters are: k"),
    (lambda: merge_flat("dare", AB, L3, k=20), r"method 'dare' has no parameter 'k'; its parameters are: p, seed"),
    (lambda: merge_flat("tsv", AB, L3, k=20), r"method 'tsv' has no parameter 'k'; its parameters are: \(none\)"),
    (lambda: merge_flat("ties", AB, L3, k=0), r"ties parameter k=0 is out of range; it must be in \(0, 100\]"),
    (lambda: merge_flat("ties", AB, L3, k=100.5), r"ties parameter k=100.5 is out of range"),
    (lambda: merge_flat("ties", AB, L3, k=float("nan")), r"ties parameter k=nan is out of range"),
    (lambda: merge_flat("dare", AB, L3, p=1.0), r"dare parameter p=1.0 is out of range; it must be in \[0, 1\)"),
    (lambda: merge_flat("dare", AB, L3, p=-0.1), r"dare parameter p=-0.1 is out of range"),
    (lambda: merge_flat("dare", AB, L3, seed=-1), r"dare parameter seed=-1 is out of range"),
    (lambda: merge_flat("dare", AB, L3, seed=1.5), r"dare parameter seed=1.5 must be an integer"),
    (lambda: merge_flat("average", {"a": vec(1, 2, 3), "b": vec(1, 2)}, L3),
     r"task vector 'b' has shape \(2,\), the layout expects \(3,\)"),
    (lambda: merge_flat("average", {"a": torch.ones(1, 3)}, L3), r"task vector 'a' has shape \(1, 3\)"),
    (lambda: merge_flat("average", {"a": torch.ones(4)}, L3), r"task vector 'a' has shape \(4,\), the layout expects \(3,\)"),
    (lambda: merge_flat("average", {"a": torch.arange(3)}, L3), r"task vector 'a' has dtype torch.int64; it must be"),
    (lambda: merge("average", {"a": {"w": torch.ones(2, 2)}, "b": {"v": torch.ones(2, 2)}}),
     r"task 'b' does not match task 'a': parameters do not match the layout: missing \['w'\], unexpected \['v'\]"),
    (lambda: merge("average", {"a": {"w": torch.ones(2, 2)}, "b": {"w": torch.ones(2, 3)}}),
     r"task 'b' does not match task 'a': parameter 'w' has shape \(2, 3\), the layout expects \(2, 2\)"),
])
def test_validation_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_parameter_range_ends():
    # The closed ends are allowed: k=100 keeps everything (TIES of one task is then the task), p=0 drops nothing.
    assert torch.equal(run("ties", {"a": vec(1, -2)}, k=100), vec(1, -2))
    assert torch.equal(run("dare", {"a": vec(1, -2)}, p=0, seed=0, scaling=1), vec(1, -2))


# --- fast implementations against plain references --------------------------------------------------
# The methods stream over blocks, find TIES thresholds by radix select and take singular vectors from
# Gram matrices; these references are the textbook formulas over whole tensors.

def reference_ties(vs, cs, k):
    t = torch.stack([v.double() * c for v, c in zip(vs, cs)])
    n = t.shape[1]
    kept = min(n, max(1, math.ceil(n * k / 100)))
    thresholds = t.abs().kthvalue(n - kept + 1, dim=1, keepdim=True).values
    t = torch.where(t.abs() >= thresholds, t, 0)
    agree = t * t.sum(0).sign() > 0
    return (t * agree).sum(0) / agree.sum(0).clamp(min=1)


def reference_tsv(mats):
    k = max(1, min(mats[0].shape) // len(mats))
    svds = [torch.linalg.svd(m.double(), full_matrices=False) for m in mats]
    u = torch.cat([u[:, :k] for u, _, _ in svds], 1)
    s = torch.cat([s[:k] for _, s, _ in svds])
    v = torch.cat([vh[:k].T for _, _, vh in svds], 1)
    polar = lambda a: (lambda p, _, qh: p @ qh)(*torch.linalg.svd(a, full_matrices=False))
    return (polar(u) * s) @ polar(v).T


def reference_iso_c(mats):
    u, s, vh = torch.linalg.svd(sum(m.double() for m in mats), full_matrices=False)
    return s.mean() * u @ vh


@pytest.mark.parametrize("k", [0.5, 20, 63.7, 100])
def test_blocked_ties_and_task_arithmetic_match_the_whole_vector_formulas(monkeypatch, k):
    import tvexplorer.merging.elementwise as merging
    monkeypatch.setattr(merging, "BLOCK", 1000)  # many blocks, the last one partial
    g = torch.Generator().manual_seed(3)
    n = 12_345
    vs = [torch.randn(n, generator=g) * s for s in (1e-3, 2e-3, 5e-4)]
    vs[1][:50] = vs[0][:50]  # exact ties in magnitude across tasks
    vectors = {f"t{i}": v.half() if i == 2 else v for i, v in enumerate(vs)}
    cs = [1.0, -0.5, 2.0]
    coefs = dict(zip(vectors, cs))
    got = run("ties", vectors, k=k, coefficients=coefs, scaling=1.0)
    assert torch.allclose(got.double(), reference_ties(list(vectors.values()), cs, k), rtol=1e-6, atol=1e-12)
    ta = run("task_arithmetic", vectors, coefficients=coefs, scaling=1.0)
    expected = sum(v.double() * c for v, c in zip(vectors.values(), cs))
    assert torch.allclose(ta.double(), expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (24, 24)])
def test_gram_svd_methods_match_full_svd_references(shape):
    g = torch.Generator().manual_seed(5)
    # decaying spectra, as task vectors have, plus one exactly rank-deficient task
    mats = [torch.randn(*shape, generator=g) @ torch.diag(torch.logspace(0, -3, shape[1])) for _ in range(3)]
    mats.append(torch.outer(torch.randn(shape[0], generator=g), torch.randn(shape[1], generator=g)))
    tasks = {f"t{i}": {"w": m} for i, m in enumerate(mats)}
    for method, reference in (("tsv", reference_tsv), ("iso_c", reference_iso_c)):
        got = merge(method, tasks)["w"].double()
        want = reference(mats)
        assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max()), method


def _matrix_with_spectrum(rows: int, singular_values: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, len(singular_values), generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(len(singular_values), len(singular_values), generator=g, dtype=torch.float64))[0]
    return (u * singular_values) @ v.T


@pytest.mark.parametrize("rows, condition", [
    (40, 3.0),     # at least 2:1 tall and well-conditioned: the float32 Gram path
    (40, 1e3),     # tall but ill-conditioned: float32 would be ~10 % off, so it must go to float64
    (12, 1e4),     # square: float64 straight away
    (40, None),    # exactly rank-deficient: the true-SVD fallback
])
@pytest.mark.parametrize("wide", [False, True])
def test_polar_factor_and_spectrum_match_torch_svd(rows, condition, wide):
    from tvexplorer.merging.spectral import _polar
    s = torch.logspace(0, -math.log10(condition), 12, dtype=torch.float64) if condition else torch.cat(
        [torch.logspace(0, -1, 6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)])
    a = _matrix_with_spectrum(rows, s, seed=rows)
    a = (a.T if wide else a).float()
    polar, singular_values = _polar(a)
    u, sv, vh = torch.linalg.svd(a.double(), full_matrices=False)
    assert polar.dtype == torch.float32 and polar.shape == a.shape
    assert torch.allclose(singular_values.double(), sv.flip(0), rtol=0, atol=1e-6 * sv[0])
    if condition:  # the polar factor is unique: it must be U V^T
        assert torch.allclose(polar.double(), u @ vh, rtol=0, atol=1e-5)
    # a polar factor, unique or not, times a's symmetric square root (V S V^T, or U S U^T when wide) gives a back
    root = (vh.T * sv) @ vh if not wide else (u * sv) @ u.T
    assert torch.allclose(polar.double() @ root if not wide else root @ polar.double(), a.double(), atol=1e-5)
    rows_or_columns = polar.T @ polar if not wide else polar @ polar.T
    assert torch.allclose(rows_or_columns, torch.eye(12), atol=1e-5)


def test_top_singular_triplets_match_torch_svd():
    from tvexplorer.merging.spectral import _top_singular
    a = _matrix_with_spectrum(30, torch.logspace(0, -2, 10, dtype=torch.float64), seed=7).float()
    for m in (a, a.T):
        u, s, v = _top_singular(m, 4)
        uu, ss, vvh = torch.linalg.svd(m.double(), full_matrices=False)
        assert torch.allclose(s.double(), ss[:4], atol=1e-6)
        # singular vectors up to sign
        assert torch.allclose((u.double().T @ uu[:, :4]).abs(), torch.eye(4, dtype=torch.float64), atol=1e-5)
        assert torch.allclose((v.double().T @ vvh[:4].T).abs(), torch.eye(4, dtype=torch.float64), atol=1e-5)
