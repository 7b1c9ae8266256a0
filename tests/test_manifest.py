"""The typed manifest (core/manifest.py, core/records.py): the shipped demo's manifest reads into it and
writes back unchanged, and a bad or inconsistent field is one CacheError line that names it."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from tvexplorer.core.cache import Cache
from tvexplorer.core.errors import CacheError
from tvexplorer.core.manifest import MANIFEST, Manifest
from tvexplorer.core.additions import MethodKey

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return json.loads((DEMO / MANIFEST).read_text())


def test_the_shipped_manifest_reads_and_writes_back_unchanged(shipped):
    manifest = Manifest.from_json(copy.deepcopy(shipped))
    assert manifest.to_json() == shipped
    assert json.loads(json.dumps(manifest.to_json())) == shipped  # plain JSON, nothing typed left in it
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_the_typed_fields_say_what_the_json_says(shipped):
    manifest = Manifest.from_json(shipped)
    assert manifest.model.encoder.mean == tuple(shipped["model"]["encoder"]["mean"])
    assert manifest.task_names == [t["name"] for t in shipped["tasks"]]
    assert manifest.files["base.safetensors"].size == shipped["files"]["base.safetensors"]["size"]
    averages = manifest.metrics.averages()
    assert averages["finetuned"] == shipped["metrics"]["finetuned_average"]
    assert averages["task_arithmetic"] == shipped["metrics"]["task_arithmetic_average"]
    assert manifest.metrics.merge("task_arithmetic").best_scaling == shipped["metrics"]["task_arithmetic"]["best_scaling"]
    assert [r.average for r in manifest.atm_rounds("standard")] == [r["average"] for r in shipped["atm"]["standard"]["rounds"]]
    assert manifest.atm_rounds("never run") == ()
    assert manifest.training.lr == shipped["training"]["lr"]
    assert manifest.provenance == {"kind": "fine-tuned"}


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if value is DELETE:
        del data[last]
    elif isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


DELETE = object()
BAD = [  # (where, new value, the field the error names, what it says)
    ("model/encoder/embed_dim", "64", "model.encoder.embed_dim", "expected a whole number"),
    ("model/encoder/mean", [0.5, "x", 0.5], "model.encoder.mean[1]", "expected a number"),
    ("tasks/1/sizes", DELETE, "tasks[1].sizes", "missing"),
    ("tasks/0/classnames", "zero one", "tasks[0].classnames", "expected a list"),
    ("files/base.safetensors/size", -0.5, "files.base.safetensors.size", "expected a whole number"),
    ("training/optimizer", "rmsprop", "training", "unknown optimizer 'rmsprop'"),
    ("training/momentum", 0.9, "training", r"unknown field\(s\) 'momentum'"),
    ("theory", {}, "(top level)", r"unknown field\(s\) 'theory'"),
    ("vector_dtype", "int8", "vector_dtype", "'int8' is none of float32, float16"),
    ("vector_kinds", ["tau1"], "vector_kinds", "must hold tau"),
    ("metrics/finetuned/nowhere", 0.5, "metrics.finetuned", "names task\\(s\\) nowhere"),
    ("metrics/ties/best_scaling", None, "metrics.ties.best_scaling", "expected a number"),
    ("atm/standard/rounds/0/file", "atm/standard/missing.safetensors", "atm.standard.rounds[0].file",
     "not among the listed files"),
    ("atm/standard/rounds/1/round", 7, "atm.standard.rounds", r"numbered \[1, 7"),
    ("preview/files/digits", "preview/elsewhere.safetensors", "preview.files.digits", "not among the listed files"),
    ("files/../outside", {"size": 1, "sha256": "0" * 64}, None, "not inside the cache folder"),
]


@pytest.mark.parametrize("where, value, field, says", BAD, ids=[b[0] for b in BAD])
def test_a_bad_field_is_one_line_that_names_it(shipped, where, value, field, says):
    data = copy.deepcopy(shipped)
    if where == "files/../outside":
        data["files"]["../outside"] = value
    else:
        _set(data, where, value)
    with pytest.raises(CacheError) as refused:
        Manifest.from_json(data)
    message = str(refused.value)
    assert "\n" not in message
    assert field is None or f"manifest field {field}:" in message, message
    assert re.search(says, message), message


def test_a_task_listed_twice_is_refused(shipped):
    data = copy.deepcopy(shipped)
    data["tasks"].append(data["tasks"][0])
    with pytest.raises(CacheError, match="manifest field tasks: a task is listed twice: digits"):
        Manifest.from_json(data)


def test_opening_a_cache_names_the_manifest_file_and_the_field(tmp_path, shipped):
    root = tmp_path / "cache"
    shutil.copytree(DEMO, root)
    data = copy.deepcopy(shipped)
    data["tasks"][2]["sizes"]["test"] = "250"
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CacheError, match=r"manifest.json: manifest field tasks\[2\].sizes.test: expected a whole number, "
                                         r"got '250'; rebuild the cache or get it again from its source"):
        Cache.open(root)


def test_method_keys_are_named_not_indexed():
    assert MethodKey.parse("ties") == MethodKey(method="ties") and not MethodKey.parse("ties").is_atm
    key = MethodKey.parse("atm:standard:3")
    assert (key.atm_variant, key.atm_round, key.is_atm) == ("standard", 3, True)
    assert str(key) == "atm:standard:3" and str(MethodKey.parse("ties")) == "ties"
    with pytest.raises(ValueError, match="an ATM round is named atm:VARIANT:ROUND"):
        MethodKey.parse("atm:standard:last")


def test_a_missing_round_or_run_is_one_line(shipped):
    manifest = Manifest.from_json(shipped)
    with pytest.raises(ValueError, match=r"ATM standard has rounds 1 to \d+ saved; there is no round 99"):
        manifest.atm_round("standard", 99)
    with pytest.raises(ValueError, match="no saved ATM 'other' run; saved runs: standard, posthoc"):
        manifest.atm_round("other", 1)
