"""The app's one background-run mechanism (tvexplorer/app/runs.py), and ZeroGPU emulated: a stand-in
`spaces` module records every GPU call (its thread, the duration it asks for, whether the visitor's
Gradio request and event are visible) and passes its arguments and result through pickle, as to a
worker process; the app's ATM, tuning and evaluation endpoints are driven through it."""
import pickle
import shutil
import threading
import time

import pytest

import apphelpers
from tvexplorer.app import runs, ui
from tvexplorer.app.runs import Call
from tvexplorer.core.cache import Cache

from gradio_client import Client  # noqa: E402  (after apphelpers turned analytics off)
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def count_steps(n: int, pause: float, *, control) -> int:
    """A worker: n steps, stopping early on the flag; returns the steps done."""
    for i in range(n):
        if control.stopped():
            return i
        time.sleep(pause)
        control.progress(i + 1, n, f"step {i + 1}", force=True)
    return n


def failing(*, control):
    raise ValueError("the worker's one-line complaint\nand a second line")


def parts(k: int, n: int, pause: float = 0.01):
    done = 0
    for _ in range(k):
        done += yield Call(count_steps, (n, pause))
    return done


def test_a_run_reports_progress_start_end_and_result():
    run = runs.start("toy", "three parts", parts(3, 4), {"parts": 3}, parts=3).wait()
    assert run.state == "finished" and run.result == 12 and run.outputs == [4, 4, 4] and run.error is None
    assert run.progress() == {"done": 12, "total": 12, "text": "step 4"}
    assert run.ended is not None and run.seconds == round(run.ended - run.started, 2)
    assert run.status()["parts"] == 3 and run.status()["state"] == "finished"
    assert not run.control.exists()  # the control folder goes with the run


def test_one_run_per_kind_and_cancel_between_calls():
    slow = runs.start("toy", "slow", parts(5, 20, 0.02), parts=5)
    with pytest.raises(runs.Busy, match="busy: another toy run is in progress .*slow"):
        runs.start("toy", "second", parts(1, 1))
    other = runs.start("other-toy", "beside it", parts(1, 1)).wait()  # another kind is not blocked
    assert other.state == "finished"
    assert runs.busy("toy") and slow.cancel() is True and slow.state == "cancelling"
    slow.wait()
    assert slow.state == "cancelled" and len(slow.outputs) < 5 and not runs.busy("toy")
    assert slow.cancel() is False and runs.cancel("toy") is False


def test_a_canceller_that_waits_sees_how_the_run_ended():
    """What a Cancel button shows is the end of the run, not a "cancelling" that nothing would replace."""
    slow = runs.start("toy", "slow", parts(5, 20, 0.02), parts=5)
    assert runs.cancel("toy", wait=10) is True
    assert not slow.running and slow.state == "cancelled" and not runs.busy("toy")


def test_a_failing_worker_is_one_line_and_frees_the_slot():
    def work():
        yield Call(failing)
    run = runs.start("toy", "fails", work()).wait()
    assert run.state == "failed" and run.error == "ValueError: the worker's one-line complaint"
    assert not runs.busy("toy")


def test_requested_gpu_seconds_follow_the_measured_time_per_step(monkeypatch):
    call = Call(count_steps, (10, 0.0), steps=10)
    monkeypatch.setattr(runs, "_SECONDS_PER_STEP", {})
    assert runs.gpu_seconds(call) == runs.MAX_GPU_SECONDS  # nothing measured yet: the most a call may ask
    runs._SECONDS_PER_STEP["count_steps"] = 0.5
    assert runs.gpu_seconds(call) == 13  # 5 s start-up + 1.5 x 0.5 s x 10 steps
    runs._SECONDS_PER_STEP["count_steps"] = 100.0
    assert runs.gpu_seconds(call) == runs.MAX_GPU_SECONDS


def part_of_a_run(start: int, steps: int, total: int, *, control) -> int:
    """A worker that does `steps` steps of a run of `total`, reporting progress over the whole run (as a piece
    of a tuning run does)."""
    for i in range(steps):
        time.sleep(0.05)
        control.progress(start + i + 1, total, f"step {start + i + 1}", force=True)
    return steps


def test_the_time_per_step_of_a_piece_counts_the_steps_that_piece_took(monkeypatch):
    """Three pieces of 2 steps of a 6-step run: each call took 2 steps (not the run's 6), so the next call asks
    for 2 steps' time."""
    monkeypatch.setattr(runs, "_SECONDS_PER_STEP", {})
    asked = []
    real = runs.gpu_seconds
    monkeypatch.setattr(runs, "_on_gpu", lambda call, folder: asked.append((call.steps, real(call))) or runs._invoke(call, folder))

    def work():
        for start in (0, 2, 4):
            yield Call(part_of_a_run, (start, 2, 6))
    run = runs.start("toy", "pieces", work()).wait()
    assert run.state == "finished" and run.outputs == [2, 2, 2]
    assert runs._SECONDS_PER_STEP["part_of_a_run"] >= 0.05  # at least the 0.05 s each step sleeps
    assert asked[0] == (None, runs.MAX_GPU_SECONDS)  # nothing measured yet
    assert [steps for steps, _ in asked[1:]] == [2, 2] and all(seconds < runs.MAX_GPU_SECONDS for _, seconds in asked[1:])


def test_quota_refusals_become_one_clear_line():
    refusal = Exception("You have exceeded your free GPU quota (60s requested vs. 31s left). Create a free account "
                        "to get more usage quota.")
    line = runs.quota_line(refusal)
    assert line.startswith("ZeroGPU refused the GPU: You have exceeded your free GPU quota (60s requested vs. 31s left).")
    assert "Create a free account" not in line and "log in to Hugging Face" in line and "\n" not in line
    assert runs.quota_line(ValueError("steps is 0")) is None


# ---------------------------------------------------------------- ZeroGPU, emulated

class StandInSpaces:
    """Records each @spaces.GPU call: thread, requested seconds, the visitor's request and event."""

    def __init__(self):
        self.calls, self.refuse_after = [], None

    def GPU(self, duration=60):
        def decorate(fn):
            def on_gpu(*args, **kwargs):
                from gradio.context import LocalContext
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                self.calls.append({"thread": threading.current_thread().name, "seconds": seconds,
                                   "request": LocalContext.request.get(None) is not None,
                                   "event": LocalContext.event_id.get(None)})
                if self.refuse_after is not None and len(self.calls) > self.refuse_after:
                    raise RuntimeError(f"You have exceeded your GPU quota ({seconds}s requested vs. 12s left). "
                                       "Create a free account to get more usage quota.")
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # as to a ZeroGPU worker process
                return pickle.loads(pickle.dumps(fn(*args, **kwargs)))
            return on_gpu
        return decorate


@pytest.fixture(scope="module")
def zero_gpu(quick_demo, tmp_path_factory):
    """(client, cache folder, stand-in): the app on a writable copy of the quick demo, as on ZeroGPU."""
    spaces = StandInSpaces()
    runs.use_spaces(spaces, zero_gpu=True)
    root = tmp_path_factory.mktemp("zerogpu") / "cache"
    shutil.copytree(quick_demo, root)
    try:
        with apphelpers.running_app(ui.load(root, device="cpu", read_only=False)) as url:
            yield Client(url, verbose=False), root, spaces
    finally:
        runs.use_spaces(None, zero_gpu=False)


def check_calls(calls):
    assert calls, "no GPU call was made"
    for c in calls:
        assert c["request"] and c["event"] is not None, c      # the visitor's request and event are visible
        assert not c["thread"].startswith("tvexplorer-"), c    # no background thread of ours
        assert 1 <= c["seconds"] <= runs.MAX_GPU_SECONDS, c


def test_atm_on_zero_gpu_runs_one_call_per_round_in_the_visitors_event(zero_gpu):
    client, root, spaces = zero_gpu
    spaces.calls.clear()
    before = len(Cache.open(root).manifest.atm_rounds("standard"))
    r = client.predict(rounds=3, variant="standard", api_name="/atm")
    assert r["state"] == "finished" and r["rounds_finished"] == 3
    assert len(Cache.open(root).manifest.atm_rounds("standard")) == before + 3
    assert len(spaces.calls) == 3
    check_calls(spaces.calls)
    assert len({c["event"] for c in spaces.calls}) == 1  # all three from the one event that asked


def test_long_tuning_on_zero_gpu_goes_in_pieces_that_give_what_one_piece_gives(zero_gpu, monkeypatch):
    """Each GPU call holds about PIECE_SECONDS of steps (here 0: one step each), going on from the state the
    last one saved; the visitor's event makes every call, and the result is the one-call result."""
    client, root, spaces = zero_gpu
    spaces.calls.clear()
    whole = client.predict(objective="entropy", per_layer=False, steps=4, api_name="/tune")["result"]
    assert len(spaces.calls) == 1
    monkeypatch.setattr(runs, "PIECE_SECONDS", 0.0)
    spaces.calls.clear()
    pieces = client.predict(objective="entropy", per_layer=False, steps=4, api_name="/tune")["result"]
    assert len(spaces.calls) >= 4  # at least one step per call
    check_calls(spaces.calls)
    assert len({c["event"] for c in spaces.calls}) == 1
    assert pieces["coefficients"] == whole["coefficients"] and pieces["accuracy"] == whole["accuracy"]
    assert not runs.busy("tuning")


def test_tuning_on_zero_gpu_and_a_visitor_out_of_quota(zero_gpu):
    client, root, spaces = zero_gpu
    spaces.calls.clear()
    r = client.predict(objective="accuracy", per_layer=False, steps=3, api_name="/tune")
    assert r["result"]["method"] == "task_arithmetic" and len(spaces.calls) == 1
    check_calls(spaces.calls)
    spaces.calls.clear()
    spaces.refuse_after = 1  # the second round is refused: the first stays saved, the visitor reads one line
    before = len(Cache.open(root).manifest.atm_rounds("standard"))
    try:
        with pytest.raises(AppError, match=r"ZeroGPU refused the GPU: You have exceeded your GPU quota .*12s left") as e:
            client.predict(rounds=3, variant="standard", api_name="/atm")
    finally:
        spaces.refuse_after = None
    assert "\n" not in str(e.value) and "1 saved round" in str(e.value)
    assert len(Cache.open(root).manifest.atm_rounds("standard")) == before + 1
    assert not runs.busy("atm")


def test_a_cache_planned_for_the_gpu_evaluates_in_one_short_call_from_the_visitors_event(quick_demo, tmp_path):
    """A plan that chose the GPU (too slow on the Space's CPU): every exact evaluation is one GPU call made by
    the visitor's event, asking for a duration from the measured time per image; what it returns is what
    the CPU computes, memoised; a visitor out of quota reads one line. The header says where it runs. (Settings
    off the scaling grid: the merges the cache records at their best scaling need no evaluation at all.)"""
    from tvexplorer.app.explorer import Explorer
    from tvexplorer.pipeline import evalplan
    plan = evalplan.plan_evaluation(Cache.open(quick_demo), "zero-a10g", device="cuda", images_per_second=1.0)
    assert plan.device == "cuda"
    (tmp_path / evalplan.PLAN_FILE).write_text(evalplan.plan_text(plan))
    spaces = StandInSpaces()
    runs.use_spaces(spaces, zero_gpu=True)
    try:
        app = ui.load(quick_demo, device="cpu", workdir=tmp_path / "work", plan_folder=tmp_path)
        assert "exact evaluation on the GPU (zero-a10g), one short GPU call each" in app.header()
        local = Explorer(quick_demo, device="cpu", workdir=tmp_path / "local")
        with apphelpers.running_app(app) as url:
            client = Client(url, verbose=False)
            first = client.predict(method="ties", scaling=0.83, api_name="/evaluate")
            assert first["accuracy"] == local.evaluate("ties", scaling=0.83)["accuracy"]
            assert len(spaces.calls) == 1
            check_calls(spaces.calls)
            assert client.predict(method="ties", scaling=0.83, api_name="/evaluate")["accuracy"] == first["accuracy"]
            assert len(spaces.calls) == 1  # the same merge again: from the memo, no GPU call
            second = client.predict(method="task_arithmetic", scaling=0.37, api_name="/evaluate")
            assert second["accuracy"] == local.evaluate("task_arithmetic", scaling=0.37)["accuracy"]
            assert len(spaces.calls) == 2 and spaces.calls[1]["seconds"] < runs.MAX_GPU_SECONDS  # measured by now
            check_calls(spaces.calls)
            round_one = client.predict(method="atm:standard:1", scaling=0.5, api_name="/evaluate")  # a saved round, rescaled
            assert round_one["accuracy"] == local.evaluate("atm:standard:1", scaling=0.5)["accuracy"]
            assert len(spaces.calls) == 3
            check_calls(spaces.calls)
            spaces.refuse_after = 3
            with pytest.raises(AppError, match=r"ZeroGPU refused the GPU: You have exceeded your GPU quota .*12s left\)"
                                               r"\. The numbers on screen stay as they were; log in") as e:
                client.predict(method="task_arithmetic", scaling=0.53, api_name="/evaluate")
            assert "\n" not in str(e.value)
            # where the page opens (task arithmetic at its recorded best scaling): no GPU call, even out of quota
            ta = Cache.open(quick_demo).manifest.metrics.merge("task_arithmetic")
            assert client.predict(method="task_arithmetic", scaling=ta.best_scaling, api_name="/evaluate")["accuracy"] == ta.accuracy
            assert len(spaces.calls) == 4  # the three above and the refused one
    finally:
        runs.use_spaces(None, zero_gpu=False)


def test_a_worker_process_without_the_explorers_evaluator_builds_one_like_it(quick_demo, tmp_path):
    """A ZeroGPU worker forked before an explorer (re)registered its evaluator does not find it under the new key
    (every evaluator gets a key of its own) and builds one like it: the same cache, subsets and numbers."""
    import dataclasses
    from tvexplorer.app import work
    from tvexplorer.science.evaluation import Evaluator
    cache = Cache.open(quick_demo)
    evaluator = Evaluator(cache, device="cpu", subset_sizes={t: 12 for t in cache.tasks})
    source = work.register_evaluator(evaluator)
    assert source.on("cpu") is evaluator and work.register_evaluator(evaluator).key != source.key
    elsewhere = dataclasses.replace(source, key="registered-after-this-process-was-forked")
    built = elsewhere.on("cpu")
    assert built is not evaluator and {t: len(s) for t, s in built.sets.items()} == {t: 12 for t in cache.tasks}
    accuracy = work.exact_accuracy(elsewhere, "task_arithmetic", {"scaling": 0.5}, control=runs.Control(tmp_path))
    assert accuracy == dict(evaluator.evaluate_tasks("task_arithmetic", scaling=0.5))


def test_atm_rounds_of_a_cache_planned_for_the_gpu_go_in_pieces_that_give_the_same_rounds(quick_demo, tmp_path):
    """Where exact evaluation needs a GPU call (a large model), so does an ATM round: on ZeroGPU one call per
    task (its update, saved aside) and one for the merge, each short; the rounds saved are exactly those
    that one call per round saves."""
    import torch
    from tvexplorer.app.explorer import Explorer
    from tvexplorer.pipeline import evalplan
    plan = evalplan.plan_evaluation(Cache.open(quick_demo), "zero-a10g", device="cuda", images_per_second=1.0)
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    shutil.copytree(quick_demo, whole)
    shutil.copytree(quick_demo, pieces)
    assert Explorer(whole, device="cpu", read_only=False).start_atm(2, "adaptive").wait().result == 2
    spaces = StandInSpaces()
    runs.use_spaces(spaces, zero_gpu=True)
    try:
        ex = Explorer(pieces, device="cpu", read_only=False, plan=plan)
        assert ex.exact_in_gpu_calls
        run = ex.start_atm(2, "adaptive").wait()
    finally:
        runs.use_spaces(None, zero_gpu=False)
    assert run.state == "finished" and run.result == 2 and ex.atm_status()["rounds_finished"] == 2
    assert len(spaces.calls) == 2 * (len(ex.tasks) + 1) and all(c["seconds"] <= runs.MAX_GPU_SECONDS for c in spaces.calls)
    # each task's call asks for its own steps' time, measured since the first (no longer the most a call may ask)
    assert spaces.calls[0]["seconds"] == runs.MAX_GPU_SECONDS and spaces.calls[1]["seconds"] < runs.MAX_GPU_SECONDS
    expected, got = Cache.open(whole), Cache.open(pieces)
    for k in (1, 2):
        assert got.manifest.atm_round("adaptive", k).accuracy == expected.manifest.atm_round("adaptive", k).accuracy
        assert torch.equal(got.atm_delta("adaptive", k), expected.atm_delta("adaptive", k))


def test_the_merge_piece_refuses_updates_made_for_a_round_that_another_run_saved_meanwhile(demo_copy, tmp_path):
    from tvexplorer.app import work
    from tvexplorer.science.atm import run_atm
    state = tmp_path / "state"
    state.mkdir()
    control = runs.Control(tmp_path)
    before = len(Cache.open(demo_copy).manifest.atm_rounds("standard"))
    for task in Cache.open(demo_copy).tasks:  # the pieces of the next round ...
        assert work.atm_task(str(demo_copy), "standard", task, str(state), 1, control=control) == 0
    run_atm(Cache.open(demo_copy), 1, "standard", device="cpu")  # ... while another run saves that round
    with pytest.raises(ValueError, match=f"another run saved round {before + 1} meanwhile; press the button again"):
        work.atm_merge(str(demo_copy), "standard", str(state), None, control=control)
    assert len(Cache.open(demo_copy).manifest.atm_rounds("standard")) == before + 1  # nothing more saved
