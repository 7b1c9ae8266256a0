"""ATM runs for the app: at most one per process, in a background thread, cancellable.

The worker takes only plain arguments and talks to the app through small files in a control folder
(a `stop` flag it checks between tasks, a throttled `progress.json`, and `saved`, the numbers of the
rounds it saved); the rounds themselves are read back from the cache's manifest, which `run_atm`
rewrites after each round. That keeps it working unchanged when Hugging Face's ZeroGPU runs a
`@spaces.GPU` function in a forked process.
A run that loses its browser tab goes on and saves its rounds; the app shows them on reload.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.errors import described
from ..science.atm import run_atm

try:  # Hugging Face Spaces: ask for a GPU for the duration of a run (a no-op outside ZeroGPU)
    import spaces  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None


class Busy(RuntimeError):
    """Another ATM run holds the process-wide lock."""


_RUN_LOCK = threading.Lock()   # held from start() until the worker thread ends
_STATE_LOCK = threading.Lock()
_CURRENT: "Job | None" = None
_EVALUATORS: "weakref.WeakValueDictionary[str, object]" = weakref.WeakValueDictionary()  # reusable evaluators, by key


def register_evaluator(key: str, evaluator) -> str:
    _EVALUATORS[key] = evaluator
    return key


class _ProgressFile:
    """progress(done, total, text) -> a small JSON file, written at most every `every` seconds."""

    def __init__(self, path: Path, every: float = 0.2):
        self.path, self.every, self.last = path, every, 0.0

    def __call__(self, done: int, total: int, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every and done < total:
            return
        self.last = now
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"done": done, "total": total, "text": text}))
            os.replace(tmp, self.path)
        except OSError:
            pass  # progress is only shown: a full temp folder must not stop a run that saves elsewhere


def read_progress(control_dir: Path, previous: dict) -> dict:
    """The latest progress a worker wrote into control_dir, else `previous` (not written yet, or mid-replace)."""
    try:
        return json.loads((control_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return previous


def atm_worker(cache_root: str, rounds: int, variant: str, control_dir: str, evaluator_key: str | None = None) -> int:
    """Run `rounds` more ATM rounds on the cache at `cache_root` (saved as they finish); returns how many finished."""
    device = str(resolve_device())
    cache = Cache.open(cache_root)
    evaluator = _EVALUATORS.get(evaluator_key) if evaluator_key else None
    if evaluator is not None and torch.device(evaluator.device).type != torch.device(device).type:
        evaluator = None
    control = Path(control_dir)
    stop = control / "stop"
    report = _ProgressFile(control / "progress.json")
    report(0, 1, f"preparing {variant} ATM on {device}", force=True)

    def note_saved(record: dict) -> None:
        with open(control / "saved", "a") as f:
            f.write(f"{record['round']}\n")
    records = run_atm(cache, rounds, variant=variant, device=device, evaluator=evaluator,
                      progress=report, on_round=note_saved, should_stop=stop.exists)
    return len(records)


def _gpu_seconds(cache_root, rounds, *args, **kwargs) -> int:
    return int(min(600, 60 + 90 * int(rounds)))


if spaces is not None:  # pragma: no cover - only on Hugging Face Spaces
    _run_worker = spaces.GPU(duration=_gpu_seconds)(atm_worker)
else:
    _run_worker = atm_worker


@dataclass
class Job:
    variant: str
    rounds: int
    cache_root: str
    start_count: int                       # rounds of this variant saved before the run
    control_dir: Path
    started: float = field(default_factory=time.time)
    finished: threading.Event = field(default_factory=threading.Event)
    ended: float | None = None
    completed: int = 0
    error: str | None = None
    cancel_requested: bool = False
    _last_progress: dict = field(default_factory=lambda: {"done": 0, "total": 1, "text": "starting"})

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def progress(self) -> dict:
        self._last_progress = read_progress(self.control_dir, self._last_progress)
        return dict(self._last_progress)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.running:
            try:
                (self.control_dir / "stop").touch()
            except OSError:
                pass

    @property
    def state(self) -> str:
        if self.running:
            return "cancelling" if self.cancel_requested else "running"
        if self.error:
            return "failed"
        if self.cancel_requested and self.completed < self.rounds:
            return "cancelled"
        return "finished"

    def status(self) -> dict:
        end = self.ended or time.time()
        return {"state": self.state, "variant": self.variant, "rounds_requested": self.rounds,
                "rounds_finished": self.completed, "progress": self.progress(), "error": self.error,
                "saved_to": self.cache_root, "seconds": round(end - self.started, 2)}


def current() -> Job | None:
    """The running job, else the last one this process ran (or None)."""
    return _CURRENT


def busy() -> bool:
    return _RUN_LOCK.locked()


def busy_message() -> str:
    job = _CURRENT
    what = f" ({job.variant}, {job.rounds} round(s); now at {job.progress().get('text', '')})" if job and job.running else ""
    return f"busy: another ATM run is in progress{what}; only one runs at a time, try again when it has finished"


def start(cache_root: str | os.PathLike, rounds: int, variant: str, start_count: int,
          evaluator_key: str | None = None) -> Job:
    """Start a run in a background thread; raises Busy when one is already running in this process."""
    global _CURRENT
    if not _RUN_LOCK.acquire(blocking=False):
        raise Busy(busy_message())
    try:
        job = Job(variant, int(rounds), str(cache_root), start_count, Path(tempfile.mkdtemp(prefix="tvexplorer-atm-")))
        with _STATE_LOCK:
            _CURRENT = job
        thread = threading.Thread(target=_run, args=(job, evaluator_key), name="tvexplorer-atm", daemon=True)
        thread.start()
    except BaseException:
        _RUN_LOCK.release()
        raise
    return job


def _run(job: Job, evaluator_key: str | None) -> None:
    try:
        job.completed = _run_worker(job.cache_root, job.rounds, job.variant, str(job.control_dir), evaluator_key)
    except Exception as e:  # reported to the app as one line; details go to the server log
        traceback.print_exc()
        job.error = described(e)
    finally:
        try:
            # What this run saved, as the worker noted it: a ZeroGPU worker may fail after saving rounds,
            # and the manifest may also hold rounds that another process saved meanwhile.
            job.completed = len((job.control_dir / "saved").read_text().split())
        except OSError:
            pass
        job.progress()
        job.ended = time.time()
        shutil.rmtree(job.control_dir, ignore_errors=True)
        job.finished.set()
        _RUN_LOCK.release()


def cancel() -> bool:
    """Ask the running job to stop after the task it is training; False when nothing runs."""
    job = _CURRENT
    if job is None or not job.running:
        return False
    job.cancel()
    return True
