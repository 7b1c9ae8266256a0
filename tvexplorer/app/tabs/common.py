"""What every tab shares: named bundles of components, and the one path from a handler to the page.

A tab's handlers take and return plain dicts keyed by name ({"method": "ties", "coefficients": {...}}),
never positional tuples, so they are tested without a browser and a control is added in one place.
`Bundle` maps names to components (a name may stand for a dict of components: one slider per task);
`wire` connects a handler to them: it reads the components' values into names, writes the names the
handler returns into the components it names (the others stay as they are), follows generator handlers,
and turns a bad input (ValueError and the like) into a warning toast plus the handler's own `on_error`
line, never a traceback. The API endpoints (api.py) share the same errors through `api_errors`.
"""
from __future__ import annotations

import json
import logging
import math
from functools import wraps

import gradio as gr
from gradio.components.plot import PlotData

from ...core.errors import CacheError, first_line
from ..runs import Busy

log = logging.getLogger("tvexplorer.app")
USER_ERRORS = (ValueError, KeyError, CacheError, FileNotFoundError, Busy)
PRIVATE = dict(api_visibility="private")


class Bundle:
    """Named components; a name may hold a dict {key: component} (read and written as {key: value})."""

    def __init__(self, **components):
        self.named = components

    def __getattr__(self, name):
        try:
            return self.__dict__["named"][name]
        except KeyError:
            raise AttributeError(name) from None

    def components(self, *names) -> list:
        out = []
        for name in names or self.named:
            c = self.named[name]
            out += list(c.values()) if isinstance(c, dict) else [c]
        return out

    def read(self, values: dict) -> dict:
        return {name: {k: values[x] for k, x in c.items()} if isinstance(c, dict) else values[c]
                for name, c in self.named.items()}

    def write(self, named: dict) -> dict:
        out = {}
        for name, value in named.items():
            c = self.named[name]
            if isinstance(c, dict):
                out.update({c[k]: v for k, v in value.items() if k in c})
            else:
                out[c] = value
        return out


def warn(error: BaseException) -> str:
    """The one line a person sees for a bad input: as a warning toast, and returned for a status line."""
    line = first_line(error)
    gr.Warning(line)
    return line


def adapt(handler, inputs: Bundle | None, outputs: Bundle, on_error=None, stream=False, session=False):
    """The gradio function for `handler(named inputs) -> named outputs` (with stream=True: an iterator of
    them, each shown as it comes; with session=True the handler also gets the browser session's id): it
    takes the dict of values gradio passes for a set of inputs, and a bad input becomes a warning plus
    `on_error(line)` (default: the warning alone)."""
    def show(named: dict) -> dict:
        # gradio reads an empty dict as one output value, not as "change nothing": skip each output instead
        return outputs.write(named) or {c: gr.skip() for c in outputs.components()}

    def failed(e):
        line = warn(e)
        return show(on_error(line) if on_error else {})

    def call(values, request):
        named = inputs.read(values) if inputs else {}
        return handler(named, getattr(request, "session_hash", None)) if session else handler(named)

    if stream:
        def run(values=None, request: gr.Request = None):
            try:
                for named in call(values, request):
                    yield show(named)
            except USER_ERRORS as e:
                yield failed(e)
    else:
        def run(values=None, request: gr.Request = None):
            try:
                return show(call(values, request))
            except USER_ERRORS as e:
                return failed(e)
    run.__name__ = handler.__name__
    return run


def wire(trigger, handler, inputs: Bundle | None, outputs: Bundle, on_error=None, names=(), stream=False, session=False,
         **kwargs):
    """Connect `handler` (see adapt) to `trigger` (an event listener such as button.click, or a list of them
    for gr.on), reading the inputs `names` (default all); kwargs go to the listener."""
    reads = Bundle(**{n: inputs.named[n] for n in names or inputs.named}) if inputs else None
    listen = dict(inputs=set(reads.components()) if reads else None, outputs=outputs.components(), **kwargs)
    run = adapt(handler, reads, outputs, on_error, stream, session)
    if isinstance(trigger, list):
        return gr.on(trigger, run, **listen)
    return trigger(run, **listen)


def api_errors(fn):
    """API endpoint: bad input -> gr.Error with one line; anything unexpected is logged and reported briefly."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(first_line(e), print_exception=False) from None
        except Exception as e:  # never a traceback to the client; the server log has it
            log.exception("internal error in %s", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}): {first_line(e)}", print_exception=False) from None
    return wrapper


def plot(figure: dict) -> PlotData:
    """A figure given as plotly JSON, handed to gr.Plot as is (gr.Plot would otherwise want a go.Figure)."""
    return PlotData(type="plotly", plot=json.dumps(figure))


def percent(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"
