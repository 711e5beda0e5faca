"""``python -m metabook.train [--config run.yaml] [options]``; the same under ``torchrun``.

Single process::

    python -m metabook.train --algorithm maml --steps 2000 --out runs/maml

Meta-train MiniLM with ProtoNet on BANKING77's class split 01 (valid classes select)::

    python -m metabook.train --task intents --data banking77 --split 01 --algorithm protonet \
        --steps 300 --val-every 100 --out runs/b77-protonet      # -> runs/b77-protonet/encoder/

The non-meta controls on the same text, for the same number of steps: continued masked-LM and
SimCSE on the SMLMT episodes' sentences (unmasked), and supervised multi-task training on the
labelled intents of the other datasets (MAML with zero inner steps, one head over all intents)::

    python -m metabook.train --task text --corpus wiki --algorithm mlm --steps 300 --out runs/mlm
    python -m metabook.train --task text --corpus wiki --algorithm simcse --steps 300 --out runs/simcse
    python -m metabook.train --task supervised --exclude banking77 \
        --overlap benchmarks/results/overlap/banking77.json --algorithm maml --inner-steps 0 --out runs/sup

Two GPUs (or two CPU processes with gloo)::

    torchrun --standalone --nproc-per-node 2 -m metabook.train --config run.yaml
"""
from __future__ import annotations

import sys

from metabook.data.registry import DataError
from metabook.train.checkpoint import CheckpointError
from metabook.train.config import parse_args
from metabook.train.loop import NonFiniteLossError, run


def _line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train; one line on stderr and exit status 2 on bad input (options, data,
    corpus, encoder), 1 on a bad checkpoint, corrupt data or a NaN."""
    try:
        cfg = parse_args(argv)
    except (ValueError, OSError) as e:
        print(f"metabook.train: error: {_line(e)}", file=sys.stderr)
        return 2
    try:
        run(cfg)
    except (CheckpointError, NonFiniteLossError, DataError) as e:
        print(f"metabook.train: error: {type(e).__name__}: {_line(e)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"metabook.train: error: {_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
