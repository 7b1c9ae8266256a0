"""A CPU Space's exact evaluation sized to its hardware (pipeline/evalplan.py), on the shipped demo (read only)."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tvexplorer.core.cache import Cache
from tvexplorer.core.split import seeded_subset
from tvexplorer.pipeline import evalplan
from tvexplorer.science.evaluation import Evaluator

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


@pytest.fixture(scope="module")
def demo():
    return Cache.open(DEMO)


@pytest.fixture
def fixed_timing(monkeypatch):
    def measure(encoder_info, threads, *args, **kwargs):
        return evalplan.Timing(images_per_second=200.0, median_images_per_second=150.0, batch=64, load_seconds=1.0)
    monkeypatch.setattr(evalplan, "measure_encoder", measure)


def test_a_cpu_plan_gives_every_task_the_same_share_of_the_time(demo, fixed_timing):
    # 9 tasks of 250 stored test images; (4 s - 1 s of loading) * 200 images/s / 9 tasks = 66.7
    plan = evalplan.plan_evaluation(demo, "cpu-basic")
    assert plan.images == {t: 66 for t in demo.tasks} and plan.stored == {t: 250 for t in demo.tasks}
    assert plan.seconds == pytest.approx(1.0 + 9 * 66 / 200) and plan.seconds <= evalplan.DEFAULT_SECONDS
    assert not plan.full and plan.for_cache(demo) is plan and plan.subset_sizes == plan.images
    assert "66 test images per task (594 of 2250 stored)" in plan.describe() and "2 vCPU" in plan.describe()
    # room for everything: the whole stored subsets, and nothing for the Evaluator to cut
    roomy = evalplan.plan_evaluation(demo, "cpu-basic", target_seconds=60)
    assert roomy.full and roomy.subset_sizes is None and "all 2250 stored test images" in roomy.describe()
    # no room: at least MIN_IMAGES per task, and the estimate says it takes longer than asked
    tight = evalplan.plan_evaluation(demo, "cpu-basic", target_seconds=0.5)
    assert set(tight.images.values()) == {evalplan.MIN_IMAGES} and tight.seconds > 0.5


def test_a_given_speed_is_not_timed_and_a_gpu_plan_takes_everything(demo, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("the encoder was timed")
    monkeypatch.setattr(evalplan, "measure_encoder", no_timing)
    plan = evalplan.plan_evaluation(demo, "cpu-basic", target_seconds=2.0, images_per_second=90.0)
    assert plan.basis == "given" and plan.images_per_second == 90.0 and plan.load_seconds >= 0
    assert plan.images == {t: max(evalplan.MIN_IMAGES, int((2.0 - plan.load_seconds) * 90 / 9)) for t in demo.tasks}
    with pytest.raises(ValueError, match="no vCPU count known"):
        evalplan.plan_evaluation(demo, "t4-small")
    with pytest.raises(ValueError, match="must be positive"):
        evalplan.plan_evaluation(demo, "cpu-basic", images_per_second=-1)


def test_on_zerogpu_the_device_is_chosen_by_cost(demo):
    """The GPU only where one exact evaluation of every stored image would be slow on the Space's CPU: the
    demo (2250 images of a small encoder) stays on the CPU; a cache as slow as a ViT-B/32 goes to the GPU."""
    fast = evalplan.plan_evaluation(demo, "zero-a10g", device="cuda", images_per_second=5000.0)
    assert fast.device == "cpu" and fast.full and fast.seconds <= evalplan.DEFAULT_SECONDS
    assert fast.describe().startswith("exact evaluation on the CPU (zero-a10g, 2 vCPU), on all 2250 stored test images")
    slow = evalplan.plan_evaluation(demo, "zero-a10g", device="cuda", images_per_second=16.0)  # 2250 / 16 = 141 s
    assert slow.device == "cuda" and slow.full and slow.images_per_second is None
    assert slow.describe().startswith("exact evaluation on the GPU (zero-a10g), one short GPU call each, on all 2250 "
                                      "stored test images (on the Space's CPU: 141 s")


def test_a_task_added_since_the_plan_extends_it(demo, fixed_timing):
    """The demo's cache seen as a plan's cache plus one task added in the app: the new task gets as many images
    as the others on a CPU (and the estimate grows), all of its images on the GPU."""
    def without_last_task(plan):
        last = demo.tasks[-1]
        return dataclasses.replace(plan, images={t: n for t, n in plan.images.items() if t != last},
                                   stored={t: n for t, n in plan.stored.items() if t != last})
    cpu = evalplan.plan_evaluation(demo, "cpu-basic")
    extended = without_last_task(cpu).for_cache(demo)
    assert extended.images == cpu.images and extended.stored == cpu.stored and extended.seconds == cpu.seconds
    assert extended.basis.endswith("; timed before 1 task(s) were added") and extended.subset_sizes == cpu.images
    gpu = evalplan.plan_evaluation(demo, "zero-a10g", device="cuda", images_per_second=16.0)
    assert without_last_task(gpu).for_cache(demo).images == gpu.stored
    unrelated = dataclasses.replace(cpu, stored={**cpu.stored, demo.tasks[0]: 100})
    assert unrelated.for_cache(demo) is None


def test_the_encoder_is_timed_and_the_thread_setting_given_back(demo):
    before = torch.get_num_threads()
    timing = evalplan.measure_encoder(demo.manifest.model.encoder, threads=1, seconds=0.2)
    assert torch.get_num_threads() == before
    assert timing.images_per_second >= timing.median_images_per_second > 0 and timing.load_seconds > 0
    assert evalplan.TIMING_BATCH <= timing.batch <= evalplan.MAX_BATCH


def test_the_plan_round_trips_and_is_refused_for_another_cache(demo, fixed_timing, tmp_path):
    assert evalplan.read_plan(tmp_path) is None  # a local run: no plan, every stored image
    plan = evalplan.plan_evaluation(demo, "cpu-basic")
    (tmp_path / evalplan.PLAN_FILE).write_text(evalplan.plan_text(plan))
    assert evalplan.read_plan(tmp_path) == plan and plan.for_cache(demo) is plan
    other = dataclasses.replace(plan, stored={**plan.stored, "digits": 500})  # made for another cache
    assert other.for_cache(demo) is None
    (tmp_path / evalplan.PLAN_FILE).write_text(json.dumps({"hardware": "cpu-basic"}))
    with pytest.raises(ValueError, match="not an evaluation plan") as e:
        evalplan.read_plan(tmp_path)
    assert len(str(e.value).splitlines()) == 1


def test_the_evaluator_scores_each_task_on_the_planned_seeded_subset(demo):
    full = Evaluator(demo, device="cpu")
    sizes = {"digits": 40, "letters": 17, "signs": 250}  # 250: everything stored, left as it is
    planned = Evaluator(demo, device="cpu", subset_sizes=sizes)
    assert {t: len(planned.sets[t]) for t in sizes} == sizes and len(planned.sets["scenes"]) == 250
    predicted, everything = planned.predictions(tasks=list(sizes)), full.predictions(tasks=list(sizes))
    for task, n in sizes.items():
        positions = seeded_subset(250, n, 0)  # Split.take(n): seed 0
        assert torch.equal(predicted[task], everything[task][positions])
        assert torch.equal(planned.sets[task].labels, full.sets[task].labels[positions])


def test_the_app_evaluates_on_the_plan_pushed_beside_it_and_says_so(demo, fixed_timing, tmp_path):
    from tvexplorer.app import ui
    plan = evalplan.plan_evaluation(demo, "cpu-basic")
    assert not plan.full
    (tmp_path / evalplan.PLAN_FILE).write_text(evalplan.plan_text(plan))
    app = ui.load(DEMO, device="cpu", workdir=tmp_path / "work", plan_folder=tmp_path)
    assert {t: len(app.ex.evaluator.sets[t]) for t in demo.tasks} == plan.images
    assert plan.describe() in app.header()
    other = dataclasses.replace(plan, stored={**plan.stored, "digits": 500})  # made for another cache: not applied
    (tmp_path / evalplan.PLAN_FILE).write_text(evalplan.plan_text(other))
    app = ui.load(DEMO, device="cpu", workdir=tmp_path / "work", plan_folder=tmp_path)
    assert {t: len(app.ex.evaluator.sets[t]) for t in demo.tasks} == plan.stored
    assert f"exact evaluation on cpu in float32, on all {sum(plan.stored.values())} stored test images" in app.header()


def test_on_zerogpu_without_a_plan_for_the_cache_the_app_chooses_the_device_at_start_up(demo, fixed_timing,
                                                                                           monkeypatch, tmp_path):
    """A Space that serves a cache through TVEXPLORER_CACHE has no plan made for it: on ZeroGPU the app times the
    encoder when it starts and chooses the device by the same rule; the header says which."""
    import types
    from tvexplorer.app import runs, ui
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    runs.use_spaces(types.SimpleNamespace(GPU=lambda duration: (lambda fn: fn)), zero_gpu=True)
    try:
        slow = ui.load(DEMO, workdir=tmp_path / "work", plan_folder=tmp_path)  # 200 images/s: 12 s for 2250 images
        assert slow.ex.plan.device == "cuda" and slow.ex.exact_in_gpu_calls
        assert str(slow.ex.evaluator.device) == "cpu"  # the app's own evaluator: the GPU is lent only inside calls
        assert "exact evaluation on the GPU (zero-a10g), one short GPU call each" in slow.header()
        monkeypatch.setattr(evalplan, "measure_encoder", lambda *a, **k: evalplan.Timing(5000.0, 5000.0, 64, 0.1))
        fast = ui.load(DEMO, workdir=tmp_path / "work", plan_folder=tmp_path)
        assert fast.ex.plan.device == "cpu" and not fast.ex.exact_in_gpu_calls
        assert "exact evaluation on the CPU (zero-a10g, 2 vCPU), on all 2250 stored test images" in fast.header()
    finally:
        runs.use_spaces(None, zero_gpu=False)
