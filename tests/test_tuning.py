"""Per-layer coefficients, tuning on validation through the linearised surrogate, and AdaMerging."""
import json

import numpy as np
import pytest
import torch

from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.core.layout import Layout, layer_of
from tvexplorer.merging import merge, merge_flat
from tvexplorer.merging.elementwise import ties
from tvexplorer.merging.spectral import tsv
from tvexplorer.science import adamerging as ada
from tvexplorer.science.evaluation import Evaluator
from tvexplorer.science.tuning import Budget, Cancelled, Paused, Surrogate, tune

SHAPES = {"class_embedding": (4,), "conv1.weight": (4, 3), "proj": (4, 2),
          "transformer.resblocks.0.attn.in_proj_weight": (6, 4), "transformer.resblocks.0.ln_1.bias": (4,),
          "transformer.resblocks.1.mlp.c_fc.weight": (5, 4), "ln_post.weight": (4,)}


def random_vectors(n_tasks=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": {n: torch.randn(s, generator=g) for n, s in SHAPES.items()} for i in range(n_tasks)}


def test_layers_group_parameters_by_depth():
    layout = Layout.of(random_vectors()["t0"])
    assert list(layout.layers()) == ["embedding", "resblocks.0", "resblocks.1", "final"]
    assert [layer_of(n) for n in ("class_embedding", "conv1.weight", "ln_pre.bias", "proj", "ln_post.bias",
                                  "transformer.resblocks.11.mlp.c_fc.weight")] == \
        ["embedding", "embedding", "embedding", "final", "final", "resblocks.11"]
    covered = sorted(i for slices in layout.layers().values() for sl in slices for i in range(sl.start, sl.stop))
    assert covered == list(range(layout.numel))


LAYER_COEFS = {"t0": {"resblocks.0": 0.5, "final": -1.0}, "t2": {"embedding": 2.0, "resblocks.1": 0.0}}


def scaled_by_hand(vectors, coefficients, layer_coefficients):
    """Each task's parameters times its coefficient and its layer's coefficient, assembled by name."""
    return {t: {n: v * coefficients.get(t, 1.0) * layer_coefficients.get(t, {}).get(layer_of(n), 1.0)
                for n, v in params.items()} for t, params in vectors.items()}


def test_per_layer_task_arithmetic_equals_the_hand_assembled_sum():
    vectors, coefficients = random_vectors(), {"t1": 0.7, "t2": 1.5}
    merged = merge("task_arithmetic", vectors, coefficients=coefficients, layer_coefficients=LAYER_COEFS, scaling=0.3)
    by_hand = scaled_by_hand(vectors, coefficients, LAYER_COEFS)
    for name in SHAPES:
        expected = 0.3 * sum(by_hand[t][name] for t in vectors)
        torch.testing.assert_close(merged[name], expected)
    assert not torch.allclose(merged["proj"], merge("task_arithmetic", vectors, coefficients=coefficients, scaling=0.3)["proj"])


@pytest.mark.parametrize("method,fn,params", [("ties", ties, {"k": 30.0}), ("tsv", tsv, {})])
def test_per_layer_coefficients_scale_each_task_before_the_method(method, fn, params):
    """TIES (a whole-vector threshold: scaled copies) and TSV-M (tensor by tensor) both equal the method
    applied to task vectors scaled by hand."""
    vectors = random_vectors(seed=1)
    layout = Layout.of(vectors["t0"])
    by_hand = scaled_by_hand(vectors, {"t1": 0.5}, LAYER_COEFS)
    expected = fn([layout.flatten(by_hand[t]) for t in vectors], [1.0] * len(vectors), layout, **params)
    flat = {t: layout.flatten(v) for t, v in vectors.items()}
    got = merge_flat(method, flat, layout, coefficients={"t1": 0.5}, layer_coefficients=LAYER_COEFS, scaling=1.0, **params)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,message", [
    ({"nope": {"final": 1.0}}, "unknown task 'nope'"),
    ({"t0": {"resblocks.9": 1.0}}, "unknown layer 'resblocks.9'; layers: embedding, resblocks.0"),
    ({"t0": {"final": float("nan")}}, "finite"),
    ({"t0": 0.5}, "must map layer names to numbers"),
])
def test_bad_layer_coefficients_get_one_line_errors(bad, message):
    with pytest.raises(ValueError, match=message) as e:
        merge("task_arithmetic", random_vectors(), layer_coefficients=bad)
    assert "\n" not in str(e.value)


def test_evaluator_applies_layer_coefficients(quick_demo):
    cache = Cache.open(quick_demo)
    ev = Evaluator(cache, "cpu")
    layers = {cache.tasks[0]: {"resblocks.0": 0.0, "final": 2.0}}
    got = ev.evaluate("task_arithmetic", scaling=0.4, layer_coefficients=layers)
    delta = merge_flat("task_arithmetic", cache.vectors(), cache.layout, scaling=0.4, layer_coefficients=layers)
    assert got.accuracy == ev.accuracy(delta)
    assert ev._key("task_arithmetic", None, 0.4, "tau", {}, layers) != ev._key("task_arithmetic", None, 0.4, "tau", {})


def test_surrogate_gradient_matches_a_finite_difference(quick_demo):
    surrogate = Surrogate(Cache.open(quick_demo), per_layer=True, device=torch.device("cpu"))
    surrogate.f0, surrogate.jvps = surrogate.f0.double(), surrogate.jvps.double()
    surrogate.heads = [h.double() for h in surrogate.heads]
    n = surrogate.jvps.shape[0]
    w = torch.linspace(0.1, 0.5, n, dtype=torch.float64, requires_grad=True)
    surrogate.loss(w).backward()
    eps = 1e-6
    for k in (0, n // 2, n - 1):
        e = torch.zeros(n, dtype=torch.float64)
        e[k] = eps
        with torch.no_grad():
            numeric = (surrogate.loss(w + e) - surrogate.loss(w - e)) / (2 * eps)
        assert abs(float(w.grad[k]) - float(numeric)) <= 1e-6 + 1e-5 * abs(float(numeric))
    assert w.grad.abs().max() > 0


@pytest.mark.parametrize("per_layer", [False, True])
def test_tuning_raises_validation_accuracy_and_is_recorded(demo_copy, per_layer, capsys):
    cache = Cache.open(demo_copy)
    result = tune(cache, per_layer=per_layer, steps=40, lr=0.05, device="cpu")
    assert result["val_average"] > result["start_val_average"]
    assert result["surrogate"]["cross_entropy_end"] < result["surrogate"]["cross_entropy_start"]
    name = f"task_arithmetic:{'per_layer' if per_layer else 'per_task'}"
    recorded = json.loads((demo_copy / "manifest.json").read_text())["tuning"][name]
    assert recorded["coefficients"] == result["coefficients"]
    assert recorded["layer_coefficients"] == result["layer_coefficients"]
    assert (recorded["layer_coefficients"] is not None) == per_layer
    assert main(["eval", str(demo_copy), "--tuned", name, "--json"]) == 0  # the recorded merge, evaluated again
    assert json.loads(capsys.readouterr().out)["accuracy"] == result["accuracy"]


def test_tuning_can_be_stopped_and_records_nothing(demo_copy):
    with pytest.raises(Cancelled):
        tune(Cache.open(demo_copy), steps=5, should_stop=lambda: True)
    assert "tuning" not in json.loads((demo_copy / "manifest.json").read_text())


def in_pieces(run, folder, steps_per_piece):
    """run(budget) again and again with the same state folder until it finishes: (result, pieces)."""
    pieces = 0
    while True:
        pieces += 1
        try:
            return run(Budget(folder, steps=steps_per_piece)), pieces
        except Paused:
            assert (folder / "state.pt").is_file()


@pytest.mark.parametrize("per_layer", [False, True])
def test_tuning_in_pieces_gives_what_one_piece_gives(quick_demo, tmp_path, per_layer):
    cache = Cache.open(quick_demo)
    whole = tune(cache, per_layer=per_layer, steps=12, lr=0.05, device="cpu", record=False)
    seen = []
    pieces, count = in_pieces(lambda budget: tune(cache, per_layer=per_layer, steps=12, lr=0.05, device="cpu", record=False,
                                                  budget=budget, progress=lambda d, t, text: seen.append(d)),
                              tmp_path / "state", steps_per_piece=5)
    assert count >= 5 and not (tmp_path / "state" / "state.pt").exists()
    for key in ("coefficients", "layer_coefficients", "val_accuracy", "accuracy", "surrogate", "exact_evaluations"):
        assert pieces[key] == whole[key], key
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # progress goes on across pieces, never back


# ---------------------------------------------------------------- AdaMerging

class TinyEncoder(torch.nn.Module):
    """Names that fall in two layers: resblocks.0 (the linear map) and final (the projection)."""

    def __init__(self):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.ModuleList([torch.nn.Linear(3, 4)])
        self.proj = torch.nn.Parameter(torch.randn(4, 2))

    def forward(self, x):
        return self.transformer.resblocks[0](x) @ self.proj


def entropy_by_hand(theta, images, heads, scale):
    """Sum over tasks of mean -sum_c p_c log p_c, in numpy float64, from the published definition."""
    w, b, p = (theta[k].numpy().astype(np.float64) for k in ("transformer.resblocks.0.weight",
                                                              "transformer.resblocks.0.bias", "proj"))
    total = 0.0
    for x, head in zip(images, heads):
        f = (x.numpy() @ w.T + b) @ p
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        z = scale * f @ head.numpy()
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        total += float(np.mean(-(q * np.log(q)).sum(1)))
    return total


def test_adamerging_objective_matches_an_independent_computation():
    torch.manual_seed(0)
    encoder = TinyEncoder()
    theta0 = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    taus = [{n: 0.5 * torch.randn_like(p) for n, p in theta0.items()} for _ in range(2)]
    layout = Layout.of(theta0)
    layers = list(layout.layers())
    layer_index = {n: layers.index(layer_of(n)) for n in theta0}
    stacked = {n: torch.stack([t[n] for t in taus]) for n in theta0}
    images = [torch.randn(5, 3), torch.randn(7, 3)]
    heads = [torch.randn(2, 3), torch.randn(2, 4)]
    lambdas = torch.tensor([[0.3, -0.2], [0.7, 0.4]], requires_grad=True)
    value = ada.objective(encoder, ada.merged_parameters(theta0, stacked, lambdas, layer_index), list(zip(images, heads)), 10.0)
    lam = lambdas.detach()

    def theta_at(weights):
        return {n: theta0[n] + sum(weights[t, layer_index[n]] * taus[t][n] for t in range(2)) for n in theta0}
    assert value.item() == pytest.approx(entropy_by_hand(theta_at(lam), images, heads, 10.0), rel=1e-5)
    value.backward()
    eps = 1e-3
    for t in range(2):
        for j in range(2):
            e = torch.zeros_like(lam)
            e[t, j] = eps
            numeric = (entropy_by_hand(theta_at(lam + e), images, heads, 10.0)
                       - entropy_by_hand(theta_at(lam - e), images, heads, 10.0)) / (2 * eps)
            assert float(lambdas.grad[t, j]) == pytest.approx(numeric, rel=2e-2, abs=1e-4)


def test_layer_wise_adamerging_with_equal_coefficients_is_task_arithmetic(quick_demo):
    cache = Cache.open(quick_demo)
    layers = list(cache.layout.layers())
    layer_index = {n: layers.index(layer_of(n)) for n in cache.layout.names}
    theta0 = cache.layout.unflatten(cache.base())
    stacked = {n: torch.stack([cache.layout.unflatten(cache.vector(t))[n].float() for t in cache.tasks]) for n in theta0}
    merged = ada.merged_parameters(theta0, stacked, torch.full((len(cache.tasks), len(layers)), 0.3), layer_index)
    expected = cache.layout.unflatten(cache.base() + merge_flat("task_arithmetic", cache.vectors(), cache.layout, scaling=0.3))
    for n in theta0:
        torch.testing.assert_close(merged[n], expected[n])


@pytest.mark.parametrize("layer_wise", [False, True])
def test_adamerging_lowers_the_entropy_and_records_its_coefficients(demo_copy, layer_wise):
    cache = Cache.open(demo_copy)
    result = ada.adamerging(cache, layer_wise=layer_wise, steps=12, lr=0.02, device="cpu")
    assert result["test_entropy_end"] < result["test_entropy_start"]
    assert len(result["entropy_history"]["values"]) == 12
    recorded = json.loads((demo_copy / "manifest.json").read_text())["tuning"][ada.record_name(layer_wise)]
    settings = {k: recorded[k] for k in ("coefficients", "layer_coefficients")}
    delta = merge_flat("task_arithmetic", cache.vectors(), cache.layout, scaling=recorded["scaling"], **settings)
    assert Evaluator(cache, "cpu").accuracy(delta) == result["accuracy"]
    values = [v for row in (recorded["layer_coefficients"] or {"": recorded["coefficients"]}).values() for v in row.values()]
    assert any(abs(v - 0.3) > 1e-4 for v in values)  # the coefficients moved from their start


@pytest.mark.parametrize("layer_wise", [False, True])
def test_adamerging_in_pieces_gives_what_one_piece_gives(quick_demo, tmp_path, layer_wise):
    cache = Cache.open(quick_demo)
    whole = ada.adamerging(cache, layer_wise=layer_wise, steps=7, lr=0.02, device="cpu", record=False)
    pieces, count = in_pieces(lambda budget: ada.adamerging(cache, layer_wise=layer_wise, steps=7, lr=0.02, device="cpu",
                                                            record=False, budget=budget), tmp_path / "state", 3)
    assert count == 3  # 1 + 7 + 1 steps, 3 a piece
    for key in ("coefficients", "layer_coefficients", "entropy_history", "test_entropy_start", "test_entropy_end", "accuracy"):
        assert pieces[key] == whole[key], key


def test_a_piece_pauses_on_its_seconds_after_at_least_one_step(tmp_path):
    budget = Budget(tmp_path, seconds=0.0)
    budget.spend({"x": 1})  # the first step always runs
    with pytest.raises(Paused):
        budget.spend({"x": 2})
    assert Budget(tmp_path).state() == {"x": 2}
    Budget(tmp_path).finish()
    assert Budget(tmp_path).state() == {}


def test_adamerging_can_be_stopped(demo_copy):
    calls = []
    with pytest.raises(Cancelled):
        ada.adamerging(Cache.open(demo_copy), steps=50, device="cpu", should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3
    assert "tuning" not in json.loads((demo_copy / "manifest.json").read_text())


@pytest.mark.parametrize("argv,message", [
    (["tune", "{cache}", "--method", "nope"], "unknown merge method 'nope'"),
    (["tune", "{cache}", "--method", "ties", "--objective", "entropy"], "use --method task_arithmetic"),
    (["tune", "{cache}", "--steps", "-1"], "--steps -1"),
    (["tune", "{cache}", "--lr", "nan"], "--lr nan"),
    (["eval", "{cache}", "--method", "task_arithmetic", "--layer-coef", "digits=1"], "expected TASK:LAYER=VALUE"),
    (["eval", "{cache}", "--method", "task_arithmetic", "--layer-coef", "nope:final=1"], "unknown task 'nope'"),
    (["eval", "{cache}", "--tuned", "task_arithmetic:per_task"], "no tuning result"),
    (["eval", "{cache}"], "give --method M"),
])
def test_bad_input_gets_one_line(quick_demo, capsys, argv, message):
    assert main([a.format(cache=quick_demo) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
