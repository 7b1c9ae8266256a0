"""How many test images one exact evaluation uses on a Space, chosen when the Space is planned.

An exact evaluation runs the image encoder over every task's stored test subset: instant for the demo,
minutes for a ViT-B/32 cache on a CPU Space (cpu-basic has 2 vCPU). So `space` sizes it for the
hardware: it times the cache's own image encoder here, with as many threads as the Space has vCPUs,
and gives every task the same number of test images, so that one evaluation takes about
`target_seconds` there. Each task then uses `cache.eval_split(task).take(n)`, a seeded subset, so
every visitor and every restart sees the same images. The plan is pushed beside app.py as
`evaluation_plan.json`; the app reads it with `read_plan()`, and the Space's README states it.

The timing is taken on the machine that plans the Space, not on the Space. It keeps the fastest of
several timed batches, the one least disturbed by other work on the planning machine; a CPU faster or
slower than the Space's still misjudges it, so the plan records how it was timed, and
`images_per_second` (from a run on the Space itself, say) can be given instead.
The load of the merged weights is timed too; the merge itself, which depends on the method, is not.

On a ZeroGPU Space the device is chosen by the same timing: where one exact evaluation of every stored
test image takes at most `target_seconds` on the Space's CPU (the demo), it stays there; a GPU call
costs a wait for a GPU and the visitor's daily quota. Where it would take longer (a real CLIP cache),
every exact evaluation is one short ZeroGPU call (app/work.py `exact_accuracy`).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..core.cache import Cache
from ..core.records import Encoder
from ..models.clip import build_image_encoder, get_flat, set_flat

PLAN_FILE = "evaluation_plan.json"
SPACE_CPUS = {"cpu-basic": 2, "cpu-upgrade": 8}  # vCPUs of the hub's CPU flavors (spaces-overview, spaces-gpus)
# The hub documents no vCPU count for the CPU side of a ZeroGPU Space: timed as cpu-basic's 2, so that a
# cache is sent to the GPU rather than left too slow on the CPU.
GPU_FLAVOR_CPUS = 2
ZERO_GPU_FLAVOR = "zero-a10g"  # the hub's name for ZeroGPU hardware
DEFAULT_SECONDS = 4.0    # one exact evaluation on a CPU Space: "a few seconds"
MIN_IMAGES = 16          # fewer per task and one image moves a task's accuracy by more than 6 points
TIMING_SECONDS = 2.0     # how long the encoder is timed (after one warm-up batch)
TIMING_BATCH = 16        # the first batch; grown up to MAX_BATCH while one takes under MIN_BATCH_SECONDS
MAX_BATCH = 512          # the Evaluator's batches are 500 images
MIN_BATCH_SECONDS = 0.5  # small batches of a small model time the per-call overhead, not the images
MIN_CALLS = 3


@dataclass(frozen=True)
class EvaluationPlan:
    hardware: str                   # the Space's hardware flavor
    device: str                     # where the exact evaluation runs there: "cpu", or "cuda" (ZeroGPU)
    images: dict[str, int]          # per task: test images one exact evaluation uses
    stored: dict[str, int]          # per task: test images the cache stores
    images_per_second: float | None # of the image encoder with the Space's vCPUs (None on a GPU)
    load_seconds: float | None      # loading merged weights into the encoder, once per evaluation
    seconds: float | None           # one exact evaluation there, estimated
    basis: str                      # how images_per_second was obtained
    seed: int = 0                   # of Split.take

    @property
    def full(self) -> bool:
        return self.images == self.stored

    def for_cache(self, cache: Cache) -> "EvaluationPlan | None":
        """The plan as it applies to `cache`: itself where it was made for it; extended where the cache is
        its cache with tasks added since (app/addtask.py): on the GPU every stored image of the new tasks
        too, on a CPU as many per task as the planned tasks get (the estimate grows with them); else None
        (made for another cache: a Space can serve another one than it was pushed with, through
        TVEXPLORER_CACHE)."""
        stored = {t: len(cache.eval_split(t, "test")) for t in cache.tasks}
        if stored == self.stored:
            return self
        if any(stored.get(t) != n for t, n in self.stored.items()):
            return None
        per_task = max(self.images.values())
        images = {t: self.images.get(t, n if self.device != "cpu" else min(n, per_task)) for t, n in stored.items()}
        seconds = None
        if self.seconds is not None:
            seconds = round(self.load_seconds + sum(images.values()) / self.images_per_second, 2)
        added = len(stored) - len(self.stored)
        return replace(self, images=images, stored=stored, seconds=seconds,
                       basis=f"{self.basis}; timed before {added} task(s) were added")

    @property
    def subset_sizes(self) -> dict[str, int] | None:
        """Evaluator(subset_sizes=...): per task, the test images to evaluate on; None where every task uses
        its whole stored subset."""
        return None if self.full else dict(self.images)

    def describe(self) -> str:
        """One line for the app's header and the Space's README."""
        counts = sorted(set(self.images.values()))
        per_task = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        stored = sum(self.stored.values())
        if self.device != "cpu":
            return (f"exact evaluation on the GPU ({self.hardware}), one short GPU call each, on all {stored} stored "
                    f"test images (on the Space's CPU: {self.basis})")
        scope = (f"all {stored} stored test images" if self.full
                 else f"{per_task} test images per task ({sum(self.images.values())} of {stored} stored)")
        cpus = SPACE_CPUS.get(self.hardware, GPU_FLAVOR_CPUS)
        return (f"exact evaluation on the CPU ({self.hardware}, {cpus} vCPU), on {scope}: "
                f"about {self.seconds:.1f} s each, sized for {self.images_per_second:.1f} images/s ({self.basis})")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    images_per_second: float         # of the fastest timed call: the least disturbed by other work here
    median_images_per_second: float  # of all timed calls: lower where other work shares this machine's cores
    batch: int
    load_seconds: float


def measure_encoder(encoder_info: Encoder, threads: int, seconds: float = TIMING_SECONDS, batch: int = TIMING_BATCH) -> Timing:
    """The image encoder that a manifest's `model.encoder` describes, timed on this machine's CPU with
    `threads` threads, and the load of one set of merged weights into it. Random weights and inputs: the
    cost does not depend on them."""
    size = encoder_info.image_size
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = build_image_encoder(encoder_info)
        load_seconds = _timed_load(encoder)
        with torch.inference_mode():
            while True:  # warm-up, growing the batch until per-call overhead no longer dominates
                images = torch.randn(batch, 3, size, size)
                if min(_timed(encoder, images) for _ in range(2)) >= MIN_BATCH_SECONDS or batch >= MAX_BATCH:
                    break
                batch = min(4 * batch, MAX_BATCH)
            calls, started = [], time.perf_counter()
            while time.perf_counter() - started < seconds or len(calls) < MIN_CALLS:
                calls.append(_timed(encoder, images))
    finally:
        torch.set_num_threads(before)
    return Timing(batch / min(calls), batch / statistics.median(calls), batch, load_seconds)


def measure_load(encoder_info: Encoder, threads: int) -> float:
    """Seconds to load one set of merged weights (theta0 + delta) into the encoder, as every evaluation does."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _timed_load(build_image_encoder(encoder_info))
    finally:
        torch.set_num_threads(before)


def _timed_load(encoder) -> float:
    theta0 = get_flat(encoder).float()
    started = time.perf_counter()
    set_flat(encoder, theta0 + torch.zeros_like(theta0))
    return time.perf_counter() - started


def _timed(encoder, images) -> float:
    started = time.perf_counter()
    encoder(images)
    return time.perf_counter() - started


def plan_evaluation(cache: Cache, hardware: str, device: str = "cpu", target_seconds: float = DEFAULT_SECONDS,
                    images_per_second: float | None = None) -> EvaluationPlan:
    """The plan for a Space on `hardware`. On a CPU flavor the same number of test images per task (at
    least MIN_IMAGES, at most what is stored), so that one evaluation takes about `target_seconds`, at
    `images_per_second` (default: measured here with the flavor's vCPUs). With `device` a GPU (ZeroGPU):
    every stored image, on the CPU where that takes at most `target_seconds` there, else on the GPU."""
    stored = {t: len(cache.eval_split(t, "test")) for t in cache.tasks}
    if device == "cpu" and hardware not in SPACE_CPUS:
        raise ValueError(f"no vCPU count known for the CPU flavor {hardware!r}; known: {', '.join(SPACE_CPUS)}")
    if target_seconds <= 0 or (images_per_second is not None and images_per_second <= 0):
        raise ValueError("the evaluation's target seconds and images per second must be positive numbers")
    threads = SPACE_CPUS.get(hardware, GPU_FLAVOR_CPUS)
    encoder_info = cache.manifest.model.encoder
    if images_per_second is None:
        timing = measure_encoder(encoder_info, threads)
        images_per_second, load_seconds = timing.images_per_second, timing.load_seconds
        basis = (f"the fastest of batches of {timing.batch} timed on the planning machine with {threads} threads; "
                 f"median {timing.median_images_per_second:.1f} images/s")
    else:
        load_seconds, basis = measure_load(encoder_info, threads), "given"
    on_cpu = load_seconds + sum(stored.values()) / images_per_second  # every stored image, on the CPU
    if device != "cpu":
        if on_cpu > target_seconds:
            return EvaluationPlan(hardware, device, dict(stored), stored, None, None, None,
                                  f"{on_cpu:.0f} s at {images_per_second:.1f} images/s ({basis})")
        return EvaluationPlan(hardware, "cpu", dict(stored), stored, round(images_per_second, 2), round(load_seconds, 3),
                              round(on_cpu, 2), basis)
    budget = max(target_seconds - load_seconds, 0.0) * images_per_second / len(stored)
    per_task = max(MIN_IMAGES, math.floor(budget))
    images = {t: min(n, per_task) for t, n in stored.items()}
    seconds = load_seconds + sum(images.values()) / images_per_second
    return EvaluationPlan(hardware, device, images, stored, round(images_per_second, 2), round(load_seconds, 3),
                          round(seconds, 2), basis)


def plan_text(plan: EvaluationPlan) -> str:
    return json.dumps(plan.to_json(), indent=2) + "\n"


def read_plan(folder: Path) -> EvaluationPlan | None:
    """The plan pushed with a Space (`folder`: the folder of app.py), or None where there is none (a local
    run: every stored test image)."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return EvaluationPlan(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not an evaluation plan ({e}); push the Space again with `python -m tvexplorer space`") from None
