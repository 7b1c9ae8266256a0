"""Published fine-tuned CLIP image encoders, read as open_clip vision-tower parameters.

The package names an image encoder's parameters as open_clip's `VisionTransformer` does
(`visual.named_parameters()`: conv1.weight, class_embedding, positional_embedding, ln_pre.*,
transformer.resblocks.N.*, ln_post.*, proj). `read_image_encoder` turns these published formats into
such a {name: tensor} dict, telling them apart by content, never by file name:

- **Task-arithmetic checkpoints** (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023):
  `torch.save` of a whole pickled `src.modeling.ImageEncoder` module, whose attribute `model` is an
  open_clip ~2.0 CLIP with the text transformer deleted, next to torchvision transforms and a
  `cache_dir` string. Unpickling it for real would need the authors' code and the old open_clip
  classes, and would trust the file, since a pickle may call any global. Here a restricted unpickler
  rebuilds tensors and storages with torch's own functions, turns every class from an allow-list of
  module prefixes (src, open_clip, torch.nn, torchvision.transforms, PIL.Image) into an inert stub
  that only records its state, and refuses every other global. The parameters are then read off the
  stubs' `_parameters` and `_modules`, as `model.visual.*`.
- **Plain state dicts in open_clip names**, as torch pickles or safetensors files: keys such as
  `model.visual.conv1.weight`, `visual.conv1.weight` or bare `conv1.weight` (whatever comes before
  the tower's own names is taken as the tower's prefix).
- **Hugging Face CLIP vision checkpoints** (`CLIPVisionModel`, `CLIPVisionModelWithProjection`,
  `CLIPModel`; `model.safetensors` or `pytorch_model.bin`): keys
  `vision_model.embeddings.patch_embedding.weight`, ..., with or without the `vision_model.` prefix,
  with or without `visual_projection.weight`. They are converted to open_clip's names and layout
  (q, k and v projections concatenated into `attn.in_proj_*`, the projection transposed into `proj`).
  A checkpoint without a projection takes `proj` from the pretrained base, which the caller passes.

Every torch checkpoint, whatever it holds, goes through the restricted unpickler, so reading a file
never runs code from it; torch's legacy (pre-1.6, non-zip) format is not read. Tensors keep the dtype
they were stored in. `check_against` compares the result with the parameter shapes a cache expects.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file

from ..core.errors import described
from ..core.records import Encoder

# ---------------------------------------------------------------- errors


class CheckpointError(ValueError):
    """A file that cannot be read as an image-encoder checkpoint; the one-line message says why."""


# ---------------------------------------------------------------- the restricted unpickler

# Globals rebuilt for real: torch's tensor rebuilders (the same ones torch's weights-only loader
# allows) and inert value types. Everything else is a stub or refused.
_REAL_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): OrderedDict,
    # nn.Module keeps a set of non-persistent buffer names; protocol 2 pickles sets by calling set.
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{("torch", name): value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
}

# Modules whose classes become stubs: the task-arithmetic code, the open_clip model classes of any
# version, torch modules, torchvision transforms and the enums they hold.
_STUB_PREFIXES = ("src", "open_clip", "torch.nn", "torchvision.transforms", "PIL.Image")


class _Stub:
    """Stands in for a pickled class: records the arguments and state unpickling gives it, runs nothing."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __setstate__(self, state):
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        # torch.save writes protocol 2, in which Python 3 names globals the Python 2 way (`__builtin__.set`,
        # `commands.getoutput`); map them back as pickle's own find_class does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        real = _REAL_GLOBALS.get((module, name))
        if real is not None:
            return real
        if any(module == p or module.startswith(p + ".") for p in _STUB_PREFIXES):
            if (module, name) not in self._stubs:
                self._stubs[module, name] = type(name, (_Stub,), {"__module__": module, "__qualname__": name})
            return self._stubs[module, name]
        raise CheckpointError(f"not a task-arithmetic checkpoint: its pickle asks for the global {module}.{name}, "
                              "which is not on the allow-list, so the file was refused and nothing in it was run")


class _RestrictedPickle:
    """The `pickle_module` for torch.load: its zip reader uses only `Unpickler` (and `__name__`)."""

    Unpickler = _RestrictedUnpickler


def _module_parameters(module: _Stub, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a stubbed nn.Module tree, named as `named_parameters()` would name them."""
    state = module.state if isinstance(module.state, dict) else {}
    for name, param in (state.get("_parameters") or {}).items():
        if isinstance(param, torch.Tensor):  # registered-but-None parameters hold None
            yield prefix + name, param.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _Stub):
            yield from _module_parameters(child, f"{prefix}{name}.")


# ---------------------------------------------------------------- reading files

def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"cannot be read ({e.strerror})") from None
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"\x80"):
        raise CheckpointError("a bare pickle (torch's legacy pre-1.6 format or pickle.dump), which this reader does not "
                              "support; re-save it with a current torch.save")
    what = "an empty file" if not head else "neither a torch checkpoint (zip) nor a safetensors file"
    raise CheckpointError(f"not a checkpoint: {what}")


def _load_torch(path: Path) -> object:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"damaged or truncated zip archive ({e})") from None
    # torch.load would hand a TorchScript archive to torch.jit.load, even with a restricted unpickler.
    if any(n.endswith("/constants.pkl") for n in names):
        raise CheckpointError("a TorchScript archive, not a torch.save checkpoint")
    if not any(n.endswith("/data.pkl") for n in names):
        raise CheckpointError("a zip archive without data.pkl, so not a torch.save checkpoint")
    try:
        # An open file rather than the path: torch.load would hand any *.safetensors path to safetensors.
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False)
    except CheckpointError:
        raise
    except Exception as e:  # anything else while decoding untrusted bytes means the file is not a checkpoint
        raise CheckpointError(f"not a readable torch checkpoint ({described(e)})") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors reports truncation and bad headers with its own error types
        raise CheckpointError(f"not a readable safetensors file ({described(e)})") from None


def _named_tensors(obj: object) -> dict[str, torch.Tensor]:
    """Every tensor of a loaded object under its full name: a stubbed module tree or a state dict."""
    if isinstance(obj, _Stub):
        return dict(_module_parameters(obj))
    if isinstance(obj, Mapping):
        return {k: v.detach() for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    raise CheckpointError(f"holds a {type(obj).__module__}.{type(obj).__qualname__}, neither a module nor a state dict")


# ---------------------------------------------------------------- open_clip and Hugging Face names

_HF_MARKER = "embeddings.patch_embedding.weight"
_HF_NAMES = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",  # sic: Hugging Face's spelling
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_HF_LAYER_NAMES = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
# A buffer (0..num_positions-1) that older transformers versions saved; it carries no weights.
_HF_IGNORED = {"embeddings.position_ids"}
_HF_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_HF_QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")


def _single_prefix(tensors: Mapping[str, torch.Tensor], marker: str) -> str | None:
    prefixes = {k[: -len(marker)] for k in tensors if k.endswith(marker) and (k == marker or k[-len(marker) - 1] == ".")}
    if len(prefixes) > 1:
        raise CheckpointError(f"holds several image towers (prefixes {sorted(prefixes)}); save one alone")
    return prefixes.pop() if prefixes else None


def convert_hf_clip_vision(state: Mapping[str, torch.Tensor],
                           base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """open_clip vision-tower parameters from a Hugging Face CLIP vision state dict.

    Text-tower keys of a full `CLIPModel` are ignored. Without `visual_projection.weight` (a plain
    `CLIPVisionModel`), `proj` is taken from `base`, the pretrained tower in open_clip names.
    """
    prefix = _single_prefix(state, _HF_MARKER)
    if prefix is None:
        raise CheckpointError(f"no Hugging Face CLIP vision parameters (no key ending in {_HF_MARKER})")
    root = prefix.removesuffix("vision_model.")
    projection = root + "visual_projection.weight"
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if not key.startswith(prefix) or key == projection:
            continue
        name = key[len(prefix):]
        if name in _HF_IGNORED:
            continue
        layer = _HF_LAYER.fullmatch(name)
        if name in _HF_NAMES:
            out[_HF_NAMES[name]] = tensor
        elif layer and layer[2] in _HF_LAYER_NAMES:
            out[f"transformer.resblocks.{layer[1]}.{_HF_LAYER_NAMES[layer[2]]}"] = tensor
        elif layer and (part := _HF_QKV.fullmatch(layer[2])):
            qkv.setdefault((layer[1], part[2]), {})[part[1]] = tensor
        else:
            raise CheckpointError(f"unrecognised key {key!r} in a Hugging Face CLIP vision checkpoint")
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"layer {i} has only the {'/'.join(sorted(parts))} projection {kind}, not all of q, k and v")
        # open_clip uses torch's MultiheadAttention, which packs the three projections as [q; k; v].
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if projection in state:
        out["proj"] = state[projection].T.contiguous()  # nn.Linear stores [out, in]; open_clip multiplies x @ proj
    elif base is not None and "proj" in base:
        out["proj"] = base["proj"]
    else:
        raise CheckpointError("a Hugging Face CLIPVisionModel without visual_projection.weight: pass the pretrained "
                              "image encoder's parameters as `base` to take `proj` from it"
                              + (" (the given base has no 'proj')" if base is not None else ""))
    return out


# open_clip vision-config keys that a Hugging Face CLIPVisionConfig can express; any other (layer scale,
# attentional pooling, no ln_pre, ...) builds a tower that transformers' CLIP cannot reproduce.
_HF_EXPRESSIBLE = {"image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio", "patch_dropout"}


def to_hf_clip_vision(params: Mapping[str, torch.Tensor], encoder: Encoder) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config.json) of a transformers `CLIPVisionModelWithProjection` holding the open_clip
    image tower `params`; the exact inverse of `convert_hf_clip_vision`. `encoder` is the manifest's
    description of the tower (vision_cfg, embed_dim, quick_gelu)."""
    cfg = encoder.vision_cfg
    unsupported = sorted(set(cfg) - _HF_EXPRESSIBLE)
    if unsupported:
        raise CheckpointError(f"this image tower uses open_clip options that transformers' CLIP cannot express "
                              f"({', '.join(unsupported)}); export it with --format open_clip instead")
    names = {v: k for k, v in _HF_NAMES.items()}
    layer_names = {v: k for k, v in _HF_LAYER_NAMES.items()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in params.items():
        block = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", name)
        if name in names:
            state["vision_model." + names[name]] = tensor
        elif name == "proj":
            state["visual_projection.weight"] = tensor.T.contiguous()
        elif block and block[2] in layer_names:
            state[f"vision_model.encoder.layers.{block[1]}.{layer_names[block[2]]}"] = tensor
        elif block and (packed := re.fullmatch(r"attn\.in_proj_(weight|bias)", block[2])):
            for part, chunk in zip("qkv", tensor.chunk(3)):
                state[f"vision_model.encoder.layers.{block[1]}.self_attn.{part}_proj.{packed[1]}"] = chunk.contiguous()
        else:
            raise CheckpointError(f"image-tower parameter {name!r} has no Hugging Face CLIP counterpart; "
                                  "export it with --format open_clip instead")
    width = int(cfg["width"])
    config = {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": width,
        "intermediate_size": int(params["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": int(cfg["layers"]),
        "num_attention_heads": width // int(cfg.get("head_width", 64)),
        "image_size": encoder.image_size,
        "patch_size": int(cfg["patch_size"]),
        "projection_dim": encoder.embed_dim,
        "num_channels": 3,
        "hidden_act": "quick_gelu" if encoder.quick_gelu else "gelu",
        "layer_norm_eps": 1e-5,  # torch's LayerNorm default, which open_clip uses
        "torch_dtype": "float32",
    }
    return state, config


def _strip_to_tower(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = _single_prefix(tensors, "class_embedding")
    if prefix is None:
        sample = ", ".join(list(tensors)[:3]) or "none"
        raise CheckpointError(f"no open_clip or Hugging Face ViT image-encoder parameters found (keys: {sample}, ...)")
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_image_encoder(path: str | os.PathLike, base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The image encoder in a checkpoint file, as {open_clip vision-tower parameter name: tensor}.

    `base` (the pretrained tower in open_clip names) is needed only for Hugging Face checkpoints
    without a projection. Raises `CheckpointError` with one line that names the file.
    """
    path = Path(path)
    try:
        kind = _sniff(path)
        tensors = _load_safetensors(path) if kind == "safetensors" else _named_tensors(_load_torch(path))
        if _single_prefix(tensors, _HF_MARKER) is not None:
            return convert_hf_clip_vision(tensors, base)
        return _strip_to_tower(tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


# ---------------------------------------------------------------- checking shapes

_VIT_SIZES = {(384, 12): "S", (768, 12): "B", (1024, 24): "L", (1280, 32): "H", (1664, 48): "bigG"}


def _describe(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """'a ViT-B/32 (width 768, 12 layers, patch 32, 224 px, embedding 512)', from parameter shapes alone."""
    conv = shapes.get("conv1.weight")
    if conv is None or len(conv) != 4:
        return "not an open_clip ViT (no conv1.weight patch embedding)"
    width, patch = conv[0], conv[-1]
    layers = len({m[1] for k in shapes if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    details = [f"width {width}", f"{layers} layers", f"patch {patch}"]
    positions = shapes.get("positional_embedding")
    if positions:
        grid = round((positions[0] - 1) ** 0.5)
        if grid * grid == positions[0] - 1:
            details.append(f"{grid * patch} px")
    if len(shapes.get("proj", ())) == 2:
        details.append(f"embedding {shapes['proj'][1]}")
    size = _VIT_SIZES.get((width, layers))
    return f"a {f'ViT-{size}/{patch}' if size else 'ViT'} ({', '.join(details)})"


def check_against(params: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]],
                  model: str | None = None) -> None:
    """Raise `CheckpointError` unless `params` has exactly the names and shapes of `expected`.

    `expected` maps parameter names to shapes (e.g. a cache's layout); `model` names that model in
    the message.
    """
    got = {k: tuple(v.shape) for k, v in params.items()}
    want = {k: tuple(s) for k, s in expected.items()}
    if got == want:
        return
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    misshaped = [f"{k} {got[k]} vs {want[k]}" for k in want if k in got and got[k] != want[k]]
    problems = [f"{label} {len(items)} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
    target = f"the expected model ({model})" if model else "the expected model"
    mine, theirs = _describe(got), _describe(want)
    head = f"checkpoint is {mine} but {target} is {theirs}" if mine != theirs else f"checkpoint does not match {target}"
    raise CheckpointError(f"{head}: {'; '.join(problems)}")
