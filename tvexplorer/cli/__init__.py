"""`python -m tvexplorer`: build caches, inspect them, evaluate merges, analyse alignment, run ATM.

Every command prints a readable summary, or JSON with --json. Bad input ends with one line on
stderr and exit status 2, a file that cannot be written (a full disk) with one line and status 1;
never a traceback.
"""
from __future__ import annotations

import json
import sys

from ..core.errors import CacheError
from ..core.files import WriteError
from . import addtask, atm, bench, export, making, reading, results, space, tuning
from .common import CommandParser, UserError, finite_scaling
from .bench import load_bench_suite  # noqa: F401  (the tests and the benchmark README reach the suite through here)

EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2
# Each module adds its commands; the order here is the order of `--help`.
COMMAND_MODULES = (making, addtask, reading, results, tuning, bench, atm, export, space)


def parser() -> CommandParser:
    p = CommandParser(prog="tvexplorer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    def command(name, run, show, help_):
        c = sub.add_parser(name, help=help_, description=help_)
        c.set_defaults(run=run, show=show)
        c.add_argument("--json", action="store_true", help="print JSON instead of a summary")
        c.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        return c

    for module in COMMAND_MODULES:
        module.register(command)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if getattr(args, "scaling", None) is not None:
            finite_scaling(args.scaling)
        result = args.run(args)
    except WriteError as e:  # not bad input: the disk is full or the folder read-only
        print(f"error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except (UserError, CacheError, ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished work was saved", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        args.show(result)
    return 0
