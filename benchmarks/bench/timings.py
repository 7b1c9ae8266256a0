"""Sections 3 to 5: evaluation against a bare forward loop, opening a cache against loading
checkpoints, and the app's /evaluate round trip against the bare call."""
from __future__ import annotations

import gc
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from .machine import sync_device, evict, resident_fraction
from .plan import ROOT, timed
from .world import World, mapped_tau, write_checkpoints
from tvexplorer.core.cache import Cache
from tvexplorer.core.files import sha256_file
from tvexplorer.core.layout import Layout
from tvexplorer.merging import merge_flat


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    def once():
        fn()
        sync_device(device)
    return timed(once)[0]


def _bare_loop(world: World, cache: Cache, delta: torch.Tensor, device: torch.device) -> tuple[Callable[[], None], int]:
    """A bare forward loop over each task's evaluation images as one batch (the Evaluator's batches
    hold up to 500 images, more than a task has here); returns (the loop, images)."""
    from tvexplorer.data.splits import to_input
    from tvexplorer.models.clip import build_image_encoder, set_flat
    encoder = build_image_encoder(world.encoder).to(device)
    set_flat(encoder, cache.base().to(device) + delta.to(device))
    mean, std = world.encoder["mean"], world.encoder["std"]
    batches = [to_input(cache.eval_split(t).images.to(device), mean, std) for t in world.tasks]

    @torch.inference_mode()
    def bare():
        for x in batches:
            encoder(x)
    return bare, sum(len(x) for x in batches)


def bench_evaluation(world: World, device: torch.device, repeats: int = 4) -> dict:
    """Evaluator.accuracy of theta0 + delta against a bare forward loop over the same images."""
    from tvexplorer.science.evaluation import Evaluator
    cache = Cache.open(world.root)
    delta = mapped_tau(world.root, [world.tasks[0]])[world.tasks[0]]
    evaluator = Evaluator(cache, device=device)
    bare, images = _bare_loop(world, cache, delta, device)
    evaluator_runs, bare_runs = [], []
    for _ in range(repeats):  # alternated, so that a drift in the machine's speed hits both alike
        evaluator_runs.append(_seconds(lambda: evaluator.accuracy(delta), device))
        bare_runs.append(_seconds(bare, device))
    evaluator_s, bare_s = min(evaluator_runs), min(bare_runs)
    return {"device": str(device), "images": images, "image_size": world.encoder["image_size"], "calls": repeats,
            "evaluator_s": evaluator_s, "bare_s": bare_s, "evaluator_runs_s": evaluator_runs, "bare_runs_s": bare_runs,
            "evaluator_images_per_s": images / evaluator_s, "bare_images_per_s": images / bare_s,
            "overhead_pct": 100 * (evaluator_s / bare_s - 1)}


def _open_and_merge(root: Path) -> torch.Tensor:
    cache = Cache.open(root)
    return merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=1.0)


def _load_and_merge(paths: list[Path], layout: Layout) -> torch.Tensor:
    theta0 = layout.flatten(torch.load(paths[0], weights_only=True))
    out = torch.zeros_like(theta0)
    for p in paths[1:]:
        out.add_(layout.flatten(torch.load(p, weights_only=True))).sub_(theta0)
    return out


def bench_cache(world: World, out_dir: Path) -> dict:
    """Cache.open and open + task arithmetic against torch.load of the checkpoints + the same merge,
    first with every file evicted from the page cache, then with the files just read (hot)."""
    checkpoints = write_checkpoints(out_dir / "checkpoints", world)
    cache_files = sorted(p for p in world.root.rglob("*") if p.is_file())
    out = {"cache_bytes": sum(p.stat().st_size for p in cache_files),
           "vector_file_bytes": sum(p.stat().st_size for p in world.vector_files()),
           "checkpoint_bytes": sum(p.stat().st_size for p in checkpoints), "checkpoints": len(checkpoints)}
    cases = {"open": (cache_files, lambda: Cache.open(world.root)),
             "open_merge": (cache_files, lambda: _open_and_merge(world.root)),
             "checkpoints_merge": (checkpoints, lambda: _load_and_merge(checkpoints, world.layout))}
    merged = {}
    for state in ("cold", "hot"):
        for name, (files, fn) in cases.items():
            if state == "cold":
                evict(files)
            out[f"{name}_{state}_resident_fraction"] = resident_fraction(files)
            out[f"{name}_{state}_s"], merged[name] = timed(fn)
            gc.collect()
    out["hash_s"] = timed(lambda: [sha256_file(p) for p in world.vector_files()])[0]
    out["hash_resident_fraction"] = resident_fraction(world.vector_files())
    a, b = merged["open_merge"], merged["checkpoints_merge"]
    out["checkpoints_rel_l2_diff"] = float((a - b).norm() / a.norm())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(tasks: list[str], n: int) -> list[dict]:
    """n different settings (one coefficient moves, as a slider release does), so no memo answers."""
    return [{"method": "task_arithmetic", "scaling": 0.3, "vectors": "tau", "params": {},
             "coefficients": {tasks[i % len(tasks)]: round(-0.9 + 2.8 * (i + 1) / (n + 1), 4)}} for i in range(n)]


def _start_app(cache: Path, device: torch.device, log_path: Path):
    from gradio_client import Client
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--cache", str(cache), "--port", str(port),
                                 "--device", str(device), "--read-only"], stdout=log_file, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    deadline = time.time() + 180
    while True:
        try:
            return proc, Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        except Exception:  # noqa: BLE001 - any failure to connect means: not up yet
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                proc.wait()
                tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
                raise RuntimeError(f"the app did not start: {tail}") from None
            time.sleep(0.5)


def _spread(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_s": statistics.median(ordered), "min_s": ordered[0], "max_s": ordered[-1], "p90_s": p90}


def _round_trips(cache: Path, device: torch.device, warmup: dict, settings: list[dict], log_path: Path):
    """(seconds per /evaluate round trip, the server's own seconds per request), after one warm-up request."""
    proc, client = _start_app(cache, device, log_path)
    try:
        client.predict(**warmup, api_name="/evaluate")
        trips, server = [], []
        for s in settings:
            seconds, response = timed(partial(client.predict, **s, api_name="/evaluate"))
            trips.append(seconds)
            server.append(response["seconds"])
        return trips, server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bare_calls(cache: Path, device: torch.device, warmup: dict, settings: list[dict]) -> list[float]:
    from tvexplorer.science.evaluation import Evaluator
    evaluator = Evaluator(Cache.open(cache), device=device)
    call = lambda s: partial(evaluator.evaluate, s["method"], coefficients=s["coefficients"], scaling=s["scaling"],
                             vectors=s["vectors"])
    call(warmup)()
    return [timed(call(s))[0] for s in settings]


def bench_app(cache: Path, device: torch.device, requests: int, out_dir: Path) -> dict:
    """Round trips to the app's /evaluate (each with new settings) against Evaluator.evaluate in-process,
    measured after the app has stopped so the two never compete for the cores."""
    warmup, *settings = _settings(Cache.open(cache).tasks, requests + 1)
    trips, server = _round_trips(cache, device, warmup, settings, out_dir / "app.log")
    bare = _bare_calls(cache, device, warmup, settings)
    out = {"cache": str(cache), "device": str(device), "requests": len(trips), "round_trip": _spread(trips),
           "server": _spread(server), "bare": _spread(bare)}
    out["overhead_median_diff"] = out["round_trip"]["median_s"] - out["bare"]["median_s"]  # seconds; noise can make it negative
    return out
