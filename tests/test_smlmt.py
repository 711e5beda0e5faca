"""SMLMT self-supervised episodes (metabook.data.smlmt) on real unlabeled text."""
from __future__ import annotations

import pytest
import torch

from metabook.data.intents import load_unlabeled
from metabook.data.smlmt import ENGLISH_STOPWORDS, SMLMTSampler, build_vocab, mask_word, word_tokens
from metabook.tasks import Episode


@pytest.fixture(scope="module")
def banking(shared_data) -> list[str]:
    return load_unlabeled("banking77", data_dir=shared_data)


def check_episode(s: SMLMTSampler, ep: Episode) -> None:
    """Every sentence really contained its label word, which is now fully masked."""
    n, k, q = s.n_way, s.k_shot, s.n_query
    assert len(ep.support_x) == n * k and len(ep.query_x) == n * q
    assert torch.equal(ep.support_y, torch.arange(n).repeat_interleave(k))
    assert torch.equal(ep.query_y, torch.arange(n).repeat_interleave(q))
    assert len(set(ep.classes)) == n
    idx = ep.support_idx.tolist() + ep.query_idx.tolist()
    assert len(set(idx)) == len(idx), "a sentence was used twice in one episode"
    for x, y, i in zip(ep.support_x + ep.query_x, ep.support_y.tolist() + ep.query_y.tolist(), idx):
        word, orig = ep.classes[y], s.sentences[i]
        assert word in word_tokens(orig)
        assert s.mask_token in x
        assert word not in word_tokens(x)
        assert x == mask_word(orig, word, s.mask_token)


def test_mask_word_replaces_every_occurrence_case_insensitively():
    assert mask_word("Card? my card's CARD", "card") == "[MASK]? my [MASK]'s [MASK]"
    assert mask_word("cards and card", "card", "<m>") == "cards and <m>"
    assert word_tokens("Top-up 2 times, don't!") == ["top", "up", "times", "don", "t"]


def test_labels_are_the_masked_words(banking):
    s = SMLMTSampler(banking, n_way=5, k_shot=3, n_query=2, seed=0)
    exclusive = 0
    for i in range(40):
        ep = s.episode(i)
        check_episode(s, ep)
        others = [set(ep.classes) - {ep.classes[y]} for y in ep.support_y.tolist() + ep.query_y.tolist()]
        idx = ep.support_idx.tolist() + ep.query_idx.tolist()
        exclusive += all(not (o & set(word_tokens(s.sentences[i]))) for o, i in zip(others, idx))
    assert exclusive == 40  # banking raw.txt always allows one-word-per-sentence episodes


def test_custom_mask_token_and_batches(banking):
    s = SMLMTSampler(banking, 3, 1, 2, mask_token="<hidden>", num_episodes=5, seed=3)
    eps = list(s)
    assert len(eps) == len(s) == 5
    for ep in eps:
        check_episode(s, ep)
    b = s.batch(2)
    assert b.batched and b.support_y.shape == (2, 3) and len(b.support_x) == 2
    assert b.classes == [eps[0].classes, eps[1].classes]
    assert len(list(s.batches(2))) == 2


def test_deterministic_for_a_seed_and_random_access(banking):
    a = SMLMTSampler(banking, 5, 2, 2, seed=7)
    b = SMLMTSampler(banking, 5, 2, 2, seed=7)
    late = b.episode(9)  # random access: order of calls doesn't matter
    for i in range(10):
        ea, eb = a.episode(i), b.episode(i)
        assert ea.classes == eb.classes and ea.support_x == eb.support_x and ea.query_x == eb.query_x
    assert a.episode(9).support_x == late.support_x
    c = SMLMTSampler(banking, 5, 2, 2, seed=8)
    assert [a.episode(i).classes for i in range(5)] != [c.episode(i).classes for i in range(5)]


def test_min_freq_and_stopwords_respected(banking):
    s = SMLMTSampler(banking, 5, 2, 2, min_freq=20, seed=0)
    assert all(len(v) >= 20 for v in s.vocab.values())
    assert not set(s.vocab) & ENGLISH_STOPWORDS
    assert all(len(w) >= 3 and w.isalpha() for w in s.vocab)
    assert all(len(s.vocab[w]) >= 4 for w in s.words)
    for i in range(20):
        assert all(len(s.vocab[w]) >= 20 for w in s.episode(i).classes)
    custom = SMLMTSampler(banking, 5, 2, 2, stopwords={"card", "money"}, seed=0)
    assert "card" not in custom.vocab and "the" in custom.vocab


def test_vocab_filters_on_synthetic_text():
    sents = ["the cat 123 ab sat", "a cat sat", "cat mat 42", "dog x the"]
    v = build_vocab(sents, min_freq=2)
    assert v == {"cat": [0, 1, 2], "sat": [0, 1]}
    # the mask token's own word can't be a label: it would survive masking
    assert "mask" not in SMLMTSampler(["mask cat"] * 4, 1, 1, 1, min_freq=1, dedupe=False).vocab


def test_clear_error_when_text_is_too_small():
    sents = ["apple pie", "apple tart", "banana bread", "banana cake", "cherry jam"]
    with pytest.raises(ValueError, match=r"only 2 word\(s\).*n_way=3"):
        SMLMTSampler(sents, n_way=3, k_shot=1, n_query=1, min_freq=1)
    s = SMLMTSampler(sents, n_way=2, k_shot=1, n_query=1, min_freq=1)
    check_episode(s, s.episode(0))
    assert sorted(s.episode(0).classes) == ["apple", "banana"]
    shared = SMLMTSampler(["apple banana", "banana apple"], n_way=2, k_shot=1, n_query=1, min_freq=1)
    with pytest.raises(ValueError, match="share too many sentences"):
        shared.episode(0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="list of strings"):
        SMLMTSampler("apple pie", 1, 1, 1)
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        SMLMTSampler(["apple pie", 3], 1, 1, 1)
    with pytest.raises(ValueError, match="n_way"):
        SMLMTSampler(["apple pie"] * 3, 0, 1, 1)
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_unlabeled("no-such-dataset")


def test_wiki_sentences_and_env_var(shared_data, monkeypatch, tmp_path):
    wiki = load_unlabeled("wiki", data_dir=shared_data)
    assert len(wiki) == 14750
    s = SMLMTSampler(wiki, n_way=10, k_shot=5, n_query=5, seed=1)
    for i in range(10):
        check_episode(s, s.episode(i))
    monkeypatch.setenv("METABOOK_DATA", str(shared_data))
    assert load_unlabeled("HWU64")[:2] == load_unlabeled(shared_data / "protaugment/HWU64/raw.txt")[:2]
    (tmp_path / "raw.txt").write_text("wake me up\n\n set an alarm \n")
    assert load_unlabeled(tmp_path / "raw.txt") == ["wake me up", "set an alarm"]
