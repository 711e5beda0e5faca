"""Training and evaluation: loops, checkpoints, data-parallel meta-training, the command line.

* :mod:`metabook.train.loop` -- ``meta_train``, ``evaluate``, ``mean_ci``, the guarded
  data-parallel ``meta_step`` and the ``run`` driver;
* :mod:`metabook.train.checkpoint` -- safetensors + JSON checkpoints, atomic, no pickle;
* :mod:`metabook.train.distributed` -- ``torch.distributed`` over the task batch;
* :mod:`metabook.train.config` -- ``TrainConfig`` and its YAML / argument parsing.

Run ``python -m metabook.train --help`` (or the same under ``torchrun``).
"""
from metabook.train.checkpoint import (Checkpoint, CheckpointError, latest_checkpoint, load_checkpoint,
                                       save_checkpoint)
from metabook.train.config import TrainConfig, build_learner, build_optimizer, parse_args
from metabook.train.distributed import DistContext, init_distributed, shard
from metabook.train.loop import (NonFiniteLossError, RunResult, StepResult, TrainLog, evaluate, mean_ci,
                                 meta_step, meta_train, run, task_losses)

__all__ = [
    "mean_ci", "evaluate", "meta_train", "TrainLog", "NonFiniteLossError",
    "task_losses", "meta_step", "StepResult", "run", "RunResult",
    "TrainConfig", "parse_args", "build_learner", "build_optimizer",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "DistContext", "init_distributed", "shard",
]
