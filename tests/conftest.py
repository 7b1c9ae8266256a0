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
