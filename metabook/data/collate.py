"""Tokenize text episodes into padded tensors: :class:`TextCollator`.

Text samplers hand back sentences; learners want a mapping of ``(B, M, L)``
LongTensors to pass to a Hugging Face model as ``model(**x)``.  The padded width
``L`` is bucketed (rounded up to a multiple of ``bucket``), so only a few shapes
ever occur and compiled kernels and caches are reused.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from metabook.data.episode import Episode, check_count, stack_episodes

__all__ = ["TextCollator"]


def _check_tasks(name: str, tasks: Any) -> int:
    """Check ``tasks`` is B non-empty lists of strings, all the same length; return that length."""
    if isinstance(tasks, Tensor) or hasattr(tasks, "keys"):
        raise TypeError(f"{name} is a {type(tasks).__name__}, not sentences (already tokenized?); "
                        "TextCollator takes lists of sentences")
    if not isinstance(tasks, (list, tuple)) or len(tasks) == 0:
        raise ValueError(f"{name} must be a non-empty list of tasks, got {tasks!r:.60}")
    sizes = []
    for b, task in enumerate(tasks):
        if not isinstance(task, (list, tuple)):
            raise TypeError(f"{name}[{b}] must be a list of sentences, got {type(task).__name__}")
        if len(task) == 0:
            raise ValueError(f"{name}[{b}] is an empty list of sentences")
        for i, s in enumerate(task):
            if not isinstance(s, str):
                raise TypeError(f"{name}[{b}][{i}] must be a str, got {type(s).__name__}")
        sizes.append(len(task))
    if len(set(sizes)) != 1:
        raise ValueError(f"{name}: tasks have different numbers of sentences {sizes}")
    return sizes[0]


class TextCollator:
    """Turn text episodes into dicts of padded ``(B, M, L)`` token tensors.

    Args:
        tokenizer: a Hugging Face tokenizer (e.g. MiniLM's), with a pad token.
        max_length: sentences are truncated to this many tokens (special tokens included).
        bucket: the padded width ``L`` is rounded up to a multiple of this.
        pad_to_multiple_of: an extra alignment of ``L`` (e.g. 8 for tensor cores);
            ``L`` is then a multiple of both.  Rounding never pads past ``max_length``
            (so with ``max_length`` not such a multiple, the widest ``L`` is ``max_length``).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """

    def __init__(self, tokenizer: Any, max_length: int = 64, bucket: int = 8,
                 pad_to_multiple_of: int | None = None) -> None:
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a callable tokenizer, got {type(tokenizer).__name__}")
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("tokenizer has no pad token (tokenizer.pad_token_id is None)")
        self.tokenizer = tokenizer
        self.max_length = check_count("max_length", max_length)
        self.bucket = check_count("bucket", bucket)
        self.pad_to_multiple_of = (None if pad_to_multiple_of is None
                                   else check_count("pad_to_multiple_of", pad_to_multiple_of))
        self.multiple = math.lcm(self.bucket, self.pad_to_multiple_of or 1)

    def tokenize(self, sentences: list[str]) -> dict[str, Tensor]:
        """Tokenize a flat list of sentences into ``(M, L)`` tensors, bucketed like episodes."""
        _check_tasks("sentences", [sentences])
        enc = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        # Pad the longest width up to the bucket, but never past max_length.
        n = enc["input_ids"].shape[1]
        extra = min(-(-n // self.multiple) * self.multiple, self.max_length) - n
        side = (0, extra) if self.tokenizer.padding_side == "right" else (extra, 0)
        fill = {"input_ids": self.tokenizer.pad_token_id,
                "token_type_ids": self.tokenizer.pad_token_type_id}
        return {k: F.pad(v, side, value=fill.get(k, 0)) for k, v in enc.items()}

    def _side(self, name: str, tasks: list[list[str]], y: Tensor) -> dict[str, Tensor]:
        m = _check_tasks(name, tasks)
        if tuple(y.shape) != (len(tasks), m):
            raise ValueError(f"{name} has {len(tasks)} tasks of {m} sentences but its labels "
                             f"have shape {tuple(y.shape)}")
        flat = self.tokenize([s for task in tasks for s in task])
        return {k: v.view(len(tasks), m, -1) for k, v in flat.items()}

    def __call__(self, episode: Episode) -> Episode:
        """Tokenize a text episode: ``support_x``/``query_x`` become dicts of ``(B, M, L)`` tensors.

        A single unbatched episode becomes B=1.  Support and query are padded
        separately; labels and classes are carried over; the result has ``batched=True``.

        Raises:
            TypeError: x is already tokenized, or holds a non-string (the message names the field).
            ValueError: an empty sentence list, tasks of different sizes, or labels of another shape.
        """
        if not isinstance(episode, Episode):
            raise TypeError(f"episode must be an Episode, got {type(episode).__name__}")
        if not episode.batched:
            for name in ("support_x", "query_x"):  # check before stacking wraps the lists
                x = getattr(episode, name)
                _check_tasks(name, [x] if isinstance(x, (list, tuple)) else x)
            episode = stack_episodes([episode])
        return replace(episode, batched=True,
                       support_x=self._side("support_x", episode.support_x, episode.support_y),
                       query_x=self._side("query_x", episode.query_x, episode.query_y))
