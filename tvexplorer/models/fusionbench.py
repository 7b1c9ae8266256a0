"""FusionBench's published CLIP fine-tunes (Tang et al., "FusionBench: A Comprehensive Benchmark of
Deep Model Fusion", 2024), fetched from the Hugging Face hub as files the import pipeline reads.

Which repositories hold what is data, in fusionbench.json. Each repository is downloaded with
`huggingface_hub` into the hub's cache folder (`core.hub.fetch_snapshot`): files already there are not
fetched again, so a rerun after an interruption fetches only what is missing, and without a network the
copies downloaded earlier are used. Only config.json and the first weight file a repository has are
downloaded. The files are transformers checkpoints; `checkpoints.read_image_encoder` converts them to
open_clip's names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.hub import fetch_snapshot
from .clip import ModelSpec

CATALOGUE: dict = json.loads(Path(__file__).with_name("fusionbench.json").read_text())
HUBS = ("fusionbench",)  # the published collections `import --hub` knows


@dataclass(frozen=True)
class Download:
    """What the import needs: the open_clip model whose text tower builds the heads, theta0's file, and
    one fine-tuned file per task, keyed by the task's dataset name (datasets.json)."""
    spec: ModelSpec
    base: Path
    checkpoints: dict[str, Path]


def model_spec(model: str) -> ModelSpec:
    """The open_clip model (with its pretrained tag) that FusionBench fine-tuned as `model`."""
    if model not in CATALOGUE["models"]:
        raise ValueError(f"FusionBench has no fine-tunes of {model!r}; choose one of {', '.join(CATALOGUE['models'])}")
    entry = CATALOGUE["models"][model]
    return ModelSpec(entry["open_clip"], entry["pretrained"])


def suite_tasks(suite: str) -> list[str]:
    """The dataset names (datasets.json) of a FusionBench suite."""
    if suite not in CATALOGUE["suites"]:
        raise ValueError(f"FusionBench has no {suite!r}-task suite; choose one of {', '.join(CATALOGUE['suites'])}")
    return [CATALOGUE["tasks"][task] for task in CATALOGUE["suites"][suite]]


def download(model: str, suite: str) -> Download:
    """Fetch theta0 and the suite's fine-tunes of `model` (or find them in the hub's cache folder)."""
    spec = model_spec(model)
    suite_tasks(suite)  # an unknown suite is refused before anything is fetched
    entry = CATALOGUE["models"][model]
    base = _weights(entry["base"])
    checkpoints = {CATALOGUE["tasks"][task]: _weights(entry["finetuned"].format(task=task)) for task in CATALOGUE["suites"][suite]}
    return Download(spec, base, checkpoints)


def _weights(repo_id: str) -> Path:
    """config.json and the first of the catalogue's weight files that the repository holds."""
    for name in CATALOGUE["weights"]:
        folder = fetch_snapshot(repo_id, "FusionBench", allow_patterns=["config.json", name])
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"FusionBench: none of {', '.join(CATALOGUE['weights'])} of {repo_id} could be downloaded "
                            "or found among earlier downloads: check the network, and the repository on the hub")
