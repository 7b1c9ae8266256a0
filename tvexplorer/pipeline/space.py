"""A Hugging Face Space made from this source checkout: the app, the package and one cache, pushed with
`huggingface_hub.upload_folder` (which stores binary files with LFS/Xet itself, so the hub's refusal of
plain binaries over 1 MB never comes up).

The Space gets its own README.md (the project's, under Space front matter: Gradio SDK at the version
requirements.txt pins, app.py, the hardware), its own requirements.txt and evaluation_plan.json (how
many test images one exact evaluation uses there: pipeline/evalplan.py). The hub docs, as stored in
December 2026 (hub-docs commit 34ee0f00, July 2026), decide the rest:

- The hardware is requested when the Space is created (`create_repo(space_hardware=...)`; front
  matter's `suggested_hardware` assigns nothing), and with `request_space_hardware` when an existing
  Space runs on another.
- `cpu`: cpu-basic, the project's pins, with torch's CPU-only wheels from download.pytorch.org instead
  of the CUDA build that PyPI serves. Creating a Gradio Space on CPU needs a paid plan (PRO, or Team /
  Enterprise for organizations).
- `zerogpu`: ZeroGPU runs only the versions the hub lists (spaces-zerogpu, "Supported Versions"):
  PyTorch 2.8.0, 2.9.1, 2.10.0, 2.11.0 and Python 3.12.12 or 3.10.13. So the Space asks for Python
  3.12.12 and torch 2.11.0 / torchvision 0.26.0; every other pin publishes Python 3.12 wheels on PyPI
  (checked with `pip download --python-version 3.12 --only-binary=:all:`) and stays. A free personal
  account in good standing may host up to 2 ZeroGPU Spaces, PRO up to 10, a Team or Enterprise
  organization up to 50.
- Persistent storage (`/data`) is gone; Storage Buckets are mounted where the owner says. With
  `bucket`, the bucket is created if needed and mounted at BUCKET_MOUNT, and TVEXPLORER_WORKDIR points
  the app's work folder (ATM rounds, tuning results) into it, so they survive restarts.

The cache goes to assets/demo, where app.py looks by default, so the Space needs no variables.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, Volume
from huggingface_hub.utils import validate_repo_id

from ..core.cache import Cache
from ..core.errors import first_line
from ..models.clip import LOCAL_DIR
from .evalplan import DEFAULT_SECONDS, PLAN_FILE, ZERO_GPU_FLAVOR, EvaluationPlan, plan_evaluation, plan_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE = ("app.py", "tvexplorer", "docs", ".gitattributes")  # what the Space runs and shows, relative to the project root
CACHE_IN_SPACE = "assets/demo"
# Never uploaded: dot files (lock files, build state), bytecode. The staging folder holds none of them
# already; the patterns guard whatever the hub library would otherwise pick up.
IGNORE_PATTERNS = [".*", "**/.*", "**/.*/**", "__pycache__", "**/__pycache__/**", "*.pyc", "**/*.pyc"]
# Files of an earlier push that this one no longer has are deleted under these folders only.
DELETE_PATTERNS = ["tvexplorer/**", "assets/**"]
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ZEROGPU_DOCS = "https://huggingface.co/docs/hub/spaces-zerogpu"
HARDWARE = {
    "cpu": {"flavor": "cpu-basic", "device": "cpu", "python_version": "3.12", "pins": {},
            "account": "creating a Gradio Space that runs on CPU needs a paid plan: PRO for a personal account, "
                       "Team or Enterprise for an organization (static Spaces alone are free)"},
    "zerogpu": {"flavor": ZERO_GPU_FLAVOR, "device": "cuda", "python_version": "3.12.12",
                "pins": {"torch": "2.11.0", "torchvision": "0.26.0"},
                "account": "ZeroGPU hosting limits: a free personal account in good standing (verified email, older "
                           "than 30 days) up to 2 ZeroGPU Spaces, PRO up to 10, a Team or Enterprise organization up "
                           f"to 50; past that the hub refuses the hardware ({ZEROGPU_DOCS})"},
}
BUCKET_MOUNT = "/data"
WORKDIR_IN_BUCKET = f"{BUCKET_MOUNT}/tvexplorer-work"
LFS_ALWAYS_BYTES = 10_000_000  # the hub stores every file this large with LFS/Xet
LFS_BINARY_BYTES = 1_000_000   # and every binary file this large


@dataclass(frozen=True)
class PlannedFile:
    path: str                   # in the Space
    size: int
    lfs: bool
    source: Path | None = None  # a file to copy, or
    text: str | None = None     # generated content


def plan(cache: Cache, hardware: str = "cpu", root: Path = PROJECT_ROOT, evaluation: EvaluationPlan | None = None,
         bucket: str | None = None) -> list[PlannedFile]:
    """Every file the Space gets, in upload order. `evaluation`: default, planned here for the hardware
    (which times the cache's encoder on this CPU for a CPU Space)."""
    check_source(cache, hardware, root)
    setup = HARDWARE[hardware]
    evaluation = evaluation or plan_evaluation(cache, setup["flavor"], setup["device"])
    patterns = lfs_patterns(root / ".gitattributes")
    files = [_generated("README.md", space_readme(root, hardware, evaluation, bucket)),
             _generated("requirements.txt", space_requirements(root, hardware)),
             _generated(PLAN_FILE, plan_text(evaluation))]
    for name in CODE:
        files += [_copied(rel, path, patterns) for rel, path in _walk(root / name, name)]
    return files + [_copied(rel, path, patterns) for rel, path in _walk(Path(cache.root), CACHE_IN_SPACE)]


def check_source(cache: Cache, hardware: str, root: Path = PROJECT_ROOT) -> None:
    """What a Space needs before anything is timed or staged: known hardware, a source checkout, a
    self-contained cache."""
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware {hardware!r}; choose one of: {', '.join(HARDWARE)}")
    if not (root / "app.py").is_file():
        raise ValueError(f"{root} is not a source checkout (no app.py beside the tvexplorer package); "
                         "clone the repository to make a Space from it")
    _check_self_contained(cache)


def _check_self_contained(cache: Cache) -> None:
    """The Space gets the cache folder only: a local-dir model must lie inside it."""
    name = cache.manifest.model.name
    if name.startswith(LOCAL_DIR):
        model = (Path(cache.root) / name[len(LOCAL_DIR):]).resolve()
        if not model.is_relative_to(Path(cache.root).resolve()):
            raise ValueError(f"the cache's model folder {model} lies outside the cache {cache.root}; copy it into the "
                             "cache and name it local-dir:<relative path> in the manifest, or the Space cannot load it")


def _generated(path: str, text: str) -> PlannedFile:
    return PlannedFile(path, len(text.encode()), False, text=text)


def _walk(path: Path, rel: str):
    """(path in the Space, file) under `path`, skipping dot files and bytecode at any depth."""
    if path.is_file():
        yield rel, path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith(".pyc"):
                full = Path(dirpath) / name
                yield f"{rel}/{full.relative_to(path).as_posix()}", full


def _copied(rel: str, path: Path, patterns: list[str]) -> PlannedFile:
    size = path.stat().st_size
    return PlannedFile(rel, size, stored_with_lfs(path, size, patterns), source=path)


def lfs_patterns(gitattributes: Path) -> list[str]:
    if not gitattributes.is_file():
        return []
    return [line.split()[0] for line in gitattributes.read_text().splitlines()
            if "filter=lfs" in line and not line.lstrip().startswith("#")]


def stored_with_lfs(path: Path, size: int, patterns: list[str]) -> bool:
    """Whether the hub stores this file with LFS/Xet: .gitattributes says so, or its size and content do."""
    if any(fnmatch.fnmatch(path.name, p) for p in patterns) or size > LFS_ALWAYS_BYTES:
        return True
    return size > LFS_BINARY_BYTES and is_binary(path)


def is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def pinned(requirements: str, package: str) -> str | None:
    found = re.search(rf"^{re.escape(package)}==(\S+)", requirements, re.MULTILINE)
    return found[1] if found else None


def space_requirements(root: Path, hardware: str) -> str:
    source = (root / "requirements.txt").read_text()
    pins = HARDWARE[hardware]["pins"]
    lines = [f"# written by `python -m tvexplorer space --hardware {hardware}` from the project's requirements.txt"]
    if hardware == "cpu":
        lines += ["# torch's CPU-only wheels, not PyPI's CUDA build", f"--extra-index-url {PYTORCH_CPU_INDEX}"]
    else:
        lines += [f"# ZeroGPU's supported Python and torch versions: {ZEROGPU_DOCS}"]
    for line in source.splitlines():
        name, sep, version = line.partition("==")
        if not sep or line.startswith("#"):
            continue
        version = pins.get(name, version)
        if hardware == "cpu" and name in ("torch", "torchvision"):
            version += "+cpu"
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def space_readme(root: Path, hardware: str, evaluation: EvaluationPlan, bucket: str | None = None) -> str:
    """The project README under Space front matter (its own front matter's keys, overridden), after a
    paragraph on this Space: its hardware, its exact evaluation and where its work goes."""
    text = (root / "README.md").read_text()
    front, body = {}, text
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if match:
        front = dict(line.split(":", 1) for line in match[1].splitlines() if ":" in line)
        front = {k.strip(): v.strip() for k, v in front.items()}
        body = text[match.end():]
    gradio = pinned((root / "requirements.txt").read_text(), "gradio")
    if gradio is None:
        raise ValueError(f"{root / 'requirements.txt'} pins no gradio version (gradio==X), which the Space's sdk_version needs")
    setup = HARDWARE[hardware]
    front.update({"sdk": "gradio", "sdk_version": gradio, "python_version": f'"{setup["python_version"]}"',
                  "app_file": "app.py", "suggested_hardware": setup["flavor"]})
    evaluated = evaluation.describe()
    this_space = (f"> **This Space** runs on {setup['flavor']} with Python {setup['python_version']}. "
                  f"{evaluated[0].upper()}{evaluated[1:]}. {storage_line(bucket)}\n\n")
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in front.items()) + "---\n" + this_space + body


def storage_line(bucket: str | None) -> str:
    if bucket:
        return (f"ATM rounds and tuning results go to the Storage Bucket {bucket}, mounted at {BUCKET_MOUNT} "
                f"(TVEXPLORER_WORKDIR={WORKDIR_IN_BUCKET}), and survive restarts.")
    return ("ATM rounds and tuning results go to the Space's own disk and are lost when it restarts "
            "(push with --bucket ORG/NAME to keep them in a Storage Bucket).")


def stage(files: list[PlannedFile], folder: Path) -> None:
    """Lay the planned files out in `folder`: hard links where the file system allows, else copies."""
    for f in files:
        target = folder / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.text is not None:
            target.write_text(f.text)
            continue
        try:
            os.link(f.source, target)
        except OSError:
            shutil.copy2(f.source, target)


def push(repo_id: str, files: list[PlannedFile], folder: Path, hardware: str = "cpu", bucket: str | None = None) -> dict:
    """Create the Space with its hardware (and bucket) or bring an existing one to them, then upload the
    staged `folder` with one upload_folder call; returns what was done and the Space's URL."""
    api = HfApi()
    flavor = HARDWARE[hardware]["flavor"]
    volume = Volume(type="bucket", source=bucket, mount_path=BUCKET_MOUNT) if bucket else None
    done = {"created": False, "hardware_requested": None, "bucket_mounted": False}
    try:
        if bucket:
            api.create_bucket(bucket, private=True, exist_ok=True)  # a work folder, not a publication
        if not api.repo_exists(repo_id, repo_type="space"):
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True, space_hardware=flavor,
                            space_volumes=[volume] if volume else None,
                            space_variables=[{"key": "TVEXPLORER_WORKDIR", "value": WORKDIR_IN_BUCKET}] if bucket else None)
            done.update(created=True, hardware_requested=flavor, bucket_mounted=bool(bucket))
        else:
            runtime = api.get_space_runtime(repo_id)
            if (runtime.requested_hardware or runtime.hardware) != flavor:
                api.request_space_hardware(repo_id, flavor)
                done["hardware_requested"] = flavor
            if volume and not any(v.source == bucket and v.mount_path == BUCKET_MOUNT for v in runtime.volumes or []):
                others = [v for v in runtime.volumes or [] if v.mount_path != BUCKET_MOUNT]
                api.set_space_volumes(repo_id, others + [volume])
                done["bucket_mounted"] = True
            if bucket:
                api.add_space_variable(repo_id, "TVEXPLORER_WORKDIR", WORKDIR_IN_BUCKET)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                          ignore_patterns=IGNORE_PATTERNS, delete_patterns=DELETE_PATTERNS,
                          commit_message=f"tvexplorer: app, package and cache ({len(files)} files)")
    except Exception as e:  # the hub's errors: no token, no rights, no plan for the hardware, network
        raise ValueError(f"could not push to the Space {repo_id}: {first_line(e)} (log in with `hf auth login` or set "
                         f"HF_TOKEN; {HARDWARE[hardware]['account']})") from None
    return {**done, "url": f"https://huggingface.co/spaces/{repo_id}"}


def check_space_id(repo_id: str, kind: str = "a Space") -> str:
    if repo_id.count("/") != 1:
        raise ValueError(f"expected {kind} id ORG/NAME, got {repo_id!r}")
    validate_repo_id(repo_id)  # raises a one-line ValueError for bad characters
    return repo_id


def make_space(repo_id: str, cache: Cache, hardware: str = "cpu", dry_run: bool = False, bucket: str | None = None,
               evaluation_seconds: float = DEFAULT_SECONDS, images_per_second: float | None = None) -> dict:
    """Plan the Space's files and, unless `dry_run`, stage them in a temporary folder and push them.
    `evaluation_seconds`, `images_per_second`: how the exact evaluation of a CPU Space is sized (evalplan)."""
    check_space_id(repo_id)
    if bucket:
        check_space_id(bucket, "a Storage Bucket")
    check_source(cache, hardware)
    setup = HARDWARE[hardware]
    evaluation = plan_evaluation(cache, setup["flavor"], setup["device"], evaluation_seconds, images_per_second)
    files = plan(cache, hardware, evaluation=evaluation, bucket=bucket)
    summary = {"space": repo_id, "hardware": hardware, "flavor": setup["flavor"], "python": setup["python_version"],
               "account": setup["account"], "dry_run": dry_run, "cache": str(cache.root),
               "evaluation": evaluation.to_json(), "evaluation_line": evaluation.describe(),
               "bucket": bucket, "storage": storage_line(bucket),
               "files": [{"path": f.path, "size": f.size, "lfs": f.lfs} for f in files],
               "total_bytes": sum(f.size for f in files), "url": None}
    if not dry_run:
        with tempfile.TemporaryDirectory(prefix="tvexplorer-space-") as folder:
            stage(files, Path(folder))
            summary.update(push(repo_id, files, Path(folder), hardware, bucket))
    return summary
