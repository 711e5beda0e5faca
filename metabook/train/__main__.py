"""``python -m metabook.train [--config run.yaml] [options]``; the same under ``torchrun``.

Single process::

    python -m metabook.train --algorithm maml --steps 2000 --out runs/maml

Two GPUs (or two CPU processes with gloo)::

    torchrun --standalone --nproc-per-node 2 -m metabook.train --config run.yaml
"""
from __future__ import annotations

import sys

from metabook.train.checkpoint import CheckpointError
from metabook.train.config import parse_args
from metabook.train.loop import NonFiniteLossError, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train; exit status 2 on a bad option, 1 on a bad checkpoint or a NaN."""
    try:
        cfg = parse_args(argv)
    except (ValueError, OSError) as e:
        print(f"metabook.train: error: {e}", file=sys.stderr)
        return 2
    try:
        run(cfg)
    except (CheckpointError, NonFiniteLossError) as e:
        print(f"metabook.train: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
