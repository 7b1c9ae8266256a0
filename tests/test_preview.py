"""The linearised preview: exact for linear models and at scaling 0, first-order accurate, and
its build-time checks reproducible."""
import shutil
from dataclasses import replace

import pytest
import torch

from tvexplorer.core.cache import Cache
from tvexplorer.core.files import sha256_file
from tvexplorer.data.splits import to_input
from tvexplorer.merging import merge_flat
from tvexplorer.models.clip import build_image_encoder, set_flat
from tvexplorer.science.evaluation import Evaluator
from tvexplorer.science.preview import Preview, compute_preview, linearise, predict_features


@pytest.fixture(scope="module")
def previewed(quick_demo):
    """The quick demo, whose build computed its preview (read-only by convention)."""
    return quick_demo


def exact_features(cache: Cache, delta: torch.Tensor, split: str) -> dict[str, torch.Tensor]:
    info = cache.manifest.model.encoder
    encoder = build_image_encoder(info)
    set_flat(encoder, cache.base() + delta)
    with torch.inference_mode():
        return {t: encoder(to_input(cache.eval_split(t, split).images, info.mean, info.std)) for t in cache.tasks}


# ---------------------------------------------------------------- a model linear in its parameters

def test_a_model_linear_in_its_parameters_is_predicted_exactly():
    g = torch.Generator().manual_seed(0)
    encoder = torch.nn.Linear(12, 5, bias=False)  # f(W)(x) = W x
    theta0 = {"weight": torch.randn(5, 12, generator=g)}
    taus = {f"v{i}": {"weight": torch.randn(5, 12, generator=g)} for i in range(3)}
    tasks = {name: (torch.randn(n, 12, generator=g), torch.randn(5, 4, generator=g), torch.randint(0, 4, (n,), generator=g))
             for name, n in (("a", 40), ("b", 25))}  # images, head, labels

    # Batches and tangent chunks that do not divide the counts, to cover the seams.
    linear = {name: linearise(encoder, theta0, list(taus.values()), images, batch_size=16, tangents_at_once=2)
              for name, (images, _, _) in tasks.items()}
    preview = Preview(list(taus), {name: head for name, (_, head, _) in tasks.items()},
                      {"test": {name: labels for name, (_, _, labels) in tasks.items()}},
                      {"test": {name: f0 for name, (f0, _) in linear.items()}},
                      {"tau": {"test": {name: jvps for name, (_, jvps) in linear.items()}}})
    assert linear["a"][1].shape == (3, 40, 5)

    for _ in range(5):
        coefficients = {v: float(c) for v, c in zip(taus, torch.randn(3, generator=g) * 2)}
        scaling = float(torch.rand(1, generator=g)) * 3
        weight = theta0["weight"] + scaling * sum(c * taus[v]["weight"] for v, c in coefficients.items())
        exact_accuracy = {}
        for name, (images, head, labels) in tasks.items():
            exact = images @ weight.T
            f0, jvps = linear[name]
            torch.testing.assert_close(predict_features(f0, jvps, preview.weights(coefficients, scaling)), exact,
                                       rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(preview.features(coefficients, scaling)[name], exact, rtol=1e-5, atol=1e-4)
            exact_accuracy[name] = int(((exact @ head).argmax(1) == labels).sum()) / len(labels)
        assert preview.accuracy(coefficients, scaling) == exact_accuracy


def test_unknown_settings_are_refused(previewed):
    preview = Preview.open(Cache.open(previewed))
    with pytest.raises(ValueError, match="unknown task"):
        preview.accuracy({"no_such_task": 1.0}, 0.3)
    with pytest.raises(ValueError, match="finite"):
        preview.accuracy(None, float("nan"))
    with pytest.raises(ValueError, match="g0"):
        preview.accuracy(None, 0.3, kind="g0")


# ---------------------------------------------------------------- the quick demo

def test_preview_at_scaling_zero_is_the_exact_zero_shot_accuracy(previewed):
    cache = Cache.open(previewed)
    preview = Preview.open(cache)
    assert preview.kinds == ["tau", "tau1"] and preview.splits == ["test"]
    for split in preview.splits:
        exact = Evaluator(cache, "cpu", split=split).accuracy(None)
        for kind in preview.kinds:
            assert preview.accuracy(None, 0.0, kind, split) == exact
            # Zero coefficients with any scaling are the same model.
            assert preview.accuracy({t: 0.0 for t in cache.tasks}, 0.7, kind, split) == exact


def test_build_time_checks_are_recorded_and_reproducible(previewed):
    cache = Cache.open(previewed)
    record = cache.manifest.preview
    assert list(record.vectors) == cache.tasks
    assert record.files == {t: f"preview/{t}.safetensors" for t in cache.tasks}
    assert set(record.files.values()) <= set(cache.manifest.files)
    checks = record.checks
    assert {c.scaling for c in checks if c.kind == "tau"} >= {0.0, 0.3, 1.0}
    assert any(c.coefficients and len(set(c.coefficients.values())) > 1 for c in checks)  # non-uniform
    assert any(c.kind == "tau1" for c in checks)

    preview = Preview.open(cache)
    evaluator = Evaluator(cache, "cpu", split="test")
    for check in checks:
        predicted = preview.accuracy(check.coefficients, check.scaling, check.kind, check.split)
        delta = merge_flat("task_arithmetic", cache.vectors(check.kind), cache.layout,
                           coefficients=check.coefficients, scaling=check.scaling)
        exact = evaluator.accuracy(delta)
        assert predicted == check.preview
        assert exact == check.exact
        assert check.max_abs_diff == max(abs(predicted[t] - exact[t]) for t in cache.tasks)
        assert check.preview_average == pytest.approx(sum(predicted.values()) / len(predicted))
        assert check.exact_average == pytest.approx(sum(exact.values()) / len(exact))
    assert record.max_abs_diff == max(c.max_abs_diff for c in checks)
    assert f"up to {100 * record.max_abs_diff:.1f} points" in preview.error_note()


def test_first_order_error_shrinks_quadratically(previewed):
    cache = Cache.open(previewed)
    preview = Preview.open(cache)
    theta0_features = exact_features(cache, torch.zeros(cache.layout.numel), "test")

    def errors(scaling: float) -> tuple[float, float]:
        """(|preview - exact|, |exact - zero-shot|) over all test features."""
        delta = merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=scaling)
        exact = exact_features(cache, delta, "test")
        predicted = preview.features(None, scaling)
        error = torch.cat([predicted[t] - exact[t] for t in cache.tasks]).norm()
        change = torch.cat([exact[t] - theta0_features[t] for t in cache.tasks]).norm()
        return float(error), float(change)

    small_error, small_change = errors(0.003)
    error, _ = errors(0.03)
    large_error, _ = errors(1.0)
    assert small_error < 0.1 * small_change  # the first-order term carries almost all of a small step
    # Ten times the step: a first-order method's error grows about 100 times (a wrong slope: 10 times).
    assert error > 30 * small_error
    assert small_error < 1e-3 * large_error


def test_open_without_a_preview_or_for_other_vectors_gives_none(previewed, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(previewed, root)
    Cache.open(root).add_files({}, lambda manifest: replace(manifest, preview=None))
    assert Preview.open(Cache.open(root)) is None
    cache = Cache.open(previewed)
    reordered = replace(cache.manifest.preview, vectors=tuple(cache.tasks[::-1]))
    assert Preview.open(Cache(cache.root, replace(cache.manifest, preview=reordered))) is None


def test_rebuilding_gives_identical_files(previewed, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(previewed, root)
    before = Cache.open(previewed).manifest
    compute_preview(Cache.open(root), device="cpu")
    after = Cache.open(root).manifest
    assert after.preview == before.preview
    for rel in before.preview.files.values():
        assert after.files[rel] == before.files[rel]
        assert sha256_file(root / rel) == before.files[rel].sha256


def test_an_interrupted_rebuild_leaves_no_preview(previewed, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(previewed, root)

    def interrupt_in_second_task(done, total, text):
        if done == 1:  # one step per task (test split only): the first task's file is already replaced
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_preview(Cache.open(root), device="cpu", progress=interrupt_in_second_task)
    cache = Cache.open(root)
    cache.verify()
    assert Preview.open(cache) is None
