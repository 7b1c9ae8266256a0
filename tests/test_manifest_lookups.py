"""Outside core/, nothing looks the manifest up by string keys: readers use the typed records of
core/manifest.py, core/records.py and core/additions.py, checked once when the cache is opened (the
manifest has no JSON view to index any more). Read from the source with ast (nothing is imported): a
lookup is a subscript, or a get/pop/setdefault call, with a constant key on an expression that reaches
the manifest: `.manifest`, a variable named `manifest`, or a variable that the same function assigns
one of these to (`m = cache.manifest`, then `m["files"]`). Apart from items() and values(), a method's result is computed data, not the
manifest (`manifest.metrics.averages()["zero_shot"]` passes)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tvexplorer"
KEYED_CALLS = {"get", "pop", "setdefault"}
ITERATION = {"items", "values"}  # what a loop over a part of the manifest goes through


def reaches_manifest(node: ast.AST, aliases: set[str] = frozenset()) -> bool:
    while True:
        if isinstance(node, ast.Attribute):
            if node.attr == "manifest":
                return True
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ITERATION:
            node = node.func.value
        else:
            return isinstance(node, ast.Name) and (node.id == "manifest" or node.id in aliases)


def manifest_aliases(tree: ast.AST) -> set[str]:
    """Names that `tree` (a function, with the functions inside it) assigns an expression reaching the manifest to."""
    pairs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs += zip(target.elts, node.value.elts)
                else:
                    pairs.append((target, node.value))
        elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Tuple):
            pairs += [(t, node.iter) for t in node.target.elts]
        elif isinstance(node, (ast.For, ast.comprehension)):
            pairs.append((node.target, node.iter))
    aliases: set[str] = set()
    while True:
        found = {t.id for t, value in pairs if isinstance(t, ast.Name) and reaches_manifest(value, aliases)}
        if found <= aliases:
            return aliases
        aliases |= found


def is_key(node: ast.AST) -> bool:
    """A string constant, a module constant such as GRAMS, an f-string, or a key made by average_key()."""
    return ((isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)
            or (isinstance(node, ast.Name) and node.id.isupper())
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "average_key"))


def lookups(source: str) -> list[int]:
    """Lines of the source that look the manifest up by a constant key."""
    tree = ast.parse(source)
    lines = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        aliases = manifest_aliases(scope) if scope is not tree else set()
        for node in ast.walk(scope):
            if isinstance(node, ast.Subscript) and is_key(node.slice) and reaches_manifest(node.value, aliases):
                lines.append(node.lineno)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in KEYED_CALLS
                  and node.args and is_key(node.args[0]) and reaches_manifest(node.func.value, aliases)):
                lines.append(node.lineno)
    return sorted(set(lines))


def package_lookups() -> dict[str, list[int]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith("core/"):
            lines = lookups(path.read_text())
            if lines:
                found[rel] = lines
    return found


def test_the_scan_finds_string_key_lookups_and_passes_typed_fields():
    assert lookups('info = cache.manifest["model"]["encoder"]') == [1]
    assert lookups('x = cache.manifest.get("preview", {})\ny = self.source.manifest.metrics["finetuned"]') == [1, 2]
    assert lookups('cache.add_files({}, lambda manifest: manifest.pop("preview", None))') == [1]
    assert lookups("g = cache.manifest[GRAMS]") == [1]
    assert lookups('a = cache.manifest.metrics[average_key("task_arithmetic")]\nb = cache.manifest[f"{m}_average"]') == [1, 2]
    assert lookups('def f():\n    m, man = self.x, self.source.manifest\n    x = man["model"]\n    y = man.atm.get("ties")') == [3, 4]
    assert lookups('def f():\n    for variant, run in ex.manifest.atm.items():\n        n = len(run["rounds"])') == [3]
    assert lookups('def f():\n    run = cache.manifest\ndef g(run):\n    n = run["rounds"]') == []  # another function's name
    assert lookups("info = cache.manifest.model.encoder\nentry = cache.manifest.files[rel]\n"
                   "accuracy = cache.manifest.metrics.finetuned[task]\nresult['average']\n"
                   "a = cache.manifest.metrics.averages()['zero_shot']") == []


def test_no_manifest_lookups_by_string_key_outside_core():
    found = package_lookups()
    assert not found, f"read the typed manifest (core/manifest.py) instead of string keys: {found}"
