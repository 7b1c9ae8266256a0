"""The About tab: what task vectors, the first-epoch gradient result and ATM are, and the loaded cache."""
from __future__ import annotations

import gradio as gr

from .. import presenters
from ..about import ABOUT


def about_text(ex) -> str:
    return ABOUT + "\n### The loaded cache\n" + presenters.about_cache(ex)


def build_about_tab(app) -> None:
    with gr.Tab("About", id="about"):
        gr.Markdown(about_text(app.ex))
