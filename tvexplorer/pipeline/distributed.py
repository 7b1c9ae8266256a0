"""Ray scale-out: one Ray task per piece of independent work (a task's gradient record and
fine-tuning in a build, one task's fine-tune in an ATM round, one checkpoint in an import).

Workers only compute and return tensors; the driver writes every file through the same atomic
per-task writers and resume state as the serial path, merges, and alone holds the cache's writer
lock. Workers rebuild the image encoder from the manifest's description and load their task's data
from its spec, so data specs must resolve on every node (the same --data-root path, or a shared
file system). Ray is imported only here, and only when --ray is given.

A Ray task asks for one GPU where the cluster has GPUs and one CPU otherwise. A worker process or
node that dies (crash, pre-emption, OOM kill) is retried up to MAX_RETRIES times; a Python
exception is not, because every task here is deterministic and would fail again the same way.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..core.layout import Layout
from ..core.records import Encoder
from ..data.sources import load_task, task_spec
from ..models.clip import build_image_encoder, set_flat
from ..science.atm import Settings, tune_from
from ..science.training import TrainConfig, prepare
from .tasks import checkpoint_tau, train_jointly, train_task

MAX_RETRIES = 3


@contextlib.contextmanager
def cluster(address: str) -> Iterator[None]:
    """Connected to Ray for the block. 'auto': the cluster this machine belongs to (RAY_ADDRESS or
    the last `ray start` here), else a new local one; otherwise a cluster's address (HOST:PORT of
    its head). A process already connected (a test's local cluster) keeps its connection."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray, which is not installed: pip install 'tvexplorer[ray]' "
                         "(or the ray version pinned in pyproject.toml)") from None
    if ray.is_initialized():
        yield
        return
    ray.init(address=None if address == "auto" else address, logging_level="WARNING", configure_logging=True)
    try:
        yield
    finally:
        ray.shutdown()


def _uses_gpu(device: str | None) -> bool:
    """GPUs when the cluster has them, unless the command asked for another device."""
    import ray
    return ray.cluster_resources().get("GPU", 0) >= 1 and (device is None or torch.device(device).type == "cuda")


def _remote(fn: Callable, gpu: bool):
    import ray
    return ray.remote(fn).options(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)


def as_finished(jobs: dict) -> Iterator[tuple[object, object]]:
    """(key, result) for each job {ObjectRef: key} in the order they finish. Unfinished jobs are
    cancelled if the caller stops early or fails (a failed job raises here, as its exception)."""
    import ray
    pending = list(jobs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the task's own error (e.g. a bad checkpoint), as one line
                raise e.cause from e
            yield jobs[ready[0]], result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


@dataclass(frozen=True)
class Base:
    """What every worker starts from, shipped once through the object store: theta0, the heads, and
    the encoder's description (the model files and the text tower stay with the driver)."""
    encoder_info: Encoder
    theta0: torch.Tensor
    heads: dict
    logit_scale: float

    def encoder(self, cfg: TrainConfig, tasks: list[str], device):
        """The image encoder at theta0 in the training dtype on `device`, and the tasks' objectives."""
        encoder = build_image_encoder(self.encoder_info)
        objectives = prepare(encoder, {t: self.heads[t] for t in tasks}, self.logit_scale, self.encoder_info, cfg, device)
        set_flat(encoder, self.theta0)
        return encoder, objectives


def _device(gpu: bool) -> torch.device:
    return torch.device("cuda" if gpu else "cpu")


# ------------------------------------------------------------------ build

def _build_task(base: Base, layout: Layout, spec: dict, index: int, cfg: TrainConfig, dtype: torch.dtype, gpu: bool):
    task = load_task(spec)
    encoder, objectives = base.encoder(cfg, [task.name], _device(gpu))
    return train_task(encoder, layout, base.theta0, objectives[task.name], task, index, cfg, dtype)


def _build_jointly(base: Base, specs: list[dict], cfg: TrainConfig, dtype: torch.dtype, gpu: bool):
    data = [load_task(s) for s in specs]
    encoder, objectives = base.encoder(cfg, [d.name for d in data], _device(gpu))
    return train_jointly(encoder, base.theta0, objectives, data, cfg, dtype)


def build_tasks(base: Base, layout: Layout, work: list[tuple[int, dict]], cfg: TrainConfig, dtype: torch.dtype,
                device: str | None, joint_specs: list[dict] | None) -> Iterator[tuple[object, object]]:
    """Submit every task of `work` [(index, data spec)] (and the multi-task baseline when
    `joint_specs` is given); yield (index or None for the baseline, result) as each finishes."""
    import ray
    gpu = _uses_gpu(device)
    base_ref, layout_ref = ray.put(base), ray.put(layout)
    task = _remote(_build_task, gpu)
    jobs = {task.remote(base_ref, layout_ref, spec, i, cfg, dtype, gpu): i for i, spec in work}
    if joint_specs is not None:
        jobs[_remote(_build_jointly, gpu).remote(base_ref, joint_specs, cfg, dtype, gpu)] = None
    yield from as_finished(jobs)


# ------------------------------------------------------------------ ATM

def _atm_task(base: Base, start: torch.Tensor, spec: dict, index: int, k: int, cfg: TrainConfig,
              settings: Settings, gpu: bool) -> torch.Tensor:
    task = load_task(spec)
    encoder, objectives = base.encoder(cfg, [task.name], _device(gpu))
    return tune_from(encoder, objectives[task.name], getattr(task, settings.train_split), cfg, index, start, k, settings)


def atm_round(cache, cfg: TrainConfig, settings: Settings, start: torch.Tensor, k: int, on_task_done: Callable[[str], None],
              device: str | None = None) -> dict[str, torch.Tensor]:
    """Round k of ATM mapped over the cluster, one Ray task per task, then the barrier: every
    task's update (theta_t^k - start), exactly as the serial loop of science/atm.py computes it."""
    import ray
    gpu = _uses_gpu(device)
    heads, logit_scale = cache.heads()
    base = ray.put(Base(cache.manifest.model.encoder, cache.base(), heads, logit_scale))
    start_ref = ray.put(start)
    remote = _remote(_atm_task, gpu)
    jobs = {remote.remote(base, start_ref, task_spec(cache, t), i, k, cfg, settings, gpu): t
            for i, t in enumerate(cache.tasks)}
    updates = {}
    for task, update in as_finished(jobs):
        updates[task] = update
        on_task_done(task)
    return {t: updates[t] for t in cache.tasks}  # the serial order: the merge sums them in this order


# ------------------------------------------------------------------ import

def checkpoint_taus(paths: dict, base: dict, layout: Layout, theta0: torch.Tensor, model: str,
                    dtype: torch.dtype) -> Iterator[tuple[object, object]]:
    """(task, tau) for each task's checkpoint {task: path} as its Ray task finishes."""
    import ray
    refs = [ray.put(x) for x in (base, layout, theta0)]
    remote = _remote(checkpoint_tau, gpu=False)  # reading and subtracting: no GPU work
    yield from as_finished({remote.remote(path, *refs, model, dtype): task for task, path in paths.items()})
