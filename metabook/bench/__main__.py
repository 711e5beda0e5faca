"""``python -m metabook.bench <command> [options]``."""
from __future__ import annotations

import argparse
import importlib
import sys

from metabook.bench import COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m metabook.bench {{{','.join(COMMANDS)}}} [options]  (--help after a command)",
              file=sys.stderr)
        return 2
    mod = importlib.import_module(COMMANDS[argv[0]])
    parser = argparse.ArgumentParser(prog=f"python -m metabook.bench {argv[0]}", description=mod.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(parser)
    return mod.run(parser.parse_args(argv[1:])) or 0


if __name__ == "__main__":
    sys.exit(main())
