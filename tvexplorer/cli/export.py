"""`export`: the merged image encoder out, as an open_clip local-dir CLIP or a transformers folder."""
from __future__ import annotations

from .common import key_value, open_cache


def cmd_export(args):
    from ..pipeline.export import export_merged, merge_for_export
    cache = open_cache(args.cache)
    delta, settings = merge_for_export(
        cache, method=args.method, atm=args.atm, scaling=args.scaling, vectors=args.vectors,
        coefficients=dict(key_value(c) for c in args.coef), params=dict(key_value(p) for p in args.param))
    return export_merged(cache, delta, args.format, args.out, settings)


def _print_export(r: dict) -> None:
    merge = r["merge"]
    what = f"ATM round {merge['atm']}" if "atm" in merge else f"{merge['method']} over {merge['vectors']} vectors"
    print(f"{r['out']}: {r['format']} export of {what}, scaling {merge['scaling']:g}")
    for rel, entry in r["files"].items():
        print(f"  {rel}  {entry['size']:,} bytes")
    if r["format"] == "open_clip":
        print(f"load it with open_clip.create_model_and_transforms('local-dir:{r['out']}')")
    else:
        print(f"load it with transformers.CLIPVisionModelWithProjection.from_pretrained('{r['out']}')")


def register(command) -> None:
    from ..merging import METHODS
    from ..pipeline.export import FORMATS
    c = command("export", cmd_export, _print_export, "write the merged model: a full open_clip CLIP or a transformers image tower")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--method", default=None, help=f"one of {', '.join(METHODS)} (or use --atm)")
    c.add_argument("--atm", default=None, metavar="VARIANT:ROUND", help="export a saved ATM round instead, e.g. standard:2")
    c.add_argument("--scaling", type=float, default=None, help="global scaling (default: the method's own; 1 for an ATM round)")
    c.add_argument("--coef", nargs="*", default=[], metavar="TASK=VALUE", help="per-task coefficients (default 1)")
    c.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE", help="method parameters, e.g. k=20 or p=0.5")
    c.add_argument("--vectors", choices=["tau", "tau1"], default=None, help="full or 1-epoch task vectors (default tau)")
    c.add_argument("--format", choices=list(FORMATS), required=True,
                   help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    c.add_argument("--out", required=True, help="folder to write (new or empty, or an earlier export of the same format)")
