"""The synthetic inputs: a cache in the real format with random weights, and the same models as pickled checkpoints."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .machine import evict
from .plan import Plan
from tvexplorer import __version__
from tvexplorer.core.cache import Cache
from tvexplorer.core.files import mmap_tensors, write_tensors
from tvexplorer.core.layout import Layout
from tvexplorer.core.manifest import Manifest, write_manifest
from tvexplorer.core.records import Encoder, ModelRecord, SplitSizes, TaskRecord


@dataclass(frozen=True)
class World:
    root: Path          # a cache in the real format
    encoder: Encoder
    layout: Layout
    tasks: tuple[str, ...]

    @property
    def vector_bytes(self) -> int:
        """Bytes of the T task vectors (float32) that a merge reads."""
        return 4 * self.layout.numel * len(self.tasks)

    def vector_files(self) -> list[Path]:
        return [self.root / f"vectors/{t}.safetensors" for t in self.tasks]


def _random(n: int, scale: float, seed: int) -> torch.Tensor:
    return torch.empty(n).normal_(0.0, scale, generator=torch.Generator().manual_seed(seed))


def _heads(tasks: tuple[str, ...], embed: int, classes: int) -> dict[str, torch.Tensor]:
    heads = {t: F.normalize(_random(embed * classes, 1.0, 100 + i).view(embed, classes), dim=0) for i, t in enumerate(tasks)}
    return {**heads, "logit_scale": torch.tensor([100.0])}


def _eval_subset(plan: Plan, seed: int, classes: int) -> dict[str, torch.Tensor]:
    g, size = torch.Generator().manual_seed(seed), plan.encoder.image_size
    images = torch.randint(0, 256, (plan.images_per_task, size, size, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (plan.images_per_task,), generator=g)
    return {"test_images": images, "test_labels": labels, "val_images": images[:1], "val_labels": labels[:1]}


def write_world(root: Path, plan: Plan, classes: int = 10) -> World:
    """A cache as build.py writes it (base, heads, vectors with tau, tau1 and g0, evaluation subsets,
    manifest last), with random weights; no trajectory.csv, which nothing measured here reads."""
    from tvexplorer.models.clip import build_image_encoder, get_flat
    encoder = build_image_encoder(plan.encoder)
    layout = Layout.of(dict(encoder.named_parameters()))
    tasks = tuple(f"task{i}" for i in range(plan.tasks))
    files = {"base.safetensors": write_tensors(root, "base.safetensors", layout.unflatten(get_flat(encoder).float())),
             "heads.safetensors": write_tensors(root, "heads.safetensors", _heads(tasks, plan.encoder.embed_dim, classes))}
    for i, task in enumerate(tasks):
        vectors = {kind: _random(layout.numel, 1e-3, 1000 * i + j) for j, kind in enumerate(("tau", "tau1", "g0"))}
        files[f"vectors/{task}.safetensors"] = write_tensors(root, f"vectors/{task}.safetensors", vectors)
        files[f"eval/{task}.safetensors"] = write_tensors(root, f"eval/{task}.safetensors", _eval_subset(plan, i, classes))
    write_manifest(root, Manifest(
        created_by=f"tvexplorer {__version__} bench (synthetic)",
        model=ModelRecord("synthetic", None, plan.encoder),
        layout=layout,
        vector_dtype="float32",
        tasks=tuple(TaskRecord(t, tuple(f"class {c}" for c in range(classes)), ("a photo of a {}.",), {"source": "synthetic"},
                               SplitSizes(train=0, val=1, test=plan.images_per_task)) for t in tasks),
        training=None,
        files=files,
    ))
    return World(root, plan.encoder, layout, tasks)


def mapped_tau(root: Path, tasks: list[str]) -> dict[str, torch.Tensor]:
    """Each task's tau, memory-mapped exactly as the cache maps it (no hash check, nothing read yet)."""
    return {t: mmap_tensors(root / f"vectors/{t}.safetensors", f"vectors/{t}.safetensors")["tau"] for t in tasks}


def write_checkpoints(folder: Path, world: World) -> list[Path]:
    """theta0 and every task's theta0 + tau as pickled full state dicts, fsynced (so they can be evicted)."""
    folder.mkdir(parents=True)
    theta0 = Cache.open(world.root).base()
    paths = [folder / "pretrained.pt"]
    torch.save({k: v.clone() for k, v in world.layout.unflatten(theta0).items()}, paths[0])
    for task, tau in mapped_tau(world.root, list(world.tasks)).items():
        paths.append(folder / f"{task}.pt")
        torch.save({k: v.clone() for k, v in world.layout.unflatten(theta0 + tau).items()}, paths[-1])
    for p in paths:
        evict([p])  # fsyncs too
    return paths
