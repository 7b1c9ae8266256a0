"""The merged model out (`export`): open_clip local-dir CLIPs and transformers image towers that load
elsewhere and hold exactly the merge the Evaluator scores."""
import json

import open_clip
import pytest
import torch

from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.data.splits import to_input
from tvexplorer.models.checkpoints import read_image_encoder
from tvexplorer.models.clip import ModelSpec, load_clip, set_flat
from tvexplorer.pipeline.export import RECORD, merge_for_export
from tvexplorer.science.evaluation import Evaluator, merged_delta


@pytest.fixture(scope="module")
def evaluator(quick_demo):
    return Evaluator(Cache.open(quick_demo), device="cpu")


def merged_features(evaluator, delta, images):
    """Image features of the Evaluator's own encoder at theta0 + delta, as it scores them."""
    with evaluator._lock, torch.no_grad():
        set_flat(evaluator.encoder, evaluator.theta0 + delta)
        return evaluator.encoder(to_input(images, evaluator.mean, evaluator.std))


def some_images(cache, n=12):
    return cache.eval_split(cache.tasks[0]).images[:n]


def test_open_clip_export_loads_as_local_dir_and_matches_the_evaluator(quick_demo, evaluator, tmp_path):
    out = tmp_path / "clip"
    first, second = evaluator.cache.tasks[:2]
    assert main(["export", str(quick_demo), "--method", "ties", "--param", "k=30", "--coef", f"{first}=1.5",
                 f"{second}=0.5", "--scaling", "0.8", "--format", "open_clip", "--out", str(out)]) == 0
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    model.eval()
    delta = merged_delta(evaluator.cache, "ties", coefficients={first: 1.5, second: 0.5}, scaling=0.8, k=30)
    images = some_images(evaluator.cache)
    expected = merged_features(evaluator, delta, images)
    with torch.no_grad():
        got = model.encode_image(to_input(images, evaluator.mean, evaluator.std))
    assert (got - expected).abs().max().item() < 1e-5
    assert expected.abs().max().item() > 1e-2  # features, not zeros
    # the text tower and the preprocessing are the base model's own
    base, tokenizer, _ = load_clip(ModelSpec(evaluator.cache.manifest.model.name), evaluator.cache.root)
    tokens = tokenizer(["a photo of a digit", "a sign"])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), base.encode_text(tokens))
        unmerged = base.encode_image(to_input(images, evaluator.mean, evaluator.std))
    assert (unmerged - expected).abs().max().item() > 1e-3  # the merge shows, so the match above means something
    normalize = preprocess.transforms[-1]
    assert list(normalize.mean) == evaluator.mean and list(normalize.std) == evaluator.std
    record = json.loads((out / RECORD).read_text())
    assert record["merge"] == {"method": "ties", "vectors": "tau", "scaling": 0.8,
                               "coefficients": {first: 1.5, second: 0.5}, "params": {"k": 30.0}}


def test_hf_export_reimports_to_the_same_task_vector(quick_demo, evaluator, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(quick_demo), "--method", "task_arithmetic", "--vectors", "tau1", "--scaling", "0.4",
                 "--format", "hf", "--out", str(out)]) == 0
    cache = evaluator.cache
    delta = merged_delta(cache, "task_arithmetic", scaling=0.4, vectors="tau1")
    params = read_image_encoder(out / "model.safetensors")  # the import converter
    theta = cache.layout.flatten(params)
    assert torch.equal(theta, cache.base() + delta)  # a pure renaming: not one bit changed
    assert torch.allclose(theta - cache.base(), delta, atol=1e-6)
    assert delta.abs().max().item() > 1e-3
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["CLIPVisionModelWithProjection"]


def test_hf_export_runs_in_transformers_like_the_evaluator(quick_demo, evaluator, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(quick_demo), "--method", "tsv", "--format", "hf", "--out", str(out)]) == 0
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(out).eval()
    images = some_images(evaluator.cache)
    expected = merged_features(evaluator, merged_delta(evaluator.cache, "tsv"), images)
    with torch.no_grad():
        got = model(pixel_values=to_input(images, evaluator.mean, evaluator.std)).image_embeds
    assert (got - expected).abs().max().item() < 1e-5


def test_atm_export_holds_the_saved_round(quick_demo, evaluator, tmp_path):
    cache = evaluator.cache
    assert set(cache.manifest.atm) >= {"standard", "posthoc"}
    exported = {}
    for variant in ("standard", "posthoc"):
        out = tmp_path / variant
        assert main(["export", str(quick_demo), "--atm", f"{variant}:1", "--scaling", "0.5", "--format", "hf",
                     "--out", str(out)]) == 0
        exported[variant] = cache.layout.flatten(read_image_encoder(out / "model.safetensors"))
        expected = cache.base() + 0.5 * cache.atm_delta(variant, 1).float()
        assert torch.allclose(exported[variant], expected, atol=1e-6)
    assert not torch.allclose(exported["standard"], exported["posthoc"], atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--method", "ties", "--atm", "standard:1"], "not both"),
    ([], "either a merge method"),
    (["--atm", "standard"], "VARIANT:ROUND"),
    (["--atm", "standard:9"], "no round 9"),
    (["--atm", "nosuch:1"], "no saved ATM 'nosuch' run"),
    (["--atm", "standard:1", "--coef", "digits=2"], "do not apply"),
    (["--method", "nosuch"], "unknown merge method"),
    (["--method", "ties", "--param", "k=0"], "k"),
    (["--method", "ties", "--coef", "nosuch=1"], "unknown task"),
    (["--method", "ties", "--format", "onnx"], "invalid choice"),
])
def test_bad_export_input_is_one_line(quick_demo, tmp_path, capsys, args, message):
    argv = ["export", str(quick_demo), "--out", str(tmp_path / "out"), *args]
    if "--format" not in args:
        argv += ["--format", "hf"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / RECORD).exists()


def test_export_never_writes_into_an_unrelated_folder(quick_demo, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(quick_demo), "--method", "average", "--format", "hf", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # an earlier export of the same format is replaced, one of another format is not
    again = tmp_path / "again"
    for fmt, rc in (("hf", 0), ("hf", 0), ("open_clip", 2)):
        assert main(["export", str(quick_demo), "--method", "average", "--format", fmt, "--out", str(again)]) == rc


def test_merge_for_export_is_what_the_evaluator_scores(quick_demo, evaluator):
    delta, settings = merge_for_export(evaluator.cache, method="dare", params={"p": 0.3, "seed": 4})
    assert torch.equal(delta, merged_delta(evaluator.cache, "dare", p=0.3, seed=4))
    assert settings["scaling"] == 0.3  # DARE's default, recorded


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_hf_conversion_of_a_random_tower_runs_the_same_in_transformers(quick_gelu):
    """The inverse conversion alone, on a tower with the openai models' QuickGELU and on one without."""
    transformers = pytest.importorskip("transformers")
    from tvexplorer.models.checkpoints import convert_hf_clip_vision, to_hf_clip_vision
    from tvexplorer.models.clip import build_image_encoder
    from tvexplorer.core.records import Encoder
    encoder = Encoder(24, {"image_size": 32, "patch_size": 8, "width": 48, "layers": 2, "head_width": 16},
                      quick_gelu=quick_gelu, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.manual_seed(0)
    tower = build_image_encoder(encoder)
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.02 * torch.randn_like(p))  # no zero biases or unit norms left by the initialisation
    params = {k: v.detach() for k, v in tower.named_parameters()}
    state, config = to_hf_clip_vision(params, encoder)
    config.pop("architectures"), config.pop("model_type")
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**config)).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (model(pixel_values=x).image_embeds - tower(x)).abs().max().item() < 1e-5
    back = convert_hf_clip_vision(state)
    assert back.keys() == params.keys() and all(torch.equal(back[k], params[k]) for k in params)
