"""Meta-learning algorithms: metric (ProtoNet), optimization (MAML, FOMAML, ANIL,
Reptile, Meta-SGD, LEOPARD) and model-based (InContextLearner); the non-meta,
self-supervised controls (continued masked-LM, SimCSE) behind the same interface; and
the pure objectives they use."""
from metabook.algorithms.base import Inputs, Learner, check_episode
from metabook.algorithms.controls import MaskedLMControl, SelfSupervisedControl, SimCSEControl
from metabook.algorithms.leopard import Leopard
from metabook.algorithms.maml import ANIL, MAML, check_functional
from metabook.algorithms.metasgd import MetaSGD
from metabook.algorithms.model_based import InContextLearner
from metabook.algorithms.objectives import MaskedLMHead, mask_tokens, simcse_loss, supcon_loss
from metabook.algorithms.protonet import ProtoNet, prototypes
from metabook.algorithms.reptile import Reptile

__all__ = ["Learner", "Inputs", "check_episode", "MAML", "ANIL", "MetaSGD", "Leopard", "Reptile", "ProtoNet", "prototypes", "InContextLearner",
           "check_functional", "SelfSupervisedControl", "MaskedLMControl", "SimCSEControl",
           "simcse_loss", "supcon_loss", "mask_tokens", "MaskedLMHead"]
