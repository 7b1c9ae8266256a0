"""Search harness for the demo world: build one world per recipe file, print one diagnostics row each.

    python benchmarks/world_search.py --out /tmp/worlds RECIPE.json [RECIPE.json ...]

Each recipe has the format of tvexplorer/demo/recipe.json (a reduced world: fewer tasks, images or
ATM rounds). Worlds are built one after another under OUT/<recipe name>/; a world whose build
finished earlier is only read again, and a pretrained model whose settings match is reused, so a
search over fine-tuning settings pays for pretraining once. The table (Markdown) goes to stdout and
to OUT/search.md; the README's table of what was tried comes from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvexplorer.core.cache import Cache
from tvexplorer.core.errors import CacheError
from tvexplorer.demo.build import build_demo, diagnostics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    rows = []
    for path in args.recipes:
        out = args.out / path.stem
        try:
            cache = Cache.open(out)
        except CacheError:
            cache = build_demo(out, device=args.device, recipe_path=path)
        rows.append({"world": path.stem, **diagnostics(cache)})
        print(f"{path.stem}: {rows[-1]}", file=sys.stderr, flush=True)
    columns = list(rows[0])
    table = "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
                       *("| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows)])
    print(table)
    (args.out / "search.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
