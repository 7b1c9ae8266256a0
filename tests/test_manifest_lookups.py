"""Outside core/, nothing looks the manifest up by string keys: readers use the typed records of
core/manifest.py and core/records.py, checked once when the cache is opened. Read from the source with
ast (nothing is imported): a lookup is a subscript, or a get/pop/setdefault call, with a constant key
on an expression that reaches the manifest: `.manifest`, the Cache's JSON views `.metrics`, `.training`,
`.task(...)`, `.atm_runs()`, a variable named `manifest`, or a variable that the same function assigns
one of these to (`m = cache.metrics`, then `m["finetuned"]`)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tvexplorer"
# Still reading the JSON view until the lead converts them after merging issue 20's branches (the app
# is being restructured; ATM, with the atm command, rewritten). This list is to be emptied, and
# Manifest.__getitem__/get, Cache.task/metrics/training/atm_runs and Encoder.of's dicts deleted with it.
EXEMPT = ("app/",)
MANIFEST_ATTRIBUTES = {"manifest", "metrics", "training"}
MANIFEST_CALLS = {"task", "atm_runs"}
KEYED_CALLS = {"get", "pop", "setdefault"}


def reaches_manifest(node: ast.AST, aliases: set[str] = frozenset()) -> bool:
    while True:
        if isinstance(node, ast.Attribute):
            if node.attr in MANIFEST_ATTRIBUTES:
                return True
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in MANIFEST_CALLS:
                return True
            node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
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
    assert lookups('x = cache.manifest.get("preview", {})\ny = cache.metrics["finetuned"]') == [1, 2]
    assert lookups('d = cache.task(t)["data"]\nn = len(cache.atm_runs()[v]["rounds"])') == [1, 2]
    assert lookups('cache.add_files({}, lambda manifest: manifest.pop("preview", None))') == [1]
    assert lookups("g = cache.manifest[GRAMS]") == [1]
    assert lookups('a = cache.metrics[average_key("task_arithmetic")]\nb = cache.metrics[f"{m}_average"]') == [1, 2]
    assert lookups('def f():\n    m, man = self.metrics, self.source.manifest\n    x = man["model"]\n    y = m.get("ties")') == [3, 4]
    assert lookups('def f():\n    for variant, run in ex.atm_runs().items():\n        n = len(run["rounds"])') == [3]
    assert lookups('def f():\n    run = cache.manifest\ndef g(run):\n    n = run["rounds"]') == []  # another function's name
    assert lookups("info = cache.manifest.model.encoder\nentry = cache.manifest.files[rel]\n"
                   "accuracy = cache.manifest.metrics.finetuned[task]\nresult['average']") == []


def test_no_manifest_lookups_by_string_key_outside_core():
    found = {rel: lines for rel, lines in package_lookups().items() if not rel.startswith(EXEMPT)}
    assert not found, f"read the typed manifest (core/manifest.py) instead of string keys: {found}"


def test_every_exemption_is_still_needed():
    """An exempted path with no lookups left leaves the list, so that the list only shrinks."""
    found = package_lookups()
    for exempt in EXEMPT:
        assert any(rel.startswith(exempt) for rel in found), f"{exempt} has no manifest lookups left: remove it from EXEMPT"
