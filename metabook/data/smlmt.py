"""Self-supervised tasks from unlabeled text: SMLMT (Bansal et al., EMNLP 2020).

*Subset Masked Language Modeling Tasks* turn raw sentences into N-way
classification episodes: pick N words, take K+Q sentences containing each word,
mask every occurrence of that word, and ask which word was masked.  The label of a
sentence is the (index of the) word hidden behind the mask token.

>>> from metabook import load_unlabeled
>>> s = SMLMTSampler(load_unlabeled("banking77"), n_way=5, k_shot=2, n_query=3)
>>> ep = s.episode(0)
>>> ep.classes, ep.support_x[0]      # doctest: +SKIP
(['refund', ...], 'How do I get a [MASK] for my order?')

Everything here is pure Python over a list of sentences; :func:`~metabook.data.intents.load_unlabeled`
is only a convenience to read the shared data files.
"""
from __future__ import annotations

import numbers
import re
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import torch

from metabook.data.episode import Episode, EpisodeStream, check_count

__all__ = ["SMLMTSampler", "mask_word", "word_tokens", "build_vocab",
           "ENGLISH_STOPWORDS"]

# Letters only (Unicode-aware): digits, "_" and punctuation split words, so "card's" -> "card", "s".
WORD_RE = re.compile(r"[^\W\d_]+")

#: A compact English stopword list (NLTK's, plus contraction fragments).
ENGLISH_STOPWORDS: frozenset[str] = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before
being below between both but by can couldn could d did didn do does doesn doing don down during
each few for from further had hadn has hasn have haven having he her here hers herself him
himself his how i if in into is isn it its itself just ll m ma me mightn more most mustn my
myself needn no nor not now o of off on once only or other our ours ourselves out over own re s
same shan she should shouldn so some such t than that the their theirs them themselves then
there these they this those through to too under until up ve very was wasn we were weren what
when where which while who whom why will with won wouldn y you your yours yourself yourselves
would also could may might must shall us get got im ive id dont cant wont let lets yes please
""".split())



def word_tokens(sentence: str) -> list[str]:
    """Lower-cased letter-only word tokens of ``sentence``."""
    return [m.group(0).lower() for m in WORD_RE.finditer(sentence)]


def mask_word(sentence: str, word: str, mask_token: str = "[MASK]") -> str:
    """Replace every whole-word, case-insensitive occurrence of ``word`` with ``mask_token``."""
    word = word.lower()
    return WORD_RE.sub(lambda m: mask_token if m.group(0).lower() == word else m.group(0), sentence)


def build_vocab(
    sentences: Sequence[str],
    min_freq: int = 5,
    min_len: int = 3,
    stopwords: Iterable[str] | None = None,
) -> dict[str, list[int]]:
    """Map each usable word to the sorted indices of the sentences that contain it.

    A word is kept when it is at least ``min_len`` letters long, not a stopword,
    and occurs in at least ``min_freq`` distinct sentences.
    """
    stop = ENGLISH_STOPWORDS if stopwords is None else frozenset(w.lower() for w in stopwords)
    where: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sentences):
        for w in dict.fromkeys(word_tokens(s)):  # each word once per sentence, in order
            if len(w) >= min_len and w not in stop:
                where[w].append(i)
    return {w: idx for w, idx in sorted(where.items()) if len(idx) >= min_freq}


class SMLMTSampler(EpisodeStream):
    """N-way K-shot Q-query SMLMT episodes from a list of unlabeled sentences.

    Args:
        sentences: raw sentences (blank ones are dropped; duplicates too when ``dedupe``).
        n_way, k_shot, n_query: episode size (N words, K support and Q query sentences each).
        min_freq: a word needs at least this many sentences to enter the vocabulary
            (and at least ``k_shot + n_query`` to be sampled).
        min_len: shortest word (in letters) to use.
        stopwords: words never used as labels; ``None`` uses :data:`ENGLISH_STOPWORDS`.
        mask_token: what replaces the chosen word (``"[MASK]"`` matches BERT/MiniLM).
        seed: episode ``i`` depends only on ``(seed, i)``.
        num_episodes: length of iteration; ``None`` iterates forever.
        dedupe: drop repeated sentences, so support and query never share a sentence.

    Attributes:
        sentences: the cleaned sentence list that ``support_idx``/``query_idx`` index into.
        vocab: word -> sentence indices (after the ``min_freq``/stopword filters).
        words: the words that can be sampled (``>= k_shot + n_query`` sentences each).

    Each episode's sentences contain their own word and, whenever the text allows it,
    none of the episode's other words; the label is always the single masked word.
    """

    def __init__(
        self,
        sentences: Sequence[str],
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        min_freq: int = 5,
        min_len: int = 3,
        stopwords: Iterable[str] | None = None,
        mask_token: str = "[MASK]",
        seed: int = 0,
        num_episodes: int | None = None,
        dedupe: bool = True,
    ) -> None:
        self.n_way = check_count("n_way", n_way)
        self.k_shot = check_count("k_shot", k_shot)
        self.n_query = check_count("n_query", n_query)
        self.min_freq = check_count("min_freq", min_freq)
        self.min_len = check_count("min_len", min_len)
        if num_episodes is not None:
            num_episodes = check_count("num_episodes", num_episodes)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        if not isinstance(mask_token, str) or not mask_token:
            raise ValueError(f"mask_token must be a non-empty string, got {mask_token!r}")
        if isinstance(sentences, (str, bytes)) or not hasattr(sentences, "__iter__"):
            raise TypeError(f"sentences must be a list of strings, got {type(sentences).__name__}")
        sentences = list(sentences)
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}] is {type(s).__name__}, expected str")
        cleaned = [s.strip() for s in sentences if s.strip()]
        self.sentences = list(dict.fromkeys(cleaned)) if dedupe else cleaned
        self.mask_token, self.seed, self.num_episodes = mask_token, int(seed), num_episodes

        # the mask token's own words (e.g. "mask") can't be labels: they'd survive masking
        stop = set(ENGLISH_STOPWORDS if stopwords is None else (w.lower() for w in stopwords))
        stop |= set(word_tokens(mask_token))
        self.vocab = build_vocab(self.sentences, self.min_freq, self.min_len, stop)
        need = self.k_shot + self.n_query
        self.words = [w for w, idx in self.vocab.items() if len(idx) >= need]
        if len(self.words) < self.n_way:
            raise ValueError(
                f"only {len(self.words)} word(s) occur in >= k_shot + n_query = {need} of the "
                f"{len(self.sentences)} sentences (vocabulary: {len(self.vocab)} words with "
                f"min_freq={self.min_freq}), fewer than n_way={self.n_way}; use more text or "
                "lower n_way/k_shot/n_query")
        self._sets = {w: frozenset(self.vocab[w]) for w in self.words}

    def _pick(self, rng: np.random.Generator, words: list[str], exclusive: bool) -> list[np.ndarray] | None:
        """K+Q distinct sentence indices per word, or None if the text can't supply them."""
        need, used, picks = self.k_shot + self.n_query, set(), []
        for j, w in enumerate(words):
            pool = self._sets[w] - used
            if exclusive:
                for other in words[:j] + words[j + 1:]:
                    pool = pool - self._sets[other]
            if len(pool) < need:
                return None
            pool_arr = np.fromiter(sorted(pool), dtype=np.int64)
            pick = pool_arr[rng.choice(len(pool_arr), size=need, replace=False)]
            used.update(pick.tolist())
            picks.append(pick)
        return picks

    def episode(self, i: int) -> Episode:
        """The ``i``-th episode; depends only on ``(seed, i)``.

        ``classes`` holds the N chosen words; label ``j`` means ``classes[j]`` was masked.
        """
        rng = np.random.default_rng([self.seed, int(i)])
        picks = None
        for _ in range(10):  # prefer word sets whose sentences mention only their own word
            words = [self.words[c] for c in rng.choice(len(self.words), size=self.n_way, replace=False)]
            picks = self._pick(rng, words, exclusive=True)
            if picks is not None:
                break
        if picks is None:  # fall back: other chosen words may appear, but only the label is masked
            picks = self._pick(rng, words, exclusive=False)
        if picks is None:
            raise ValueError(
                f"episode {i}: the words {words} share too many sentences to give each "
                f"{self.k_shot + self.n_query} distinct ones; use more text or lower k_shot/n_query")
        k = self.k_shot
        s_idx = np.concatenate([p[:k] for p in picks])
        q_idx = np.concatenate([p[k:] for p in picks])
        sx = [mask_word(self.sentences[j], words[c], self.mask_token)
              for c, p in enumerate(picks) for j in p[:k]]
        qx = [mask_word(self.sentences[j], words[c], self.mask_token)
              for c, p in enumerate(picks) for j in p[k:]]
        sy = torch.arange(self.n_way).repeat_interleave(self.k_shot)
        qy = torch.arange(self.n_way).repeat_interleave(self.n_query)
        return Episode(sx, sy, qx, qy, list(words), torch.as_tensor(s_idx), torch.as_tensor(q_idx))

    def __repr__(self) -> str:
        return (f"SMLMTSampler(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
                f"sentences={len(self.sentences)}, words={len(self.words)}, seed={self.seed}, "
                f"num_episodes={self.num_episodes})")
