"""`space`: the Space's files, README front matter and requirements, pushed through a mocked HfApi (no
network here: what the hub itself does with the upload is not exercised)."""
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest

from huggingface_hub import HfApi, Volume

from tvexplorer.cli import main
from tvexplorer.pipeline import evalplan, space

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


class FakeRuntime:
    def __init__(self, hardware, volumes=None):
        self.hardware, self.requested_hardware, self.volumes = hardware, None, volumes


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records each call and what the staged folder held then, and
    checks every call's arguments against the installed HfApi's signature of that method.
    `existing`: the runtime of a Space that exists already (None: it does not)."""
    calls: list = []
    fail_with: Exception | None = None
    existing: FakeRuntime | None = None

    def __init__(self, *args, **kwargs):
        FakeHub.calls.append(("init", args, kwargs))

    def __getattribute__(self, name):
        method = object.__getattribute__(self, name)
        if name.startswith("_") or not callable(method):
            return method

        def checked(*args, **kwargs):
            inspect.signature(getattr(HfApi, name)).bind(self, *args, **kwargs)  # TypeError if HfApi takes no such call
            return method(*args, **kwargs)
        return checked

    def repo_exists(self, repo_id, repo_type=None):
        return FakeHub.existing is not None

    def create_repo(self, repo_id, **kwargs):
        FakeHub.calls.append(("create_repo", repo_id, kwargs))
        if FakeHub.fail_with:
            raise FakeHub.fail_with

    def get_space_runtime(self, repo_id):
        return FakeHub.existing

    def request_space_hardware(self, repo_id, hardware, **kwargs):
        FakeHub.calls.append(("request_space_hardware", repo_id, hardware))

    def create_bucket(self, bucket_id, **kwargs):
        FakeHub.calls.append(("create_bucket", bucket_id, kwargs))

    def set_space_volumes(self, repo_id, volumes):
        FakeHub.calls.append(("set_space_volumes", repo_id, volumes))

    def add_space_variable(self, repo_id, key, value, **kwargs):
        FakeHub.calls.append(("add_space_variable", repo_id, key, value))

    def upload_folder(self, *, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        texts = {k: files[k].read_text() for k in ("README.md", "requirements.txt", evalplan.PLAN_FILE)}
        FakeHub.calls.append(("upload_folder", folder, kwargs, sorted(files), texts,
                              {k: p.stat().st_size for k, p in files.items()}))


@pytest.fixture
def hub(monkeypatch):
    FakeHub.calls, FakeHub.fail_with, FakeHub.existing = [], None, None
    monkeypatch.setattr(space, "HfApi", FakeHub)
    return FakeHub


@pytest.fixture
def timing(monkeypatch):
    """The encoder timing that plans a CPU Space, fixed (the planning itself has its own tests)."""
    calls = []

    def measure(encoder_info, threads, *args, **kwargs):
        calls.append(threads)
        return evalplan.Timing(images_per_second=100.0, median_images_per_second=90.0, batch=64, load_seconds=0.5)
    monkeypatch.setattr(evalplan, "measure_encoder", measure)
    return calls


def front_matter(readme: str) -> dict:
    block = re.match(r"---\n(.*?)\n---\n", readme, re.DOTALL)[1]
    return {k.strip(): v.strip().strip('"') for k, v in (line.split(":", 1) for line in block.splitlines())}


def pin(requirements: str, package: str) -> str:
    return re.search(rf"^{package}==(\S+)$", requirements, re.MULTILINE)[1]


def test_push_uploads_the_app_package_and_cache_with_cpu_torch(hub, timing, capsys):
    assert main(["space", "me/tvx"]) == 0
    assert "https://huggingface.co/spaces/me/tvx" in capsys.readouterr().out
    (_, repo, create), = [c for c in hub.calls if c[0] == "create_repo"]
    assert repo == "me/tvx" and create == {"repo_type": "space", "space_sdk": "gradio", "exist_ok": True,
                                           "space_hardware": "cpu-basic", "space_volumes": None, "space_variables": None}
    (_, folder, kwargs, files, texts, sizes), = [c for c in hub.calls if c[0] == "upload_folder"]
    assert kwargs["repo_id"] == "me/tvx" and kwargs["repo_type"] == "space"
    assert kwargs["ignore_patterns"] == space.IGNORE_PATTERNS and kwargs["delete_patterns"] == space.DELETE_PATTERNS
    assert not folder.exists()  # the staging folder is cleaned up
    # the app, every module of the package, and every file the demo's manifest lists
    manifest = json.loads((DEMO / "manifest.json").read_text())
    expected = {"app.py", "tvexplorer/cli/space.py", "tvexplorer/demo/recipe.json", "assets/demo/manifest.json",
                *(f"assets/demo/{rel}" for rel in manifest["files"])}
    assert expected <= set(files)
    assert all(sizes[f"assets/demo/{rel}"] == entry["size"] for rel, entry in manifest["files"].items())
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or "/." in f or f.startswith(".tvx")]
    # its own README front matter and CPU-only torch
    source_requirements = (ROOT / "requirements.txt").read_text()
    front = front_matter(texts["README.md"])
    assert front["sdk"] == "gradio" and front["sdk_version"] == pin(source_requirements, "gradio")
    assert front["app_file"] == "app.py" and front["suggested_hardware"] == "cpu-basic" and front["python_version"] == "3.12"
    assert front["title"] == "Task Vector Explorer"  # the project's own keys are kept
    requirements = texts["requirements.txt"]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert pin(requirements, "torch") == pin(source_requirements, "torch") + "+cpu"
    assert pin(requirements, "torchvision") == pin(source_requirements, "torchvision") + "+cpu"
    assert pin(requirements, "gradio") == pin(source_requirements, "gradio")


def test_zerogpu_space_is_created_on_zerogpu_with_the_documented_python_and_torch(hub, timing, capsys):
    assert main(["space", "me/tvx", "--hardware", "zerogpu"]) == 0
    out = capsys.readouterr().out
    (_, _, create), = [c for c in hub.calls if c[0] == "create_repo"]
    assert create["space_hardware"] == "zero-a10g"  # requested at creation, not only suggested
    assert [c[0] for c in hub.calls if c[0] != "init"] == ["create_repo", "upload_folder"]
    (_, _, _, _, texts, _), = [c for c in hub.calls if c[0] == "upload_folder"]
    front = front_matter(texts["README.md"])
    assert front["python_version"] == "3.12.12" and front["suggested_hardware"] == "zero-a10g"
    requirements = texts["requirements.txt"]
    assert pin(requirements, "torch") == "2.11.0" and pin(requirements, "torchvision") == "0.26.0"
    assert "+cpu" not in requirements and "--extra-index-url" not in requirements
    assert "https://huggingface.co/docs/hub/spaces-zerogpu" in requirements
    source = (ROOT / "requirements.txt").read_text()  # every other pin has Python 3.12 wheels and stays
    assert pin(requirements, "numpy") == pin(source, "numpy") and pin(requirements, "pandas") == pin(source, "pandas")
    # the account limits are said; at 100 images/s one exact evaluation of every stored image would take 23 s on
    # the Space's CPU, so it goes to the GPU
    assert "free personal account in good standing" in out and "up to 2 ZeroGPU Spaces, PRO up to 10" in out
    plan = json.loads(texts[evalplan.PLAN_FILE])
    assert plan["device"] == "cuda" and plan["images"] == plan["stored"] and timing == [evalplan.GPU_FLAVOR_CPUS]
    assert ("Exact evaluation on the GPU (zero-a10g), one short GPU call each, on all 2250 stored test images "
            "(on the Space's CPU: 23 s") in texts["README.md"]


def test_an_existing_space_is_moved_to_the_hardware_and_bucket(hub, timing, capsys):
    hub.existing = FakeRuntime("cpu-basic", volumes=[Volume(type="model", source="me/m", mount_path="/models")])
    assert main(["space", "me/tvx", "--hardware", "zerogpu", "--bucket", "me/tvx-work"]) == 0
    names = [c[0] for c in hub.calls if c[0] != "init"]
    assert "create_repo" not in names and names[-1] == "upload_folder"
    assert ("request_space_hardware", "me/tvx", "zero-a10g") in hub.calls
    (_, _, volumes), = [c for c in hub.calls if c[0] == "set_space_volumes"]
    assert [(v.type, v.source, v.mount_path) for v in volumes] == [("model", "me/m", "/models"), ("bucket", "me/tvx-work", "/data")]
    assert ("add_space_variable", "me/tvx", "TVEXPLORER_WORKDIR", "/data/tvexplorer-work") in hub.calls
    assert "asked to move to zero-a10g" in capsys.readouterr().out
    # pushed again: the hardware and the bucket are in place, nothing is requested
    hub.calls, hub.existing = [], FakeRuntime("zero-a10g", volumes=volumes)
    assert main(["space", "me/tvx", "--hardware", "zerogpu", "--bucket", "me/tvx-work"]) == 0
    assert not [c for c in hub.calls if c[0] in ("request_space_hardware", "set_space_volumes", "create_repo")]
    assert "already on zero-a10g" in capsys.readouterr().out


def test_a_new_space_with_a_bucket_mounts_it_and_points_the_work_folder_there(hub, timing, capsys):
    assert main(["space", "me/tvx", "--bucket", "me/tvx-work"]) == 0
    assert ("create_bucket", "me/tvx-work", {"private": True, "exist_ok": True}) in hub.calls
    (_, _, create), = [c for c in hub.calls if c[0] == "create_repo"]
    (volume,) = create["space_volumes"]
    assert (volume.type, volume.source, volume.mount_path) == ("bucket", "me/tvx-work", "/data")
    assert create["space_variables"] == [{"key": "TVEXPLORER_WORKDIR", "value": "/data/tvexplorer-work"}]
    (_, _, _, _, texts, _), = [c for c in hub.calls if c[0] == "upload_folder"]
    assert "Storage Bucket me/tvx-work" in texts["README.md"] and "survive restarts" in texts["README.md"]


def test_a_cpu_space_has_its_evaluation_sized_and_stated(hub, timing, capsys):
    """At 100 images/s (the fixed timing) and 0.5 s to load the weights, a 4 s evaluation of the demo's
    9 tasks has room for floor(3.5 * 100 / 9) = 38 images per task."""
    assert main(["space", "me/tvx"]) == 0
    out = capsys.readouterr().out
    assert timing == [2]  # timed with cpu-basic's 2 vCPUs
    (_, _, _, _, texts, _), = [c for c in hub.calls if c[0] == "upload_folder"]
    plan = evalplan.EvaluationPlan(**json.loads(texts[evalplan.PLAN_FILE]))
    assert plan.hardware == "cpu-basic" and plan.device == "cpu" and set(plan.images.values()) == {38}
    assert plan.stored == {t: 250 for t in plan.stored} and len(plan.stored) == 9
    assert plan.seconds == pytest.approx(0.5 + 9 * 38 / 100)
    assert "Exact" + plan.describe()[len("exact"):] in texts["README.md"]
    assert "38 test images per task (342 of 2250 stored)" in out
    assert "needs a paid plan" in out  # the account rule for CPU Spaces
    assert main(["space", "me/tvx", "--eval-seconds", "40", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluation"]["images"] == plan.stored  # all fit


def test_dry_run_prints_the_plan_and_calls_nothing(hub, timing, capsys):
    assert main(["space", "me/tvx", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.calls == []
    line = next(x for x in out.splitlines() if x.startswith("assets/demo/model/open_clip_model.safetensors"))
    assert line.split()[-1] == "LFS/Xet"
    assert next(x for x in out.splitlines() if x.startswith("app.py ")).split()[-1] == "regular"
    assert "nothing was uploaded" in out


def test_another_cache_ships_without_its_dot_files(hub, timing, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(DEMO, cache)
    (cache / ".build").mkdir()
    (cache / ".build" / "state.json").write_text("{}")
    (cache / ".tvexplorer.lock").write_text("1")
    assert main(["space", "me/tvx", "--cache", str(cache), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    paths = [f["path"] for f in plan["files"]]
    assert plan["cache"] == str(cache) and "assets/demo/manifest.json" in paths
    assert not [p for p in paths if "/." in p]


def test_a_model_folder_outside_the_cache_is_refused(hub, timing, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(DEMO, cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["model"]["name"] = f"local-dir:{tmp_path / 'elsewhere'}"
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert main(["space", "me/tvx", "--cache", str(cache), "--dry-run"]) == 2
    assert "outside the cache" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["space", "tvx"], "ORG/NAME"),
    (["space", "me/t v x"], "me/t v x"),
    (["space", "me/tvx", "--hardware", "tpu"], "invalid choice"),
    (["space", "me/tvx", "--cache", "/nonexistent/cache"], "no such cache folder"),
    (["space", "me/tvx", "--bucket", "work"], "a Storage Bucket id ORG/NAME"),
    (["space", "me/tvx", "--eval-seconds", "0"], "must be positive"),
])
def test_bad_space_input_is_one_line(hub, timing, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert hub.calls == []


def test_a_refused_push_is_one_line(hub, timing, capsys):
    hub.fail_with = RuntimeError("401 Client Error: Unauthorized\nmore detail")
    assert main(["space", "me/tvx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "could not push to the Space me/tvx: 401 Client Error" in err and len(err.splitlines()) == 1
    assert "needs a paid plan" in err  # what the account needs for the hardware asked for


def test_gitattributes_sends_every_binary_asset_to_lfs():
    patterns = space.lfs_patterns(ROOT / ".gitattributes")
    binaries = [p for folder in ("assets", "docs") for p in (ROOT / folder).rglob("*") if p.is_file() and space.is_binary(p)]
    assert len(binaries) >= 30  # the demo's tensors and the screenshots
    assert [p for p in binaries if not space.stored_with_lfs(p, 0, patterns)] == []
