"""Registry of model-merging methods over task vectors (tau = theta_finetuned - theta0).

Each method is a small function over flat 1-D task vectors (see `core.layout.Layout`) plus a frozen
`MergeMethod` record naming its paper, default scaling and tunable `Param`s, so the CLI and the app
can list, validate and expose them the same way. Real inputs are ~8 x 88M float16 memory-mapped
vectors, so elementwise methods stream over tasks (never a [T, P] stack, at most a few full-length
float32 temporaries) and never write into their inputs; the SVD methods work one layer at a time.
A task-conditioned method (`per_task`, e.g. EMR) returns a `TaskDeltas`: one delta per task,
computed when that task is evaluated.
A method that needs more than the task vectors says what in `needs` (RegMean: "grams", each task's
input Gram matrices per linear layer); callers pass it per task as `task_inputs`, and the evaluator
supplies it from the cache (tvexplorer/science/evaluation.py), so no caller special-cases a method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..core.checks import finite, in_range
from ..core.layout import Layout, layer_of
from .elementwise import average, dare, task_arithmetic, ties
from .layers import lines, wudi
from .masks import consensus, emr, magmax, tall_masks
from .regmean import regmean
from .spectral import iso_c, tsv
from .subspace import cart, iso_cts
from .task_deltas import TaskDeltas

Tensor = torch.Tensor


@dataclass(frozen=True)
class Param:
    """A method's own tunable parameter; allowed values are low <= x <= high, minus the open ends."""
    name: str
    default: float
    low: float
    high: float
    help: str
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    per_task_share: bool = False  # the default is `default` divided by the number of tasks merged (LiNeS' 1/T)

    def default_for(self, tasks: int) -> float:
        """The default when `tasks` task vectors are merged."""
        return self.default / tasks if self.per_task_share else self.default

    @property
    def default_text(self) -> str:
        """The default as the documentation writes it ("1/T" for a per-task share)."""
        return f"{self.default:g}/T" if self.per_task_share else f"{self.default:g}"

    def check(self, method: str, value: float) -> float | int:
        x = in_range(f"{method} parameter {self.name}", value, self.low, self.high, self.low_open, self.high_open)
        if self.integer and x != int(x):
            raise ValueError(f"{method} parameter {self.name}={value!r} must be an integer")
        return int(x) if self.integer else x


@dataclass(frozen=True)
class MergeMethod:
    name: str
    label: str
    paper: str
    summary: str               # what it does, in a few words (the README's table of methods)
    default_scaling: float
    params: tuple[Param, ...]
    fn: Callable[..., Tensor]  # a per_task method's returns delta_of(task index) instead
    per_task: bool = False     # one merged model per task, each applied only when its own task is evaluated
    needs: str | None = None   # per-task data beyond the task vectors, passed to fn as `inputs`
    # True when the method merges every parameter tensor on its own (no threshold or random stream
    # over the whole vector), so per-layer coefficients can be applied tensor by tensor without copies.
    separable: bool = False


METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("task_arithmetic", "Task Arithmetic", "Ilharco et al., ICLR 2023",
                "sum", 0.3, (), task_arithmetic,
                separable=True),
    MergeMethod("average", "Weight averaging", "Wortsman et al., ICML 2022",
                "mean", 1.0, (), average, separable=True),
    MergeMethod("ties", "TIES", "Yadav et al., NeurIPS 2023",
                "trim to top-k %, elect sign, disjoint mean (fusionbench=1: as FusionBench counts, breaks ties and sums)", 1.0, (
        Param("k", 20.0, 0.0, 100.0, "percent of entries kept per task (largest magnitudes), in (0, 100]",
              low_open=True),
        Param("fusionbench", 0, 0, 1, "1: FusionBench's conventions (keep int(n k/100)+1 entries, an exact 0 sign "
              "sum takes the majority sign, merge by sum); 0: the paper's (ceil(n k/100), 0, mean)", integer=True),
    ), ties),
    MergeMethod("dare", "DARE", "Yu et al., ICML 2024",
                "drop with probability p, rescale by 1/(1-p), sum", 0.3, (
        Param("p", 0.5, 0.0, 1.0, "probability of dropping each entry, in [0, 1)", high_open=True),
        Param("seed", 0, 0, 2**31 - 1, "random seed, an integer in [0, 2^31 - 1]", integer=True),
    ), dare),
    MergeMethod("tsv", "TSV-M", "Gargiulo et al., CVPR 2025",
                "per-layer task singular vectors, orthogonalised", 1.0, (), tsv, separable=True),
    MergeMethod("iso_c", "Iso-C", "Marczak et al., ICML 2025",
                "flattened spectrum of the summed layer", 1.0, (), iso_c, separable=True),
    MergeMethod("iso_cts", "Iso-CTS", "Marczak et al., ICML 2025",
                "Iso-C's common directions plus each task's own ones in place of the weakest", 1.0, (
        Param("common_fraction", 0.8, 0.0, 1.0, "share of each layer's rank kept for the common subspace, in (0, 1]",
              low_open=True),
    ), iso_cts),
    MergeMethod("consensus", "Consensus TA", "Wang et al., ICML 2024",
                "the sum, minus the entries that fewer than k tasks' TALL masks keep", 0.3, (
        Param("mask_lambda", 0.6, 0.0, 5.0, "TALL mask threshold lambda, between 0 and 5"),
        Param("k", 2, 0, 100, "entries kept where at least k tasks' masks agree, an integer in [0, 100]", integer=True),
    ), consensus),
    MergeMethod("tall_masks", "TALL masks (per task)", "Wang et al., ICML 2024",
                "the sum restricted to each task's own TALL mask", 1.0, (
        Param("mask_lambda", 0.6, 0.0, 5.0, "TALL mask threshold lambda, between 0 and 5"),
    ), tall_masks, per_task=True),
    MergeMethod("emr", "EMR-merging (per task)", "Huang et al., NeurIPS 2024",
                "one elected vector, each task's sign mask and rescaler", 1.0, (), emr, per_task=True),
    MergeMethod("magmax", "MagMax", "Marczak et al., ECCV 2024",
                "per entry, the task value of largest magnitude", 0.5, (), magmax),
    MergeMethod("cart", "CART", "Choi et al., 2025",
                "mean plus low-rank centred task matrices", 1.0, (
        Param("rank_ratio", 0.08, 0.0, 1.0, "share of each layer's rank kept per centred task vector, in (0, 1]",
              low_open=True),
        Param("strength", 1.0, 0.0, 5.0, "weight of the low-rank centred parts, between 0 and 5"),
    ), cart),
    MergeMethod("lines", "LiNeS", "Wang et al., ICLR 2025",
                "the sum, each residual block scaled by alpha + beta * depth", 1.0, (
        Param("alpha", 1.0, 0.0, 2.0, "scale of the shallowest block and of the parameters outside the blocks, "
              "between 0 and 2 (default 1/T for T tasks, as the authors' code)", per_task_share=True),
        Param("beta", 0.5, -2.0, 2.0, "scale added at the deepest block, between -2 and 2"),
    ), lines),
    MergeMethod("wudi", "WUDI-merging", "Cheng et al., 2025",
                "per linear layer, Adam steps on the interference the task vectors predict", 1.0, (
        Param("steps", 400, 0, 10000, "Adam steps per linear layer, an integer in [0, 10000]", integer=True),
        Param("log10_lr", -5.0, -8.0, 0.0, "Adam learning rate 10^x, x between -8 and 0"),
    ), wudi),
    MergeMethod("regmean", "RegMean", "Jin et al., ICLR 2023",
                "per linear layer, least squares on each task's input Gram matrices", 1.0, (
        Param("alpha", 0.6, 0.0, 1.0, "factor on the Gram matrices' off-diagonal entries, in [0, 1] "
              "(FusionBench's reduce_non_diagonal_ratio: 0.95 in its CLIP config, 0.6 in its GPT-2 one; "
              "1 = plain least squares, 0 = diagonal)"),
    ), regmean, needs="grams"),
)}


def methods_markdown() -> str:
    """The registry as the README's table of methods: name, what it does, parameters with defaults, scaling."""
    rows = ["| name | method | parameters | default scaling |", "|---|---|---|---|"]
    for m in METHODS.values():
        params = ", ".join(f"`{p.name}` ({p.default_text})" for p in m.params)
        rows.append(f"| `{m.name}` | {m.label}: {m.summary} ({m.paper}) | {params} | {m.default_scaling:g} |")
    return "\n".join(rows) + "\n"


LayerCoefficients = Mapping[str, Mapping[str, float]]


def default_params(method: str, tasks: int) -> dict[str, float | int]:
    """The method's parameters at their defaults for a merge of `tasks` task vectors."""
    return {p.name: p.check(method, p.default_for(tasks)) for p in METHODS[method].params}


def check_layer_coefficients(layer_coefficients: LayerCoefficients | None, tasks, layout: Layout) -> dict[str, dict[str, float]]:
    """{task: {layer: coefficient}} checked against the tasks and `layout.layers()`, as floats."""
    layers = list(layout.layers())
    out = {}
    for task, per_layer in (layer_coefficients or {}).items():
        if task not in tasks:
            raise ValueError(f"layer coefficients name unknown task {task!r}; valid tasks: {sorted(tasks)}")
        if not isinstance(per_layer, Mapping):
            raise ValueError(f"layer coefficients of task {task!r} must map layer names to numbers, e.g. "
                             f"{{{layers[0]!r}: 0.5}}")
        for layer, c in per_layer.items():
            if layer not in layers:
                raise ValueError(f"layer coefficients of task {task!r} name unknown layer {layer!r}; layers: {', '.join(layers)}")
            finite(f"layer coefficient {task}:{layer}", c, "coefficients must be finite numbers")
        out[task] = {layer: float(c) for layer, c in per_layer.items()}
    return out


def merge_flat(method: str, vectors: Mapping[str, Tensor], layout: Layout, *,
               coefficients: Mapping[str, float] | None = None, scaling: float | None = None,
               task_inputs: Mapping[str, object] | None = None,
               layer_coefficients: LayerCoefficients | None = None, **params) -> Tensor | TaskDeltas:
    """Merge flat task vectors (task name -> 1-D tensor in `layout`, any float dtype, never written).

    Each task is multiplied by its coefficient (default 1.0), and each of its layers (`Layout.layers`)
    by layer_coefficients[task][layer] (default 1.0), before the method combines them; the result is
    multiplied by `scaling` (default: the method's default_scaling). A method with `needs` takes
    `task_inputs` (task name -> what it needs for that task). Returns float32 of shape
    (layout.numel,), or for a per_task method a TaskDeltas of such vectors (which reads `vectors`
    again whenever one is computed).
    """
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose one of: {', '.join(METHODS)}")
    spec = METHODS[method]
    if not vectors:
        raise ValueError("no task vectors given; pass at least one task")
    coefficients = dict(coefficients or {})
    unknown = sorted(set(coefficients) - set(vectors))
    if unknown:
        raise ValueError(f"coefficients name unknown task(s) {unknown}; valid tasks: {sorted(vectors)}")
    for task, c in coefficients.items():
        finite(f"coefficient for task {task!r}", c, "coefficients must be finite numbers")
    scaling = spec.default_scaling if scaling is None else scaling
    finite("scaling", scaling)
    by_name = {p.name: p for p in spec.params}
    for name in params:
        if name not in by_name:
            raise ValueError(f"method {method!r} has no parameter {name!r}; "
                             f"its parameters are: {', '.join(by_name) or '(none)'}")
    values = default_params(method, len(vectors)) | {name: by_name[name].check(method, v) for name, v in params.items()}
    for task, v in vectors.items():
        if v.ndim != 1 or v.numel() != layout.numel:
            raise ValueError(f"task vector {task!r} has shape {tuple(v.shape)}, the layout expects ({layout.numel},)")
        if not v.is_floating_point():
            raise ValueError(f"task vector {task!r} has dtype {v.dtype}; it must be a floating-point tensor")
    if spec.needs:
        missing = [t for t in vectors if t not in (task_inputs or {})]
        if missing:
            raise ValueError(f"method {method!r} needs {spec.needs} for every task and has none for {', '.join(missing)}; "
                             "merge through the Evaluator, which supplies them from the cache")
        values["inputs"] = [task_inputs[t] for t in vectors]
    per_task = [float(coefficients.get(t, 1.0)) for t in vectors]
    per_layer = check_layer_coefficients(layer_coefficients, vectors, layout)
    if not any(per_layer.values()):
        merged = spec.fn(list(vectors.values()), per_task, layout, **values)
    else:
        merged = _merge_per_layer(spec, list(vectors.values()), per_task, [per_layer.get(t, {}) for t in vectors],
                                  layout, values)
    if spec.per_task:
        return TaskDeltas(list(vectors), lambda i: merged(i).mul_(scaling))
    return merged.mul_(scaling)


def _merge_per_layer(spec: MergeMethod, vectors: list[Tensor], per_task: list[float], per_layer: list[dict[str, float]],
                     layout: Layout, values: dict) -> Tensor:
    """The method over task vectors scaled layer by layer: a separable method merges each parameter tensor
    with that tensor's coefficients (no copies); any other gets one scaled float32 copy per task."""
    def coefficient(i: int, name: str) -> float:
        return per_task[i] * per_layer[i].get(layer_of(name), 1.0)

    if spec.separable:
        out = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
        for name, shape, sl in layout.slices():
            out[sl] = spec.fn([v[sl] for v in vectors], [coefficient(i, name) for i in range(len(vectors))],
                              Layout((name,), (shape,)), **values)
        return out
    scaled = [v.to(torch.float32, copy=True) for v in vectors]
    for i, v in enumerate(scaled):
        for name, _, sl in layout.slices():
            v[sl] *= coefficient(i, name)
    return spec.fn(scaled, [1.0] * len(vectors), layout, **values)


def merge(method: str, task_vectors: Mapping[str, Mapping[str, Tensor]], *,
          coefficients: Mapping[str, float] | None = None, scaling: float | None = None,
          task_inputs: Mapping[str, object] | None = None,
          layer_coefficients: LayerCoefficients | None = None, **params) -> dict[str, Tensor] | TaskDeltas:
    """Merge task vectors given as {task: {parameter name: delta}}; returns {parameter name: merged delta},
    or for a per_task method {task: {parameter name: merged delta}}, each task's computed when looked up.
    RegMean's task_inputs: {task: {parameter name: LinearInput}}; layer_coefficients: {task: {layer:
    value}} over the layers of `core.layout.Layout.layers`."""
    if not task_vectors:
        raise ValueError("no task vectors given; pass at least one task")
    first = next(iter(task_vectors))
    layout = Layout.of(task_vectors[first])
    flat = {}
    for task, params_of_task in task_vectors.items():
        # Keep float16 deltas in float16 so flattening does not double their memory.
        half = all(t.dtype == torch.float16 for t in params_of_task.values())
        try:
            flat[task] = layout.flatten(params_of_task, dtype=torch.float16 if half else torch.float32)
        except ValueError as e:
            raise ValueError(f"task {task!r} does not match task {first!r}: {e}") from None
    merged = merge_flat(method, flat, layout, coefficients=coefficients, scaling=scaling, task_inputs=task_inputs,
                        layer_coefficients=layer_coefficients, **params)
    return merged.map(layout.unflatten) if isinstance(merged, TaskDeltas) else layout.unflatten(merged)
