"""Input Gram matrices of every linear layer, the data RegMean (tvexplorer/merging/regmean.py) needs.

For task t, the fine-tuned image encoder theta0 + tau_t runs over a seeded subset of t's training
images (FusionBench's CLIP default: 256), and every linear layer records the mean of x x^T over the
input rows x it receives (every token). In open_clip's ViT the linear layers are, per block, the
attention's fused q/k/v projection (one weight, one input), its output projection, and the MLP's two
layers; and the final projection `proj` (used as pooled @ proj). The patch embedding is a
convolution, averaged as in FusionBench.

The cache keeps them in grams/<task>.safetensors (float32, one [n, n] tensor per parameter name) and
the manifest's grams record (`core.additions.GramsRecord`). `task_grams` computes any that are missing
once, saves them, and from then on only reads them: a merge reads one layer's Gram at a time from
the file, so memory never holds a task's Grams whole.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from safetensors import safe_open
from tqdm.auto import tqdm

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.errors import CacheError
from ..core.manifest import Manifest
from ..core.additions import GramsRecord
from ..core.split import Split
from ..data.sources import load_task, task_spec
from ..data.splits import to_input
from ..merging.regmean import LinearInput
from ..models.clip import build_image_encoder, set_flat

DEFAULT_EXAMPLES = 256   # training images per task, as FusionBench's CLIP RegMean
SUBSET_SEED = 0
BATCH = 64


def gram_file(task: str) -> str:
    return f"grams/{task}.safetensors"


class _Recorder:
    """Forward hooks that sum x x^T over the input rows of every linear layer of an open_clip ViT."""

    def __init__(self, encoder: torch.nn.Module):
        self.sums: dict[str, torch.Tensor] = {}
        self.rows: dict[str, int] = {}
        self.input_axis: dict[str, int] = {}
        self.handles = []
        for i, block in enumerate(encoder.transformer.resblocks):
            prefix = f"transformer.resblocks.{i}"
            self._hook(block.attn, f"{prefix}.attn.in_proj_weight", lambda args, out: args[0])
            self._hook(block.attn, f"{prefix}.attn.out_proj.weight", lambda args, out, m=block.attn: _heads_output(m, args[0]))
            self._hook(block.mlp.c_fc, f"{prefix}.mlp.c_fc.weight", lambda args, out: args[0])
            self._hook(block.mlp.c_proj, f"{prefix}.mlp.c_proj.weight", lambda args, out: args[0])
        self.input_axis["proj"] = 0  # pooled @ proj: recorded from the encoder's output with proj removed

    def _hook(self, module, name: str, inputs_of: Callable) -> None:
        self.input_axis[name] = 1
        self.handles.append(module.register_forward_hook(lambda m, args, out: self.add(name, inputs_of(args, out))))

    def add(self, name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        xtx = (x.T @ x).double().cpu()
        self.sums[name] = self.sums[name] + xtx if name in self.sums else xtx
        self.rows[name] = self.rows.get(name, 0) + x.shape[0]

    def means(self) -> dict[str, torch.Tensor]:
        for h in self.handles:
            h.remove()
        return {name: (s / self.rows[name]).float() for name, s in self.sums.items()}


def _heads_output(attn: torch.nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """The input of the attention's output projection: nn.MultiheadAttention applies out_proj inside
    its functional forward, where no module hook sees it, so the heads' output is recomputed here
    (self-attention, batch first, no mask: what open_clip's image tower runs)."""
    batch, length, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)


@torch.no_grad()
def compute_grams(encoder: torch.nn.Module, theta: torch.Tensor, images: Split, mean, std,
                  device) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """({parameter name: mean x x^T of its inputs}, {parameter name: input axis}) for `encoder` at
    the flat parameters `theta`, over `images` (uint8 NHWC)."""
    set_flat(encoder, theta.to(device))
    recorder = _Recorder(encoder)
    proj, encoder.proj = encoder.proj, None  # the tower then returns the pooled features, proj's input
    try:
        for batch, _ in images.batches(BATCH):
            recorder.add("proj", encoder(to_input(batch.to(device), mean, std)))
    finally:
        encoder.proj = proj
    return recorder.means(), recorder.input_axis


class StoredGrams(Mapping[str, LinearInput]):
    """One task's Grams by parameter name, in a safetensors file; each is read from the file when
    asked for (not memory-mapped), so a merge holds one layer's Gram at a time."""

    def __init__(self, path: Path, input_axis: Mapping[str, int], shapes: Mapping[str, tuple[int, ...]]):
        self.path, self.input_axis, self.shapes = path, input_axis, shapes

    @classmethod
    def of(cls, cache: Cache, task: str) -> "StoredGrams":
        rel = gram_file(task)
        if cache.manifest.grams is None:
            raise CacheError(f"{rel}: listed, but the manifest has no grams record; delete the grams folder and "
                             "its files' entries, then recompute them")
        input_axis = cache.manifest.grams.input_axis
        tensors = cache.tensors(rel)  # checks the file's sha256 once; maps only its header
        if set(tensors) != set(input_axis):
            raise CacheError(f"{rel}: holds Gram matrices of other layers than the manifest's grams record lists; "
                             "delete the grams folder and its record, then recompute them")
        return cls(cache.root / rel, input_axis, {name: tuple(t.shape) for name, t in tensors.items()})

    def __getitem__(self, name: str) -> LinearInput:
        if name not in self.shapes:
            raise KeyError(name)
        with safe_open(self.path, framework="pt") as f:
            return LinearInput(f.get_tensor(name), int(self.input_axis[name]))

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def supports_grams(cache: Cache) -> bool:
    """Whether the image tower is one whose linear layers are recorded here: open_clip's own ViT (a
    ResNet tower's `layers` is a list, a timm tower names its model)."""
    return cache.manifest.model.encoder.is_open_clip_vit


def missing_grams(cache: Cache) -> list[str]:
    """Tasks whose Gram matrices the cache does not hold."""
    return [t for t in cache.tasks if gram_file(t) not in cache.manifest.files]


def add_grams(cache: Cache, device=None, n_examples: int = DEFAULT_EXAMPLES) -> None:
    """Compute and save the Grams of every task that has none, one task at a time, under the writer
    lock (so two processes never compute them twice): each file, then the manifest that lists it."""
    if not supports_grams(cache):
        raise ValueError(f"RegMean's Gram matrices are recorded for open_clip ViT image towers; this cache's model "
                         f"{cache.manifest.model.name} has another kind, so RegMean cannot merge it")
    with cache.writing():
        todo = missing_grams(cache)
        if not todo:
            return
        info, device = cache.manifest.model.encoder, resolve_device(device)
        encoder = build_image_encoder(info).to(device)
        theta0 = cache.base()
        for task in tqdm(todo, desc="Gram matrices for RegMean", unit="task", file=sys.stderr, leave=False):
            images = load_task(task_spec(cache, task)).train.take(n_examples, seed=SUBSET_SEED)
            grams, axes = compute_grams(encoder, theta0 + cache.vector(task).float(), images, info.mean, info.std, device)

            n = len(images)

            def record(manifest: Manifest, task=task, axes=axes, n=n) -> Manifest:
                entry = manifest.grams or GramsRecord(axes, SUBSET_SEED, {})
                return replace(manifest, grams=replace(entry, examples={**entry.examples, task: n}))
            cache.add_files({gram_file(task): grams}, record)


def task_grams(cache: Cache, device=None, store: Callable[[], Cache] | None = None) -> dict[str, StoredGrams]:
    """Every task's Grams, read from `cache`; when it lacks some, they are read from (and, where
    missing there too, computed once and saved into) `store()`, a writable cache with the same task
    vectors (default: `cache` itself; the app passes its work folder for read-only caches)."""
    source = cache
    if missing_grams(cache):
        source = store() if store is not None else cache
        if missing_grams(source):
            add_grams(source, device)
    return {t: StoredGrams.of(source, t) for t in source.tasks}
