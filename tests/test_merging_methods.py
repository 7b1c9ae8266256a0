"""The newer merging methods (Iso-CTS, Consensus TA / TALL masks, EMR, MagMax, CART, LiNeS, WUDI).

Each method that FusionBench implements is compared with a reference written here from the published
definition (whole stacked tensors, textbook SVDs, autograd), and each comparison is shown to catch a
mutation of our code: the mutant is our own source with one plausible slip, compiled in our module's
namespace. CART and LiNeS are checked on hand-computed examples."""
import dataclasses
import inspect
import os
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tvexplorer.merging.layers as layers_module
import tvexplorer.merging.masks as masks_module
import tvexplorer.merging.subspace as subspace_module
from tvexplorer.core.layout import Layout
from tvexplorer.merging import METHODS, TaskDeltas, merge, merge_flat

ROOT = Path(__file__).resolve().parents[1]
NEW = ["iso_cts", "consensus", "tall_masks", "emr", "magmax", "cart", "lines", "wudi"]
PARAMS = {"wudi": {"steps": 20, "log10_lr": -2}}
SHAPES = {"transformer.resblocks.0.attn.w": (12, 9), "transformer.resblocks.1.mlp.w": (9, 16), "bias": (7,), "scale": ()}


def tasks_of(seed, n_tasks=4, integer=False):
    """Model-shaped task vectors. integer=True draws small integers, so that sums cancel to exactly 0
    and magnitudes tie: the cases where sign and tie rules show."""
    g = torch.Generator().manual_seed(seed)
    draw = (lambda s: torch.randint(-2, 3, s, generator=g).float()) if integer else (lambda s: torch.randn(s, generator=g))
    return {f"t{i}": {n: draw(s) * (1 if integer else 1 + i) for n, s in SHAPES.items()} for i in range(n_tasks)}


COEFS = {"t0": 1.0, "t1": 0.5, "t2": -1.5, "t3": 2.0}
TIED_COEFS = {"t0": 1.0, "t1": -1.0, "t2": 1.0, "t3": 2.0}  # integer tasks keep equal magnitudes and cancelling sums


def scaled(tasks, coefficients):
    return [{n: x.double() * coefficients.get(t, 1.0) for n, x in p.items()} for t, p in tasks.items()]


def ours(method, tasks, coefficients=COEFS, **kw):
    out = merge(method, tasks, coefficients=coefficients, scaling=1.0, **kw)
    return {t: {n: x.double() for n, x in d.items()} for t, d in out.items()} if METHODS[method].per_task else \
        {n: x.double() for n, x in out.items()}


def mutant(module, name, old, new):
    """Our function `name` with its first `old` replaced by `new`, compiled in the module's namespace."""
    source = textwrap.dedent(inspect.getsource(getattr(module, name)))
    assert old in source, f"{old!r} is not in {name}: the mutation is stale"
    namespace = dict(vars(module))
    exec(compile(source.replace(old, new, 1), f"<mutant of {name}>", "exec"), namespace)
    return namespace[name]


def close(got, want, atol=1e-6):
    if isinstance(want, dict):
        return set(got) == set(want) and all(close(got[k], want[k], atol) for k in want)
    return torch.allclose(got.double(), want.double(), rtol=0, atol=atol * max(1.0, float(want.abs().max())))


# --- references from the published definitions ------------------------------------------------------

def polar(a):
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def reference_iso_cts(vs, common_fraction):
    out = {}
    for name in vs[0]:
        mats = [v[name] for v in vs]
        if mats[0].ndim != 2:
            out[name] = sum(mats) / len(mats)
            continue
        rank, T = min(mats[0].shape), len(mats)
        common = int(rank * common_fraction)
        per_task = round((rank - common) / T)
        common = rank - per_task * T
        u, s, vh = torch.linalg.svd(sum(mats), full_matrices=False)
        us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
        for m in mats:
            uu, su, vhu = torch.linalg.svd(m - u[:, :common] @ u[:, :common].T @ m, full_matrices=False)
            us.append(uu[:, :per_task]), ss.append(su[:per_task]), vhs.append(vhu[:per_task])
        s = torch.cat(ss)
        out[name] = polar(torch.cat(us, 1)) @ torch.diag(torch.full_like(s, float(s.mean()))) @ polar(torch.cat(vhs, 0))
    return out


def tall_mask_stack(vs, name, mask_lambda):
    t = torch.stack([v[name] for v in vs])
    mtl = t.sum(0)
    return t, mtl, t.abs() > mask_lambda * (mtl - t).abs()


def reference_consensus(vs, mask_lambda, k):
    out = {}
    for name in vs[0]:
        _, mtl, masks = tall_mask_stack(vs, name, mask_lambda)
        out[name] = mtl * (masks.sum(0) >= k)
    return out


def reference_tall_masks(vs, mask_lambda):
    return [{name: tall_mask_stack(vs, name, mask_lambda)[1] * tall_mask_stack(vs, name, mask_lambda)[2][i]
             for name in vs[0]} for i in range(len(vs))]


def reference_emr(vs):
    unified, masks = {}, {}
    scales, new_scales = torch.zeros(len(vs), dtype=torch.float64), torch.zeros(len(vs), dtype=torch.float64)
    for name in vs[0]:
        t = torch.stack([v[name] for v in vs])
        flag = (t.sum(0) > 0).double() * 2 - 1
        masks[name] = t * flag > 0
        unified[name] = (t.abs() * masks[name]).amax(0) * flag
        scales += t.abs().reshape(len(t), -1).mean(1)
    for name in vs[0]:
        new_scales += (unified[name] * masks[name]).abs().reshape(len(vs), -1).mean(1)
    rescalers = scales / new_scales
    return [{name: unified[name] * masks[name][i] * rescalers[i] for name in vs[0]} for i in range(len(vs))]


def reference_magmax(vs):
    """The largest magnitude, the last task's on a tie (the authors' merge_max_abs folds with >=)."""
    out = {}
    for name in vs[0]:
        t = torch.stack([v[name] for v in vs]).flip(0)  # argmax returns the first maximum: the last task
        out[name] = t.gather(0, t.abs().argmax(0, keepdim=True))[0]
    return out


def reference_wudi(vs, steps, lr):
    out = {}
    for name in vs[0]:
        t = torch.stack([v[name].float() for v in vs])
        if t.ndim != 3:
            out[name] = t.mean(0)
            continue
        x = torch.nn.Parameter(t.sum(0))
        optimizer = torch.optim.Adam([x], lr=lr)
        norms = t.reshape(len(t), -1).norm(dim=1).square()
        for _ in range(steps):
            loss = (((x[None] - t) @ t.transpose(1, 2)).square() / norms[:, None, None]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        out[name] = x.detach()
    return out


# --- ours against the references, and mutants against them ---------------------------------------

CASES = {  # method: (params, reference, (module, function, old, new) mutations that must be caught)
    "iso_cts": ({"common_fraction": 0.5}, lambda vs: reference_iso_cts(vs, 0.5), [
        (subspace_module, "_iso_cts_matrices", "_polar(u)[0].double() @ _polar(v)[0].double().T", "u @ v.T"),
        (subspace_module, "_iso_cts_matrices", "m.double() - u @ (u.T @ m.double())", "m.double()"),
        (subspace_module, "_iso_cts_matrices", "common = rank - each * tasks", "common = int(rank * common_fraction)"),
    ]),
    "consensus": ({"mask_lambda": 0.5, "k": 2}, lambda vs: reference_consensus(vs, 0.5, 2), [
        (masks_module, "_tall_mask", "(multitask - task)", "multitask.clone()"),
        (masks_module, "_tall_mask", "task.abs() >", "task.abs() >="),
        (masks_module, "consensus", "votes < k", "votes <= k"),
    ]),
    "tall_masks": ({"mask_lambda": 0.5}, lambda vs: reference_tall_masks(vs, 0.5), [
        (masks_module, "_tall_mask", "mul_(mask_lambda)", "div_(mask_lambda)"),
    ]),
    "emr": ({}, reference_emr, [
        (masks_module, "emr", "torch.where(total > 0, 1.0, -1.0)", "torch.where(total >= 0, 1.0, -1.0)"),
        (masks_module, "emr", "own[i] += float(aligned.abs().mean())", "own[i] += float(aligned.abs().sum())"),
        (masks_module, "emr", "torch.maximum(largest, aligned, out=largest)", "torch.maximum(largest, aligned.abs(), out=largest)"),
        (masks_module, "emr", "(largest * agree).mean()", "largest.mean()"),
    ]),
    "magmax": ({}, reference_magmax, [
        (masks_module, "magmax", "candidate.abs() >= best.abs()", "candidate >= best"),
        (masks_module, "magmax", "candidate.abs() >= best.abs()", "candidate.abs() > best.abs()"),
    ]),
    "wudi": ({"steps": 20, "log10_lr": -2}, lambda vs: reference_wudi(vs, 20, 1e-2), [
        (layers_module, "_wudi_matrix", "gram = (m.T @ m).div_(squared_norm)", "gram = m.T @ m"),
        (layers_module, "_wudi_matrix", "range(steps)", "range(steps - 1)"),
        (layers_module, "_wudi_matrix", "merged = sum(mats)", "merged = sum(mats) / len(mats)"),
    ]),
}


def matches_reference(method, integer):
    params, reference, _ = CASES[method]
    tasks, coefficients = tasks_of(seed=11, integer=integer), TIED_COEFS if integer else COEFS
    want = reference(scaled(tasks, coefficients))
    got = ours(method, tasks, coefficients, **params)
    if METHODS[method].per_task:
        want = dict(zip(tasks, want))
    return close(got, want, atol=1e-4 if method == "wudi" else 1e-6)


# Integer inputs tie singular values too, where singular directions are not unique: Gaussian only for Iso-CTS.
INPUTS = {m: [False] if m == "iso_cts" else [False, True] for m in CASES}


@pytest.mark.parametrize("method, integer", [(m, i) for m in CASES for i in INPUTS[m]])
def test_matches_the_published_definition(method, integer):
    assert matches_reference(method, integer)


@pytest.mark.parametrize("method, mutation", [(m, i) for m, case in CASES.items() for i in range(len(case[2]))])
def test_the_comparison_catches_a_mutant(method, mutation, monkeypatch):
    module, name, old, new = CASES[method][2][mutation]
    changed = mutant(module, name, old, new)
    monkeypatch.setattr(module, name, changed)  # helpers are looked up in the module when called
    if METHODS[method].fn.__name__ == name:  # the registry holds the registered function itself
        monkeypatch.setitem(METHODS, method, dataclasses.replace(METHODS[method], fn=changed))
    assert not all(matches_reference(method, integer) for integer in INPUTS[method])


def test_iso_cts_at_full_common_fraction_is_iso_c():
    tasks = tasks_of(seed=2)
    assert close(ours("iso_cts", tasks, common_fraction=1.0), ours("iso_c", tasks))


def test_consensus_with_k_zero_is_task_arithmetic_and_above_t_is_zero():
    tasks = tasks_of(seed=3)
    assert close(ours("consensus", tasks, k=0), ours("task_arithmetic", tasks))
    assert all(float(x.abs().max()) == 0 for x in ours("consensus", tasks, k=5).values())


# --- CART and LiNeS by hand ------------------------------------------------------------------------

def test_cart_by_hand():
    # tau = diag(6,0), diag(0,6), diag(3,0): mean diag(3,2); centred diag(3,-2), diag(-3,4), diag(0,-2),
    # whose rank-1 parts are diag(3,0), diag(0,4), diag(0,-2), summing to diag(3,2).
    tasks = {"a": {"w": torch.diag(torch.tensor([6.0, 0])), "b": torch.tensor([1.0, 2])},
             "b": {"w": torch.diag(torch.tensor([0.0, 6])), "b": torch.tensor([3.0, 0])},
             "c": {"w": torch.diag(torch.tensor([3.0, 0])), "b": torch.tensor([2.0, 1])}}
    out = merge("cart", tasks, rank_ratio=0.5, strength=0.5, scaling=2.0)
    # 2 * (diag(3,2) + 0.5 * diag(3,2)) = diag(9,6); the bias is averaged: 2 * [2, 1]
    assert torch.allclose(out["w"], torch.diag(torch.tensor([9.0, 6])), atol=1e-5)
    assert torch.allclose(out["b"], torch.tensor([4.0, 2]), atol=1e-6)
    # at full rank the centred parts cancel: CART is averaging
    full = merge("cart", tasks, rank_ratio=1.0, scaling=1.0)
    assert torch.allclose(full["w"], torch.diag(torch.tensor([3.0, 2])), atol=1e-5)


def test_lines_by_hand():
    names = ["embed", "blocks.0.w", "blocks.1.w", "blocks.2.w", "head"]
    tasks = {"a": {n: torch.tensor([1.0, 2]) for n in names}, "b": {n: torch.tensor([3.0, -1]) for n in names}}
    out = merge("lines", tasks, alpha=0.2, beta=0.6, coefficients={"b": 2.0}, scaling=0.5)
    # sum [7, 0]; block l of 3 scaled 0.2 + 0.6 * l / 2 = 0.2, 0.5, 0.8; outside the blocks 0.2; then * 0.5
    for name, scale in zip(names, [0.2, 0.2, 0.5, 0.8, 0.2]):
        assert torch.allclose(out[name], torch.tensor([7.0 * scale * 0.5, 0.0]), atol=1e-6), name


@pytest.mark.parametrize("n_tasks", [2, 4, 8])
def test_lines_default_alpha_is_one_over_the_number_of_tasks(n_tasks):
    # the authors' multi-task merging sets alpha = 1/T (0.125 is right only for 8 tasks)
    from tvexplorer.merging import default_params
    assert default_params("lines", n_tasks) == {"alpha": 1 / n_tasks, "beta": 0.5}
    tasks = tasks_of(seed=9, n_tasks=n_tasks)
    assert close(merge("lines", tasks), merge("lines", tasks, alpha=1 / n_tasks))
    assert not close(merge("lines", tasks), merge("lines", tasks, alpha=1 / (n_tasks + 1)))


def test_magmax_gives_an_exact_tie_to_the_last_task():
    a, b = {"w": torch.tensor([2.0, -3.0, 1.0])}, {"w": torch.tensor([-2.0, 3.0, 0.5])}
    # |2| = |-2| and |-3| = |3| tie: the later task's values win (the authors' and FusionBench's >=)
    assert torch.equal(merge("magmax", {"a": a, "b": b}, scaling=1.0)["w"], torch.tensor([-2.0, 3.0, 1.0]))
    assert torch.equal(merge("magmax", {"b": b, "a": a}, scaling=1.0)["w"], torch.tensor([2.0, -3.0, 1.0]))


def test_lines_reads_the_depth_from_vit_names():
    layout = Layout(("class_embedding", "transformer.resblocks.0.attn.in_proj_weight",
                     "transformer.resblocks.11.mlp.c_fc.bias", "ln_post.weight"), ((2,), (2,), (2,), (2,)))
    assert layers_module.block_depths(layout) == [None, 0, 11, None]


# --- per-task results, streaming, validation ------------------------------------------------------

@pytest.mark.parametrize("method", ["tall_masks", "emr"])
def test_per_task_methods_return_lazy_per_task_deltas(method):
    tasks = tasks_of(seed=5)
    layout = Layout.of(tasks["t0"])
    vectors = {t: layout.flatten(p) for t, p in tasks.items()}
    out = merge_flat(method, vectors, layout, scaling=2.0)
    assert isinstance(out, TaskDeltas) and list(out) == list(tasks) and len(out) == 4
    one = merge_flat(method, vectors, layout, scaling=1.0)
    for t in tasks:
        assert out[t].dtype == torch.float32 and out[t].shape == (layout.numel,)
        assert torch.allclose(out[t], 2 * one[t])
    assert not torch.equal(out["t0"], out["t1"])
    with pytest.raises(KeyError, match="no merged delta for task 'zz'"):
        out["zz"]


@pytest.mark.parametrize("method", NEW)
def test_every_task_contributes_and_inputs_are_never_written(method, tmp_path):
    tasks = tasks_of(seed=6, n_tasks=3)
    layout = Layout.of(tasks["t0"])
    vectors = {}
    for t, p in tasks.items():  # read-only float16 memory maps: a write would crash the process
        layout.flatten(p, dtype=torch.float16).numpy().tofile(tmp_path / t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vectors[t] = torch.from_numpy(np.memmap(tmp_path / t, dtype=np.float16, mode="r"))
    kw = dict(coefficients={"t1": 0.5}, **PARAMS.get(method, {}))
    first = lambda out: out["t0"] if isinstance(out, TaskDeltas) else out
    base = first(merge_flat(method, vectors, layout, **kw))
    again = first(merge_flat(method, {t: v.float() for t, v in vectors.items()}, layout, **kw))
    assert torch.allclose(base, again, atol=1e-5)  # float16 inputs give the float32 result
    for i, task in enumerate(vectors):
        changed = dict(vectors, **{task: layout.flatten(tasks_of(seed=20 + i, n_tasks=1)["t0"])})
        assert not torch.allclose(first(merge_flat(method, changed, layout, **kw)), base), f"{task} did not matter"


# Peak RSS from VmHWM, the high-water mark of this process's own memory: ru_maxrss would carry the
# (larger) pytest parent's peak over fork and exec.
MEMORY_SCRIPT = """
import json, sys, torch
def peak():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
from tvexplorer.core.layout import Layout
from tvexplorer.merging import METHODS, merge_flat
method, params = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
# ViT-like: many layers, none more than ~2% of the whole (ViT-B/32's largest is 2.4M of 88M parameters)
names = [f"transformer.resblocks.{i}.{p}" for i in range(48) for p in ("w", "b")]
layout = Layout(tuple(names), ((512, 256), (512,)) * 48)
vectors = {f"t{i}": torch.empty(layout.numel, dtype=torch.float16).normal_(0, 1e-3) for i in range(4)}
tiny = Layout(("transformer.resblocks.0.w", "bias"), ((8, 4), (3,)))  # first use: imports and lazy set-up
warm = merge_flat(method, {t: torch.randn(tiny.numel) for t in vectors}, tiny, **params)
[warm[t] for t in warm] if METHODS[method].per_task else warm
before = peak()
out = merge_flat(method, vectors, layout, **params)
if METHODS[method].per_task:
    for t in out:
        delta = out[t]
        del delta
after = peak()
print(json.dumps({"extra": after - before, "vectors": sum(v.numel() * 2 for v in vectors.values())}))
"""


def merge_memory(method: str, params: dict, script: str = MEMORY_SCRIPT) -> float:
    """Peak RSS that the merge adds in a fresh process, as a multiple of the float16 task vectors."""
    if not Path("/proc/self/status").exists():
        pytest.skip("the peak-memory check reads Linux's /proc/self/status")
    r = subprocess.run([sys.executable, "-c", script, method, json.dumps(params)], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    return m["extra"] / m["vectors"]


@pytest.mark.parametrize("method", NEW)
def test_merge_memory_stays_within_twice_the_task_vectors(method):
    ratio = merge_memory(method, {"wudi": {"steps": 2}}.get(method, {}))
    assert ratio <= 2, f"{method}: {ratio:.2f} x the task vectors"


def test_the_memory_check_catches_a_stack_of_the_tasks():
    # a [T, P] float32 stack alone is 2x the float16 task vectors
    stacking = MEMORY_SCRIPT.replace("out = merge_flat(method, vectors, layout, **params)",
                                     "out = torch.stack([v.float() for v in vectors.values()]).abs().amax(0)")
    assert stacking != MEMORY_SCRIPT
    assert merge_memory("magmax", {}, stacking) > 2


@pytest.mark.parametrize("call, message", [
    (lambda: merge("iso_cts", tasks_of(1), common_fraction=0),
     r"iso_cts parameter common_fraction=0 is out of range; it must be in \(0, 1\]"),
    (lambda: merge("consensus", tasks_of(1), k=1.5), r"consensus parameter k=1.5 must be an integer"),
    (lambda: merge("consensus", tasks_of(1), mask_lambda=-1), r"consensus parameter mask_lambda=-1 is out of range"),
    (lambda: merge("tall_masks", tasks_of(1), k=2), r"method 'tall_masks' has no parameter 'k'; its parameters are: mask_lambda"),
    (lambda: merge("emr", tasks_of(1), k=2), r"method 'emr' has no parameter 'k'; its parameters are: \(none\)"),
    (lambda: merge("cart", tasks_of(1), rank_ratio=1.5), r"cart parameter rank_ratio=1.5 is out of range"),
    (lambda: merge("lines", tasks_of(1), beta=float("nan")), r"lines parameter beta=nan is out of range"),
    (lambda: merge("wudi", tasks_of(1), steps=-1), r"wudi parameter steps=-1 is out of range"),
    (lambda: merge("wudi", tasks_of(1), log10_lr=1), r"wudi parameter log10_lr=1 is out of range; it must be between -8 and 0"),
])
def test_parameter_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_registry_entries_name_their_papers_and_flag_the_task_conditioned_ones():
    for name in NEW:
        spec = METHODS[name]
        assert spec.paper.split()[0] in spec.fn.__doc__
        assert all(p.check(name, p.default) == p.default for p in spec.params)
    assert [m for m in METHODS if METHODS[m].per_task] == ["tall_masks", "emr"]


# --- through the Evaluator and the CLI on the quick demo -------------------------------------------

def test_emr_is_evaluated_with_each_tasks_own_model(quick_demo):
    from tvexplorer.core.cache import Cache
    from tvexplorer.science.evaluation import Evaluator
    cache = Cache.open(quick_demo)
    ev = Evaluator(cache, device="cpu")
    result = ev.evaluate("emr")
    deltas = merge_flat("emr", cache.vectors("tau"), cache.layout)
    for task in cache.tasks:
        assert result.accuracy[task] == ev.accuracy(deltas[task], tasks=[task])[task]
    # a task scored with another task's delta is a different model (the per-task deltas differ)
    assert not torch.equal(deltas[cache.tasks[0]], deltas[cache.tasks[1]])
    r = subprocess.run([sys.executable, "-m", "tvexplorer", "eval", str(quick_demo), "--method", "emr", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == result.accuracy
    from tvexplorer.pipeline.export import merge_for_export
    with pytest.raises(ValueError, match="emr is task-conditioned: it makes one model per task, not one merged model"):
        merge_for_export(cache, method="emr")
    r = subprocess.run([sys.executable, "-m", "tvexplorer", "eval", str(quick_demo), "--method", "tall_masks",
                        "--param", "mask_lambda=-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "tall_masks parameter mask_lambda=-1.0 is out of range" in r.stderr
