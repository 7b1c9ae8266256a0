"""The merged model out: theta0 plus a merged delta, written as a model folder that other tools load.

- `open_clip`: a full CLIP as an open_clip `local-dir:` folder (open_clip_config.json with model_cfg
  and preprocess_cfg, open_clip_model.safetensors): the merged image tower next to the base model's
  own text tower and logit scale, so `open_clip.create_model_and_transforms("local-dir:DIR")` loads it
  with its zero-shot abilities. This is the layout of a demo cache's own `model/` folder.
- `hf`: a transformers `CLIPVisionModelWithProjection` folder (config.json, model.safetensors,
  preprocessor_config.json), the inverse of the import conversion; `CLIPVisionModel` loads it too,
  without the projection.

The delta is either a merge of the cache's task vectors (the same `merged_delta` the Evaluator
scores) or a saved ATM round times a scaling. Every file is written atomically under the folder's
writer lock, and the record of what was merged (tvexplorer_merge.json) is written last, so a folder
without it is an unfinished export.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import __version__
from ..core.cache import Cache
from ..core.files import atomic_write, write_tensors, writer_lock
from ..core.records import Encoder
from ..merging import METHODS
from ..models.checkpoints import to_hf_clip_vision
from ..models.clip import ModelSpec, load_clip
from ..science.evaluation import merged_delta

FORMATS = {"open_clip": "full CLIP as an open_clip local-dir: folder",
           "hf": "transformers CLIPVisionModelWithProjection folder (image tower only)"}
RECORD = "tvexplorer_merge.json"


def parse_atm_round(text: str) -> tuple[str, int]:
    """'VARIANT:ROUND' -> (variant, round)."""
    variant, sep, number = text.partition(":")
    if not sep or not variant or not number.strip().isdigit():
        raise ValueError(f"--atm expects VARIANT:ROUND such as standard:2, got {text!r}")
    return variant, int(number)


def atm_round_delta(cache: Cache, variant: str, round_: int, scaling: float = 1.0) -> torch.Tensor:
    cache.manifest.atm_round(variant, round_)  # a one-line error for a run or round that is not saved
    return cache.atm_delta(variant, round_).float() * scaling


def merge_for_export(cache: Cache, *, method: str | None = None, atm: str | None = None,
                     coefficients: dict[str, float] | None = None, scaling: float | None = None,
                     params: dict[str, float] | None = None, vectors: str | None = None,
                     atm_cache: Cache | None = None) -> tuple[torch.Tensor, dict]:
    """(flat merged delta, the settings that made it) for a merge method or a saved ATM round
    ('VARIANT:ROUND', read from `atm_cache` when the rounds live in a separate work folder)."""
    if (method is None) == (atm is None):
        raise ValueError("give either a merge method (--method) or a saved ATM round (--atm VARIANT:ROUND), not both")
    if atm is not None:
        if coefficients or params or vectors:
            raise ValueError("an ATM round is one fixed merged model: per-task coefficients, method parameters and "
                             "--vectors do not apply (only --scaling, which multiplies its merged delta)")
        variant, round_ = parse_atm_round(atm)
        s = 1.0 if scaling is None else float(scaling)
        return atm_round_delta(atm_cache or cache, variant, round_, s), {"atm": f"{variant}:{round_}", "scaling": s}
    if method in METHODS and METHODS[method].per_task:
        raise ValueError(f"{method} is task-conditioned: it makes one model per task, not one merged model to export; "
                         "export a single-model method such as task_arithmetic or tsv")
    vectors = vectors or "tau"
    delta = merged_delta(cache, method, coefficients=coefficients, scaling=scaling, vectors=vectors, **(params or {}))
    s = METHODS[method].default_scaling if scaling is None else float(scaling)
    return delta, {"method": method, "vectors": vectors, "scaling": s, "coefficients": dict(coefficients or {}),
                   "params": dict(params or {})}


def export_merged(cache: Cache, delta: torch.Tensor, fmt: str, out: str | Path, settings: dict) -> dict:
    """Write theta0 + delta as a `fmt` model folder at `out`; returns what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out)
    _check_target(out, fmt)
    theta = cache.base() + delta.to(torch.float32)
    params = cache.layout.unflatten(theta)
    encoder = cache.manifest.model.encoder
    with writer_lock(out):
        (out / RECORD).unlink(missing_ok=True)  # until the new record is written, the folder is unfinished
        if fmt == "open_clip":
            state, config = _open_clip_model(cache, params)
            files = {"open_clip_model.safetensors": write_tensors(out, "open_clip_model.safetensors", state).to_json()}
            files["open_clip_config.json"] = _write_json(out, "open_clip_config.json", config)
        else:
            state, config = to_hf_clip_vision(params, encoder)
            files = {"model.safetensors": write_tensors(out, "model.safetensors", state).to_json()}
            files["config.json"] = _write_json(out, "config.json", config)
            files["preprocessor_config.json"] = _write_json(out, "preprocessor_config.json", _hf_preprocessor(encoder))
        record = {"format": fmt, "cache": str(Path(cache.root).resolve()), "model": cache.manifest.model.name,
                  "merge": settings, "tvexplorer": __version__, "files": files}
        _write_json(out, RECORD, record)
    return {"out": str(out), **record}


def _check_target(out: Path, fmt: str) -> None:
    """Write only into a new or empty folder, or over an earlier export of the same format."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder to export into")
    if not out.is_dir() or not any(not p.name.startswith(".") for p in out.iterdir()):
        return
    try:
        earlier = json.loads((out / RECORD).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != fmt:
        raise ValueError(f"{out} is not empty and holds no earlier {fmt} export; choose a new or empty folder")


def _open_clip_model(cache: Cache, params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """The base CLIP's full state dict with the merged image tower in place, and its local-dir config."""
    model_entry = cache.manifest.model
    spec = ModelSpec(model_entry.name, model_entry.pretrained)
    model, _, encoder = load_clip(spec, cache.root)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    for name, tensor in params.items():
        key = "visual." + name
        if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"the base model {model_entry.name} has no image-tower parameter {name!r} of shape "
                             f"{tuple(tensor.shape)}; the cache does not belong to this model")
        state[key] = tensor
    # open_clip switches to QuickGELU for some pretrained tags; the folder must say what was built.
    config = {"model_cfg": {**spec.model_config(cache.root), "quick_gelu": encoder.quick_gelu},
              "preprocess_cfg": json.loads(json.dumps(model.visual.preprocess_cfg))}
    return state, config


def _hf_preprocessor(encoder: Encoder) -> dict:
    size = encoder.image_size
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(encoder.mean), "image_std": list(encoder.std), "do_convert_rgb": True}


def _write_json(out: Path, rel: str, data: dict) -> dict:
    text = json.dumps(data, indent=1)
    atomic_write(out / rel, lambda tmp: tmp.write_text(text))
    return {"size": (out / rel).stat().st_size}
