"""``python -m metabook.bench <command> [options]``."""
from __future__ import annotations

import argparse
import importlib
import sys

from metabook.bench import COMMANDS
from metabook.data.registry import DataError
from metabook.train.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: python -m metabook.bench {{{','.join(COMMANDS)}}} [options]  (--help after a command)"
    if argv and argv[0] in ("-h", "--help"):
        print(usage + "\n\n" + (sys.modules["metabook.bench"].__doc__ or ""))
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage, file=sys.stderr)
        return 2
    mod = importlib.import_module(COMMANDS[argv[0]])
    parser = argparse.ArgumentParser(prog=f"python -m metabook.bench {argv[0]}", description=mod.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return mod.run(args) or 0
    except (ValueError, OSError, DataError, CheckpointError) as e:  # user errors: one line, no traceback
        print(f"metabook.bench {argv[0]}: error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1 if isinstance(e, (DataError, CheckpointError)) else 2


if __name__ == "__main__":
    sys.exit(main())
