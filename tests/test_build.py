"""Building real caches: image-folder tasks through the lazy data path, resuming an interrupted build
per task, and importing published fine-tuned checkpoints (tau only, no gradient record)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tvexplorer.pipeline.build as build
import tvexplorer.pipeline.tasks as tasks
from tvexplorer.app import presenters
from tvexplorer.app.explorer import Explorer
from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.core.errors import CacheError
from tvexplorer.models.clip import ModelSpec
from tvexplorer.pipeline.build import build_cache
from tvexplorer.science.evaluation import Evaluator
from tvexplorer.science.training import TrainConfig

CFG = TrainConfig(lr=1e-3, epochs=2, batch_size=8)


def image_folder(root, classes=("circle", "square", "stripe"), n_train=8, n_test=4, seed=0):
    """DIR/train/<class>/*.png and DIR/test/<class>/*.png, odd-sized RGB images, a brightness per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.integers(0, 60, (30, 37, 3)) + 90 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def folder_specs(tmp_path):
    return [{"source": "folder", "name": name, "root": str(image_folder(tmp_path / "data" / name, seed=i)), "image_size": 24}
            for i, name in enumerate(("alpha", "beta"))]


def model(quick_demo):
    return ModelSpec(f"local-dir:{quick_demo / 'model'}")


def test_folder_tasks_build_with_chosen_evaluation_subsets(quick_demo, folder_specs, tmp_path):
    cache = build_cache(tmp_path / "cache", model(quick_demo), folder_specs, CFG, device="cpu", n_eval=5, n_val=2)
    assert cache.tasks == ["alpha", "beta"] and cache.has_gradient_record
    for t in cache.tasks:
        assert cache.manifest.task(t).sizes.to_json() == {"train": 22, "val": 2, "test": 12}
        test = cache.eval_split(t, "test")
        assert len(test) == 5 and test.images.shape[1:] == (24, 24, 3)
        assert len(cache.eval_split(t, "val")) == 2
    assert not (cache.root / ".build").exists()
    assert cache.manifest.metrics.finetuned == {t: Evaluator(cache, device="cpu").accuracy(cache.vector(t), [t])[t] for t in cache.tasks}


def test_an_interrupted_build_resumes_without_redoing_finished_tasks(quick_demo, folder_specs, tmp_path, monkeypatch):
    out, real = tmp_path / "cache", tasks.finetune
    trained = []

    def interrupted(encoder, objective, split, cfg, task_index, **kw):
        if task_index == 1:
            raise KeyboardInterrupt
        trained.append(task_index)
        return real(encoder, objective, split, cfg, task_index, **kw)

    monkeypatch.setattr(tasks, "finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(out, model(quick_demo), folder_specs, CFG, device="cpu")
    assert trained == [0] and not (out / "manifest.json").exists()
    with pytest.raises(CacheError, match="missing"):
        Cache.open(out)
    assert list(json.loads((out / build.STATE).read_text())["done"]) == ["alpha"]
    alpha = (out / "vectors/alpha.safetensors").read_bytes()

    with pytest.raises(ValueError, match="unfinished build with other settings"):
        build_cache(out, model(quick_demo), folder_specs, TrainConfig(lr=1e-3, epochs=3, batch_size=8), device="cpu")

    def counted(encoder, objective, split, cfg, task_index, **kw):
        trained.append(task_index)
        return real(encoder, objective, split, cfg, task_index, **kw)

    monkeypatch.setattr(tasks, "finetune", counted)
    cache = build_cache(out, model(quick_demo), folder_specs, CFG, device="cpu")
    assert trained == [0, 1]  # alpha was not fine-tuned again
    assert (out / "vectors/alpha.safetensors").read_bytes() == alpha
    assert cache.tasks == ["alpha", "beta"] and set(cache.trajectory()["task"]) == {"alpha", "beta"}

    # a damaged finished task is redone rather than trusted
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(tasks, "finetune", interrupted)
    trained.clear()
    with pytest.raises(KeyboardInterrupt):
        build_cache(fresh, model(quick_demo), folder_specs, CFG, device="cpu")
    (fresh / "vectors/alpha.safetensors").write_bytes(b"broken")
    monkeypatch.setattr(tasks, "finetune", counted)
    trained.clear()
    build_cache(fresh, model(quick_demo), folder_specs, CFG, device="cpu")
    assert trained == [0, 1]


def save_open_clip_checkpoint(path, params: dict):
    torch.save({f"model.visual.{k}": v.clone() for k, v in params.items()}, path)


def test_imported_checkpoints_give_tau_and_an_honest_alignment_panel(quick_demo, tmp_path):
    source = Cache.open(quick_demo)
    theta0 = source.base()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for t in source.tasks:
        folder = ckpt / t.upper()  # the published layout: one folder per task, any letter case
        folder.mkdir()
        save_open_clip_checkpoint(folder / "finetuned.pt", source.layout.unflatten(theta0 + source.vector(t).float()))
    out = tmp_path / "imported"
    code = main(["import", "--out", str(out), "--model", f"local-dir:{quick_demo / 'model'}", "--tasks", "demo:" + ",".join(source.tasks),
                 "--n-train", "300", "--n-test", "60", "--checkpoint-dir", str(ckpt), "--device", "cpu"])
    assert code == 0
    cache = Cache.open(out)
    assert cache.vector_kinds == ("tau",) and not cache.has_gradient_record
    assert cache.manifest.provenance["kind"] == "imported"
    for t in cache.tasks:
        assert torch.allclose(cache.vector(t), source.vector(t), atol=1e-6)
        # the same model up to float32 rounding: at most one test image may change its prediction
        assert abs(cache.manifest.metrics.finetuned[t] - source.manifest.metrics.finetuned[t]) <= 1 / 60
    assert "one_epoch" not in cache.manifest.metrics.to_json()
    with pytest.raises(CacheError, match="imported"):
        cache.vector(cache.tasks[0], "tau1")

    ex = Explorer(out, device="cpu")
    assert [k for _, k in ex.matrix_choices()] == ["tau"]
    assert ex.info()["gradient_record"] is False
    with pytest.raises(ValueError, match="no first-epoch record"):
        ex.alignment("all")
    with pytest.raises(ValueError, match="no first-epoch record"):
        ex.evaluate("task_arithmetic", vectors="tau1")
    assert ex.evaluate("task_arithmetic", scaling=0.3)["average"] > 0
    assert "imported" in presenters.about_cache(ex)


def test_import_refuses_a_checkpoint_of_another_architecture(quick_demo, tmp_path, capsys):
    source = Cache.open(quick_demo)
    params = source.layout.unflatten(source.base())
    params["conv1.weight"] = torch.zeros(64, 3, 8, 8)  # patch 8 instead of the model's 4
    bad = tmp_path / "bad.pt"
    save_open_clip_checkpoint(bad, params)
    code = main(["import", "--out", str(tmp_path / "x"), "--model", f"local-dir:{quick_demo / 'model'}", "--tasks", "demo:digits",
                 "--checkpoint", f"digits={bad}", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # beside the progress bar's lines
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and "conv1.weight" in errors[0]


@pytest.mark.parametrize("args, message", [
    (["build", "--out", "{tmp}/c", "--model", "ViT-B-32"], "choose the tasks"),
    (["build", "--out", "{tmp}/c", "--model", "ViT-B-32", "--suite", "8"], "--data-root"),
    (["build", "--out", "{tmp}/c", "--model", "ViT-B-32", "--tasks", "MNIST,Imagenette", "--data-root", "{tmp}"], "Imagenette"),
    (["build", "--out", "{tmp}/c", "--model", "ViT-B-32", "--suite", "8", "--tasks", "MNIST"], "either --suite or --tasks"),
    (["build", "--out", "{tmp}/c", "--model", "ViT-B-32", "--tasks", "demo:digits", "--optimizer", "gd", "--multitask"],
     "multi-task baseline is defined for AdamW"),
    (["import", "--out", "{tmp}/c", "--model", "ViT-B-32", "--tasks", "MNIST", "--data-root", "{tmp}",
      "--checkpoint", "MNIST={tmp}/none.pt"], "does not exist"),
])
def test_build_and_import_bad_input_is_one_line(tmp_path, capsys, args, message):
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


# --- what `build` makes of its task options, and the base model it cannot fetch -------------------------

def task_specs(argv):
    from tvexplorer.cli import making, parser
    args = parser().parse_args(argv)
    return making._task_specs(args, ModelSpec(args.model, args.pretrained))


def test_demo_tasks_are_resized_for_a_model_of_another_resolution(tmp_path):
    from open_clip import get_model_config
    from tvexplorer.data.sources import load_task
    from tvexplorer.data.splits import to_input
    from tvexplorer.core.records import Encoder
    from tvexplorer.models.clip import build_image_encoder
    specs = task_specs(["build", "--out", str(tmp_path / "c"), "--model", "ViT-B-32", "--tasks", "demo:digits,letters",
                        "--n-train", "12", "--n-test", "4"])
    assert [s["image_size"] for s in specs] == [224, 224]
    data = load_task(specs[0])
    assert tuple(data.test.images.shape) == (4, 224, 224, 3) and data.test.images.dtype == torch.uint8
    assert tuple(data.train.images.shape[1:]) == (224, 224, 3)
    # ViT-B-32's tower takes them (the 24-pixel images ended in a conv2d traceback)
    cfg = get_model_config("ViT-B-32")
    encoder = build_image_encoder(Encoder(cfg["embed_dim"], cfg["vision_cfg"], False, 224, (0.5,) * 3, (0.25,) * 3))
    with torch.no_grad():
        assert tuple(encoder(to_input(data.test.images[:1], [0.5] * 3, [0.25] * 3)).shape) == (1, cfg["embed_dim"])
    # a model at the world's own 24 pixels keeps the specs as build-demo writes them (no resize recorded)
    from tvexplorer.demo.build import demo_task_specs
    assert "image_size" not in demo_task_specs({"n_train": 8, "n_test": 4, "seed": 0, "image_size": 24})[0]


def test_resizing_keeps_a_flat_image_flat():
    from tvexplorer.data.sources import resized
    flat = torch.full((300, 24, 24, 3), 77, dtype=torch.uint8)  # more than one chunk
    assert torch.equal(resized(flat, 40), torch.full((300, 40, 40, 3), 77, dtype=torch.uint8))


def test_folder_tasks_alone_need_no_data_root(tmp_path):
    specs = task_specs(["build", "--out", str(tmp_path / "c"), "--model", "ViT-B-32", "--folder", f"mine={tmp_path}"])
    assert specs == [{"source": "folder", "name": "mine", "root": str(tmp_path), "image_size": 224}]
    both = task_specs(["build", "--out", str(tmp_path / "c"), "--model", "ViT-B-32", "--tasks", "demo:digits",
                       "--folder", f"mine={tmp_path}"])
    assert [s["source"] for s in both] == ["demo", "folder"]


def test_base_weights_that_cannot_be_downloaded_end_in_one_line(tmp_path, capsys, monkeypatch):
    import open_clip.factory

    def offline(*args, **kwargs):
        raise FileNotFoundError("Failed to download file (open_clip_pytorch_model.bin) for timm/x. Last error: offline")
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    code = main(["build", "--out", str(tmp_path / "c"), "--model", "ViT-B-32", "--pretrained", "openai",
                 "--tasks", "demo:digits", "--n-train", "8", "--n-test", "4", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot load CLIP ViT-B-32 (openai)"), err
    assert "local-dir:PATH" in err[0]
