"""AdaMerging: Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024.

Task arithmetic whose coefficients are learned at test time, without labels: the merged encoder

    theta(lambda) = theta0 + sum_t lambda_t tau_t                  (task-wise)
    theta(lambda) = theta0 + sum_t sum_l lambda_{t,l} tau_{t,l}     (layer-wise, l over Layout.layers)

runs on a batch of unlabelled test images of every task (through the real network, with
torch.func.functional_call), and lambda descends the sum over tasks of the mean Shannon entropy of
the predictions, H(p) = -sum_c p_c log p_c with p = softmax(logit_scale * normalize(f(x)) @ head).

Defaults follow FusionBench's CLIP configuration: every coefficient starts at 0.3, Adam with lr 1e-3,
16 images per task per step, 1000 steps, no clamping. One difference: FusionBench's layer-wise form
has one coefficient per parameter tensor; here a layer is a depth group of `Layout.layers` (embedding,
each residual block, final), the same layers as the per-layer coefficients of `merging.merge_flat`.

The learned coefficients are task-arithmetic coefficients at scaling 1, recorded in the manifest
(`core.manifest.Manifest.with_tuning`) so that `merge_flat` / `eval --tuned` reproduce the merge.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.layout import layer_of
from ..data.splits import to_input
from ..merging import merge_flat
from ..models.clip import build_image_encoder
from .evaluation import Evaluator
from .tuning import Budget, Cancelled, Progress, merge_settings, save

Tensor = torch.Tensor
DEFAULTS = {"init": 0.3, "lr": 1e-3, "batch_size": 16, "steps": 1000}
HISTORY_POINTS = 200  # entropy values kept in the record, evenly spaced over the steps


def record_name(layer_wise: bool) -> str:
    return f"adamerging:{'layer_wise' if layer_wise else 'task_wise'}"


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the rows."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


def merged_parameters(theta0: Mapping[str, Tensor], stacked: Mapping[str, Tensor], lambdas: Tensor,
                      layer_index: Mapping[str, int]) -> dict[str, Tensor]:
    """theta0 + sum_t lambdas[t, layer(name)] * tau_t for every parameter; stacked[name] is [T, *shape]."""
    return {n: theta0[n] + torch.tensordot(lambdas[:, layer_index[n]], stacked[n], dims=1) for n in theta0}


def objective(encoder: torch.nn.Module, params: Mapping[str, Tensor], batches: Sequence[tuple[Tensor, Tensor]],
              logit_scale: float) -> Tensor:
    """Sum over tasks of the mean prediction entropy; batches are (encoder input, head [D, classes]) per task."""
    total = 0
    for x, head in batches:
        features = F.normalize(functional_call(encoder, dict(params), (x,)), dim=-1)
        total = total + entropy(logit_scale * features @ head)
    return total


@torch.no_grad()
def _whole_entropy(encoder, params, images_per_task: Sequence[Tensor], prepare: Callable[[Tensor], Tensor],
                   heads: Sequence[Tensor], logit_scale: float, batch_size: int = 500) -> float:
    """The objective over every unlabelled image of every task (mean entropy per task, summed): the
    quantity each step's batches estimate, for the record and the tests."""
    total = 0.0
    for images, head in zip(images_per_task, heads):
        parts = [entropy(logit_scale * F.normalize(functional_call(encoder, dict(params), (prepare(images[i:i + batch_size]),)),
                                                   dim=-1) @ head) * len(images[i:i + batch_size])
                 for i in range(0, len(images), batch_size)]
        total += float(sum(parts)) / len(images)
    return total


class _Sampler:
    """Endless seeded random batches of one task's images (a fresh permutation per pass)."""

    def __init__(self, images: Tensor, batch_size: int, seed: int):
        self.images, self.batch_size = images, min(batch_size, len(images))
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = torch.randperm(len(images), generator=self.generator), 0

    def get_state(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]

    def next(self) -> Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = torch.randperm(len(self.images), generator=self.generator), 0
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.images[chosen]


def adamerging(cache: Cache, *, layer_wise: bool = True, steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"],
               init: float = DEFAULTS["init"], batch_size: int = DEFAULTS["batch_size"], seed: int = 0,
               device: str | torch.device | None = None, progress: Progress | None = None,
               should_stop: Callable[[], bool] = lambda: False, record: bool = True, budget: Budget | None = None) -> dict:
    """Learn AdaMerging coefficients on the cache's unlabelled test images; evaluate exactly; record them.
    `budget`: this call's share of a run that goes in pieces (tuning.Budget; Paused when it is used up)."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"AdaMerging needs steps >= 1, batch_size >= 1 and lr > 0 (got {steps}, {batch_size}, {lr})")
    t0 = time.perf_counter()
    budget = budget or Budget()
    state = budget.state()  # where an earlier piece of this run paused
    earlier = state.get("seconds", 0.0)
    device = resolve_device(device)
    info = cache.manifest.model.encoder
    encoder = build_image_encoder(info).to(device).requires_grad_(False)
    tasks, all_layers = cache.tasks, list(cache.layout.layers())
    layers = all_layers if layer_wise else ["all"]
    layer_index = {n: layers.index(layer_of(n)) if layer_wise else 0 for n in cache.layout.names}
    theta0 = {n: t.clone() for n, t in cache.layout.unflatten(cache.base().to(device)).items()}
    unflattened = [cache.layout.unflatten(cache.vector(t, "tau")) for t in tasks]
    stacked = {n: torch.stack([v[n] for v in unflattened]).to(device, torch.float32) for n in theta0}
    heads, logit_scale = cache.heads()
    samplers = [_Sampler(cache.eval_split(t, "test").images, batch_size, seed + i) for i, t in enumerate(tasks)]
    lambdas = torch.full((len(tasks), len(layers)), float(init), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([lambdas], lr=lr)
    if "lambdas" in state:
        with torch.no_grad():
            lambdas.copy_(state["lambdas"])
        optimizer.load_state_dict(state["optimizer"])
        for sampler, saved in zip(samplers, state["samplers"]):
            sampler.set_state(saved)
    task_heads = [heads[t].to(device) for t in tasks]
    history = state.setdefault("history", [])

    def prepare(images: Tensor) -> Tensor:
        return to_input(images.to(device), info.mean, info.std)

    def whole() -> float:
        return _whole_entropy(encoder, merged_parameters(theta0, stacked, lambdas.detach(), layer_index),
                              [s.images for s in samplers], prepare, task_heads, logit_scale)

    def tick(done: int, text: str) -> None:
        """Before each step: stop when asked, pause (with the state saved) where this piece's share is used up."""
        if should_stop():
            raise Cancelled("AdaMerging cancelled; nothing was recorded")
        state.update(seconds=earlier + time.perf_counter() - t0, lambdas=lambdas.detach().cpu(),
                     optimizer=optimizer.state_dict(), samplers=[s.get_state() for s in samplers])
        budget.spend(state)
        if progress:
            progress(done, steps + 1, text)

    if "entropy_start" not in state:
        tick(0, "AdaMerging: entropy at the start")
        state["entropy_start"] = whole()
    for step in range(len(history), steps):
        tick(step, f"AdaMerging step {step + 1}/{steps}" + (f": entropy {history[-1]:.4f}" if history else ""))
        batches = [(prepare(s.next()), h) for s, h in zip(samplers, task_heads)]
        loss = objective(encoder, merged_parameters(theta0, stacked, lambdas, layer_index), batches, logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    tick(steps, "AdaMerging: exact evaluation")
    entropy_end = whole()
    learned = lambdas.detach().cpu()
    settings = merge_settings(tasks, all_layers, learned, layer_wise)
    delta = merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=1.0, **settings)
    test, val = Evaluator(cache, device).accuracy(delta), Evaluator(cache, device, split="val").accuracy(delta)
    every = max(1, steps // HISTORY_POINTS)
    result = {"method": "task_arithmetic", "scaling": 1.0, **settings, "layers": all_layers,
              "objective": "entropy on unlabelled test images", "layer_wise": layer_wise,
              "settings": {"steps": steps, "lr": lr, "init": init, "batch_size": batch_size, "seed": seed},
              "entropy_history": {"every": every, "values": history[::every]},
              "test_entropy_start": state["entropy_start"], "test_entropy_end": entropy_end,
              "accuracy": test, "average": sum(test.values()) / len(test),
              "val_accuracy": val, "val_average": sum(val.values()) / len(val),
              "seconds": round(earlier + time.perf_counter() - t0, 2), "device": str(device)}
    if record:
        save(cache, record_name(layer_wise), result)
    budget.finish()
    if progress:
        progress(steps + 1, steps + 1, "finished")
    return result
