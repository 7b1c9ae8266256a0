import shutil

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """A miniature demo world built once per test session by `build-demo --quick` (read-only by convention)."""
    from tvexplorer.demo.build import build_demo
    out = tmp_path_factory.mktemp("quick_demo")
    build_demo(out, quick=True, device="cpu")
    return out


@pytest.fixture
def demo_copy(quick_demo, tmp_path):
    """A private copy of the quick demo that a test may damage or extend."""
    dst = tmp_path / "cache"
    shutil.copytree(quick_demo, dst)
    return dst


@pytest.fixture(scope="module")
def served(quick_demo, tmp_path_factory):
    """(url, cache folder): the app on 127.0.0.1, over a private writable copy of the quick demo."""
    import apphelpers
    from tvexplorer.app import ui
    root = tmp_path_factory.mktemp("served") / "cache"
    shutil.copytree(quick_demo, root)
    with apphelpers.running_app(ui.load(root, device="cpu", read_only=False, precision="float32")) as url:
        yield url, root
