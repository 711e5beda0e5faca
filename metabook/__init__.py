"""metabook: meta-learning for NLP pre-training, on torch.func.

Layers, in import order: data -> tasks -> models/encoders -> algorithms -> training -> viz.
"""
from metabook.device import by_device, default_device, seed_everything
from metabook.tasks import Episode, EpisodeSampler, stack_episodes
from metabook.data.sinusoid import SinusoidTasks
from metabook.data.registry import (REGISTRY, ChecksumError, DataFormatError, DataUnavailableError,
                                    fetch)
from metabook.data.intents import (IntentDataset, load_dataset, load_fewshot, load_official, load_unlabeled)
from metabook.data.smlmt import SMLMTSampler
from metabook.data.smlmt_stream import StreamingSMLMTSampler, iter_texts
from metabook.data.collate import TextCollator
from metabook.models import mlp, sinusoid_mlp
from metabook.encoders import EmbeddingCache, MiniLMEncoder
from metabook.algorithms import (ANIL, MAML, InContextLearner, Learner, Leopard, MaskedLMControl, MetaSGD,
                                 ProtoNet, Reptile, SimCSEControl, check_functional, prototypes)
from metabook.train import TrainConfig, evaluate, mean_ci, meta_train

__version__ = "0.1.0"
__all__ = [
    "by_device", "default_device", "seed_everything",
    "Episode", "EpisodeSampler", "stack_episodes",
    "SinusoidTasks", "REGISTRY", "fetch", "ChecksumError", "DataFormatError", "DataUnavailableError",
    "IntentDataset", "load_dataset", "load_official", "load_fewshot", "load_unlabeled",
    "SMLMTSampler", "StreamingSMLMTSampler", "iter_texts", "TextCollator", "mlp", "sinusoid_mlp",
    "MiniLMEncoder", "EmbeddingCache",
    "Learner", "MAML", "ANIL", "MetaSGD", "Leopard", "Reptile", "ProtoNet", "prototypes", "InContextLearner",
    "check_functional", "MaskedLMControl", "SimCSEControl",
    "mean_ci", "evaluate", "meta_train", "TrainConfig",
]
