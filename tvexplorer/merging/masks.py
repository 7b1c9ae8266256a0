"""Selection and mask merges: MagMax, Consensus task arithmetic, TALL masks and EMR. Like the other
elementwise merges they stream over the tasks in blocks (never a [T, P] stack, never writing into
their inputs); the two task-conditioned ones (TALL masks, EMR) keep one shared full-length vector
and compute each task's delta from it and that task's vector when the task is evaluated."""
from __future__ import annotations

from typing import Callable

import torch

from ..core.layout import Layout
from .elementwise import _blocks, _zeros, scaled_copy, task_arithmetic

Tensor = torch.Tensor
DeltaOf = Callable[[int], Tensor]


def magmax(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """MagMax: Marczak et al., "MagMax: Leveraging Model Merging for Seamless Continual Learning",
    ECCV 2024. Per entry, the task-vector value of largest magnitude; on an exact tie the last task's,
    as the authors' merge_max_abs (src/merging/task_vectors.py) and FusionBench's MagMax fold with >=."""
    out = _zeros(vectors)
    for sl in _blocks(vectors):
        best = out[sl]
        for v, c in zip(vectors, coefficients):
            candidate = scaled_copy(v[sl], c)
            best.copy_(torch.where(candidate.abs() >= best.abs(), candidate, best))
    return out


def _tall_mask(task: Tensor, multitask: Tensor, mask_lambda: float) -> Tensor:
    """TALL mask of one (scaled) task block: |tau_t| > lambda * |tau_MTL - tau_t|, strict as in the
    authors' code (an entry where both sides are 0 is not kept)."""
    return task.abs() > (multitask - task).abs_().mul_(mask_lambda)


def consensus(vectors: list[Tensor], coefficients: list[float], layout: Layout, *,
              mask_lambda: float, k: int) -> Tensor:
    """Consensus task arithmetic: Wang et al., "Localizing Task Information for Improved Model Merging
    and Compression", ICML 2024. Each task's TALL mask marks the entries where it differs more from
    the pretrained model than from the multi-task vector tau_MTL = sum_t tau_t (by the factor
    mask_lambda); entries that fewer than k tasks mark (selfish or catastrophic weights) are dropped
    from tau_MTL."""
    out = task_arithmetic(vectors, coefficients, layout)
    for sl in _blocks(vectors):
        multitask = out[sl]
        votes = torch.zeros(multitask.shape, dtype=torch.int32, device=multitask.device)
        for v, c in zip(vectors, coefficients):
            votes += _tall_mask(scaled_copy(v[sl], c), multitask, mask_lambda)
        multitask.masked_fill_(votes < k, 0)
    return out


def tall_masks(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, mask_lambda: float) -> DeltaOf:
    """TALL masks: Wang et al., "Localizing Task Information for Improved Model Merging and
    Compression", ICML 2024. Task-conditioned: task t is evaluated with tau_MTL restricted to its own
    TALL mask, |tau_t| > mask_lambda * |tau_MTL - tau_t|, which recovers most of its fine-tuned
    accuracy from one shared vector and one binary mask per task."""
    multitask = task_arithmetic(vectors, coefficients, layout)

    def delta_of(i: int) -> Tensor:
        out = torch.empty_like(multitask)
        for sl in _blocks(vectors):
            keep = _tall_mask(scaled_copy(vectors[i][sl], coefficients[i]), multitask[sl], mask_lambda)
            torch.mul(multitask[sl], keep, out=out[sl])
        return out
    return delta_of


def emr(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> DeltaOf:
    """EMR-merging: Huang et al., "EMR-Merging: Tuning-Free High-Performance Model Merging", NeurIPS 2024.

    Elect one unified vector: per entry the sign of sum_t tau_t (0 counts as negative, as in the
    authors' code) and the largest magnitude among the tasks that agree with it. Task-conditioned:
    task t is evaluated with the unified vector masked to the entries where tau_t agrees with it,
    times a rescaler that restores its magnitude. The rescaler is sum_p mean|tau_t[p]| over
    sum_p mean|mask_t * unified[p]|, summing per-parameter means as the authors' code does (not the
    paper's whole-vector sums).
    """
    unified = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
    own, kept = [0.0] * len(vectors), [0.0] * len(vectors)  # sums over parameters of the two means
    for _, _, sl in layout.slices():
        total = task_arithmetic([v[sl] for v in vectors], coefficients, layout)
        sign = torch.where(total > 0, 1.0, -1.0)
        largest = torch.zeros_like(total)
        agrees = []  # one parameter's masks, [T x that parameter] booleans
        for i, (v, c) in enumerate(zip(vectors, coefficients)):
            aligned = scaled_copy(v[sl], c).mul_(sign)  # |tau_t|, positive where tau_t agrees with the sign
            own[i] += float(aligned.abs().mean())
            agrees.append(aligned > 0)
            torch.maximum(largest, aligned, out=largest)  # from 0: only agreeing entries count
        for i, agree in enumerate(agrees):
            kept[i] += float((largest * agree).mean())
        unified[sl] = largest.mul_(sign)
    rescalers = [o / k if k > 0 else 0.0 for o, k in zip(own, kept)]  # k = 0: the masked vector is all 0

    def delta_of(i: int) -> Tensor:
        out = torch.empty_like(unified)
        for sl in _blocks(vectors):
            agrees = scaled_copy(vectors[i][sl], coefficients[i]).mul_(unified[sl]) > 0
            torch.mul(unified[sl], agrees, out=out[sl]).mul_(rescalers[i])
        return out
    return delta_of
