"""RegMean (tvexplorer/merging/regmean.py) against an independent reference written here from the
paper's definition, its derived properties, the Gram matrices it reads (tvexplorer/science/grams.py)
and how they are stored once in a cache."""
import dataclasses
from dataclasses import replace
import importlib
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from tvexplorer.core.cache import Cache
from tvexplorer.core.layout import Layout
from tvexplorer.merging import merge, merge_flat
from tvexplorer.merging.regmean import LinearInput

# A model-shaped set of parameters: an nn.Linear weight [out, in] (y = W x), a square parameter used
# as y = x @ P (the orientation matters only through the input axis), a bias and a 4-D convolution.
SHAPES = {"lin": (3, 5), "proj": (4, 4), "bias": (3,), "conv": (2, 1, 2, 2)}
AXES = {"lin": 1, "proj": 0}
regmean_module = importlib.import_module("tvexplorer.merging.regmean")  # the package's `regmean` is the function


def problem(seed, n_tasks=3, rows=(7, 9, 11)):
    """(theta0, per-task fine-tuned weights, per-task input data X_t per linear layer)."""
    g = torch.Generator().manual_seed(seed)
    theta0 = {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in SHAPES.items()}
    finetuned = [{n: theta0[n] + 0.5 * torch.randn(s, generator=g, dtype=torch.float64) for n, s in SHAPES.items()}
                 for _ in range(n_tasks)]
    inputs = [{n: torch.randn(rows[t], SHAPES[n][AXES[n]], generator=g, dtype=torch.float64)
               @ torch.randn(SHAPES[n][AXES[n]], SHAPES[n][AXES[n]], generator=g, dtype=torch.float64)  # correlated
               for n in AXES} for t in range(n_tasks)]
    return theta0, finetuned, inputs


def reference(finetuned, inputs, alpha):
    """The paper's merge as a least-squares problem, solved with lstsq (no normal equations): the W
    minimising sum_t alpha/n_t |X_t W - X_t W_t|^2 + (1 - alpha) sum_i D_t,ii (W - W_t)_i^2, where
    D_t = diag(X_t^T X_t / n_t) (FusionBench's off-diagonal reduction, written as extra rows), W in
    [in, out] orientation; every other parameter is the mean of the fine-tuned parameters."""
    out = {}
    for name in SHAPES:
        if name not in AXES:
            out[name] = sum(m[name] for m in finetuned) / len(finetuned)
            continue
        rows, targets = [], []
        for model, task_inputs in zip(finetuned, inputs):
            x = task_inputs[name]
            w = model[name].T if AXES[name] == 1 else model[name]
            n = x.shape[0]
            diag_rows = torch.diag(((x * x).sum(0) / n).sqrt())
            for block in (alpha ** 0.5 * x / n ** 0.5, (1 - alpha) ** 0.5 * diag_rows):
                rows.append(block)
                targets.append(block @ w)
        w_star = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets)).solution
        out[name] = w_star.T if AXES[name] == 1 else w_star
    return out


def ours(theta0, finetuned, inputs, alpha, **kw):
    """theta0 + our RegMean of the task vectors, with the Grams as the mean of x x^T over the rows."""
    vectors = {f"t{i}": {n: (m[n] - theta0[n]).float() for n in SHAPES} for i, m in enumerate(finetuned)}
    grams = {f"t{i}": {n: LinearInput((x.T @ x / x.shape[0]).float(), AXES[n]) for n, x in task.items()}
             for i, task in enumerate(inputs)}
    merged = merge("regmean", vectors, task_inputs=grams, alpha=alpha, **kw)
    return {n: theta0[n] + merged[n].double() for n in SHAPES}


def assert_matches_reference(seed, alpha):
    theta0, finetuned, inputs = problem(seed)
    expected, got = reference(finetuned, inputs, alpha), ours(theta0, finetuned, inputs, alpha)
    for name in SHAPES:
        assert torch.allclose(got[name], expected[name], atol=1e-4, rtol=1e-4), name


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.2, 0.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_regmean_matches_the_least_squares_reference(seed, alpha):
    assert_matches_reference(seed, alpha)


def _transposed_wrongly(vectors, coefficients, layout, *, inputs, alpha):
    flipped = [{n: LinearInput(x.gram, 1 - x.input_axis) if n == "proj" else x for n, x in t.items()} for t in inputs]
    return ORIGINAL(vectors, coefficients, layout, inputs=flipped, alpha=alpha)


ORIGINAL = regmean_module.regmean
MUTATIONS = {
    "off-diagonal not reduced": ("reduce_off_diagonal", lambda gram, alpha: gram.clone()),
    "diagonal reduced instead": ("reduce_off_diagonal", lambda gram, alpha: gram - (1 - alpha) * torch.diag(gram.diagonal())),
    "mean instead of the solve": ("_solve", lambda lhs, rhs, fallback: fallback),
    "Gram-weighted sum not normalised": ("_solve", lambda lhs, rhs, fallback: rhs / lhs.diagonal().mean()),
}


@pytest.mark.parametrize("mutation", [*MUTATIONS, "wrong input axis"])
def test_mutations_of_regmean_fail_the_reference(mutation, monkeypatch):
    import tvexplorer.merging as merging
    if mutation == "wrong input axis":
        monkeypatch.setitem(merging.METHODS, "regmean", dataclasses.replace(merging.METHODS["regmean"], fn=_transposed_wrongly))
    else:
        name, replacement = MUTATIONS[mutation]
        monkeypatch.setattr(regmean_module, name, replacement)
    with pytest.raises(AssertionError):
        assert_matches_reference(0, 0.6)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_equal_grams_reduce_regmean_to_averaging(alpha):
    # (sum_t G)^-1 sum_t G tau_t = mean_t tau_t whatever G is, so RegMean is then exactly `average`.
    theta0, finetuned, inputs = problem(3)
    shared = inputs[0]
    vectors = {f"t{i}": {n: (m[n] - theta0[n]).float() for n in SHAPES} for i, m in enumerate(finetuned)}
    grams = {t: {n: LinearInput((x.T @ x / len(x)).float(), AXES[n]) for n, x in shared.items()} for t in vectors}
    kw = dict(coefficients={"t1": 0.5}, scaling=1.7)
    got = merge("regmean", vectors, task_inputs=grams, alpha=alpha, **kw)
    expected = merge("average", vectors, **kw)
    for name in SHAPES:
        assert torch.allclose(got[name], expected[name], atol=1e-5), name


def test_an_input_direction_no_task_used_takes_the_average():
    # Every task's inputs miss feature 0 of `lin`: its column is undetermined by the data, so it is
    # the average there; the other columns still solve the least-squares problem.
    theta0, finetuned, inputs = problem(4)
    for task in inputs:
        task["lin"][:, 0] = 0
    got = ours(theta0, finetuned, inputs, alpha=1.0)
    mean = sum(m["lin"] for m in finetuned) / len(finetuned)
    assert torch.allclose(got["lin"][:, 0], mean[:, 0], atol=1e-5)
    expected = reference(finetuned, inputs, alpha=1.0)  # lstsq: any solution fits the data equally well
    for model_inputs in inputs:
        x = model_inputs["lin"]
        assert torch.allclose(x @ got["lin"].T, x @ expected["lin"].T, atol=1e-4)
    assert torch.isfinite(got["lin"]).all()


def test_bad_task_inputs_are_one_line_errors():
    theta0, finetuned, inputs = problem(5)
    vectors = {f"t{i}": {n: (m[n] - theta0[n]).float() for n in SHAPES} for i, m in enumerate(finetuned)}
    layout = Layout.of(vectors["t0"])
    flat = {t: layout.flatten(v) for t, v in vectors.items()}
    good = {t: {n: LinearInput((x.T @ x).float(), AXES[n]) for n, x in task.items()} for t, task in zip(flat, inputs)}
    cases = [
        (None, r"method 'regmean' needs grams for every task and has none for t0, t1, t2"),
        ({"t0": good["t0"]}, r"has none for t1, t2"),
        ({**good, "t1": {"lin": good["t1"]["lin"]}}, r"task 1 has Gram matrices for other layers than task 0"),
        ({t: {**g, "lin": LinearInput(torch.eye(3), 1)} for t, g in good.items()},
         r"the Gram matrix of 'lin' is \(3, 3\); the parameter \(3, 5\) needs 5 x 5"),
        ({t: {**g, "bias": LinearInput(torch.eye(3), 1)} for t, g in good.items()}, r"'bias', which is not a 2-D parameter"),
    ]
    for task_inputs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            merge_flat("regmean", flat, layout, task_inputs=task_inputs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"regmean parameter alpha=1.5 is out of range; it must be between 0 and 1"):
        merge_flat("regmean", flat, layout, task_inputs=good, alpha=1.5)


# --- the Gram matrices of an open_clip ViT ----------------------------------------------------------

def test_recorded_grams_are_those_of_each_linear_layers_inputs(quick_demo):
    from tvexplorer.core.split import Split
    from tvexplorer.models.clip import build_image_encoder, get_flat
    from tvexplorer.science.grams import compute_grams
    cache = Cache.open(quick_demo)
    info = cache.manifest.model.encoder
    encoder = build_image_encoder(info)
    images = Split(torch.randint(0, 256, (6, info.image_size, info.image_size, 3), dtype=torch.uint8),
                   torch.zeros(6, dtype=torch.int64))
    theta = cache.base() + cache.vector(cache.tasks[0]).float()
    grams, axes = compute_grams(encoder, theta, images, info.mean, info.std, "cpu")
    assert torch.equal(get_flat(encoder), theta)  # the fine-tuned model, not theta0
    # Independently: what each module really receives, seen from other modules' hooks.
    seen = {}

    def keep(key, value) -> None:  # a forward hook that returned a value would replace the module's output
        seen.setdefault(key, value)
    block = encoder.transformer.resblocks[1]
    hooks = [block.ln_2.register_forward_hook(lambda m, a, out: keep("ln_2", out)),
             block.ln_1.register_forward_hook(lambda m, a, out: keep("ln_1", out)),
             block.attn.register_forward_hook(lambda m, a, out: keep("attn", (a[0], out[0]))),
             block.mlp.gelu.register_forward_hook(lambda m, a, out: keep("gelu", out)),
             encoder.ln_post.register_forward_hook(lambda m, a, out: keep("ln_post", out))]
    from tvexplorer.data.splits import to_input
    with torch.no_grad():
        encoder(to_input(images.images, info.mean, info.std))
    for h in hooks:
        h.remove()

    def gram(x):
        x = x.reshape(-1, x.shape[-1]).double()
        return (x.T @ x / len(x)).float()
    prefix = "transformer.resblocks.1"
    assert torch.allclose(grams[f"{prefix}.attn.in_proj_weight"], gram(seen["ln_1"]), atol=1e-5)
    assert torch.allclose(grams[f"{prefix}.mlp.c_fc.weight"], gram(seen["ln_2"]), atol=1e-5)
    assert torch.allclose(grams[f"{prefix}.mlp.c_proj.weight"], gram(seen["gelu"]), atol=1e-5)
    assert torch.allclose(grams["proj"], gram(seen["ln_post"][:, 0]), atol=1e-5)  # the class token, pooled
    # out_proj's input is recomputed: out_proj of it must give the attention's output.
    from tvexplorer.science.grams import _heads_output
    query, output = seen["attn"]
    heads = _heads_output(block.attn, query)
    assert torch.allclose(F.linear(heads, block.attn.out_proj.weight, block.attn.out_proj.bias), output, atol=1e-5)
    assert torch.allclose(grams[f"{prefix}.attn.out_proj.weight"], gram(heads), atol=1e-5)
    assert axes["proj"] == 0 and axes[f"{prefix}.mlp.c_fc.weight"] == 1
    assert len(grams) == 4 * len(encoder.transformer.resblocks) + 1
    assert encoder.proj is not None  # restored


def strip_grams(root):
    """The cache at `root` as one built before Grams were stored."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"] = {r: e for r, e in manifest["files"].items() if not r.startswith("grams/")}
    manifest.pop("grams", None)
    (root / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(root / "grams", ignore_errors=True)


def test_grams_are_stored_once_and_reused(demo_copy, monkeypatch):
    from tvexplorer.science import grams as grams_module
    from tvexplorer.science.evaluation import Evaluator
    calls = []
    real = grams_module.compute_grams
    monkeypatch.setattr(grams_module, "compute_grams", lambda *a, **k: calls.append(1) or real(*a, **k))
    strip_grams(demo_copy)  # a build stores them: start without
    cache = Cache.open(demo_copy)
    first = Evaluator(cache, device="cpu").evaluate("regmean")
    assert len(calls) == len(cache.tasks)  # one forward pass over each task's training subset
    stored = Cache.open(demo_copy).manifest
    assert set(stored.grams.examples) == set(cache.tasks)
    assert all(f"grams/{t}.safetensors" in stored.files for t in cache.tasks)
    again = Evaluator(Cache.open(demo_copy), device="cpu").evaluate("regmean", alpha=0.6)
    assert len(calls) == len(cache.tasks)  # a new process reads them: no forward pass
    assert again.accuracy == first.accuracy


def test_read_only_cache_gets_its_grams_in_the_store(demo_copy, tmp_path):
    from tvexplorer.science.evaluation import Evaluator
    from tvexplorer.science.grams import missing_grams
    strip_grams(demo_copy)
    work = tmp_path / "work"
    shutil.copytree(demo_copy, work)
    source = Cache.open(demo_copy)
    ev = Evaluator(source, device="cpu", store=lambda: Cache.open(work))
    ev.evaluate("regmean")
    assert missing_grams(Cache.open(demo_copy)) == source.tasks  # the source is untouched
    assert missing_grams(Cache.open(work)) == []
    with pytest.raises(ValueError, match=r"RegMean uses the grams of the fine-tuned models.*choose vectors 'tau'"):
        ev.evaluate("regmean", vectors="tau1")


def test_a_tower_without_recorded_linear_layers_is_refused_in_one_line(quick_demo):
    from tvexplorer.science.grams import add_grams, supports_grams
    cache = Cache.open(quick_demo)
    assert supports_grams(cache)
    encoder = cache.manifest.model.encoder
    tower = replace(encoder, vision_cfg={**encoder.vision_cfg, "layers": [3, 4, 6, 3]})  # how open_clip describes a ResNet
    resnet = Cache(cache.root, replace(cache.manifest, model=replace(cache.manifest.model, encoder=tower)))
    assert not supports_grams(resnet)
    with pytest.raises(ValueError, match=r"recorded for open_clip ViT image towers; .* so RegMean cannot merge it") as info:
        add_grams(resnet)
    assert "\n" not in str(info.value)


def test_the_app_merges_regmean_on_a_read_only_cache_through_its_work_folder(demo_copy, tmp_path):
    from tvexplorer.app.explorer import Explorer
    from tvexplorer.science.grams import missing_grams
    strip_grams(demo_copy)
    before = (demo_copy / "manifest.json").read_bytes()
    ex = Explorer(demo_copy, device="cpu", read_only=True, workdir=tmp_path / "work")
    r = ex.evaluate("regmean", scaling=1.0, params={"alpha": 1.0})
    assert r["method"] == "regmean" and r["params"] == {"alpha": 1.0} and 0 <= r["average"] <= 1
    assert (demo_copy / "manifest.json").read_bytes() == before
    assert missing_grams(Cache.open(ex.work_folder)) == []
    with pytest.raises(ValueError, match="choose vectors 'tau'"):
        ex.evaluate("regmean", vectors="tau1")
