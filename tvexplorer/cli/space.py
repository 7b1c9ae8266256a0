"""`space`: push the app, the package and a cache to a Hugging Face Space (or print the plan)."""
from __future__ import annotations

from .common import open_cache, table


def cmd_space(args):
    from ..app.environment import default_cache_path
    from ..pipeline.space import make_space
    cache = open_cache(str(args.cache or default_cache_path()))
    return make_space(args.space, cache, hardware=args.hardware, dry_run=args.dry_run, bucket=args.bucket,
                      evaluation_seconds=args.eval_seconds, images_per_second=args.images_per_second)


def _print_space(r: dict) -> None:
    rows = [[f["path"], f"{f['size']:,}", "LFS/Xet" if f["lfs"] else "regular"] for f in r["files"]]
    lfs = sum(f["lfs"] for f in r["files"])
    print(table(rows, ["path in the Space", "bytes", "stored as"]))
    print(f"{len(rows)} files, {r['total_bytes']:,} bytes, {lfs} stored with LFS/Xet; cache {r['cache']}")
    print(f"hardware {r['hardware']}: {r['flavor']}, Python {r['python']}, requested when the Space is created")
    print(f"account: {r['account']}")
    print(f"evaluation: {r['evaluation_line']}")
    print(f"storage: {r['storage']}")
    if r["dry_run"]:
        print("dry run: nothing was uploaded")
        return
    done = [f"created with {r['flavor']}" if r["created"] else
            f"asked to move to {r['flavor']}" if r["hardware_requested"] else f"already on {r['flavor']}"]
    if r["bucket_mounted"]:
        done.append(f"bucket {r['bucket']} mounted")
    print(f"pushed: {r['url']} ({', '.join(done)})")


def register(command) -> None:
    from ..pipeline.evalplan import DEFAULT_SECONDS
    from ..pipeline.space import BUCKET_MOUNT, HARDWARE
    c = command("space", cmd_space, _print_space, "push the app with a cache to a Hugging Face Space (huggingface_hub upload_folder)")
    c.add_argument("space", help="the Space's id, ORG/NAME (created if it does not exist)")
    c.add_argument("--cache", default=None, help="cache folder to ship as the Space's assets/demo (default: the shipped demo)")
    c.add_argument("--hardware", choices=list(HARDWARE), default="cpu",
                   help="requested when the Space is created. cpu: cpu-basic, torch's CPU-only wheels; zerogpu: "
                        "ZeroGPU with the Python and torch versions it supports")
    c.add_argument("--bucket", default=None, metavar="ORG/NAME",
                   help=f"a Storage Bucket (created if needed) mounted at {BUCKET_MOUNT}, where ATM rounds and tuning "
                        "results survive restarts")
    c.add_argument("--eval-seconds", type=float, default=DEFAULT_SECONDS,
                   help="CPU Space: size each task's test subset so that one exact evaluation takes about this long")
    c.add_argument("--images-per-second", type=float, default=None,
                   help="CPU Space: the image encoder's speed there, if known (default: timed on this CPU with the "
                        "Space's vCPUs)")
    c.add_argument("--dry-run", action="store_true", help="print the file plan (path, size, LFS or not) and upload nothing")
