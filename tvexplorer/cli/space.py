"""`space`: push the app, the package and a cache to a Hugging Face Space (or print the plan)."""
from __future__ import annotations

from .common import open_cache, table


def cmd_space(args):
    from ..app.environment import default_cache_path
    from ..pipeline.space import make_space
    cache = open_cache(str(args.cache or default_cache_path()))
    return make_space(args.space, cache, hardware=args.hardware, dry_run=args.dry_run)


def _print_space(r: dict) -> None:
    rows = [[f["path"], f"{f['size']:,}", "LFS/Xet" if f["lfs"] else "regular"] for f in r["files"]]
    lfs = sum(f["lfs"] for f in r["files"])
    print(table(rows, ["path in the Space", "bytes", "stored as"]))
    print(f"{len(rows)} files, {r['total_bytes']:,} bytes, {lfs} stored with LFS/Xet; hardware {r['hardware']}, "
          f"cache {r['cache']}")
    print("dry run: nothing was uploaded" if r["dry_run"] else f"pushed: {r['url']}")


def register(command) -> None:
    from ..pipeline.space import HARDWARE
    c = command("space", cmd_space, _print_space, "push the app with a cache to a Hugging Face Space (huggingface_hub upload_folder)")
    c.add_argument("space", help="the Space's id, ORG/NAME (created if it does not exist)")
    c.add_argument("--cache", default=None, help="cache folder to ship as the Space's assets/demo (default: the shipped demo)")
    c.add_argument("--hardware", choices=list(HARDWARE), default="cpu",
                   help="cpu: torch's CPU-only wheels; zerogpu: the Python and torch versions ZeroGPU supports")
    c.add_argument("--dry-run", action="store_true", help="print the file plan (path, size, LFS or not) and upload nothing")
