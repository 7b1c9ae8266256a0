"""'Download merged model': the merge panel's current settings, or a saved ATM round, written as a model
folder (tvexplorer/pipeline/export.py) and offered as one zip file.

The settings are checked by the explorer's own validators, exactly as an evaluation checks them, so
the file holds the model whose numbers the panel shows. Identical settings reuse the zip made before.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from ..core.files import atomic_write
from ..pipeline.export import FORMATS, export_merged, merge_for_export
from .explorer import Explorer


def checked_settings(ex: Explorer, method, vectors, scaling, coefficients, params) -> dict:
    """merge_for_export's keyword arguments for the panel's settings, checked as evaluate() checks them."""
    kind = ex.parse_method(method)
    s = ex.check_scaling(scaling, method)
    if kind.is_atm:
        # the panel keeps the sliders of the last merge method; an ATM round is one fixed model, so they do not apply
        return {"atm": f"{kind.atm_variant}:{kind.atm_round}", "scaling": s, "atm_cache": ex.atm_cache}
    return {"method": kind.method, "vectors": ex.check_vectors(vectors), "scaling": s,
            "coefficients": {t: 1.0 for t in ex.tasks} | ex.check_coefficients(coefficients),
            "params": ex.check_params(kind.method, params)}


def merged_model_zip(ex: Explorer, folder: Path, fmt: str, method, vectors, scaling, coefficients=None,
                     params=None) -> Path:
    """A zip of the merged model in format `fmt` under `folder`; returns its path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown model format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    settings = checked_settings(ex, method, vectors, scaling, coefficients, params)
    described = {k: v for k, v in settings.items() if k != "atm_cache"}
    digest = hashlib.sha1(json.dumps([fmt, described], sort_keys=True).encode()).hexdigest()[:10]
    what = settings.get("method") or settings["atm"].replace(":", "_round")
    name = f"merged_{what}_{fmt}_{digest}"
    archive = folder / f"{name}.zip"
    if archive.is_file():
        return archive
    delta, record = merge_for_export(ex.source, **settings)
    out = folder / name
    export_merged(ex.source, delta, fmt, out, record)
    files = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, f"{name}/{p.name}")
    atomic_write(archive, write)
    shutil.rmtree(out)
    return archive
