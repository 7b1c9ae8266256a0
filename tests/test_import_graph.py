"""The package's imports run one way. Read from the source with ast (nothing is imported), every
import of a tvexplorer module, deferred ones inside functions included, is an edge; the test checks
that (a) no module reaches itself again through its imports and (b) no module imports one of a
higher layer: core <- merging, models, data <- science <- pipeline, demo <- app, cli. Beside the graph,
no module may grow past 500 lines."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tvexplorer"
LAYERS = {  # sub-packages (and the modules beside them), lowest first
    "core": ["core"],
    "merging, models, data": ["merging", "models", "data"],
    "science": ["science"],
    "pipeline, demo": ["pipeline", "demo"],
    "app, cli": ["app", "cli", "__main__"],
}
# The package's front door re-exports the cache and the merges, so it stands just above them.
FRONT_DOOR_LAYER = 1
LAYER_NAMES = list(LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom, modules) -> list[str]:
    """The modules a `from X import a, b` in `module` reads: X.a where that is a module, else X."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                targets.update(resolve(module, is_package, node, files))
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def layer_of(module: str) -> int:
    if module == "tvexplorer":
        return FRONT_DOOR_LAYER
    parts = module.removeprefix("tvexplorer.").split(".")
    for i, layer in enumerate(LAYERS.values()):
        if parts[0] in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_the_graph_is_read():
    graph = import_graph()
    assert "tvexplorer.cli" in graph and graph["tvexplorer.cli"], "the cli imports nothing? the parser is broken"


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_cycles():
    graph = import_graph()
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_layer_imports_a_higher_one():
    upward = [f"{m} ({LAYER_NAMES[layer_of(m)] if m != 'tvexplorer' else 'front door'}) imports {t} "
              f"({LAYER_NAMES[layer_of(t)] if t != 'tvexplorer' else 'front door'})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_module_over_500_lines():
    """A module longer than that mixes concerns (as demo/world.py and cache.py did before they were split)."""
    benchmarks = PACKAGE.parent / "benchmarks" / "bench"
    long = {str(p.relative_to(PACKAGE.parent)): n for p in [*PACKAGE.rglob("*.py"), *benchmarks.rglob("*.py")]
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
