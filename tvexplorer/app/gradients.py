"""The gradient-alignment views of the explorer (the Gradient alignment tab and /alignment): task vectors
against first-epoch gradients, per epoch and per layer, task-by-task cosine matrices and paper B's theory
record. A part of Explorer (explorer.py), kept in its own module; it reads the explorer's cache (`source`),
saved ATM rounds and memo."""
from __future__ import annotations

import pandas as pd

from ..core.additions import ATM_PREFIX, MethodKey
from ..science.alignment import cosine_matrix, full_batch_identity_holds, layer_alignment, task_alignment
from . import inputs
from .inputs import ALL_TASKS, MATRIX_KINDS, clean

FULL_BATCH_NOTE = (
    "After one epoch of full-batch plain gradient descent ('gd') from theta0, tau1 = -lr * g0 holds by "
    "construction: that epoch is one step along g0 itself. The theorem's real content is the mini-batch, "
    "multi-epoch case, where it holds up to an error of second order in lr; the Theory section below "
    "measures that with plain SGD.")
THEORY_NOTE = (
    "Plain mini-batch SGD (float64, constant lr, no momentum, weight decay or clipping, the same batch order "
    "every epoch) from theta0, with K = N/B batches per epoch. Paper B predicts tau_e = -lr * K * "
    "sum_{e'<e} g(theta_e') up to a second-order error, so the relative error should fall in proportion to lr: "
    "slope 1 on this log-log plot (dotted guide). 'g0 only' predicts -lr * K * e * g0, ignoring how the "
    "gradient changes after the first epoch.")


class GradientViews:
    """Explorer's alignment methods: they use its `source` cache, `tasks`, `training`, `parse_method`,
    `atm_runs`, `atm_cache` and `_memoised`."""

    def check_task(self, task) -> list[str]:
        return inputs.task(self.tasks, task)

    def require_gradient_record(self) -> None:
        if not self.source.has_gradient_record:
            raise ValueError("this cache was imported from published fine-tuned checkpoints, which carry no first-epoch "
                             "record (tau1, g0, trajectories); build a cache by fine-tuning to compare gradients "
                             "with task vectors")

    def task_alignment(self, task: str) -> dict:
        self.require_gradient_record()
        return self._memoised(("align", task), lambda: task_alignment(self.source, task))

    def layer_table(self, task: str) -> pd.DataFrame:
        c = self.source
        self.require_gradient_record()
        return self._memoised(("layers", task), lambda: layer_alignment(
            c.layout, c.vector(task, "tau"), c.vector(task, "tau1"), c.vector(task, "g0")))

    def trajectory(self) -> pd.DataFrame:
        return self._memoised(("trajectory",), self.source.trajectory)

    def matrix_choices(self) -> list[tuple[str, str]]:
        out = [(label, key) for key, label in MATRIX_KINDS.items() if key in self.source.vector_kinds]
        for variant, run in self.atm_runs().items():
            for r in run.rounds:
                out.append((f"ATM {variant}, round {r.round}: updates of every task",
                            str(MethodKey(atm_variant=variant, atm_round=r.round))))
        return out

    def cosine_matrix(self, kind: str = "tau") -> pd.DataFrame:
        """Task-by-task cosines of tau, tau1, g0, or the task updates of a saved ATM round."""
        if kind in MATRIX_KINDS:
            if kind not in self.source.vector_kinds:
                self.require_gradient_record()
            return self._memoised(("cos", kind), lambda: cosine_matrix(self.source.vectors(kind)))
        if isinstance(kind, str) and kind.startswith(ATM_PREFIX):
            key = self.parse_method(kind)
            m = self.atm_cache.manifest.atm_round(key.atm_variant, key.atm_round).update_cosines
            return pd.DataFrame([list(row) for row in m], index=self.tasks, columns=self.tasks)
        raise ValueError(f"unknown matrix {kind!r}; choose one of: {', '.join(k for _, k in self.matrix_choices())}")

    @property
    def full_batch_exact(self) -> bool:
        return full_batch_identity_holds(self.training.optimizer)

    def theory(self) -> dict | None:
        """The cache's SGD record (tvexplorer/science/theory.py) with its log-log slopes, or None."""
        from ..science.theory import error_slopes
        table = self._memoised(("theory",), self.source.theory)
        if table is None:
            return None
        return clean({"note": THEORY_NOTE, "rows": table.to_dict("records"),
                      "slopes": error_slopes(table).to_dict("records")})

    def alignment(self, task: str | None = ALL_TASKS, matrices: list[str] | None = None) -> dict:
        """Plain data for one task or all: alignment summaries with per-epoch records, per-layer
        records, and task-by-task cosine matrices (tau, tau1, g0 and every saved ATM round)."""
        tasks = self.check_task(task)
        self.require_gradient_record()
        kinds = matrices or [k for _, k in self.matrix_choices()]
        return clean({
            "optimizer": self.training.optimizer, "lr": self.training.lr, "epochs": self.training.epochs,
            "full_batch_exact": self.full_batch_exact,
            "full_batch_note": FULL_BATCH_NOTE,
            "tasks": {t: self.task_alignment(t) for t in tasks},
            "layers": {t: self.layer_table(t).to_dict("records") for t in tasks},
            "cosine_matrices": {k: {"tasks": self.tasks, "matrix": self.cosine_matrix(k).values.tolist()} for k in kinds},
        })
