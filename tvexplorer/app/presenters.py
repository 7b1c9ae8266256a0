"""What the app shows of the explorer service's answers: tables in percent and Markdown text. The
service (explorer.py) answers with plain data, which the API returns as it is; these functions turn
it into what a person reads."""
from __future__ import annotations

import pandas as pd

from ..merging import MergeMethod
from .explorer import Explorer
from .gradients import FULL_BATCH_NOTE


def method_hint(spec: MergeMethod, previewable: bool) -> str:
    """The Merge panel's line about a registry method: its paper and default scaling, whether each task
    gets its own model, and why there is no instant preview where there is none."""
    hint = f"**{spec.label}** ({spec.paper}); default scaling {spec.default_scaling:g}."
    if spec.per_task:
        hint += " Task-conditioned: each task is evaluated with its own merged model (one shared vector, its own mask)."
    if not previewable:
        hint += (" No instant preview for this method (the preview is linear in the task vectors, this merge is not): "
                 "the numbers appear when the exact evaluation finishes.")
    return hint


def result_table(ex: Explorer, result: dict) -> pd.DataFrame:
    """The numbers of an evaluate() result as a table in percent, one row per task and the average."""
    rows = []
    for t in ex.tasks:
        n = result["normalized"].get(t)
        rows.append({"task": t, "zero-shot %": 100 * result["zero_shot"][t], "merged %": 100 * result["accuracy"][t],
                     "fine-tuned %": 100 * result["finetuned"][t], "normalized %": None if n is None else 100 * n})
    zs, ft = result["zero_shot"], result["finetuned"]
    na = result.get("normalized_average")
    rows.append({"task": "average", "zero-shot %": 100 * sum(zs.values()) / len(zs), "merged %": 100 * result["average"],
                 "fine-tuned %": 100 * sum(ft.values()) / len(ft), "normalized %": None if na is None else 100 * na})
    return pd.DataFrame(rows).round(2)


def alignment_summary(ex: Explorer, tasks: list[str]) -> pd.DataFrame:
    rows = []
    for t in tasks:
        a = ex.task_alignment(t)
        first = a["epochs"][0] if a["epochs"] else {}
        rows.append({"task": t, "cos(tau, -g0)": a["cos_tau_neg_g0"], "cos(tau1, -g0)": a["cos_tau1_neg_g0"],
                     "cos(tau1, tau)": a["cos_tau1_tau"], "|tau|": a["norm_tau"], "|tau1|": a["norm_tau1"],
                     "|lr g0|": a["norm_lr_g0"], "epoch-1 share of update norm": first.get("norm_share"),
                     **({"|tau1 + lr g0| / |lr g0|": a["full_batch_rel_err"]} if ex.full_batch_exact else {})})
    return pd.DataFrame(rows)


def full_batch_text(ex: Explorer, tasks: list[str]) -> str:
    t = ex.training
    if ex.full_batch_exact:
        errs = ", ".join(f"{x} {ex.task_alignment(x)['full_batch_rel_err']:.3g}" for x in tasks)
        return (f"{FULL_BATCH_NOTE} This cache was fine-tuned with 'gd', so the measured |tau1 + lr g0| / |lr g0| "
                f"shows only floating-point rounding and the storage precision of the vectors: {errs}.")
    cosines = ", ".join(f"{x} {ex.task_alignment(x)['cos_tau1_neg_g0']:.3f}" for x in tasks)
    return (f"This cache was fine-tuned with {t.optimizer} (lr {t.lr:g}, batch size {t.batch_size}), "
            "whose steps are not -lr * g, so |tau1 + lr g0| is no test of the theorem here. What carries over is "
            f"the direction: cos(tau1, -g0) = {cosines}. {FULL_BATCH_NOTE}")


def atm_table(ex: Explorer) -> pd.DataFrame:
    """Every saved round: its budget (x fine-tuning's training), alpha, mean |cos| of the task updates, accuracies."""
    rows = []
    for variant, run in ex.atm_summary()["runs"].items():
        for r in run["rounds"]:
            rows.append({"variant": variant, "round": r["round"], "budget (x FT)": r["budget"], "alpha x T": r["alpha"] * len(ex.tasks),
                         "mean |cos|": r["mean_abs_cosine"], **{f"{t} %": 100 * r["accuracy"][t] for t in ex.tasks},
                         "average %": 100 * r["average"], "normalized %": 100 * r["normalized_average"]})
    columns = ["variant", "round", "budget (x FT)", "alpha x T", "mean |cos|", *(f"{t} %" for t in ex.tasks), "average %", "normalized %"]
    return pd.DataFrame(rows, columns=columns).round(3)


def atm_runs_text(ex: Explorer) -> str:
    """One line per saved run: whose rule it is and its settings; the share of the TA -> FT gap closed."""
    lines = []
    for variant, run in ex.atm_summary()["runs"].items():
        closed = ", ".join(f"{v:.2f} of the task arithmetic → fine-tuned gap closed at round {k}" for k, v in run["gap_closed"].items())
        lines.append(f"- **{variant}** — {run['description']}; {len(run['rounds'])} round(s) saved" + (f"; {closed}" if closed else ""))
    return "\n".join(lines) or "No ATM run saved yet."


def about_cache(ex: Explorer) -> str:
    i = ex.info()
    t = i["training"]
    mib = lambda b: f"{b / 2**20:,.1f} MiB"
    lines = [f"- **Cache:** `{i['cache']}`",
             f"- **Model:** `{i['model']}`" + (f" ({i['pretrained']})" if i.get("pretrained") else "")
             + f"; image encoder ViT with width {i['vision']['width']}, {i['vision']['layers']} layers, "
             f"patch {i['vision']['patch_size']}, images {i['vision']['image_size']} px",
             f"- **Parameters:** {i['parameters']:,} in {i['parameter_tensors']} tensors; task vectors stored as {i['vector_dtype']}",
             (f"- **Fine-tuning:** {t['optimizer']}, lr {t['lr']:g}, {t['epochs']} epochs, batch size {t['batch_size']}, "
              f"weight decay {t.get('weight_decay')}, gradient clipping {t.get('grad_clip')}" if t else
              "- **Task vectors:** imported from published fine-tuned checkpoints (no gradient record: the "
              "alignment panel and the 1-epoch vectors are not available)"),
             f"- **Tasks ({len(i['tasks'])}):** " + ", ".join(f"{name} ({v['classes']} classes)" for name, v in i["tasks"].items()),
             f"- **Files:** {mib(i['total_bytes'])} in all: "
             + ", ".join(f"{k} {mib(v)}" for k, v in sorted(i["file_bytes"].items(), key=lambda kv: -kv[1])),
             f"- **Exact evaluation:** {ex.evaluation_scope()}",
             "- **ATM rounds saved:** " + (", ".join(f"{v} {n}" for v, n in i["atm"].items()) or "none"),
             f"- **Writes:** {ex.where_saved()}"]
    return "\n".join(lines)
