"""SMLMT episodes streamed from corpora larger than memory.

:class:`~metabook.data.smlmt.SMLMTSampler` indexes a list of sentences held in memory.
:class:`StreamingSMLMTSampler` makes the same episodes from a text file (UTF-8, one
sentence a line) or any re-iterable of strings, such as a Hugging Face ``datasets``
column (:func:`iter_texts`), while holding at most ``buffer_size`` sentences:

* **Sharding.**  Line ``i`` (blank lines count) belongs to rank ``i % world_size``;
  a rank reads past the other ranks' lines without decoding them.
* **Buffers.**  The rank's non-blank lines, read in a cycle (end of corpus -> start),
  are cut into buffers of ``buffer_size`` lines: buffer ``b`` holds cyclic positions
  ``b*buffer_size .. (b+1)*buffer_size - 1``, so each pass over the corpus cuts it at
  other places.  A shard of fewer than ``buffer_size`` lines is one buffer, read once.
* **Episodes.**  Episode ``i`` comes from buffer ``i // episodes_per_buffer``, through
  an :class:`~metabook.data.smlmt.SMLMTSampler` over that buffer whose seed derives
  from ``(seed, rank, world_size, b)``: same masking, same checks, a new draw each
  buffer and each pass.  ``support_idx``/``query_idx`` hold 0-based *line numbers*
  of the corpus.
* **Access.**  Episode ``i`` depends only on ``(source, seed, rank, world_size, i)``.
  Increasing ``i`` (the trainer's order) reads the corpus once per pass; jumping
  ahead skips lines; going back seeks to a remembered byte offset (files) or
  re-reads from the start (iterables).

>>> s = StreamingSMLMTSampler("corpus.txt", n_way=5, k_shot=2, n_query=3,
...                           rank=0, world_size=2)              # doctest: +SKIP
>>> ep = s.episode(0)          # an Episode, as SMLMTSampler.episode returns  # doctest: +SKIP
"""
from __future__ import annotations

import bisect
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from metabook.data.episode import Episode, EpisodeStream, check_count
from metabook.data.smlmt import SMLMTSampler

__all__ = ["StreamingSMLMTSampler", "iter_texts", "TextColumn"]

_MAX_MARKS = 100_000  # remembered (shard position, byte offset) pairs per file


class TextColumn:
    """A re-iterable view of one text column of a dataset (see :func:`iter_texts`).

    Each ``iter()`` starts a fresh pass over the rows, in batches of ``batch_size``
    when the dataset offers ``.iter(batch_size=...)`` (Hugging Face ``Dataset`` and
    ``IterableDataset``), else row by row (``row[column]``).
    """

    def __init__(self, dataset: Any, column: str = "text", batch_size: int = 1000) -> None:
        names = getattr(dataset, "column_names", None)
        if isinstance(names, (list, tuple)) and column not in names:
            raise ValueError(f"the dataset has no column {column!r}; its columns are {list(names)}")
        self.dataset, self.column, self.batch_size = dataset, column, check_count("batch_size", batch_size)

    def __iter__(self) -> Iterator[Any]:
        ds, col = self.dataset, self.column
        if hasattr(ds, "select_columns") and isinstance(getattr(ds, "column_names", None), (list, tuple)):
            ds = ds.select_columns([col])  # don't decode the other columns
        if hasattr(ds, "iter"):
            for batch in ds.iter(batch_size=self.batch_size):
                yield from batch[col]
        else:
            for row in ds:
                yield row[col]

    def __repr__(self) -> str:
        return f"TextColumn({type(self.dataset).__name__}, column={self.column!r})"


def iter_texts(dataset: Any, column: str = "text", batch_size: int = 1000) -> TextColumn:
    """The ``column`` of a (map-style or iterable) Hugging Face dataset as a re-iterable of
    strings, read lazily, for :class:`StreamingSMLMTSampler`.

    >>> from datasets import Dataset
    >>> list(iter_texts(Dataset.from_dict({"text": ["a b", "c"]})))
    ['a b', 'c']
    """
    return TextColumn(dataset, column, batch_size)


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class StreamingSMLMTSampler(EpisodeStream):
    """N-way K-shot Q-query SMLMT episodes from a corpus read lazily, one shard per rank.

    Args:
        source: a text file path (UTF-8, one sentence a line), a re-iterable of strings
            (a list, :func:`iter_texts` over a ``datasets`` dataset; ``None`` items count
            as blank lines), or a function returning a fresh iterator of strings.
        n_way, k_shot, n_query: episode size, as in :class:`~metabook.data.smlmt.SMLMTSampler`.
        buffer_size: non-blank lines of this rank's shard held at once (at least
            ``n_way * (k_shot + n_query)``).
        episodes_per_buffer: episodes drawn from a buffer before the next one is read.
        rank, world_size: this process's shard: line ``i`` goes to rank ``i % world_size``.
        seed: with ``rank``, ``world_size`` and the source, fixes every episode.
        num_episodes: length of iteration; ``None`` iterates forever.
        name: how errors name the source (default: the path, or the source's type).
        max_line_bytes: a longer line is an error (bounds the memory of one line).
        **kwargs: ``min_freq``, ``min_len``, ``stopwords``, ``mask_token`` of
            :class:`~metabook.data.smlmt.SMLMTSampler`, applied to every buffer.

    Raises ``ValueError`` (one line) for an empty corpus or shard, a buffer with fewer
    usable words than ``n_way``, bytes that are not UTF-8 (with the file and byte
    offset), a too long line, or a ``buffer_size`` below ``n_way * (k_shot + n_query)``;
    the first buffer is read by the constructor, so most bad corpora fail there.

    Attributes:
        buffer: the :class:`~metabook.data.smlmt.SMLMTSampler` of the current buffer.
        buffer_index: which buffer that is.
        buffer_lines: the corpus line number of each of ``buffer.sentences``.
        shard_lines: non-blank lines in this rank's shard, once a pass has ended (else ``None``).
        lines_read: lines read so far, all passes and ranks' lines included.
    """

    def __init__(
        self,
        source: str | os.PathLike | Iterable[str] | Callable[[], Iterable[str]],
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        buffer_size: int = 20_000,
        episodes_per_buffer: int = 1_000,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_episodes: int | None = None,
        name: str | None = None,
        max_line_bytes: int = 1 << 20,
        **kwargs: Any,
    ) -> None:
        self.n_way = check_count("n_way", n_way)
        self.k_shot = check_count("k_shot", k_shot)
        self.n_query = check_count("n_query", n_query)
        self.buffer_size = check_count("buffer_size", buffer_size)
        self.episodes_per_buffer = check_count("episodes_per_buffer", episodes_per_buffer)
        self.world_size = check_count("world_size", world_size)
        self.max_line_bytes = check_count("max_line_bytes", max_line_bytes)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be an int in [0, {self.world_size}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self.rank, self.seed = int(rank), int(seed)
        self.num_episodes = None if num_episodes is None else check_count("num_episodes", num_episodes)
        need = self.n_way * (self.k_shot + self.n_query)
        if self.buffer_size < need:
            raise ValueError(f"buffer_size={self.buffer_size} is too small: one episode needs "
                             f"n_way * (k_shot + n_query) = {need} distinct sentences")
        self._kwargs = dict(kwargs)
        self._path: str | None = None
        if isinstance(source, (str, os.PathLike)):
            self._path = os.fspath(source)
            if not os.path.isfile(self._path):
                raise ValueError(f"corpus {self._path!r}: no such file")
        elif isinstance(source, (bytes, bytearray)):
            raise TypeError("source must be a path, an iterable of strings or a function returning one, "
                            "got bytes")
        elif not callable(source):
            if not hasattr(source, "__iter__"):
                raise TypeError(f"source must be a path, an iterable of strings or a function returning "
                                f"one, got {type(source).__name__}")
            if iter(source) is source:
                raise ValueError(f"source is a one-shot iterator ({type(source).__name__}) and cannot be read "
                                 "again for the next pass; pass a list, iter_texts(dataset) or a function "
                                 "returning a fresh iterator")
        self.source = source
        self.name = name or (repr(self._path) if self._path is not None else f"<{type(source).__name__}>")
        self.shard_lines: int | None = None
        self.lines_read = 0
        self._marks: list[tuple[int, int, int]] = [(0, 0, 0)]  # (shard position, byte offset, line number)
        self._reader: Iterator[tuple[int, int, str]] | None = None
        self._pos = 0  # shard position of the reader's next line
        self.buffer_index = -1
        self.buffer: SMLMTSampler | None = None
        self.buffer_lines = np.zeros(0, dtype=np.int64)
        self._load(0)

    # -- reading -------------------------------------------------------------------------
    def _file_lines(self, byte: int, line_no: int) -> Iterator[tuple[int, int, str]]:
        """``(line number, byte offset, stripped text)`` of this shard's non-blank lines."""
        limit, rank, world = self.max_line_bytes, self.rank, self.world_size
        with open(self._path, "rb") as f:
            f.seek(byte)
            while True:
                raw = f.readline(limit + 1)
                if not raw:
                    return
                if len(raw) > limit and not raw.endswith(b"\n"):
                    raise ValueError(f"corpus {self.name}: line {line_no + 1} (at byte {byte}) is longer than "
                                     f"max_line_bytes={limit}; expected one sentence a line")
                self.lines_read += 1
                if line_no % world == rank:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise ValueError(f"corpus {self.name} is not UTF-8 text: byte 0x{raw[err.start]:02x} at "
                                         f"byte offset {byte + err.start} (line {line_no + 1})") from None
                    if byte == 0:
                        text = text.lstrip("\ufeff")  # a byte-order mark
                    text = text.strip()
                    if text:
                        yield line_no, byte, text
                byte += len(raw)
                line_no += 1

    def _iter_lines(self) -> Iterator[tuple[int, int, str]]:
        """``(line number, -1, stripped text)`` of this shard's non-blank items."""
        items = self.source() if callable(self.source) else self.source
        for line_no, item in enumerate(items):
            self.lines_read += 1
            if line_no % self.world_size != self.rank or item is None:
                continue
            if not isinstance(item, str):
                raise TypeError(f"corpus {self.name}: item {line_no} is {type(item).__name__}, expected str")
            text = item.strip()
            if text:
                yield line_no, -1, text

    def _seek(self, target: int) -> None:
        """Put the reader at shard position ``target`` (taken modulo the shard's size once known):
        read on when that is ahead, else restart from the nearest remembered offset (files) or
        from the start (iterables)."""
        if self.shard_lines is not None:
            target %= self.shard_lines
        live = self._reader is not None and self._pos <= target
        if self._path is not None:
            mark = self._marks[bisect.bisect_right(self._marks, (target, float("inf"), 0)) - 1]
            if not live or mark[0] > self._pos:
                self._reader, self._pos = self._file_lines(mark[1], mark[2]), mark[0]
        elif not live:
            self._reader, self._pos = self._iter_lines(), 0
        while self._pos < target:
            rec = next(self._reader, None)
            if rec is None:  # the pass ended: now the shard's size is known
                self._end_of_pass()
                self._seek(target)
                return
            if self._pos % self.buffer_size == 0:  # remember where to come back to
                self._mark(self._pos, rec[1], rec[0])
            self._pos += 1

    def _end_of_pass(self) -> None:
        if self.shard_lines is None:
            self.shard_lines = self._pos
        if self.shard_lines == 0:
            w = self.world_size
            who = "" if w == 1 else f" for rank {self.rank} of {w} (line i goes to rank i % {w})"
            raise ValueError(f"corpus {self.name} is empty{who}: it needs non-blank lines, one sentence a line")
        self._reader, self._pos = None, 0

    def _mark(self, pos: int, byte: int, line_no: int) -> None:
        if self._path is None or len(self._marks) >= _MAX_MARKS:
            return
        item = (pos, byte, line_no)
        k = bisect.bisect_left(self._marks, item)
        if k == len(self._marks) or self._marks[k][0] != pos:
            self._marks.insert(k, item)

    def _read(self, b: int) -> tuple[list[str], list[int]]:
        """The sentences (deduplicated) and line numbers of buffer ``b``."""
        size = self.buffer_size
        self._seek(b * size)
        texts: dict[str, int] = {}
        got = 0
        while got < size:
            rec = next(self._reader, None)
            if rec is None:
                self._end_of_pass()
                if got >= self.shard_lines:  # the whole shard fits in one buffer
                    break
                self._seek(0)
                continue
            line_no, byte, text = rec
            if got == 0:
                self._mark(self._pos, byte, line_no)
            self._pos += 1
            got += 1
            texts.setdefault(text, line_no)
        return list(texts), list(texts.values())

    @property
    def whole(self) -> bool:
        """True when this rank's shard is smaller than a buffer (known after the constructor):
        it is read once and every episode comes from it."""
        return self.shard_lines is not None and self.shard_lines < self.buffer_size

    def _buffer_of(self, i: int) -> int:
        if self.whole:
            return 0
        return i // self.episodes_per_buffer

    def _load(self, b: int) -> None:
        if b == self.buffer_index:
            return
        self.buffer, self.buffer_index = None, -1  # drop the old buffer before reading the next
        try:
            texts, lines = self._read(b)
        except BaseException:
            self._reader = None  # a reader that raised is spent: start afresh next time
            raise
        whole = self.whole
        try:
            sampler = SMLMTSampler(texts, self.n_way, self.k_shot, self.n_query,
                                   seed=_derive_seed(self.seed, self.rank, self.world_size, b), **self._kwargs)
        except ValueError as err:
            where = ("the whole shard" if whole else
                     f"buffer {b} ({len(texts)} distinct sentences from line {lines[0] + 1} on)")
            raise ValueError(f"corpus {self.name}, rank {self.rank} of {self.world_size}, {where}: {err}"
                             + ("" if whole or not str(err).startswith("only ")
                                else f"; or raise buffer_size (now {self.buffer_size})")) from None
        self.buffer, self.buffer_index = sampler, b
        self.buffer_lines = np.asarray(lines, dtype=np.int64)

    # -- episodes ------------------------------------------------------------------------
    def episode(self, i: int) -> Episode:
        """The ``i``-th episode of this rank (``i >= 0``); a function of ``(source, seed, rank,
        world_size, i)``.  ``support_idx``/``query_idx`` are corpus line numbers (0-based)."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"episode index must be an int >= 0, got {i!r}")
        self._load(self._buffer_of(int(i)))
        ep = self.buffer.episode(int(i))
        ep.support_idx = torch.as_tensor(self.buffer_lines[ep.support_idx.numpy()])
        ep.query_idx = torch.as_tensor(self.buffer_lines[ep.query_idx.numpy()])
        return ep

    def __repr__(self) -> str:
        return (f"StreamingSMLMTSampler({self.name}, n_way={self.n_way}, k_shot={self.k_shot}, "
                f"n_query={self.n_query}, buffer_size={self.buffer_size}, episodes_per_buffer="
                f"{self.episodes_per_buffer}, rank={self.rank}, world_size={self.world_size}, seed={self.seed})")
