"""`add-task` and `remove-task`: a person's own images as one more task of a cache, and back."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

from .common import open_cache, pct, writable


def cmd_add_task(args):
    from ..pipeline.addtask import add_task, check_cache, check_task_name, check_templates, inspect_source
    cache = open_cache(args.cache)
    # every check before anything (a work copy included) is written
    check_task_name(cache, args.name)
    check_cache(cache)
    if args.template:
        check_templates(args.template)
    source = inspect_source(args.source)
    if args.check:
        return {"check": True, "task": args.name, **source.summary(), "line": source.line()}
    print(f"{args.source}: {source.line()}", file=sys.stderr)
    cache = writable(cache)
    bar = tqdm(total=1, file=sys.stderr, leave=False, dynamic_ncols=True)

    def progress(done, total, what):
        bar.total = max(total, 1)
        bar.set_description(what)
        bar.update(done - bar.n)
    try:
        return add_task(cache, args.name, source, templates=args.template, device=args.device, progress=progress)
    finally:
        bar.close()


def _print_added(r: dict) -> None:
    if r.get("check"):
        print(f"{r['source']}: {r['line']}; the name {r['task']} is free. Nothing was written.")
        return
    images = r["images"]
    counts = ", ".join(f"{c} {n['train']}+{n['test']}" for c, n in images["classes"].items())
    print(f"added task {r['task']} to {r['cache']}: {len(images['classes'])} classes ({counts} train+test images; "
          f"{images['split']})")
    print("accuracy %: " + ", ".join(f"{k.replace('_', ' ')} {pct(v).strip()}" for k, v in r["accuracy"].items()))
    for key, merge in r["task_arithmetic"].items():
        print(f"{key.replace('_', ' ')} over all tasks: {pct(merge['average']).strip()} % at scaling {merge['best_scaling']:g}")
    print("recomputed: " + "; ".join(r["recomputed"]))
    if r["set_aside"]:
        print("set aside until recomputed (remove-task restores them): " + "; ".join(r["set_aside"]))
    stages = ", ".join(f"{k} {v:.1f} s ({r['cpu_seconds'][k]:.1f} s CPU)" for k, v in r["seconds"].items())
    print(f"took {r['total_seconds']:.1f} s, {r['total_cpu_seconds']:.1f} s of CPU time: {stages}")


def cmd_remove_task(args):
    from ..pipeline.addtask import remove_task
    return remove_task(writable(open_cache(args.cache)), args.name)


def _print_removed(r: dict) -> None:
    print(f"removed task {r['removed']} from {r['cache']}; tasks now: {', '.join(r['tasks'])}; "
          f"{len(r['restored'])} file(s) restored, {len(r['deleted'])} deleted")


def register(command) -> None:
    c = command("add-task", cmd_add_task, _print_added,
                "add a task from your own images (a folder or .zip of class folders) to a cache")
    c.add_argument("cache", help="cache folder; the shipped demo and read-only caches get a work copy "
                                 "(in $TVEXPLORER_WORKDIR or the temp folder)")
    c.add_argument("name", help="the new task's name: a letter, then letters, digits or underscores")
    c.add_argument("source", help="folder or .zip holding train/<class>/* and test/<class>/*, or only <class>/* "
                                  "(a seeded 20%% of each class is then held out for testing)")
    c.add_argument("--template", action="append", default=None, metavar="TEXT",
                   help="a zero-shot prompt with {} for the class name (repeat for several; default 'a photo of a {}.')")
    c.add_argument("--check", action="store_true", help="only check the images and the name; write nothing")
    c = command("remove-task", cmd_remove_task, _print_removed,
                "remove a task added with add-task, restoring the cache as it was before")
    c.add_argument("cache", help="cache folder (for the shipped demo or a read-only cache: its work copy)")
    c.add_argument("name", help="the added task")
