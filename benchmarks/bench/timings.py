"""Sections 3 to 5: evaluation against a bare forward loop, opening a cache against loading
checkpoints, and the app's /evaluate round trip against the bare call."""
from __future__ import annotations

import gc
import json
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
from .world import World, write_checkpoints
from tvexplorer.core.cache import Cache
from tvexplorer.core.files import sha256_file
from tvexplorer.core.layout import Layout
from tvexplorer.merging import merge_flat


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    def once():
        fn()
        sync_device(device)
    return timed(once)[0]


def _bare_loop(cache: Cache, device: torch.device, delta: torch.Tensor | None) -> tuple[Callable[[], None], int]:
    """A plain float32 `visual(x)` loop over each task's evaluation images, one batch per task of up to 500
    (the Evaluator's batch size); returns (the loop, images)."""
    from tvexplorer.data.splits import to_input
    from tvexplorer.models.clip import build_image_encoder, set_flat
    info = cache.manifest.model.encoder
    encoder = build_image_encoder(info).to(device)
    base = cache.base().to(device)
    set_flat(encoder, base if delta is None else base + delta.to(device))
    batches = [to_input(images.to(device), info.mean, info.std)
               for t in cache.tasks for images, _ in cache.eval_split(t).batches(500)]

    @torch.inference_mode()
    def bare():
        for x in batches:
            encoder(x)
    return bare, sum(len(x) for x in batches)


def bench_evaluation(root: Path, device: torch.device, delta: torch.Tensor | None = None, repeats: int = 4) -> dict:
    """Evaluator.accuracy of theta0 + delta, in float32 and in the app's precision (auto), against a plain
    float32 forward loop over the same images, the three alternated; and how many predictions the fast
    precision changes."""
    from tvexplorer.science.evaluation import Evaluator
    cache = Cache.open(root)
    exact, fast = Evaluator(cache, device=device), Evaluator(cache, device=device, precision="auto")
    bare, images = _bare_loop(cache, device, delta)
    calls = {"bare": bare, "float32": lambda: exact.accuracy(delta), "fast": lambda: fast.accuracy(delta)}
    runs = {k: [] for k in calls}
    for _ in range(repeats):  # alternated, so that a drift in the machine's speed hits all alike
        for k, fn in calls.items():
            runs[k].append(_seconds(fn, device))
    best = {k: min(v) for k, v in runs.items()}
    a, b = exact.predictions(delta), fast.predictions(delta)
    agree = sum(int((a[t] == b[t]).sum()) for t in a) / sum(len(a[t]) for t in a)
    return {"cache": str(root), "device": str(device), "images": images, "image_size": cache.manifest.model.encoder.image_size,
            "calls": repeats,
            "precision": fast.precision, "bare_s": best["bare"], "float32_s": best["float32"], "fast_s": best["fast"],
            "runs_s": runs, "fast_vs_bare": best["fast"] / best["bare"],
            "float32_overhead_pct": 100 * (best["float32"] / best["bare"] - 1), "agreement": agree}


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


def _sse_call(http, url: str, api_name: str, data: list):
    """One call made the way the browser's client makes it: POST the inputs, then read the event stream
    to the result. gradio_client polls in 50 ms sleeps, so its round trips measure itself as much as the app."""
    event = http.post(f"{url}gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
    last = None
    with http.stream("GET", f"{url}gradio_api/call/{api_name}/{event}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                last = line[len("data:"):]
    return json.loads(last)[0]


def _round_trips(cache: Path, device: torch.device, warmup: dict, settings: list[dict], log_path: Path) -> dict:
    """Seconds per /evaluate round trip with new settings, over plain HTTP and through gradio_client; the
    server's own seconds per request; and a round trip to /info, which computes nothing."""
    import httpx
    proc, client = _start_app(cache, device, log_path)
    url = client.src if client.src.endswith("/") else client.src + "/"
    args = lambda s: [s["method"], s["coefficients"], s["scaling"], s["params"], s["vectors"], None]  # no layer coefficients
    half = max(1, len(settings) // 2)
    try:
        with httpx.Client(timeout=120) as http:
            _sse_call(http, url, "evaluate", args(warmup))
            out = {"round_trip": [], "server": [], "round_trip_gradio_client": [], "noop_round_trip": []}
            for s in settings[:half]:
                seconds, response = timed(partial(_sse_call, http, url, "evaluate", args(s)))
                out["round_trip"].append(seconds)
                out["server"].append(response["seconds"])
                out["noop_round_trip"].append(timed(partial(_sse_call, http, url, "info", []))[0])
            for s in settings[half:] or settings[:1]:
                out["round_trip_gradio_client"].append(timed(partial(client.predict, **s, api_name="/evaluate"))[0])
            return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bare_calls(cache: Path, device: torch.device, warmup: dict, settings: list[dict]) -> list[float]:
    from tvexplorer.science.evaluation import Evaluator
    evaluator = Evaluator(Cache.open(cache), device=device, precision="auto")  # as the app does
    call = lambda s: partial(evaluator.evaluate, s["method"], coefficients=s["coefficients"], scaling=s["scaling"],
                             vectors=s["vectors"])
    call(warmup)()
    return [timed(call(s))[0] for s in settings]


def bench_app(cache: Path, device: torch.device, requests: int, out_dir: Path) -> dict:
    """Round trips to the app's /evaluate (each with new settings) against Evaluator.evaluate in-process in
    the same precision, measured after the app has stopped so the two never compete for the cores."""
    warmup, *settings = _settings(Cache.open(cache).tasks, requests + 1)
    trips = _round_trips(cache, device, warmup, settings, out_dir / "app.log")
    bare = _bare_calls(cache, device, warmup, settings[:len(trips["round_trip"])])
    out = {"cache": str(cache), "device": str(device), "requests": len(trips["round_trip"]),
           **{k: _spread(v) for k, v in trips.items()}, "bare": _spread(bare)}
    out["overhead_median_diff"] = out["round_trip"]["median_s"] - out["bare"]["median_s"]  # seconds; noise can make it negative
    return out
