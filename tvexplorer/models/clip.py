"""Base CLIP models, named the open_clip way, and the frozen zero-shot heads built from them.

A model spec is a built-in architecture plus a pretrained tag (`ViT-B-32` + `openai`), a
`local-dir:PATH` folder (PATH relative to the cache folder when it is not absolute) or an
`hf-hub:ORG/REPO` repository. Only the image encoder is ever fine-tuned; the text tower is used
once, at cache-build time, to build each task's classification head.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import _build_vision_tower
from open_clip.transformer import QuickGELU
from torch.nn.utils import parameters_to_vector

from ..core.records import Encoder

LOCAL_DIR = "local-dir:"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None

    def resolved_name(self, root: Path | None = None) -> str:
        """The name open_clip understands, with a relative local-dir path made absolute against `root`."""
        if self.name.startswith(LOCAL_DIR) and root is not None:
            path = Path(self.name[len(LOCAL_DIR):])
            if not path.is_absolute():
                return LOCAL_DIR + str((root / path).resolve())
        return self.name

    def model_config(self, root: Path | None = None) -> dict:
        name = self.resolved_name(root)
        if name.startswith(LOCAL_DIR):
            config_path = Path(name[len(LOCAL_DIR):]) / "open_clip_config.json"
            if not config_path.is_file():
                raise FileNotFoundError(f"model folder has no open_clip_config.json: {config_path}")
            return json.loads(config_path.read_text())["model_cfg"]
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
        return cfg


def load_clip(spec: ModelSpec, root: Path | None = None) -> tuple[torch.nn.Module, object, Encoder]:
    """(CLIP model in eval mode, tokenizer, image-encoder description for the cache manifest)."""
    name = spec.resolved_name(root)
    pretrained = None if name.startswith((LOCAL_DIR, "hf-hub:")) else spec.pretrained
    try:
        # A failed download logs every retry and then the error; the one line below says it all.
        with _quiet_logging() if pretrained else contextlib.nullcontext():
            model = open_clip.create_model(name, pretrained=pretrained)
    except RuntimeError as e:  # open_clip's own errors: weights it could not download, an unknown tag
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot load CLIP {name}" + (f" ({pretrained})" if pretrained else "") + f": {reason} "
                         "-- without network, put the weights in the Hugging Face cache first, or use "
                         "--model local-dir:PATH") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    cfg = spec.model_config(root)
    preprocess = model.visual.preprocess_cfg
    encoder = Encoder(
        embed_dim=cfg["embed_dim"],
        vision_cfg=cfg["vision_cfg"],
        # open_clip switches to QuickGELU for some pretrained tags; record what was actually built.
        quick_gelu=any(isinstance(m, QuickGELU) for m in model.visual.modules()),
        image_size=_pair(model.visual.image_size)[0],
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
    )
    return model, tokenizer, encoder


@contextlib.contextmanager
def _quiet_logging():
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def build_image_encoder(encoder: Encoder) -> torch.nn.Module:
    """The image tower alone, rebuilt from the manifest's description (weights come from the cache)."""
    visual = _build_vision_tower(encoder.embed_dim, copy.deepcopy(encoder.vision_cfg), quick_gelu=encoder.quick_gelu)
    return visual.eval()


@torch.no_grad()
def zero_shot_head(model, tokenizer, classnames, templates) -> torch.Tensor:
    """[embed_dim, n_classes]: per class, the renormalised mean of its L2-normalised prompt embeddings."""
    columns = []
    for name in classnames:
        emb = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
        columns.append(F.normalize(emb.mean(0), dim=0))
    return torch.stack(columns, dim=1)


def logits(encoder: torch.nn.Module, head: torch.Tensor, logit_scale: float, images: torch.Tensor) -> torch.Tensor:
    return logit_scale * F.normalize(encoder(images), dim=-1) @ head


def _pair(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def get_flat(encoder) -> torch.Tensor:
    """The parameters as one flat CPU vector, in the encoder's own dtype."""
    return parameters_to_vector(encoder.parameters()).detach().cpu()


def set_flat(encoder, flat: torch.Tensor) -> None:
    """Copy a flat vector into the parameters (torch's vector_to_parameters would alias it instead)."""
    offset = 0
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


INFERENCE_PRECISIONS = ("float32", "bfloat16")


def run_blocks_in_bfloat16(encoder) -> None:
    """Inference in mixed precision, in place: each transformer block's attention and MLP in bfloat16; the
    residual stream, layer norms, patch embedding and output projection in float32.

    On the demo this is about twice as fast as float32 on a CPU with AMX or AVX-512 BF16 and changes
    0.3 % of the predictions; a residual stream rounded to bfloat16 as well changed 0.5 %. set_flat still
    works (it casts). Only open_clip ViTs have these blocks."""
    blocks = getattr(getattr(encoder, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"bfloat16 inference needs an open_clip ViT; {type(encoder).__name__} has no transformer "
                         "blocks (use precision float32)")
    for block in blocks:
        for part in (block.attn, block.mlp):
            part.to(torch.bfloat16)
            part.register_forward_pre_hook(_to_bfloat16, with_kwargs=True)
            part.register_forward_hook(_to_float32)


def _to_bfloat16(module, args, kwargs):
    cast = lambda a: a.to(torch.bfloat16) if torch.is_tensor(a) and a.is_floating_point() else a
    return tuple(map(cast, args)), {k: cast(v) for k, v in kwargs.items()}


def _to_float32(module, args, out):
    return (out[0].float(), *out[1:]) if isinstance(out, tuple) else out.float()
