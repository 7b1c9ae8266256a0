"""`space`: the Space's files, README front matter and requirements, pushed through a mocked HfApi (no
network here: what the hub itself does with the upload is not exercised)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from tvexplorer.cli import main
from tvexplorer.pipeline import space

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records each call and what the staged folder held then."""
    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, *args, **kwargs):
        FakeHub.calls.append(("init", args, kwargs))

    def create_repo(self, repo_id, **kwargs):
        FakeHub.calls.append(("create_repo", repo_id, kwargs))
        if FakeHub.fail_with:
            raise FakeHub.fail_with

    def upload_folder(self, *, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        texts = {k: files[k].read_text() for k in ("README.md", "requirements.txt")}
        FakeHub.calls.append(("upload_folder", folder, kwargs, sorted(files), texts,
                              {k: p.stat().st_size for k, p in files.items()}))


@pytest.fixture
def hub(monkeypatch):
    FakeHub.calls, FakeHub.fail_with = [], None
    monkeypatch.setattr(space, "HfApi", FakeHub)
    return FakeHub


def front_matter(readme: str) -> dict:
    block = re.match(r"---\n(.*?)\n---\n", readme, re.DOTALL)[1]
    return {k.strip(): v.strip().strip('"') for k, v in (line.split(":", 1) for line in block.splitlines())}


def pin(requirements: str, package: str) -> str:
    return re.search(rf"^{package}==(\S+)$", requirements, re.MULTILINE)[1]


def test_push_uploads_the_app_package_and_cache_with_cpu_torch(hub, capsys):
    assert main(["space", "me/tvx"]) == 0
    assert "https://huggingface.co/spaces/me/tvx" in capsys.readouterr().out
    (_, repo, create), = [c for c in hub.calls if c[0] == "create_repo"]
    assert repo == "me/tvx" and create == {"repo_type": "space", "space_sdk": "gradio", "exist_ok": True}
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
    assert front["app_file"] == "app.py" and front["suggested_hardware"] == "cpu-basic"
    assert front["title"] == "Task Vector Explorer"  # the project's own keys are kept
    requirements = texts["requirements.txt"]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert pin(requirements, "torch") == pin(source_requirements, "torch") + "+cpu"
    assert pin(requirements, "torchvision") == pin(source_requirements, "torchvision") + "+cpu"
    assert pin(requirements, "gradio") == pin(source_requirements, "gradio")


def test_zerogpu_space_asks_for_the_documented_python_and_torch(hub):
    assert main(["space", "me/tvx", "--hardware", "zerogpu"]) == 0
    (_, _, _, _, texts, _), = [c for c in hub.calls if c[0] == "upload_folder"]
    front = front_matter(texts["README.md"])
    assert front["python_version"] == "3.10.13" and front["suggested_hardware"] == "zero-a10g"
    requirements = texts["requirements.txt"]
    assert pin(requirements, "torch") == "2.8.0" and "+cpu" not in requirements and "--extra-index-url" not in requirements
    assert "https://huggingface.co/docs/hub/spaces-zerogpu" in requirements


def test_dry_run_prints_the_plan_and_calls_nothing(hub, capsys):
    assert main(["space", "me/tvx", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.calls == []
    line = next(x for x in out.splitlines() if x.startswith("assets/demo/model/open_clip_model.safetensors"))
    assert line.split()[-1] == "LFS/Xet"
    assert next(x for x in out.splitlines() if x.startswith("app.py ")).split()[-1] == "regular"
    assert "nothing was uploaded" in out


def test_another_cache_ships_without_its_dot_files(hub, tmp_path, capsys):
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


def test_a_model_folder_outside_the_cache_is_refused(hub, tmp_path, capsys):
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
])
def test_bad_space_input_is_one_line(hub, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert hub.calls == []


def test_a_refused_push_is_one_line(hub, capsys):
    hub.fail_with = RuntimeError("401 Client Error: Unauthorized\nmore detail")
    assert main(["space", "me/tvx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "could not push to the Space me/tvx: 401 Client Error" in err and len(err.splitlines()) == 1


def test_gitattributes_sends_every_binary_asset_to_lfs():
    patterns = space.lfs_patterns(ROOT / ".gitattributes")
    binaries = [p for folder in ("assets", "docs") for p in (ROOT / folder).rglob("*") if p.is_file() and space.is_binary(p)]
    assert len(binaries) >= 30  # the demo's tensors and the screenshots
    assert [p for p in binaries if not space.stored_with_lfs(p, 0, patterns)] == []
