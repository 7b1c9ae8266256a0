"""Contrastive pretraining of the demo world's tiny CLIP on the procedural image-caption corpus.

The result is an ordinary open_clip `local-dir:` model folder (open_clip_config.json plus
open_clip_model.safetensors), so everything downstream loads it exactly like a published CLIP.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.files import atomic_write
from ..data.splits import to_input
from ..data.world import corpus

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
SETTINGS = "pretraining.json"  # what the weights were trained with, so a rerun can reuse them


def pretrain_clip(out: Path, model_cfg: dict, preprocess_cfg: dict, corpus_size: int, unshifted_fraction: float,
                  epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
                  name_rate: float | dict[str, float] = 1.0, unnamed: tuple[str, ...] = (), confusion: float = 0.0) -> Path:
    """Train a CLIP from scratch on `corpus_size` pairs; write it to `out` as a local-dir model.
    A folder that already holds a model pretrained with exactly these settings is kept as it is
    (training is deterministic, so it would come out the same)."""
    from safetensors.torch import save_file

    out = Path(out)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    settings = {**config, "corpus_size": corpus_size, "unshifted_fraction": unshifted_fraction, "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed, "name_rate": name_rate,
                "unnamed": list(unnamed), "confusion": confusion}
    if (out / WEIGHTS).is_file() and (out / SETTINGS).is_file() and json.loads((out / SETTINGS).read_text()) == settings:
        print(f"{out}: reusing the model pretrained with these settings", file=sys.stderr)
        return out
    atomic_write(out / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out.resolve()}")
    images, captions = corpus(corpus_size, seed=seed, unshifted_fraction=unshifted_fraction, name_rate=name_rate,
                              unnamed=tuple(unnamed), confusion=confusion)
    images, tokens = torch.from_numpy(images), tokenizer(captions)
    mean, std = preprocess_cfg["mean"], preprocess_cfg["std"]

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(images) / batch_size)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=steps, desc="pretraining CLIP", leave=False, file=sys.stderr) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), batch_size):
                idx = order[start:start + batch_size]
                image_features, text_features, scale = model(to_input(images[idx], mean, std), tokens[idx])
                logits = scale * image_features @ text_features.T
                target = torch.arange(len(idx))
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    # float16 on disk: the demo model's weights are far from float16's range limits, and the
    # cache's theta0 is read back from this file, so every later number uses the rounded weights.
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    atomic_write(out / SETTINGS, lambda tmp: tmp.write_text(json.dumps(settings, indent=1)))
    return out
