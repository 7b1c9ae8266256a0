import hashlib
import shutil
from pathlib import Path

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


SHIPPED_DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def shipped_demo_untouched():
    """Nothing the tests do (the app's tuning, results table and ATM runs included) writes into the shipped
    demo: its files and their hashes after the session are those before it."""
    before = file_hashes(SHIPPED_DEMO) if SHIPPED_DEMO.is_dir() else None
    yield
    if before is not None:
        after = file_hashes(SHIPPED_DEMO)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"the tests wrote into {SHIPPED_DEMO}: {', '.join(changed)}"
