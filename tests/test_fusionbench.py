"""`import --hub fusionbench` against a mocked hub: huggingface_hub's snapshot_download is replaced by a
function that serves small random transformers CLIP towers in the real file layout (config.json +
model.safetensors per fine-tune; the base a full CLIPModel as pytorch_model.bin, as openai's
repositories hold it), with the hub's cache behaviour: files already fetched are not fetched again, and
`local_files_only` returns earlier downloads. Nothing here touches a network."""
import fnmatch
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

import huggingface_hub
from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.core.hub import HubUnavailable
from tvexplorer.core.records import SplitSizes
from tvexplorer.models import fusionbench
from tvexplorer.models.checkpoints import read_image_encoder

# the quick demo's image tower: 24 px, patch 4, width 64, 4 layers of 2 heads, embedding 64
VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=2, image_size=24,
              patch_size=4, projection_dim=64, hidden_act="quick_gelu")
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
            max_position_embeddings=16, projection_dim=64)
BASE = "openai/clip-vit-base-patch32"


def perturbed(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # layer norms start at exactly 1 and 0: make every tensor distinct
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


class MockHub:
    """Serves repositories from local folders as snapshot_download would, into a private hub cache."""

    def __init__(self, root: Path):
        self.remote, self.cache = root / "remote", root / "cache"
        self.online, self.fetched, self.interrupt_at = True, [], None

    def add(self, repo_id: str, save) -> Path:
        folder = self.remote / repo_id
        folder.mkdir(parents=True)
        save(folder)
        return folder

    def snapshot_download(self, repo_id, repo_type=None, revision=None, allow_patterns=None, local_files_only=False, **kw):
        local = self.cache / repo_id.replace("/", "--")
        if local_files_only:
            if not local.is_dir():
                raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo_id} is not in the local cache")
            return str(local)
        if not self.online:
            raise ConnectionError("Max retries exceeded with url: https://huggingface.co/api/models/" + repo_id)
        if not (self.remote / repo_id).is_dir():
            raise OSError(f"404 Client Error: Repository Not Found for url: https://huggingface.co/api/models/{repo_id}")
        if repo_id == self.interrupt_at:
            raise KeyboardInterrupt
        local.mkdir(parents=True, exist_ok=True)
        for file in sorted((self.remote / repo_id).iterdir()):
            wanted = allow_patterns is None or any(fnmatch.fnmatch(file.name, p) for p in allow_patterns)
            if wanted and not (local / file.name).exists():
                shutil.copy(file, local / file.name)
                self.fetched.append(f"{repo_id}/{file.name}")
        return str(local)


def save_as_fusionbench(tower, folder):
    """config.json and model.safetensors as FusionBench's files hold them: float32, keys under vision_model.
    (transformers 4 named them so; transformers 5 saves a CLIPVisionModel's keys without the prefix)."""
    tower.config.save_pretrained(folder)
    state = {k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A mocked hub with FusionBench's ViT-B/32 base and its MNIST and SVHN fine-tunes; suite 8 cut to those two."""
    mock = MockHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", mock.snapshot_download)
    monkeypatch.setitem(fusionbench.CATALOGUE["suites"], "8", ["mnist", "svhn"])
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=64)
    mock.base = perturbed(transformers.CLIPModel(config), 0)
    # openai's repositories hold pytorch_model.bin, not model.safetensors: the second weight file tried
    mock.add(BASE, lambda f: (config.save_pretrained(f), torch.save(mock.base.state_dict(), f / "pytorch_model.bin")))
    mock.towers = {}
    for seed, task in enumerate(("mnist", "svhn"), 1):
        tower = perturbed(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)), seed)
        mock.add(f"tanganke/clip-vit-base-patch32_{task}", lambda f, tower=tower: save_as_fusionbench(tower, f))
        mock.towers[task.upper()] = tower
    return mock


def test_the_served_files_are_the_real_layout(hub):
    assert sorted(p.name for p in (hub.remote / "tanganke/clip-vit-base-patch32_mnist").iterdir()) == ["config.json", "model.safetensors"]


def test_download_converts_the_fine_tunes_to_the_towers_own_weights(hub):
    fetched = fusionbench.download("ViT-B-32", "8")
    assert fetched.spec.name == "ViT-B-32" and fetched.spec.pretrained == "openai"
    assert fetched.base.name == "pytorch_model.bin" and set(fetched.checkpoints) == {"MNIST", "SVHN"}
    assert all(p.name == "model.safetensors" for p in fetched.checkpoints.values())
    # only config.json and one weight file per repository were fetched
    assert sorted(hub.fetched) == sorted([f"{BASE}/config.json", f"{BASE}/pytorch_model.bin"]
                                         + [f"tanganke/clip-vit-base-patch32_{t}/{f}" for t in ("mnist", "svhn")
                                            for f in ("config.json", "model.safetensors")])
    base = read_image_encoder(fetched.base)
    torch.testing.assert_close(base["proj"], hub.base.visual_projection.weight.T, rtol=0, atol=0)
    for task, tower in hub.towers.items():
        params = read_image_encoder(fetched.checkpoints[task], base=base)
        hf = getattr(tower, "vision_model", tower)  # transformers 5 has no vision_model level
        layer = hf.encoder.layers[2]
        expected = {
            "conv1.weight": hf.embeddings.patch_embedding.weight,
            "positional_embedding": hf.embeddings.position_embedding.weight,
            "ln_pre.weight": hf.pre_layrnorm.weight,
            "transformer.resblocks.2.attn.in_proj_weight": torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                                                      layer.self_attn.v_proj.weight]),
            "transformer.resblocks.2.mlp.c_fc.bias": layer.mlp.fc1.bias,
            "ln_post.bias": hf.post_layernorm.bias,
            "proj": base["proj"],  # a CLIPVisionModel has no projection: it is the base's
        }
        for name, tensor in expected.items():
            assert torch.equal(params[name], tensor.detach()), (task, name)


def test_an_interrupted_download_resumes_and_earlier_downloads_serve_offline(hub, capsys):
    hub.interrupt_at = "tanganke/clip-vit-base-patch32_svhn"
    with pytest.raises(KeyboardInterrupt):
        fusionbench.download("ViT-B-32", "8")
    assert len(hub.fetched) == 4  # the base and MNIST
    hub.interrupt_at, hub.fetched = None, []
    first = fusionbench.download("ViT-B-32", "8")
    assert hub.fetched == ["tanganke/clip-vit-base-patch32_svhn/config.json", "tanganke/clip-vit-base-patch32_svhn/model.safetensors"]

    hub.online, hub.fetched = False, []
    offline = fusionbench.download("ViT-B-32", "8")
    assert offline == first and hub.fetched == []
    err = capsys.readouterr().err
    assert "offline" in err and "ConnectionError" in err and "tanganke/clip-vit-base-patch32_mnist" in err

    with pytest.raises(HubUnavailable) as e:  # never downloaded, and no network
        fusionbench.download("ViT-B-16", "8")
    assert "\n" not in str(e.value) and "openai/clip-vit-base-patch16" in str(e.value) and "no copy was downloaded before" in str(e.value)


@pytest.mark.parametrize("model, suite, match", [
    ("ViT-H-14", "8", "no fine-tunes of 'ViT-H-14'; choose one of ViT-B-32, ViT-B-16, ViT-L-14"),
    ("ViT-B-32", "12", "no '12'-task suite; choose one of 8, 14, 20")])
def test_unknown_model_or_suite_is_one_line(model, suite, match):
    with pytest.raises(ValueError, match=match) as e:
        fusionbench.download(model, suite)
    assert "\n" not in str(e.value)


def test_a_missing_repository_or_weight_file_is_one_line(hub):
    shutil.rmtree(hub.remote / "tanganke/clip-vit-base-patch32_svhn")
    with pytest.raises(HubUnavailable) as e:
        fusionbench.download("ViT-B-32", "8")
    message = str(e.value)
    assert "\n" not in message and "tanganke/clip-vit-base-patch32_svhn" in message and "Repository Not Found" in message
    hub.add("tanganke/clip-vit-base-patch32_svhn", lambda f: (f / "config.json").write_text("{}"))
    missing = "none of model.safetensors, pytorch_model.bin of tanganke/clip-vit-base-patch32_svhn could be downloaded"
    with pytest.raises(FileNotFoundError, match=missing):
        fusionbench.download("ViT-B-32", "8")


def test_the_catalogue_names_every_suite_task_and_a_dataset_for_it():
    from tvexplorer.data.benchmarks import DATASETS, SUITES
    from tvexplorer.data.hubdata import HUB_DATASETS
    cat = fusionbench.CATALOGUE
    assert {k: len(v) for k, v in cat["suites"].items()} == {"8": 8, "14": 14, "20": 20}
    for suite, tasks in cat["suites"].items():
        assert set(fusionbench.suite_tasks(suite)) == set(SUITES[suite])  # the same tasks as the registry's suites
        assert all(cat["tasks"][t] in DATASETS and cat["tasks"][t] in HUB_DATASETS for t in tasks)
    assert cat["models"]["ViT-L-14"]["finetuned"].format(task="rendered-sst2") == "tanganke/clip-vit-large-patch14_rendered-sst2"


# ---------------------------------------------------------------- the command, end to end

def test_import_hub_command_makes_a_cache_of_the_served_fine_tunes(hub, quick_demo, tmp_path, monkeypatch):
    import hubparquet
    monkeypatch.setitem(fusionbench.CATALOGUE["models"], "ViT-B-32",
                        {**fusionbench.CATALOGUE["models"]["ViT-B-32"], "open_clip": f"local-dir:{quick_demo / 'model'}",
                         "pretrained": None})
    data = tmp_path / "data"
    hubparquet.use_private_datasets_cache(monkeypatch, tmp_path)
    hubparquet.digits(data / "ylecun/mnist", n_train=20, n_test=6)
    hubparquet.digits(data / "ufldl-stanford/svhn", n_train=20, n_test=6, config="cropped_digits")
    out = tmp_path / "cache"
    code = main(["import", "--hub", "fusionbench", "--model", "ViT-B-32", "--suite", "8", "--data-root", str(data),
                 "--out", str(out), "--device", "cpu", "--n-eval", "5", "--n-val", "2"])
    assert code == 0
    cache = Cache.open(out)
    assert cache.tasks == ["MNIST", "SVHN"] and cache.vector_kinds == ("tau",)
    source = cache.manifest.provenance
    assert source["kind"] == "imported" and source["base"].endswith("pytorch_model.bin")
    assert [t.data["source"] for t in cache.manifest.tasks] == ["hf", "hf"]
    assert cache.manifest.task("MNIST").sizes == SplitSizes(train=18, val=2, test=6)
    assert len(cache.eval_split("SVHN", "test")) == 5
    base = read_image_encoder(hub.remote / BASE / "pytorch_model.bin")
    assert torch.equal(cache.base(), cache.layout.flatten(base, dtype=torch.float32))
    for task in hub.towers:
        tuned = cache.layout.flatten(read_image_encoder(hub.remote / f"tanganke/clip-vit-base-patch32_{task.lower()}" / "model.safetensors",
                                                        base=base), dtype=torch.float32)
        assert torch.equal(cache.vector(task), tuned - cache.base())
        assert 0 <= cache.manifest.metrics.finetuned[task] <= 1


@pytest.mark.parametrize("extra, message", [
    (["--model", "ViT-H-14", "--suite", "8"], "FusionBench has no fine-tunes of 'ViT-H-14'"),
    (["--model", "ViT-B-32"], "--hub fusionbench needs --suite 8|14|20"),
    (["--model", "ViT-B-32", "--suite", "12"], "invalid choice: '12'"),
    (["--model", "ViT-B-32", "--suite", "8", "--data", "torchvision"], "use --data hf"),
    (["--model", "ViT-B-32", "--suite", "8", "--pretrained", "laion2b", "--checkpoint", "MNIST=x.pt"],
     "leave out --checkpoint, --pretrained"),
])
def test_import_hub_bad_input_is_one_line(tmp_path, capsys, extra, message):
    code = main(["import", "--hub", "fusionbench", "--out", str(tmp_path / "c"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
