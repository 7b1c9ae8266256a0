"""Background runs for the app (ATM rounds, tuning and AdaMerging, filling the results table, adding a
task): one mechanism, with one notion of busy, cancelled, progress, start and end, and one GPU wrapper.

A run's work is a generator: it yields `Call`s (a module-level worker function and plain arguments: an
ATM round, a tuning run, one method of the results table), receives each call's result, and returns the
run's result. `start` drives it, at most one run of each kind per process:
- off ZeroGPU, in a background thread: the run goes on (and saves) if the browser tab closes;
- on ZeroGPU, inside the Gradio event that `follow` is iterated from (the visitor's), every call through
  the one `spaces.GPU` wrapper, asking for a duration computed from the time per step measured so far
  (at most `MAX_GPU_SECONDS`), so that ZeroGPU sees and charges the visitor who asked. Cancelling takes
  effect between calls, and within one where the worker checks its stop flag.
ZeroGPU runs a GPU function in a forked process, so workers take plain arguments and talk through a
control folder (`Control`: a `stop` flag and a throttled progress file), never through shared objects.

To add a kind of run: write a worker `fn(*args, control=Control, **kwargs)` and a work generator that
yields `Call(fn, args, kwargs)`, then `start(kind, label, work, settings)`; the app's tabs follow it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import described, first_line

MAX_GPU_SECONDS = 60      # per call: ZeroGPU's default, and within every visitor tier's quota
PIECE_SECONDS = MAX_GPU_SECONDS / 2  # the steps of one piece of a long run; the rest of the call is set-up and the end
GPU_MARGIN, GPU_OVERHEAD = 1.5, 5.0  # the measured time per step x margin + seconds for start-up

try:  # Hugging Face Spaces; a no-op outside ZeroGPU
    import spaces  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None


class Busy(ValueError):
    """A run of the same kind is going in this process."""


@dataclass
class Call:
    """One piece of a run's work: fn(*args, control=Control(folder), **kwargs) -> plain data.
    `steps`: how many progress steps it will take, where known (else the last call's count)."""
    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    steps: int | None = None


class Control:
    """The worker's side of the control folder: `stopped()` and `progress(done, total, text)`."""

    def __init__(self, folder: str | os.PathLike, every: float = 0.2):
        self.folder, self.every, self.last = Path(folder), every, 0.0

    def stopped(self) -> bool:
        return (self.folder / "stop").exists()

    def progress(self, done: int, total: int, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every and done < total:
            return
        self.last = now
        path = self.folder / "progress.json"
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"done": done, "total": total, "text": text}))
            os.replace(tmp, path)
        except OSError:
            pass  # progress is only shown: a full temp folder must not stop a run that saves elsewhere


def read_progress(folder: Path, previous: dict) -> dict:
    """The latest progress a worker wrote, else `previous` (not written yet, or mid-replace)."""
    try:
        return json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return previous


# ---------------------------------------------------------------- the one GPU wrapper

_SECONDS_PER_STEP: dict[str, float] = {}  # measured, by the worker's name


def gpu_seconds(call: Call, folder: str = "") -> int:
    """The GPU time to ask for: the measured time per step of this worker x the call's steps, with a
    margin, at most MAX_GPU_SECONDS; the maximum where nothing is measured yet."""
    per_step = _SECONDS_PER_STEP.get(call.fn.__name__)
    if per_step is None or not call.steps:
        return MAX_GPU_SECONDS
    return int(min(MAX_GPU_SECONDS, math.ceil(GPU_OVERHEAD + GPU_MARGIN * per_step * call.steps)))


def _invoke(call: Call, folder: str):
    return call.fn(*call.args, control=Control(folder), **call.kwargs)


ZERO_GPU = False
_on_gpu = _invoke


def use_spaces(module, zero_gpu: bool) -> None:
    """Wrap the calls with `module.GPU` (the `spaces` package, or a stand-in in tests); `zero_gpu`: run
    them inside the visitor's event instead of a background thread."""
    global ZERO_GPU, _on_gpu
    ZERO_GPU = bool(zero_gpu and module is not None)
    _on_gpu = module.GPU(duration=gpu_seconds)(_invoke) if ZERO_GPU else _invoke


use_spaces(spaces, os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true"))


class GpuRefused(ValueError):
    """ZeroGPU refused a call (the visitor's quota is used up, or the duration is over their maximum)."""


def quota_line(error: BaseException, kept: str = "Rounds and results finished before this are saved") -> str | None:
    """One clear line for ZeroGPU's refusals (quota used up, duration over the visitor's maximum); `kept`:
    what the visitor keeps."""
    text = first_line(error)
    if "quota" in text and "exceeded" in text or "GPU duration" in text:
        return (f"ZeroGPU refused the GPU: {text.split(' Create a free account')[0].split(' Subscribe')[0]} "
                f"{kept}; log in to Hugging Face for more daily GPU time, or try again later.")
    return None


def _record(call: Call, seconds: float, steps: int | None) -> None:
    """The time per step of `call`'s worker, for the next call's duration (gpu_seconds)."""
    if steps:
        _SECONDS_PER_STEP[call.fn.__name__] = seconds / steps


def gpu_call(call: Call, kept: str):
    """One call through the GPU wrapper outside any run, from the event that wants its result (on ZeroGPU,
    a short exact evaluation: the visitor's); GpuRefused with quota_line's line where ZeroGPU refuses it."""
    folder = tempfile.mkdtemp(prefix="tvexplorer-call-")
    started = time.monotonic()
    try:
        out = _on_gpu(call, folder)
    except Exception as e:
        line = quota_line(e, kept)
        if line is None:
            raise
        raise GpuRefused(line) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _record(call, time.monotonic() - started, call.steps)
    return out


# ---------------------------------------------------------------- runs

class Run:
    """One run: its kind, a label and settings for the status, progress, start and end, and outcome."""

    def __init__(self, kind: str, label: str, work: Generator, settings: dict, parts: int = 1):
        self.kind, self.label, self.settings, self._work, self.parts = kind, label, settings, work, max(1, parts)
        self.control = Path(tempfile.mkdtemp(prefix=f"tvexplorer-{kind}-"))
        self.started, self.ended = time.time(), None
        self.finished = threading.Event()
        self.outputs: list = []            # each finished call's result, in order
        self.result = None                 # what the work returned
        self.error: str | None = None
        self.cancel_requested = False
        self.complete = False              # the work ran to its end
        self.in_event = ZERO_GPU
        self._calls, self._progress = 0, {"done": 0, "total": 1, "text": "starting"}

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    @property
    def state(self) -> str:
        if self.running:
            return "cancelling" if self.cancel_requested else "running"
        if self.error:
            return "failed"
        return "finished" if self.complete else "cancelled"

    @property
    def seconds(self) -> float:
        return round((self.ended or time.time()) - self.started, 2)

    def progress(self) -> dict:
        """Steps over the whole run: the calls finished so far and the current call's own progress."""
        if self.running:
            self._progress = read_progress(self.control, self._progress)
        p = dict(self._progress)
        if self.parts > 1:  # the calls are alike (rounds, methods): scale the current one's steps to the run
            calls = min(self._calls, self.parts - 1)
            p["done"], p["total"] = calls * p["total"] + p["done"], self.parts * p["total"]
        return p

    def status(self) -> dict:
        return {"kind": self.kind, "state": self.state, **self.settings, "progress": self.progress(),
                "error": self.error, "seconds": self.seconds}

    def cancel(self) -> bool:
        if not self.running:
            return False
        self.cancel_requested = True
        try:
            (self.control / "stop").touch()
        except OSError:
            pass
        return True

    def _call(self, call: Call):
        started, before = time.monotonic(), read_progress(self.control, {}).get("done", 0)
        out = _on_gpu(call, str(self.control))
        last = read_progress(self.control, {})
        # the steps this call took: a piece of a run reports progress over the whole run (tune_work)
        steps = max(last.get("done", 0) - before, 0) or call.steps
        if not self.cancel_requested:
            _record(call, time.monotonic() - started, steps)
        self._last_steps = steps
        if self._calls + 1 < self.parts:  # the next call's progress starts from 0 of the same steps
            (self.control / "progress.json").unlink(missing_ok=True)
            self._progress = {"done": 0, "total": last.get("total") or steps or 1, "text": last.get("text", "")}
        return out

    def _drive(self) -> Iterator[None]:
        """Run the work's calls one after another, yielding after each; ends the run however it ends."""
        try:
            call = next(self._work)
            while not self.cancel_requested:
                if call.steps is None:
                    call.steps = getattr(self, "_last_steps", None)
                out = self._call(call)
                self.outputs.append(out)
                self._calls += 1
                yield
                call = self._work.send(out)
        except StopIteration as done:
            self.result, self.complete = done.value, not self.cancel_requested
        except Exception as e:  # reported as one line; details go to the server log
            if not self.cancel_requested:  # a worker that stops on the flag may raise; that is a cancel
                traceback.print_exc()
                self.error = quota_line(e) or described(e)
        finally:
            self._work.close()
            self._progress = read_progress(self.control, self._progress)
            shutil.rmtree(self.control, ignore_errors=True)
            self.ended = time.time()
            self.finished.set()
            _SLOTS[self.kind].release()

    def follow(self, every: float = 0.25) -> Iterator[None]:
        """Iterate from the event that wants to see the run: yields about every `every` seconds (in the
        background case) or after every call (on ZeroGPU, where iterating is what runs the calls)."""
        if self.in_event:
            yield from self._drive()
            return
        while not self.finished.wait(every):
            yield
        yield

    def wait(self) -> "Run":
        for _ in self.follow():
            pass
        return self


_SLOTS: dict[str, threading.Lock] = {}
_CURRENT: dict[str, Run] = {}
_GUARD = threading.Lock()


def current(kind: str) -> Run | None:
    """The running run of this kind, else the last one this process ran (or None)."""
    return _CURRENT.get(kind)


def busy(kind: str) -> bool:
    with _GUARD:
        slot = _SLOTS.get(kind)
    return slot is not None and slot.locked()


def busy_message(kind: str, what: str) -> str:
    run = _CURRENT.get(kind)
    now = f" ({run.label}; now at {run.progress().get('text', '')})" if run is not None and run.running else ""
    return f"busy: {what} is in progress{now}; only one runs at a time, try again when it has finished"


def start(kind: str, label: str, work: Generator, settings: dict | None = None, *, parts: int = 1,
          what: str | None = None) -> Run:
    """Start `work` as a run of `kind` (`parts`: the calls it will make, for the progress; `what`: how the
    busy message names it); Busy (one line) while another run of that kind is going. Off ZeroGPU it runs in
    a background thread at once; on ZeroGPU, as its `follow()` is iterated (by the event that started it)."""
    with _GUARD:
        slot = _SLOTS.setdefault(kind, threading.Lock())
    if not slot.acquire(blocking=False):
        work.close()
        raise Busy(busy_message(kind, what or f"another {kind} run"))
    try:
        run = Run(kind, label, work, dict(settings or {}), parts)
        _CURRENT[kind] = run
        if not run.in_event:
            driver = run._drive()
            threading.Thread(target=lambda: all(True for _ in driver), name=f"tvexplorer-{kind}", daemon=True).start()
    except BaseException:
        slot.release()
        raise
    return run


CANCEL_WAIT = 10.0  # seconds a canceller waits for the run to end


def cancel(kind: str, wait: float = 0.0) -> bool:
    """Ask the running run of this kind to stop; False when nothing runs. `wait`: at most this many seconds
    until it has ended, so that a page shows how it ended: a run that ends just before its canceller
    answers would otherwise leave the canceller's "cancelling" as the last word on screen."""
    run = _CURRENT.get(kind)
    if run is None or not run.cancel():
        return False
    run.finished.wait(wait)
    return True
