"""Shared helpers for the app tests: launch the app on a local port (in this process, or as `python app.py`
in its own), wait for ATM jobs."""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent


def load_app_module():
    spec = importlib.util.spec_from_file_location("tvexplorer_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(handlers):
    """The app for `handlers` on 127.0.0.1:<free port>; yields its URL, closes it afterwards."""
    app = load_app_module()
    port = free_port()
    demo = app.build(handlers)
    demo.queue(default_concurrency_limit=4)
    from tvexplorer.app import ui
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                js=ui.KEYBOARD_JS, css=ui.CSS, show_error=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextmanager
def app_process(cache, folder: Path, *args: str, env: dict | None = None):
    """`python app.py --cache CACHE --port P ARGS` in its own process, run from `folder` (where a Space keeps
    its evaluation plan beside app.py) with its log in folder/app.log; yields (url, process) once it answers."""
    shutil.copy(ROOT / "app.py", folder / "app.py")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(folder / "app.log", "w") as log:
        server = subprocess.Popen([sys.executable, str(folder / "app.py"), "--cache", str(cache), "--port", str(port), *args],
                                  stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
        try:
            deadline = time.time() + 180
            while True:
                try:
                    urllib.request.urlopen(url + "config", timeout=5)
                    break
                except OSError:
                    assert server.poll() is None and time.time() < deadline, (folder / "app.log").read_text()[-3000:]
                    time.sleep(0.5)
            yield url, server
        finally:
            server.terminate()
            server.wait(30)


def wait_idle(kind: str = "atm", timeout: float = 120.0) -> None:
    """Wait until no run of `kind` holds the process-wide slot (tests share one process)."""
    from tvexplorer.app import runs
    deadline = time.time() + timeout
    run = runs.current(kind)
    if run is not None:
        run.finished.wait(timeout)
    while runs.busy(kind) and time.time() < deadline:
        time.sleep(0.05)
    assert not runs.busy(kind), f"a {kind} run did not finish in time"
