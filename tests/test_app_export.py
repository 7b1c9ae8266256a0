"""The app's 'Download merged model' button: the handler's zip holds the model of the panel's settings."""
import zipfile

import pytest
import torch
from safetensors.torch import load_file

import apphelpers  # noqa: F401  (first: it turns gradio analytics off before gradio is imported)
from tvexplorer.app import ui
from tvexplorer.app.explorer import Explorer
from tvexplorer.app.tabs.merge import download_model
from tvexplorer.models.checkpoints import read_image_encoder
from tvexplorer.science.evaluation import merged_delta


@pytest.fixture(scope="module")
def handlers(quick_demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return ui.App(Explorer(quick_demo, device="cpu", read_only=True, workdir=work))


def download(handlers, fmt, method, scaling, coefficients=None, layers="", **params):
    """The file the Merge tab's download button gives for these settings (parameters named method.name)."""
    settings = {"format": fmt, "method": method, "vectors": "tau", "scaling": scaling, "coefficients": coefficients or {},
                "params": {f"{method}.{k}": v for k, v in params.items()}, "layers": layers}
    return download_model(handlers, settings)["model_file"]


def unzip(path, tmp_path):
    with zipfile.ZipFile(path) as z:
        z.extractall(tmp_path)
        (folder,) = {n.split("/")[0] for n in z.namelist()}
    return tmp_path / folder


def test_download_merged_model_of_the_current_settings(handlers, tmp_path):
    cache = handlers.ex.source
    first = cache.tasks[0]
    path = download(handlers, "hf", "ties", 0.7, {first: 1.4}, k=30)
    assert path.endswith(".zip")
    folder = unzip(path, tmp_path)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tvexplorer_merge.json"}
    theta = cache.layout.flatten(read_image_encoder(folder / "model.safetensors"))
    coefficients = {t: 1.0 for t in cache.tasks} | {first: 1.4}
    assert torch.equal(theta, cache.base() + merged_delta(cache, "ties", coefficients=coefficients, scaling=0.7, k=30))
    # the same settings again: the same file, not a second export
    assert download(handlers, "hf", "ties", 0.7, {first: 1.4}, k=30) == path


def test_download_a_saved_atm_round(handlers, tmp_path):
    cache = handlers.ex.source
    path = download(handlers, "open_clip", "atm:posthoc:1", 0.5)
    state = load_file(str(unzip(path, tmp_path) / "open_clip_model.safetensors"))
    visual = cache.layout.flatten({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
    assert torch.allclose(visual, cache.base() + 0.5 * handlers.ex.atm_cache.atm_delta("posthoc", 1).float(), atol=1e-6)


def test_bad_download_settings_warn_and_change_nothing(handlers):
    with pytest.raises(ValueError, match="unknown method"):  # wire() shows it as a warning, the file stays
        download(handlers, "hf", "nosuch", 1.0)
    with pytest.raises(ValueError, match="unknown model format"):
        download(handlers, "onnx", "ties", 1.0)
    with pytest.raises(ValueError, match="per-layer coefficients are not exported"):
        download(handlers, "hf", "ties", 1.0, layers='{"digits": {"final": 0.5}}')
