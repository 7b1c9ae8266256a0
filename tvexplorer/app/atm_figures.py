"""The ATM tab's figures, drawn from `science.atm_report.atm_report`'s plain data: accuracy against the
training budget, the orthogonality of each round's task updates, and each task's gain or loss."""
from __future__ import annotations

import plotly.graph_objects as go

from ..science.atm_report import gains_table
from .figures import FINETUNED, LAYOUT, MULTITASK, PALETTE, ZERO_SHOT, empty

REFERENCE_STYLE = {"zero_shot": (ZERO_SHOT, "circle"), "finetuned": (FINETUNED, "star"), "multitask": (MULTITASK, "diamond"),
                   "task_arithmetic": ("#c9463d", "square"), "task_arithmetic_one_epoch": ("#e6842a", "triangle-up")}


def budget_figure(report: dict) -> go.Figure:
    """Average test accuracy against the training spent (all tasks' optimizer steps, as a multiple of
    fine-tuning's): where ATM's rounds reach the budget of fine-tuning, and what it bought there."""
    fig = go.Figure()
    for ref in report["references"]:
        color, symbol = REFERENCE_STYLE.get(ref["key"], ("#7f7f7f", "circle"))
        fig.add_scatter(x=[ref["budget"]], y=[100 * ref["average"]], mode="markers", name=f"{ref['name']}: {100 * ref['average']:.1f} %",
                        marker=dict(size=13, color=color, symbol=symbol, line=dict(width=1, color="white")),
                        hovertemplate=f"{ref['name']}<br>budget %{{x:.2f}} x fine-tuning<br>average %{{y:.2f}} %<extra></extra>")
    for i, (variant, run) in enumerate(report["runs"].items()):
        rounds = run["rounds"]
        if not rounds:
            continue
        start = 1.0 if run["settings"].get("start", {}).get("method") == "task_arithmetic" else 0.0
        ta = next((r["average"] for r in report["references"] if r["key"] == "task_arithmetic"), None)
        zs = next((r["average"] for r in report["references"] if r["key"] == "zero_shot"), None)
        first = ta if start else zs  # where the run starts: theta0, or the task-arithmetic merge
        x = [start] + [r["budget"] for r in rounds]
        y = [None if first is None else 100 * first] + [100 * r["average"] for r in rounds]
        labels = ["start"] + [f"round {r['round']}, alpha {r['alpha']:.3g}" for r in rounds]
        name = f"ATM {variant}" + (" (tvexplorer extension)" if run["extension"] else " (paper)")
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=name, customdata=labels,
                        line=dict(color=PALETTE[i % len(PALETTE)], width=3, dash="solid" if not run["extension"] else "dash"),
                        hovertemplate=f"{name}<br>%{{customdata}}<br>budget %{{x:.2f}} x fine-tuning<br>"
                                      "average %{y:.2f} %<extra></extra>")
    fig.add_vline(x=1.0, line=dict(color="#999", dash="dot", width=1), annotation_text="fine-tuning's budget",
                  annotation_position="top left")
    fig.update_layout(**LAYOUT, height=460, title=dict(text="ATM against its training budget", font=dict(size=14)),
                      xaxis=dict(title="training spent, as a multiple of fine-tuning's (all tasks' optimizer steps)", rangemode="tozero"),
                      yaxis=dict(title="average test accuracy (%)"), legend=dict(orientation="h", y=-0.3))
    return fig


def orthogonality_figure(report: dict) -> go.Figure:
    """Mean |cos| between the task updates of each round, per run: the ATM paper finds it falls."""
    fig = go.Figure()
    for i, (variant, run) in enumerate(report["runs"].items()):
        points = [(r["round"], r["mean_abs_cosine"]) for r in run["rounds"] if r["mean_abs_cosine"] is not None]
        if points:
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=f"ATM {variant}",
                            line=dict(color=PALETTE[i % len(PALETTE)], width=2),
                            hovertemplate=f"ATM {variant}, round %{{x}}<br>mean |cos| %{{y:.4f}}<extra></extra>")
    if not fig.data:
        return empty("No ATM round saved yet")
    fig.update_layout(**LAYOUT, height=340, title=dict(text="Orthogonality of each round's task updates", font=dict(size=14)),
                      xaxis=dict(title="ATM round", dtick=1), yaxis=dict(title="mean |cos| between task updates", rangemode="tozero"),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def gains_figure(report: dict, variant: str) -> go.Figure:
    """Task by round: accuracy change from each task's own task-arithmetic accuracy, in points."""
    if variant not in report["runs"] or not report["runs"][variant]["rounds"]:
        return empty(f"No saved round of ATM {variant}")
    table = gains_table(report, variant)
    bound = max(1.0, float(table.abs().max().max()))
    fig = go.Figure(go.Heatmap(z=table.values, x=list(table.columns), y=list(table.index), zmin=-bound, zmax=bound,
                               colorscale="RdBu", text=[[f"{v:+.1f}" for v in row] for row in table.values],
                               texttemplate="%{text}", colorbar=dict(title="points"),
                               hovertemplate="%{y}, %{x}: %{z:+.1f} points against task arithmetic<extra></extra>"))
    fig.update_layout(**LAYOUT, height=max(320, 34 * len(table.index) + 140),
                      title=dict(text=f"ATM {variant}: each task's gain (blue) or loss (red) against task arithmetic",
                                 font=dict(size=14)),
                      xaxis=dict(title="after round"), yaxis=dict(title="task", autorange="reversed"))
    return fig
