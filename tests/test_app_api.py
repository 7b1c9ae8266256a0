"""The app on a local port, driven by gradio_client (127.0.0.1 only, a bounded number of requests)."""
import json
import time
from pathlib import Path

import httpx
import pytest

import apphelpers
from tvexplorer.app import ui
from tvexplorer.core.cache import Cache
from tvexplorer.science.evaluation import Evaluator

from gradio_client import Client  # noqa: E402  (after apphelpers turned analytics off)
from gradio_client.exceptions import AppError  # noqa: E402

# gradio's own queue code triggers pandas deprecation warnings; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ENDPOINTS = {"/info", "/methods", "/evaluate", "/preview", "/preset", "/alignment", "/atm", "/atm_status", "/atm_cancel"}


@pytest.fixture(scope="module")
def client(served):
    return Client(served[0], verbose=False)


@pytest.fixture(scope="module")
def reference(quick_demo):
    return Evaluator(Cache.open(quick_demo), device="cpu")


def test_named_endpoints(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert ENDPOINTS <= named
    info = client.predict(api_name="/info")
    assert info["parameters"] > 0 and set(info["tasks"]) == {"digits", "signs", "textures"}
    methods = client.predict(api_name="/methods")
    assert methods["methods"]["ties"]["params"][0]["name"] == "k" and "atm:standard:1" in methods["atm_rounds"]
    assert client.predict("inverse_t", api_name="/preset")["scaling"] == round(1 / 3, 4)
    table = client.predict(api_name="/results")  # the results table as recorded (tests/test_table.py fills it)
    assert [r["key"] for r in table["rows"]][:4] == ["zero_shot", "finetuned", "multitask", "task_arithmetic"]
    preview = client.predict(method="task_arithmetic", scaling=0.0, api_name="/preview")
    assert preview["preview"] is True and preview["accuracy"] == client.predict(scaling=0.0, api_name="/evaluate")["accuracy"]


def test_evaluate(client, reference):
    r = client.predict(method="ties", coefficients={"digits": 1.5, "signs": 0.0}, scaling=1.0, params={"k": 30},
                       vectors="tau", api_name="/evaluate")
    want = reference.evaluate("ties", coefficients={"digits": 1.5, "signs": 0.0}, scaling=1.0, k=30)
    assert r["accuracy"] == want.accuracy and r["average"] == pytest.approx(want.average)
    assert r["normalized_average"] == pytest.approx(want.normalized_average)
    atm = client.predict(method="atm:posthoc:1", api_name="/evaluate")
    assert atm["accuracy"] == Cache.open(reference.cache.root).manifest.atm_rounds("posthoc")[0].accuracy


def test_alignment(client):
    a = client.predict(task="signs", api_name="/alignment")
    assert list(a["tasks"]) == ["signs"] and a["tasks"]["signs"]["epochs"][0]["epoch"] == 1
    assert {"tau", "tau1", "g0", "atm:standard:1"} <= set(a["cosine_matrices"])
    assert len(a["cosine_matrices"]["tau"]["matrix"]) == 3
    everything = client.predict(api_name="/alignment")
    assert set(everything["tasks"]) == {"digits", "signs", "textures"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(coefficients={"digits": "nan"}), "finite"),
    (dict(coefficients={"digits": 7}), "between -1 and 2"),
    (dict(coefficients={"elsewhere": 1}), "unknown task"),
    (dict(method="magic"), "unknown method"),
    (dict(method="ties", params={"k": -3}), "out of range"),
    (dict(scaling=99), "between -1 and 2"),
])
def test_bad_input_is_an_api_error(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/evaluate")


def test_nan_and_infinity_in_raw_json_are_rejected(served, client):
    """gradio_client refuses to send NaN itself; other clients can, in raw JSON."""
    url = served[0]
    for body in ('{"data": ["task_arithmetic", null, NaN, null, "tau", null]}',
                 '{"data": ["task_arithmetic", {"digits": Infinity}, 0.3, null, "tau", null]}',
                 '{"data": ["task_arithmetic", {"digits": -Infinity}, 0.3, null, "tau", null]}',
                 '{"data": ["task_arithmetic", null, 0.3, null, "tau", {"digits": {"final": NaN}}]}'):
        r = httpx.post(url + "gradio_api/call/evaluate", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        event = r.json()["event_id"]
        stream = httpx.get(url + f"gradio_api/call/evaluate/{event}", timeout=30).text
        assert "event: error" in stream and "finite number" in stream and "Traceback" not in stream
    for task, message in (("nope", "unknown task"),):
        with pytest.raises(AppError, match=message):
            client.predict(task=task, api_name="/alignment")
    for kwargs in (dict(rounds=0), dict(rounds=2.5), dict(variant="fancy")):
        with pytest.raises(AppError):
            client.predict(**kwargs, api_name="/atm")
    # still serving
    assert client.predict(api_name="/evaluate")["method"] == "task_arithmetic"


def test_twenty_concurrent_evaluations_from_several_clients(served, reference):
    settings = [dict(method="task_arithmetic", coefficients={"digits": 0.25}, scaling=0.7),
                dict(method="dare", coefficients={"textures": 1.75}, scaling=0.45, params={"p": 0.3, "seed": 4})]
    want = [reference.evaluate(s["method"], coefficients=s["coefficients"], scaling=s["scaling"],
                               **s.get("params", {})).accuracy for s in settings]
    clients = [Client(served[0], verbose=False) for _ in range(4)]
    jobs = [(i % 2, clients[i % 4].submit(**settings[i % 2], api_name="/evaluate")) for i in range(20)]
    results = [(k, job.result(timeout=120)) for k, job in jobs]
    assert len(results) == 20
    for k, r in results:
        assert r["accuracy"] == want[k]
    for k in (0, 1):
        same = [json.dumps({x: r[x] for x in ("accuracy", "average", "normalized")}, sort_keys=True)
                for kk, r in results if kk == k]
        assert len(set(same)) == 1 and len(same) == 10


def test_atm_round_busy_and_status(client, served):
    apphelpers.wait_idle()
    root = served[1]
    before = len(Cache.open(root).manifest.atm_rounds("standard"))
    t0 = time.time()
    long_run = client.submit(rounds=3, variant="standard", api_name="/atm")
    while not client.predict(api_name="/atm_status")["busy"]:
        assert time.time() - t0 < 60
        time.sleep(0.05)
    with pytest.raises(AppError, match="busy"):
        Client(served[0], verbose=False).predict(rounds=1, variant="posthoc", api_name="/atm")
    # let one round finish, then cancel the rest
    while len(Cache.open(root).manifest.atm_rounds("standard")) == before:
        assert time.time() - t0 < 120
        time.sleep(0.1)
    assert client.predict(api_name="/atm_cancel")["cancel_requested"] is True
    r = long_run.result(timeout=120)
    assert r["state"] == "cancelled" and 1 <= r["rounds_finished"] < 3
    saved = Cache.open(root).manifest.atm_rounds("standard")
    assert len(saved) == before + r["rounds_finished"] and r["rounds"][-1]["round"] == len(saved)
    # one more round, to completion; it is an evaluate() method at once
    one = client.predict(rounds=1, variant="standard", api_name="/atm")
    assert one["state"] == "finished" and one["rounds_finished"] == 1
    assert Path(one["saved_to"]).resolve() == root.resolve()
    k = one["new_rounds"][0]["round"]
    assert k == len(saved) + 1
    assert client.predict(method=f"atm:standard:{k}", api_name="/evaluate")["accuracy"] == one["new_rounds"][0]["accuracy"]
    status = client.predict(api_name="/atm_status")
    assert status["state"] == "finished" and status["busy"] is False and status["rounds_saved"]["standard"] == k


def test_unavailable_cache_page_and_api(tmp_path):
    h = ui.load(tmp_path / "no-cache-here")
    with apphelpers.running_app(h) as url:
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        c = Client(url, verbose=False)
        with pytest.raises(AppError, match="no cache loaded: .*no such cache folder"):
            c.predict(api_name="/evaluate")
