"""Merge coefficients tuned on the validation subsets: per task, or per task and layer.

Grid-searched task arithmetic picks one global scaling. Here every task (and, with `per_layer`, every
task's layer of `Layout.layers`) gets its own coefficient w, and the merge is

    merge_flat(method, tau, coefficients=w_t  (or layer_coefficients=w_{t,l}), scaling=s0),

starting from the grid's best scaling s0 with all w = 1, so the start is exactly the grid merge.

1. Surrogate (methods linear in the coefficients: task arithmetic, averaging). The linearised preview of
   `science.preview` on the validation images, f0 + sum_k s0 * factor * w_k * J tau_k, with one
   Jacobian-vector product per task (per task and layer: the task vector restricted to that layer),
   makes the validation cross-entropy a cheap smooth function of w: Adam steps on it take seconds.
2. Exact confirmation: validation accuracy of the exact merge along the segment from the start to the
   surrogate's optimum (the surrogate's error grows with the step, so a shorter step can be better).
3. Exact refinement: one pass of coordinate search on exact validation accuracy, scaling each task's
   coefficients (and, per layer, each layer's across tasks) up and down by `refine_step`, keeping what
   helps. Methods without a surrogate get this search alone.

The result is evaluated on the test subsets and recorded in the manifest (`core.manifest.Manifest.with_tuning`).

A run can go in pieces (`Budget`): on ZeroGPU each GPU call may last a minute at most, so a call runs
a share of the steps and raises `Paused` with the run's state saved in a folder; the next call, given
the same folder, replays the run from that state (exact evaluations remembered, the linearisation and
the optimiser's state loaded) and goes on. AdaMerging (adamerging.py) goes in pieces the same way.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.layout import layer_of
from ..data.splits import to_input
from ..merging import METHODS, merge_flat
from ..models.clip import build_image_encoder
from .evaluation import Evaluator
from .preview import linearise

Progress = Callable[[int, int, str], None]
Tensor = torch.Tensor

# Methods whose merge is `factor(T) * sum_t w_t tau_t`: the linearised preview predicts them.
LINEAR_FACTORS = {"task_arithmetic": lambda n: 1.0, "average": lambda n: 1.0 / n}
LINE_SEARCH = (0.25, 0.5, 0.75, 1.0, 1.25)


class Cancelled(Exception):
    """A tuning or AdaMerging run was asked to stop; nothing was recorded."""


class Paused(Exception):
    """One call's share of a run (its Budget) is used up; the run's state is saved for the next call."""


class Budget:
    """One call's share of a run that goes in pieces: at most `steps` steps and about `seconds` seconds
    (None: no limit; at least one step either way), and the `folder` where the run's state stays between
    calls (None: the run goes in one piece)."""

    def __init__(self, folder: str | os.PathLike | None = None, steps: int | None = None, seconds: float | None = None):
        self.path = Path(folder) / "state.pt" if folder is not None else None
        self.steps, self.seconds = steps, seconds
        self.started, self.spent = time.monotonic(), 0

    def state(self) -> dict:
        """What the previous calls saved (empty for the first)."""
        if self.path is None or not self.path.is_file():
            return {}
        return torch.load(self.path, weights_only=False)

    def spend(self, state: dict) -> None:
        """Before a step: raise Paused, with `state` saved, when this call's share is used up."""
        used_up = self.spent and ((self.steps is not None and self.spent >= self.steps)
                                  or (self.seconds is not None and time.monotonic() - self.started >= self.seconds))
        if used_up and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self.path)
            raise Paused(f"paused after {self.spent} steps")
        self.spent += 1

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def record_name(method: str, per_layer: bool) -> str:
    """Where a tuning result goes in the manifest's tuning records."""
    return f"{method}:{'per_layer' if per_layer else 'per_task'}"


def start_scaling(cache: Cache, method: str) -> float:
    """The method's scaling chosen on the validation grid when the build recorded one, else its default."""
    best = cache.manifest.metrics.best_scaling(method)
    return float(best) if best is not None else METHODS[method].default_scaling


def merge_settings(tasks: list[str], layers: list[str], w: Tensor, per_layer: bool) -> dict:
    """coefficients / layer_coefficients keyword arguments of merge_flat for the coefficient matrix w [T, L or 1]."""
    if per_layer:
        return {"coefficients": None,
                "layer_coefficients": {t: {layer: float(w[i, j]) for j, layer in enumerate(layers)}
                                       for i, t in enumerate(tasks)}}
    return {"coefficients": {t: float(w[i, 0]) for i, t in enumerate(tasks)}, "layer_coefficients": None}


def restricted(vector: dict[str, Tensor], slices_of_layer: set[str]) -> dict[str, Tensor]:
    """A parameter-shaped tangent equal to `vector` on the named parameters and zero elsewhere (zero
    tensors are expanded views: no memory until the tangents are stacked chunk by chunk)."""
    return {n: t if n in slices_of_layer else torch.zeros((), dtype=t.dtype, device=t.device).expand(t.shape)
            for n, t in vector.items()}


class Surrogate:
    """Validation cross-entropy of the linearised merge, as a differentiable function of w."""

    def __init__(self, cache: Cache, per_layer: bool, device: torch.device, kind: str = "tau",
                 saved: dict | None = None, tick: Callable[[str], None] = lambda text: None):
        """Linearised task by task (`tick` before each task's Jacobian-vector products); `saved`: the
        f0 and per-task products of an earlier piece of the run, filled in as tasks are done."""
        saved = {} if saved is None else saved
        info = cache.manifest.model.encoder
        encoder = build_image_encoder(info).to(device)
        params = {n: t.clone() for n, t in cache.layout.unflatten(cache.base().to(device)).items()}
        vectors = [cache.layout.unflatten(cache.vector(t, kind)) for t in cache.tasks]
        names_of: dict[str, set[str]] = {}
        for name in cache.layout.names:
            names_of.setdefault(layer_of(name), set()).add(name)
        layers = list(cache.layout.layers()) if per_layer else [None]
        splits = [cache.eval_split(t, "val") for t in cache.tasks]
        images = torch.cat([s.images for s in splits])
        per_task = saved.setdefault("jvps", {})
        for task, v in zip(cache.tasks, vectors):
            if task not in per_task:
                tick(f"surrogate: linearising the validation images along {task}")
                tangents = [v if layer is None else restricted(v, names_of[layer]) for layer in layers]
                saved["f0"], per_task[task] = linearise(encoder, params, tangents, images,
                                                        lambda x: to_input(x.to(device), info.mean, info.std))
        self.f0 = saved["f0"]
        self.jvps = torch.cat([per_task[t] for t in cache.tasks]).reshape(len(cache.tasks) * len(layers), -1)
        heads, self.logit_scale = cache.heads()
        self.heads = [heads[t] for t in cache.tasks]
        self.labels = [s.labels.long() for s in splits]
        bounds = torch.tensor([0, *(len(s) for s in splits)]).cumsum(0).tolist()
        self.rows = [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def features(self, weights: Tensor) -> Tensor:
        """f0 + sum_k weights[k] J tau_k, weights flat over (task, layer)."""
        return self.f0 + (weights.reshape(1, -1) @ self.jvps).view_as(self.f0)

    def loss(self, weights: Tensor) -> Tensor:
        """Mean over tasks of the mean cross-entropy of each task's validation images."""
        features = F.normalize(self.features(weights), dim=-1)
        losses = [F.cross_entropy(self.logit_scale * features[r] @ h, y)
                  for r, h, y in zip(self.rows, self.heads, self.labels)]
        return torch.stack(losses).mean()

    def accuracy(self, weights: Tensor) -> float:
        with torch.no_grad():
            features = self.features(weights)
            correct = [((features[r] @ h).argmax(1) == y).float().mean() for r, h, y in zip(self.rows, self.heads, self.labels)]
        return float(torch.stack(correct).mean())


def tune(cache: Cache, method: str = "task_arithmetic", *, per_layer: bool = False, steps: int = 200, lr: float = 0.02,
         refine_step: float = 0.1, device: str | torch.device | None = None, progress: Progress | None = None,
         should_stop: Callable[[], bool] = lambda: False, record: bool = True, budget: Budget | None = None) -> dict:
    """Tune per-task (or per-layer) coefficients of `method` on validation; evaluate on test; record it.
    `budget`: this call's share of a run that goes in pieces (Paused when it is used up)."""
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose one of: {', '.join(METHODS)}")
    if steps < 0 or not 0 < refine_step < 1:
        raise ValueError(f"steps must be >= 0 (got {steps}) and refine_step in (0, 1) (got {refine_step})")
    t0 = time.perf_counter()
    budget = budget or Budget()
    state = budget.state()  # what earlier pieces of this run did: replayed from here, not redone
    earlier = state.get("seconds", 0.0)
    device = resolve_device(device)
    tasks, layers = cache.tasks, list(cache.layout.layers())
    scaling = start_scaling(cache, method)
    w = torch.ones(len(tasks), len(layers) if per_layer else 1)
    vectors = cache.vectors("tau")
    linear = method in LINEAR_FACTORS
    # at most: the start, the linearisation (per task), the line search, both directions of every
    # coordinate, the test evaluation
    evaluations = 1 + (len(tasks) + len(LINE_SEARCH)) * linear + 2 * (len(tasks) + (len(layers) if per_layer else 0)) + 1
    total = (steps if linear else 0) + evaluations

    def tick(text: str) -> None:
        if should_stop():
            raise Cancelled("tuning cancelled; nothing was recorded")
        state["seconds"] = earlier + time.perf_counter() - t0
        budget.spend(state)
        state["done"] = state.get("done", 0) + 1
        if progress:
            progress(state["done"], total, text)

    val = Evaluator(cache, device, split="val")
    seen: dict[tuple, dict[str, float]] = state.setdefault("seen", {})  # exact validation accuracy per task, by coefficients

    def exact(candidate: Tensor, what: str) -> float:
        key = tuple(float(x) for x in candidate.flatten())
        if key not in seen:
            tick(f"exact validation: {what}")
            delta = merge_flat(method, vectors, cache.layout, scaling=scaling, **merge_settings(tasks, layers, candidate, per_layer))
            seen[key] = val.accuracy(delta)
        return _mean(seen[key])

    start_val = exact(w, "start (grid scaling)")
    surrogate_record = None
    if linear:
        surrogate = Surrogate(cache, per_layer, device, saved=state.setdefault("surrogate", {}), tick=tick)
        factor = scaling * LINEAR_FACTORS[method](len(tasks))
        adam = state.get("adam") or {"step": 0, "target": w.clone(), "optimizer": None,
                                     "first": float(surrogate.loss(factor * w.flatten())), "loss": None}
        target = adam["target"].requires_grad_(True)
        optimizer = torch.optim.Adam([target], lr=lr)
        if adam["optimizer"] is not None:
            optimizer.load_state_dict(adam["optimizer"])
        for step in range(adam["step"], steps):
            tick(f"surrogate step {step + 1}/{steps}" + (f": validation cross-entropy {adam['loss']:.4f}" if adam["loss"] else ""))
            optimizer.zero_grad()
            loss = surrogate.loss(factor * target.flatten())
            loss.backward()
            optimizer.step()
            adam = state["adam"] = {"step": step + 1, "target": target, "optimizer": optimizer.state_dict(),
                                    "first": adam["first"], "loss": loss.item()}
        found = target.detach()
        surrogate_record = {"steps": steps, "lr": lr, "cross_entropy_start": adam["first"],
                            "cross_entropy_end": float(surrogate.loss(factor * found.flatten())),
                            "predicted_val_average_start": surrogate.accuracy(factor * w.flatten()),
                            "predicted_val_average_end": surrogate.accuracy(factor * found.flatten())}
        line = {a: exact(w + a * (found - w), f"{a:g} of the surrogate's step") for a in LINE_SEARCH}
        best_alpha = max(line, key=lambda a: (line[a], -abs(a - 1)))
        surrogate_record["exact_val_average_along_step"] = {str(a): v for a, v in line.items()}
        taken = best_alpha if line[best_alpha] > start_val else 0.0
        surrogate_record["step_taken"] = taken
        w = w + taken * (found - w)
    best = exact(w, "current")
    groups = [("task", i) for i in range(len(tasks))] + ([("layer", j) for j in range(len(layers))] if per_layer else [])
    accepted = 0
    for axis, index in groups:
        for multiplier in (1 + refine_step, 1 - refine_step):
            candidate = w.clone()
            if axis == "task":
                candidate[index] *= multiplier
            else:
                candidate[:, index] *= multiplier
            name = tasks[index] if axis == "task" else layers[index]
            value = exact(candidate, f"{axis} {name} x{multiplier:g}")
            if value > best:
                w, best, accepted = candidate, value, accepted + 1
                break
    tick("exact test evaluation")
    settings = merge_settings(tasks, layers, w, per_layer)
    test = Evaluator(cache, device).accuracy(
        merge_flat(method, vectors, cache.layout, scaling=scaling, **settings))
    val_accuracy = seen[tuple(float(x) for x in w.flatten())]
    if progress:
        progress(total, total, "finished")
    result = {"method": method, "per_layer": per_layer, "objective": "validation accuracy", "scaling": scaling,
              **settings, "layers": layers,
              "val_accuracy": val_accuracy, "val_average": _mean(val_accuracy), "start_val_average": start_val,
              "accuracy": test, "average": _mean(test), "exact_evaluations": len(seen) + 1,
              "refinement": {"step": refine_step, "accepted": accepted}, "surrogate": surrogate_record,
              "seconds": round(earlier + time.perf_counter() - t0, 2),
              "device": str(device)}
    if record:
        save(cache, record_name(method, per_layer), result)
    budget.finish()
    return result


def save(cache: Cache, name: str, result: dict) -> None:
    cache.add_files({}, lambda manifest: manifest.with_tuning(name, result))


def grid_baseline(cache: Cache) -> dict:
    """Task arithmetic at the build's best validation scaling: its validation and test averages."""
    m = cache.manifest.metrics.merge("task_arithmetic")
    val = next((v for s, v in m.val_average_by_scaling.items() if float(s) == float(m.best_scaling)), None)
    return {"method": "task_arithmetic", "scaling": m.best_scaling, "val_average": val, "average": m.average,
            "accuracy": m.accuracy}


def _mean(accuracy: dict[str, float]) -> float:
    return sum(accuracy.values()) / len(accuracy)
