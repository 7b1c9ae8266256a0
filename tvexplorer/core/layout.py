"""Flat parameter layout: one contiguous vector per model delta.

Task vectors are stored and merged as flat 1-D tensors so that elementwise merges are a few
vectorised passes over memory-mapped files; a `Layout` maps a flat vector back to named,
shaped parameter views (no copies) for the methods that work per layer and for loading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch


# Layers, for per-layer coefficients: the parameters grouped by transformer depth. Everything before the
# first residual block (patch/class/position embeddings, ln_pre) is "embedding", each residual block is
# "resblocks.<i>", and what follows the last block (ln_post, the projection) is "final".
EMBEDDING, FINAL = "embedding", "final"
_BLOCK = re.compile(r"(?:^|\.)resblocks\.(\d+)\.")
_FINAL_NAMES = re.compile(r"^(ln_post\.|proj$|head\.|attn_pool\.)")


def layer_of(name: str) -> str:
    """The layer (depth group) a parameter belongs to."""
    block = _BLOCK.search(name)
    if block:
        return f"resblocks.{block.group(1)}"
    return FINAL if _FINAL_NAMES.match(name) else EMBEDDING


@dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> "Layout":
        return cls(tuple(params), tuple(tuple(t.shape) for t in params.values()))

    @classmethod
    def from_json(cls, rows: list) -> "Layout":
        return cls(tuple(r[0] for r in rows), tuple(tuple(r[1]) for r in rows))

    def to_json(self) -> list:
        return [[n, list(s)] for n, s in zip(self.names, self.shapes)]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    def slices(self) -> Iterator[tuple[str, tuple[int, ...], slice]]:
        """(name, shape, slice into the flat vector) for every parameter, in order."""
        start = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            yield name, shape, slice(start, start + size)
            start += size

    def layers(self) -> dict[str, list[slice]]:
        """Layer name -> the slices of its parameters in the flat vector, ordered by depth
        (embedding, resblocks.0, resblocks.1, ..., final)."""
        groups: dict[str, list[slice]] = {}
        for name, _, sl in self.slices():
            groups.setdefault(layer_of(name), []).append(sl)
        blocks = sorted((k for k in groups if k.startswith("resblocks.")), key=lambda k: int(k.split(".")[1]))
        return {k: groups[k] for k in (EMBEDDING, *blocks, FINAL) if k in groups}

    def flatten(self, params: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if set(params) != set(self.names):
            missing, extra = set(self.names) - set(params), set(params) - set(self.names)
            raise ValueError(f"parameters do not match the layout: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
        out = torch.empty(self.numel, dtype=dtype)
        for name, shape, sl in self.slices():
            t = params[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(t.shape)}, the layout expects {shape}")
            out[sl] = t.reshape(-1)
        return out

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views into `flat` (no copy)."""
        if flat.ndim != 1 or flat.numel() != self.numel:
            raise ValueError(f"flat vector has shape {tuple(flat.shape)}, the layout expects ({self.numel},)")
        return {name: flat[sl].view(shape) for name, shape, sl in self.slices()}
