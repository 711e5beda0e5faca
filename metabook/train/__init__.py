"""Training and evaluation: loops, checkpoints, data-parallel meta-training, the command line.

* :mod:`metabook.train.loop` -- ``meta_train``, ``evaluate``, ``mean_ci``, the guarded
  data-parallel ``meta_step`` and the ``run`` driver;
* :mod:`metabook.train.checkpoint` -- safetensors + JSON checkpoints, atomic, no pickle;
* :mod:`metabook.train.distributed` -- ``torch.distributed`` over the task batch;
* :mod:`metabook.train.config` -- ``TrainConfig``, its YAML / argument parsing, and the
  factories of the task source, the learner and the optimizer;
* :mod:`metabook.train.sources` -- task sources: sinusoid, intents, SMLMT, mixtures, plain text
  (the SMLMT sentences unmasked) and labelled intents of several datasets with global labels;
* :mod:`metabook.train.export` -- the trained encoder as a Hugging Face folder + its record.

Run ``python -m metabook.train --help`` (or the same under ``torchrun``).
"""
from metabook.train.checkpoint import (Checkpoint, CheckpointError, latest_checkpoint, load_checkpoint,
                                       save_checkpoint)
from metabook.train.config import (Built, TrainConfig, build, build_learner, build_optimizer, build_source,
                                   parse_args)
from metabook.train.export import TrainedOnError, check_unseen, export_encoder, read_record
from metabook.train.distributed import DistContext, init_distributed, shard
from metabook.train.loop import (NonFiniteLossError, RunResult, StepResult, TrainLog, evaluate, mean_ci,
                                 meta_step, meta_train, run, task_losses)

__all__ = [
    "mean_ci", "evaluate", "meta_train", "TrainLog", "NonFiniteLossError",
    "task_losses", "meta_step", "StepResult", "run", "RunResult",
    "TrainConfig", "parse_args", "build", "Built", "build_learner", "build_optimizer", "build_source",
    "export_encoder", "read_record", "check_unseen", "TrainedOnError",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "DistContext", "init_distributed", "shard",
]
