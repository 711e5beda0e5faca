"""metabook: meta-learning for NLP pre-training, on torch.func."""
from metabook.device import by_device, default_device, seed_everything
from metabook.tasks import Episode, EpisodeSampler, stack_episodes

__version__ = "0.1.0"
__all__ = [
    "by_device", "default_device", "seed_everything",
    "Episode", "EpisodeSampler", "stack_episodes",
]
