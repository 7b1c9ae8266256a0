"""The app as `app.py` lays it out: one opened cache (`App`), or a page that says why none could be opened
(`Unavailable`), plus the page-wide script and style. The tabs are in tabs/, the endpoints in api.py."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..core.errors import CacheError, first_line
from .api import Api
from .explorer import Explorer, open_explorer
from .tabs.merge import Requests

log = logging.getLogger("tvexplorer.app")

# Keyboard users: arrow keys on a slider fire `input` only; releasing the key counts as releasing the
# slider, and Enter in a slider's number box commits it (its blur is gradio's release).
KEYBOARD_JS = """
() => {
  const keys = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"]);
  document.addEventListener("keyup", (e) => {
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || !t.closest(".tvx-control")) return;
    if (t.type === "range" && keys.has(e.key)) t.dispatchEvent(new PointerEvent("pointerup", {bubbles: true}));
    else if (t.type === "number" && e.key === "Enter") t.blur();
  }, true);
}
"""
CSS = """
#merge-results.stale #merge-plot, #merge-results.stale #merge-table { opacity: 0.45; transition: opacity 0.2s; }
#merge-status p { margin: 0.2em 0; }
.tvx-banner { border-left: 4px solid #c9463d; padding: 0.4em 0.8em; }
"""


class App:
    """One explorer, shared by every visitor, and a folder for the files the page offers (CSV, models)."""

    def __init__(self, explorer: Explorer):
        self.ex = explorer
        self.coefficient_slots: list[str] | None = None  # the Merge tab's sliders, by name (tabs/merge.py)
        self.merge_requests = Requests()  # each browser session's last settings (tabs/merge.py)
        self.tmp = Path(tempfile.mkdtemp(prefix="tvexplorer-app-"))
        self.api = Api(self)

    def header(self) -> str:
        i = self.ex.info()
        return (f"# Task vector explorer\nModel `{i['model']}` · {i['parameters']:,} image-encoder parameters · "
                f"{len(self.ex.tasks)} tasks ({', '.join(self.ex.tasks)}) · {self.ex.evaluation_scope()} · "
                f"cache `{i['cache']}`")


class Unavailable:
    """Stands in for App when the cache cannot be opened: the page says why, the API fails with it."""

    def __init__(self, message: str):
        self.message = message
        self.api = Api(unavailable=message)

    def banner(self) -> str:
        return (f"# Task vector explorer\n\n**The cache could not be opened:** {self.message}\n\n"
                "Start the app with `python app.py --cache DIR` (or set `TVEXPLORER_CACHE`), or build the demo "
                "with `python -m tvexplorer build-demo --out assets/demo`.")


def load(cache=None, **kwargs) -> App | Unavailable:
    """The app for the cache at `cache` (default: $TVEXPLORER_CACHE or the bundled demo), or an Unavailable
    that explains in one line why it could not be opened."""
    try:
        return App(open_explorer(cache, **kwargs))
    except (CacheError, FileNotFoundError, ValueError, KeyError, OSError) as e:
        log.error("cannot open cache: %s", first_line(e))
        return Unavailable(first_line(e))
