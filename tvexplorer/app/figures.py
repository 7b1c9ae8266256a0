"""Plotly figures of the app. Each takes the explorer's plain data and returns a go.Figure (the merge chart:
its JSON) with axis titles, units and hover values; none computes anything the explorer does not already return."""
from __future__ import annotations

from functools import cache

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ZERO_SHOT, MERGED, FINETUNED = "#b8b8b8", "#2b7bba", "#505050"
MULTITASK, PROBE = "#3a9e5a", "#8c6bb1"
PALETTE = ["#2b7bba", "#e6842a", "#3a9e5a", "#c9463d", "#8c6bb1", "#8c564b", "#d46fb0", "#7f7f7f", "#b5b82b", "#17becf"]
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), hoverlabel=dict(namelength=-1),
              font=dict(size=12))


def _pct(x):
    return None if x is None else 100 * x


def short_layer(name: str) -> str:
    return name.replace("transformer.resblocks.", "block ").replace(".weight", ".w").replace(".bias", ".b")


def empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14))
    fig.update_layout(**LAYOUT, height=300, xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def merge_figure(result: dict, tasks: list[str]) -> dict:
    """Per task (and on average): zero-shot, merged and fine-tuned accuracy, grouped bars in percent.

    Redrawn on every slider release, so it is built as plotly's JSON directly: go.Figure's property
    validation took about 57 ms of each update, this takes well under one."""
    x = [*tasks, "average"]
    avg = lambda d: sum(d[t] for t in tasks) / len(tasks)
    series = [("zero-shot", result["zero_shot"], ZERO_SHOT), (f"merged: {result['label']}", result["accuracy"], MERGED),
              ("fine-tuned (one model per task)", result["finetuned"], FINETUNED)]
    data = []
    for name, values, color in series:
        y = [_pct(values[t]) for t in tasks] + [_pct(avg(values))]
        data.append(dict(type="bar", name=name, x=x, y=y, marker=dict(color=color), text=[f"{v:.1f}" for v in y],
                         textposition="outside", cliponaxis=False,
                         hovertemplate="%{x}<br>" + name + ": %{y:.2f} %<extra></extra>"))
    # The ceilings a merge is judged against: what the pretrained features allow, and one model trained on all tasks.
    for name, key, color, symbol in (("multi-task (joint fine-tuning)", "multitask", MULTITASK, "line-ew"),
                                     ("linear probe of theta0", "linear_probe", PROBE, "line-ew")):
        values = result.get(key)
        if not values:
            continue
        y = [_pct(values[t]) for t in tasks] + [_pct(avg(values))]
        data.append(dict(type="scatter", name=name, x=x, y=y, mode="markers",
                         marker=dict(symbol=symbol, size=34, color=color, line=dict(width=3, color=color)),
                         hovertemplate="%{x}<br>" + name + ": %{y:.2f} %<extra></extra>"))
    na = result.get("normalized_average")
    title = (f"{result['label']}, scaling {result['scaling']:g}: average {100 * result['average']:.1f} %"
             + (f", normalized {100 * na:.1f} % of fine-tuned" if na is not None else ""))
    layout = {**_plain_layout(), "barmode": "group", "title": dict(text=title, font=dict(size=14)), "height": 420,
              "yaxis": dict(title=dict(text="test accuracy (%)"), range=[0, 105]), "xaxis": dict(title=dict(text="task")),
              "legend": dict(orientation="h", y=-0.2)}
    return {"data": data, "layout": layout}


@cache
def _plain_layout() -> dict:
    """LAYOUT as plotly's JSON, its named template expanded (plotly.js knows no template names)."""
    return go.Figure(layout=LAYOUT).to_plotly_json()["layout"]


def epochs_figure(alignments: dict[str, dict]) -> go.Figure:
    """Per epoch e: cos(theta_e - theta_{e-1}, -g0) and the epoch's share of the summed update norms."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("cos(update of epoch e, -g0)", "share of the total update norm"))
    for i, (task, a) in enumerate(alignments.items()):
        color = PALETTE[i % len(PALETTE)]
        e = pd.DataFrame(a["epochs"])
        if e.empty:
            continue
        fig.add_scatter(x=e["epoch"], y=e["cos_update_neg_g0"], mode="lines+markers", name=task, legendgroup=task,
                        line=dict(color=color), row=1, col=1,
                        customdata=e[["cos_tau_e_tau", "cos_tau_e_neg_g0"]].values,
                        hovertemplate=f"{task}, epoch %{{x}}<br>cos(update, -g0) %{{y:.3f}}<br>"
                                      "cos(tau_e, tau) %{customdata[0]:.3f}<br>cos(tau_e, -g0) %{customdata[1]:.3f}<extra></extra>")
        fig.add_bar(x=e["epoch"], y=100 * e["norm_share"], name=task, legendgroup=task, showlegend=False,
                    marker_color=color, row=2, col=1,
                    customdata=e["update_norm"].values,
                    hovertemplate=f"{task}, epoch %{{x}}<br>share %{{y:.1f}} %<br>|update| %{{customdata:.4g}}<extra></extra>")
    fig.update_yaxes(title_text="cosine", range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="share of Σ|update| (%)", range=[0, 100], row=2, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=2, col=1)
    fig.update_layout(**LAYOUT, barmode="group", height=520,
                      title=dict(text="Fine-tuning trajectory against the first-epoch gradient", font=dict(size=14)))
    return fig


def layers_figure(tables: dict[str, pd.DataFrame]) -> go.Figure:
    """One task: per-layer cosines (heatmap) and norms of tau and tau1 (bars). All tasks: per-layer
    cos(tau, -g0) and cos(tau1, -g0), layers by tasks."""
    first = next(iter(tables.values()))
    layers = [short_layer(n) for n in first["layer"]]
    height = max(380, 16 * len(layers) + 140)
    if len(tables) == 1:
        task, t = next(iter(tables.items()))
        cols = ["cos_tau_neg_g0", "cos_tau1_neg_g0", "cos_tau1_tau"]
        names = ["cos(tau, -g0)", "cos(tau1, -g0)", "cos(tau1, tau)"]
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.55, 0.45], horizontal_spacing=0.03,
                            subplot_titles=("cosines per parameter tensor", "norms per parameter tensor"))
        fig.add_heatmap(z=t[cols].values, x=names, y=layers, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                        colorbar=dict(title="cosine", x=0.52, len=0.8), text=t[cols].round(2).values, customdata=t[["layer"]].values,
                        hovertemplate="%{customdata[0]}<br>%{x} = %{z:.4f}<extra></extra>", row=1, col=1)
        for name, col, color in (("|tau|", "norm_tau", MERGED), ("|tau1|", "norm_tau1", "#e6842a")):
            fig.add_bar(x=t[col], y=layers, orientation="h", name=name, marker_color=color, customdata=t[["layer"]].values,
                        hovertemplate="%{customdata[0]}<br>" + name + " = %{x:.4g}<extra></extra>", row=1, col=2)
        fig.update_xaxes(title_text="L2 norm (parameter units)", row=1, col=2)
        fig.update_layout(barmode="group", title=dict(text=f"{task}: alignment per parameter tensor", font=dict(size=14)))
    else:
        tasks = list(tables)
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                            subplot_titles=("cos(tau, -g0)", "cos(tau1, -g0)"))
        for c, col in enumerate(("cos_tau_neg_g0", "cos_tau1_neg_g0"), start=1):
            z = [[tables[task][col].iloc[i] for task in tasks] for i in range(len(layers))]
            fig.add_heatmap(z=z, x=tasks, y=layers, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                            showscale=c == 2, colorbar=dict(title="cosine"), customdata=[[n] * len(tasks) for n in first["layer"]],
                            hovertemplate="%{customdata}<br>task %{x}: %{z:.4f}<extra></extra>", row=1, col=c)
            fig.update_xaxes(title_text="task", row=1, col=c)
        fig.update_layout(title=dict(text="Per parameter tensor, every task", font=dict(size=14)))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=1, col=1)
    fig.update_layout(**{**LAYOUT, "margin": dict(l=150, r=20, t=70, b=50)}, height=height,
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def matrix_figure(matrix: pd.DataFrame, title: str) -> go.Figure:
    names = list(matrix.index)
    z = matrix.values
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                               text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}",
                               colorbar=dict(title="cosine"),
                               hovertemplate="cos(%{y}, %{x}) = %{z:.4f}<extra></extra>"))
    size = max(360, 46 * len(names) + 160)
    fig.update_layout(**LAYOUT, title=dict(text=title, font=dict(size=14)), height=size,
                      xaxis=dict(title="task", tickangle=-30), yaxis=dict(title="task", autorange="reversed"))
    return fig



def theory_figure(theory: dict) -> go.Figure:
    """Paper B's SGD record: relative error of each prediction against lr (log-log), one line per task
    and epoch, with a slope-1 guide through the smallest lr of the first line."""
    rows = pd.DataFrame(theory["rows"])
    slopes = {(r["task"], r["epoch"], r["prediction"]): r["slope"] for r in theory["slopes"]}
    names = {"sum_of_epoch_gradients": "-lr K Σ g(theta_e)", "epochs_times_g0": "-lr K e g0 (g0 only)"}
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=tuple(f"tau_e against {n}" for n in names.values()))
    for c, prediction in enumerate(names, start=1):
        part = rows[rows["prediction"] == prediction]
        for (task, epoch), line in part.groupby(["task", "epoch"], sort=False):
            color = PALETTE[list(dict.fromkeys(rows["task"])).index(task) % len(PALETTE)]
            label = f"{task}, epoch {epoch}"
            fig.add_scatter(x=line["lr"], y=line["rel_error"], mode="lines+markers", name=label, legendgroup=label,
                            showlegend=c == 1, line=dict(color=color, dash=["solid", "dash", "dot", "dashdot"][(epoch - 1) % 4]),
                            customdata=line[["cosine"]].values, row=1, col=c,
                            hovertemplate=f"{label}<br>lr %{{x:.3g}}<br>relative error %{{y:.3g}}<br>cosine %{{customdata[0]:.5f}}"
                                          f"<br>slope {slopes[(task, epoch, prediction)]:.2f}<extra></extra>")
        first = part[(part["task"] == part["task"].iloc[0]) & (part["epoch"] == 1)].sort_values("lr")
        lr0, err0 = first["lr"].iloc[0], first["rel_error"].iloc[0]
        lrs = [lr0, first["lr"].iloc[-1]]
        fig.add_scatter(x=lrs, y=[err0, err0 * lrs[1] / lr0], mode="lines", name="slope 1 (theorem)", showlegend=c == 1,
                        line=dict(color="black", dash="dot", width=1), hoverinfo="skip", row=1, col=c)
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="|tau_e - prediction| / |prediction|", row=1, col=1)
    fig.update_layout(**LAYOUT, height=460, title=dict(text="Paper B with plain SGD: the error is second order in lr",
                                                       font=dict(size=14)), legend=dict(font=dict(size=10)))
    return fig
