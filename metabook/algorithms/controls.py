"""Non-meta controls behind the learner interface: continued masked-LM and SimCSE.

Meta-learning as pre-training is only worth its cost if it beats ordinary pre-training on
the same text for the same compute.  The two self-supervised controls here implement
:class:`~metabook.algorithms.base.Learner`, so the one trainer (``python -m metabook.train
--algorithm mlm`` / ``simcse``) runs them on any text task source, step for step like a
meta-learner: they **ignore the labels** and train on each task's sentences, support and
query together (:func:`join_sets`).

* :class:`MaskedLMControl` -- continued masked-LM (BERT's 15% 80/10/10 masking,
  :func:`~metabook.algorithms.objectives.mask_tokens`) through the encoder and a tied LM head
  (:class:`~metabook.algorithms.objectives.MaskedLMHead`); a task's loss is the mean
  cross-entropy over its masked tokens.
* :class:`SimCSEControl` -- unsupervised SimCSE: each task's sentences are encoded twice, the
  two passes differing only by dropout, and a task's loss is
  :func:`~metabook.algorithms.objectives.simcse_loss` over its sentences (the task's other
  sentences are the negatives).

Neither adapts to a task, but both must answer :meth:`~SelfSupervisedControl.logits`
(validation calls it): a nearest-prototype probe on the encoder's mean-pooled, L2-normalised
sentence embeddings, the same zero-training probe used to compare pre-trained encoders.
The supervised control (multi-task training on labelled intents) needs no class of its own:
it is :class:`~metabook.algorithms.maml.MAML` with ``inner_steps=0`` and a fixed head over
all intents (Lv et al., 2020).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.base import Inputs, Learner, call_model, encode_tasks
from metabook.algorithms.objectives import MaskedLMHead, mask_tokens, simcse_loss
from metabook.algorithms.protonet import prototypes
from metabook.bert import BertSlice
from metabook.encoders import mean_pool

__all__ = ["SelfSupervisedControl", "MaskedLMControl", "SimCSEControl", "join_sets"]


def join_sets(support_x: Inputs, query_x: Inputs) -> Inputs:
    """Support and query of every task as one set ``(B, M_s + M_q, ...)``.

    Tensors are concatenated along the example dimension.  Mappings of token tensors
    ``(B, M, L)`` (padded separately by :class:`~metabook.data.collate.TextCollator`) are first
    right-padded with zeros to a common ``L``; the padding has ``attention_mask`` 0, so a
    mapping whose lengths differ must carry an ``attention_mask``.
    """
    if isinstance(support_x, Mapping) != isinstance(query_x, Mapping):
        raise TypeError("support_x and query_x must both be tensors or both be mappings")
    if not isinstance(support_x, Mapping):
        return torch.cat([support_x, query_x], dim=1)
    if set(support_x) != set(query_x):
        raise ValueError(f"support_x has keys {sorted(support_x)} but query_x {sorted(query_x)}")
    width = max(int(v.shape[-1]) for v in [*support_x.values(), *query_x.values()])
    ragged = any(int(v.shape[-1]) != width for v in [*support_x.values(), *query_x.values()])
    if ragged and "attention_mask" not in support_x:
        raise ValueError("support_x and query_x have different token lengths and no attention_mask")
    return {k: torch.cat([F.pad(support_x[k], (0, width - support_x[k].shape[-1])),
                          F.pad(query_x[k], (0, width - query_x[k].shape[-1]))], dim=1) for k in support_x}


class SelfSupervisedControl(Learner):
    """Base of the self-supervised controls: labels are ignored; ``adapt``/``logits`` are a
    nearest-prototype probe (cosine, times ``scale``) on :meth:`embed`'s sentence embeddings.

    Subclasses implement :meth:`embed` (a flat batch of inputs to ``(M, D)``) and
    :meth:`~metabook.algorithms.base.Learner.task_losses`.
    """

    def __init__(self, scale: float = 20.0, task_chunk: int | None = None) -> None:
        super().__init__(task_chunk)
        self.scale = float(scale)

    def embed(self, *args: Any, **batch: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``(M, D)`` of a flat batch (``embed(**mapping)`` or ``embed(tensor)``)."""
        raise NotImplementedError

    def adapt(self, support_x: Inputs, support_y: torch.Tensor) -> torch.Tensor:
        """The probe's state: the normalised class means of every task, ``(B, N, D)``."""
        self.check(support_x, support_y)
        emb = F.normalize(encode_tasks(self.embed, support_x), dim=-1)
        return F.normalize(prototypes(emb, support_y), dim=-1)

    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Probe logits ``(B, M_q, N)``: ``scale * cos(query, class mean)``."""
        self.check(support_x, support_y, query_x)
        protos = self.adapt(support_x, support_y)
        q = F.normalize(encode_tasks(self.embed, query_x), dim=-1)
        return self.scale * q @ protos.transpose(-1, -2)


class MaskedLMControl(SelfSupervisedControl):
    """Continued masked-LM on each task's sentences, through a BERT-style model.

    Args:
        bert: a Hugging Face BERT-style model (``.embeddings``, ``.encoder.layer``), trained in
            place; e.g. from :func:`metabook.bert.load_encoder`.
        mask_id: the tokenizer's ``[MASK]`` id (``tokenizer.mask_token_id``).
        special_ids: ids never chosen for prediction (``tokenizer.all_special_ids``:
            ``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``); padding (``attention_mask``
            0) is never chosen either.
        p: masking probability (BERT: 0.15).
        scale: cosine logit scale of the validation probe.
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.

    Inputs are token mappings ``(B, M, L)`` with ``input_ids`` and ``attention_mask``
    (``token_type_ids`` optional).  Each task is masked on its own, so every task has at
    least one target; the draws come from torch's global CPU generator, which the trainer
    seeds and checkpoints (fixed seed: the same masks; resume: bit-identical).
    """

    def __init__(self, bert: nn.Module, mask_id: int, special_ids: Iterable[int], p: float = 0.15,
                 scale: float = 20.0, task_chunk: int | None = None) -> None:
        super().__init__(scale, task_chunk)
        if not 0 < float(p) < 1:
            raise ValueError(f"mask probability must be in (0, 1), got {p}")
        if mask_id is None:
            raise ValueError("MaskedLMControl needs mask_id: the tokenizer has no mask token")
        self.body = BertSlice(bert)
        self.head = MaskedLMHead(bert.get_input_embeddings(),
                                 eps=float(getattr(bert.config, "layer_norm_eps", 1e-12)))
        self.mask_id, self.p = int(mask_id), float(p)
        self.register_buffer("special_ids", torch.tensor(sorted({int(i) for i in special_ids} | {int(mask_id)}),
                                                         dtype=torch.long), persistent=False)

    @property
    def vocab_size(self) -> int:
        """Rows of the (tied) word-embedding matrix."""
        return int(self.head.embeddings.num_embeddings)

    def embed(self, *args: Any, **batch: torch.Tensor) -> torch.Tensor:
        """Mean-pooled last hidden states ``(M, D)`` of a flat token mapping."""
        out = self.body(**batch)
        return mean_pool(out["hidden_states"], out["attention_mask"])

    def special_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """True where a token is special or padding: never a masked-LM target."""
        special = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        return special if attention_mask is None else special | (attention_mask == 0)

    def mask(self, x: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(masked inputs, labels)`` of a ``(B, M, L)`` token mapping, each task masked on its own;
        labels are ``-100`` where nothing is predicted."""
        ids = x["input_ids"]
        special = self.special_mask(ids, x.get("attention_mask"))
        pairs = [mask_tokens(ids[b], special[b], self.mask_id, self.vocab_size, self.p) for b in range(ids.shape[0])]
        return {**x, "input_ids": torch.stack([m for m, _ in pairs])}, torch.stack([lab for _, lab in pairs])

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """Masked-LM cross-entropy of each task (mean over its masked tokens), ``(B,)``."""
        b = self.check(support_x, support_y, query_x, query_y)
        x = join_sets(support_x, query_x)
        if not isinstance(x, Mapping) or "input_ids" not in x:
            raise TypeError("MaskedLMControl needs token mappings with input_ids (tokenize with TextCollator)")
        masked, labels = self.mask(x)
        hidden = self.body(**{k: v.flatten(0, 1) for k, v in masked.items()})["hidden_states"]
        hidden = hidden.unflatten(0, (b, -1))  # (B, M, L, D)
        chosen = labels != -100
        ce = F.cross_entropy(self.head(hidden[chosen]), labels[chosen], reduction="none")
        task = torch.arange(b, device=labels.device)[:, None, None].expand_as(labels)[chosen]
        total = torch.zeros(b, dtype=ce.dtype, device=ce.device).index_add(0, task, ce)
        return total / chosen.flatten(1).sum(1).to(ce.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, mask_id={self.mask_id}, special_ids={self.special_ids.tolist()}"


class SimCSEControl(SelfSupervisedControl):
    """Unsupervised SimCSE on each task's sentences (Gao et al., 2021).

    Args:
        encoder: maps a flat batch of inputs to sentence embeddings ``(M, D)``, called as
            ``encoder(**x)`` for a mapping (e.g. :class:`~metabook.bert.SentenceEncoder`) or
            ``encoder(x)`` for a tensor.
        tau: temperature of :func:`~metabook.algorithms.objectives.simcse_loss`.
        scale: cosine logit scale of the validation probe.
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.

    The two views of a sentence differ only through dropout, so the encoder must be in
    training mode (the trainer calls ``.train()``) and have dropout: MiniLM has 0.1; the
    test-size :func:`~metabook.bert.tiny_bert` has none by default, and then both views are
    identical and only the negatives teach.
    """

    def __init__(self, encoder: nn.Module | Callable[..., torch.Tensor], tau: float = 0.05, scale: float = 20.0,
                 task_chunk: int | None = None) -> None:
        super().__init__(scale, task_chunk)
        if not float(tau) > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.encoder, self.tau = encoder, float(tau)

    def embed(self, *args: Any, **batch: torch.Tensor) -> torch.Tensor:
        """The encoder's embeddings ``(M, D)`` of a flat batch."""
        return call_model(self.encoder, batch if batch else args[0])

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """SimCSE loss of each task over its ``M_s + M_q`` sentences, ``(B,)``."""
        b = self.check(support_x, support_y, query_x, query_y)
        x = join_sets(support_x, query_x)
        first, second = encode_tasks(self.embed, x), encode_tasks(self.embed, x)  # two dropout masks
        return torch.stack([simcse_loss(first[i], second[i], self.tau) for i in range(b)])

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
