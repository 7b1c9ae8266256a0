"""The written facts stay true: the README's table of methods is the registry's, every file that the
documentation names exists, and the tree passes the linter configured in pyproject.toml."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tvexplorer.merging import METHODS, methods_markdown

ROOT = Path(__file__).resolve().parents[1]
# Paths inside the package, as the docs write them (not ~/.cache/tvexplorer/... and the like).
PACKAGE_PATH = re.compile(r"(?<![\w./~-])tvexplorer/[\w/]+\.(?:py|json)")


def test_the_readme_lists_every_registry_method_as_the_registry_says():
    readme = (ROOT / "README.md").read_text()
    assert methods_markdown() in readme
    assert len(re.findall(r"^\| `\w+` \|", methods_markdown(), re.M)) == len(METHODS)


def documentation():
    yield ROOT / "README.md"
    for pattern in ("*.py", "*.json", "*.md"):
        yield from (ROOT / "tvexplorer").rglob(pattern)


def test_every_package_file_that_the_documentation_names_exists():
    named = {(doc.relative_to(ROOT), path) for doc in documentation() for path in PACKAGE_PATH.findall(doc.read_text())}
    assert len(named) > 20  # the pattern finds the README's references
    missing = sorted(f"{doc}: {path}" for doc, path in named if not (ROOT / path).exists())
    assert not missing, missing


def ruff() -> list[str]:
    found = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("ruff is not installed: pip install -r requirements-dev.txt (it is pinned in the test extra)")
    return [found]


def test_the_tree_passes_ruff():
    result = subprocess.run([*ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
