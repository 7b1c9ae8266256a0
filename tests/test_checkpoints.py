"""Reading published fine-tuned image encoders (tvexplorer.models.checkpoints) into open_clip parameter names.

Everything is built here, at toy sizes, and nothing touches the network: Hugging Face models come
from a config with random weights, task-arithmetic checkpoints are fabricated with a stand-in for
their `src.modeling.ImageEncoder`.
"""
import os
import random
import subprocess
import sys
import types
import zipfile

import open_clip
import pytest
import torch
import transformers
from open_clip.model import _build_vision_tower
from safetensors.torch import save_file
from torchvision import transforms as T

from tvexplorer.models.checkpoints import CheckpointError, check_against, convert_hf_clip_vision, read_image_encoder

WIDTH, LAYERS, HEADS, PATCH, IMAGE, EMBED = 64, 2, 4, 8, 32, 32
VISION_CFG = {"image_size": IMAGE, "patch_size": PATCH, "width": WIDTH, "layers": LAYERS, "head_width": WIDTH // HEADS}


def tiny_tower():
    torch.manual_seed(0)
    return _build_vision_tower(EMBED, dict(VISION_CFG), quick_gelu=True).eval()


def tiny_clip():
    torch.manual_seed(0)
    text_cfg = {"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1}
    return open_clip.CLIP(EMBED, dict(VISION_CFG), text_cfg, quick_gelu=True)


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.named_parameters()}


def hf_model(with_projection=True):
    config = transformers.CLIPVisionConfig(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        image_size=IMAGE, patch_size=PATCH, projection_dim=EMBED, hidden_act="quick_gelu")
    torch.manual_seed(1)
    cls = transformers.CLIPVisionModelWithProjection if with_projection else transformers.CLIPVisionModel
    model = cls(config).eval()
    # Layer norms start at exactly 1 and 0: perturb everything so that a swapped or dropped tensor shows.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def save(state, path, fmt):
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def assert_one_line_error(path, match, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        read_image_encoder(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# ---------------------------------------------------------------- Hugging Face CLIP vision models

@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("prefixed", [True, False], ids=["vision_model", "bare"])
def test_hf_with_projection_gives_the_same_image_features(tmp_path, fmt, prefixed):
    hf = hf_model(with_projection=True)
    state = hf.state_dict()
    if not prefixed:
        state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    else:  # what a full CLIPModel or an older transformers adds: ignored
        state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
        state["text_model.embeddings.token_embedding.weight"] = torch.randn(50, 16)
        state["logit_scale"] = torch.tensor(2.0)
    path = tmp_path / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    save(state, path, fmt)

    params = read_image_encoder(path)
    tower = tiny_tower()
    check_against(params, shapes(tower))
    tower.load_state_dict(params, strict=True)
    images = torch.randn(3, 3, IMAGE, IMAGE)
    with torch.no_grad():
        expected = hf(pixel_values=images).image_embeds
        torch.testing.assert_close(tower(images), expected, atol=1e-5, rtol=1e-5)


def test_hf_without_projection_takes_proj_from_the_base(tmp_path):
    hf = hf_model(with_projection=False)
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), path)
    base_proj = torch.randn(WIDTH, EMBED)

    message = assert_one_line_error(path, "without visual_projection.weight")
    assert "base" in message
    assert_one_line_error(path, "the given base has no 'proj'", base={"conv1.weight": torch.zeros(1)})

    params = read_image_encoder(path, base={"proj": base_proj})
    assert params["proj"] is base_proj
    tower = tiny_tower()
    tower.load_state_dict(params, strict=True)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(tower(images), hf(pixel_values=images).pooler_output @ base_proj, atol=1e-5, rtol=1e-5)


def test_hf_conversion_refuses_unknown_or_incomplete_keys():
    state = hf_model().state_dict()
    with pytest.raises(CheckpointError, match="unrecognised key 'vision_model.encoder.layers.0.adapter.weight'"):
        convert_hf_clip_vision({**state, "vision_model.encoder.layers.0.adapter.weight": torch.zeros(2)})
    del state["vision_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match="layer 1 has only the q/v projection bias"):
        convert_hf_clip_vision(state)


def hf_vit_b_state(patch):
    """A ViT-B/`patch` CLIPVisionModelWithProjection's state dict on the meta device: shapes without memory."""
    config = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=224, patch_size=patch, projection_dim=512)
    with torch.device("meta"):
        return transformers.CLIPVisionModelWithProjection(config).state_dict()


def test_vit_b_32_names_and_shapes_match_open_clip():
    cfg = open_clip.get_model_config("ViT-B-32")
    with torch.device("meta"):
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
    check_against(convert_hf_clip_vision(hf_vit_b_state(32)), shapes(visual), model="ViT-B-32")

    with pytest.raises(CheckpointError) as info:
        check_against(convert_hf_clip_vision(hf_vit_b_state(16)), shapes(visual), model="ViT-B-32")
    message = str(info.value)
    assert message.startswith("checkpoint is a ViT-B/16 (width 768, 12 layers, patch 16, 224 px, embedding 512) "
                              "but the expected model (ViT-B-32) is a ViT-B/32 (")
    assert "mis-shaped 2 (" in message and "conv1.weight (768, 3, 16, 16) vs (768, 3, 32, 32)" in message
    assert "\n" not in message


def test_check_against_names_missing_and_unexpected_parameters():
    expected = shapes(tiny_tower())
    params = {k: torch.zeros(s) for k, s in expected.items()}
    check_against(params, expected)
    del params["ln_post.bias"]
    params["logit_scale"] = torch.zeros(())
    with pytest.raises(CheckpointError, match=r"^checkpoint does not match the expected model: "
                                              r"missing 1 \(ln_post.bias\); unexpected 1 \(logit_scale\)$"):
        check_against(params, expected)


# ---------------------------------------------------------------- task-arithmetic checkpoints

@pytest.fixture
def task_arithmetic_file(tmp_path, monkeypatch):
    """(path, the original visual tower): a whole `src.modeling.ImageEncoder` pickled as the authors' code does."""
    src, modeling = types.ModuleType("src"), types.ModuleType("src.modeling")
    src.modeling = modeling

    class ImageEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.train_preprocess = T.Compose([
                T.RandomResizedCrop(IMAGE, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                T.ToTensor(), T.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))])
            self.val_preprocess = T.Compose([
                T.Resize(IMAGE, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(IMAGE), T.ToTensor()])
            self.cache_dir = "/checkpoints/cache"

    ImageEncoder.__module__, ImageEncoder.__qualname__ = "src.modeling", "ImageEncoder"
    modeling.ImageEncoder = ImageEncoder
    monkeypatch.setitem(sys.modules, "src", src)
    monkeypatch.setitem(sys.modules, "src.modeling", modeling)

    model = tiny_clip()
    delattr(model, "transformer")  # as src.modeling does unless keep_lang
    path = tmp_path / "finetuned.pt"
    torch.save(ImageEncoder(model), path)
    # The reader must manage without the authors' code.
    monkeypatch.delitem(sys.modules, "src")
    monkeypatch.delitem(sys.modules, "src.modeling")
    return path, model.visual


def test_task_arithmetic_checkpoint_gives_every_visual_parameter(task_arithmetic_file):
    path, visual = task_arithmetic_file
    params = read_image_encoder(path)
    assert "src" not in sys.modules and "src.modeling" not in sys.modules
    expected = dict(visual.named_parameters())
    assert list(params) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(params[name], tensor), name
    check_against(params, shapes(tiny_tower()))


class Payload:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("call, arg, named", [
    (os.system, "echo hacked > {marker}", "system"),
    (eval, "open({marker!r}, 'w')", "builtins.eval"),
    (subprocess.getoutput, "echo hacked > {marker}", "subprocess.getoutput"),
], ids=["os.system", "eval", "subprocess"])
def test_a_pickle_that_calls_a_global_is_refused_and_nothing_runs(tmp_path, call, arg, named):
    marker = tmp_path / "hacked"
    path = tmp_path / "finetuned.pt"
    torch.save({"visual.class_embedding": torch.zeros(WIDTH), "payload": Payload(call, arg.format(marker=str(marker)))}, path)
    message = assert_one_line_error(path, "not a task-arithmetic checkpoint")
    assert named in message and "refused" in message
    assert not marker.exists()


def truncated_zip(path):
    torch.save(tiny_tower().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zip_without_pickle(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", "hello")


def truncated_safetensors(path):
    save_file({k: v.contiguous() for k, v in tiny_tower().state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(random.Random(0).randbytes(4096)), "neither a torch checkpoint"),
    (lambda p: p.write_bytes(b""), "an empty file"),
    (truncated_zip, "damaged or truncated zip archive"),
    (zip_without_pickle, "without data.pkl"),
    (truncated_safetensors, "not a readable safetensors file"),
    (lambda p: torch.save([1, 2, 3], p), "holds a builtins.list"),
    (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p), "no open_clip or Hugging Face ViT image-encoder parameters"),
    (lambda p: p.write_bytes(b"\x80\x02K\x01."), "bare pickle"),
    pytest.param(lambda p: torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), p), "TorchScript archive",
                 marks=pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")),
], ids=["random", "empty", "truncated-zip", "zip-without-pickle", "truncated-safetensors", "list", "no-visual",
        "bare-pickle", "torchscript"])
def test_files_that_are_not_checkpoints_give_one_line(tmp_path, make, match):
    path = tmp_path / "model.pt"
    make(path)
    assert_one_line_error(path, match)


@pytest.mark.parametrize("prefix", ["model.visual.", "visual.", ""])
@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_open_clip_state_dicts_are_read_with_any_prefix(tmp_path, prefix, fmt):
    clip = tiny_clip()
    state = {prefix + k: v for k, v in clip.visual.state_dict().items()}
    if prefix:  # a whole CLIP: the text tower and logit_scale sit beside the image tower
        outer = prefix.removesuffix("visual.")
        state.update({outer + k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")})
    path = tmp_path / "weights.bin"
    save(state, path, fmt)
    params = read_image_encoder(path)
    expected = clip.visual.state_dict()
    assert set(params) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(params[name], tensor), name
