"""The non-meta controls (b) continued masked-LM and (c) SimCSE, behind the learner interface and
run by the one trainer (``--task text --algorithm mlm|simcse``) on the tiny BERT.

``--task text`` hands them the sentences of SMLMT episode i *unmasked*, labels all 0.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metabook import MaskedLMControl, SimCSEControl, TextCollator, load_unlabeled
from metabook.algorithms.controls import join_sets
from metabook.algorithms.objectives import simcse_loss
from metabook.bert import SentenceEncoder, load_encoder, tiny_bert
from metabook.data.smlmt import mask_word
from metabook.train import TrainConfig, build_source, run
from metabook.train.sources import StreamingSMLMTSource, TextSource

REPO = Path(__file__).resolve().parents[1]
SIZES = dict(n_way=3, k_shot=2, n_query=2, meta_batch=2, max_length=16)
FAST = dict(encoder="tiny", progress=False, tensorboard=False, device="cpu", threads=1, checkpoint_every=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    path = tmp_path_factory.mktemp("corpus") / "banking.txt"
    path.write_text("\n".join(load_unlabeled("banking77")[:1500]) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return load_encoder("tiny")[1]


def _episode(corpus, tokenizer, step=0, size=2):
    src = build_source(TrainConfig(task="text", corpus=str(corpus), algorithm="mlm", seed=0, **SIZES, **FAST))
    return TextCollator(tokenizer, max_length=16)(src.batch(step, size))


def _weights(folder):
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("algorithm", ["mlm", "simcse"])
def test_each_control_trains_under_the_trainer_deterministically(tmp_path, corpus, algorithm):
    cfg = dict(task="text", corpus=str(corpus), algorithm=algorithm, steps=3, meta_lr=1e-3, seed=5, **SIZES, **FAST)
    a = run(TrainConfig(out=str(tmp_path / "a"), **cfg))
    assert a.step == 3 and len(a.losses) == 3 and all(map(torch.isfinite, torch.tensor(a.losses)))
    logged = [json.loads(ln) for ln in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged if "loss" in r] == a.losses
    start, end = load_encoder("tiny")[0].state_dict(), _weights(tmp_path / "a" / "encoder")
    moved = [k for k in start if not torch.equal(start[k], end[k])]
    assert any("encoder.layer" in k for k in moved)  # the transformer itself trained
    rec = json.loads((tmp_path / "a" / "encoder" / "metabook.json").read_text())
    assert rec["trained_on"]["task"] == "text" and rec["trained_on"]["smlmt"]["corpus"] == str(corpus)
    # the same seed: the same masks, losses and weights; another seed: other tasks (and masks)
    b = run(TrainConfig(out=str(tmp_path / "b"), **cfg))
    assert b.losses == a.losses
    assert all(torch.equal(v, end[k]) for k, v in _weights(tmp_path / "b" / "encoder").items())
    c = run(TrainConfig(out=str(tmp_path / "c"), **{**cfg, "seed": 6}))
    assert c.losses != a.losses


def test_mlm_resumes_bit_identically(tmp_path, corpus):
    """The masks come from torch's global generator, which the checkpoints carry."""
    cfg = dict(task="text", corpus=str(corpus), algorithm="mlm", meta_lr=1e-3, **SIZES,
               **{**FAST, "checkpoint_every": 2})
    straight = run(TrainConfig(steps=4, out=str(tmp_path / "a"), **cfg))
    run(TrainConfig(steps=2, out=str(tmp_path / "b"), **cfg))
    resumed = run(TrainConfig(steps=4, out=str(tmp_path / "b"), resume=True, **cfg))
    assert resumed.resumed_from == 2 and resumed.losses == straight.losses[2:]
    a, b = straight.learner.state_dict(), resumed.learner.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stream", [False, True])
def test_text_source_is_the_smlmt_sentences_unmasked(corpus, stream):
    if stream:  # buffers of 600 lines, 100 episodes each: episodes 150 and 260 come from buffers 1 and 2
        make = lambda: StreamingSMLMTSource(str(corpus), 3, 2, 2, seed=2, buffer_size=600,  # noqa: E731
                                            episodes_per_buffer=100)
        text, smlmt = TextSource(make()), make()
    else:
        cfg = TrainConfig(task="text", corpus=str(corpus), algorithm="simcse", seed=2, **SIZES, **FAST)
        text = build_source(cfg)
        smlmt = build_source(TrainConfig(**{**cfg.to_dict(), "task": "smlmt", "algorithm": "protonet"}))
    assert isinstance(text, TextSource)
    for i in (0, 1, 150, 260, 3):
        t, m = text.episode(i), smlmt.episode(i)
        assert not t.support_y.any() and not t.query_y.any() and t.classes == ["text"]
        assert len(t.support_x) == 3 * 2 and len(t.query_x) == 3 * 2
        for plain, masked, y in zip(t.support_x + t.query_x, m.support_x + m.query_x,
                                    torch.cat([m.support_y, m.query_y]).tolist()):
            assert "[MASK]" not in plain and "[MASK]" in masked
            assert mask_word(plain, m.classes[y]) == masked


def test_mlm_never_targets_special_tokens_and_its_loss_is_per_task(corpus, tokenizer):
    ep = TextCollator(tokenizer, max_length=16)(
        build_source(TrainConfig(task="smlmt", corpus=str(corpus), algorithm="protonet", **SIZES, **FAST)).batch(0, 3))
    learner = MaskedLMControl(tiny_bert(vocab_size=len(tokenizer)), tokenizer.mask_token_id, tokenizer.all_special_ids)
    x = join_sets(ep.support_x, ep.query_x)
    ids = x["input_ids"]
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (x["attention_mask"] == 0)
    assert (ids == tokenizer.mask_token_id).any()  # SMLMT text holds [MASK]s: never a target either
    torch.manual_seed(0)
    for _ in range(30):
        masked, labels = learner.mask(x)
        chosen = labels != -100
        assert not chosen[special].any() and torch.equal(masked["input_ids"][special], ids[special])
        assert torch.equal(labels[chosen], ids[chosen]) and chosen.flatten(1).any(1).all()  # >= 1 target per task
    # task_losses is each task's mean cross-entropy over its own masked tokens
    torch.manual_seed(1)
    losses = learner.task_losses(*ep.tensors())
    torch.manual_seed(1)
    masked, labels = learner.mask(x)
    want = []
    for b in range(3):
        h = learner.body(**{k: v[b] for k, v in masked.items()})["hidden_states"]
        sel = labels[b] != -100
        want.append(torch.nn.functional.cross_entropy(learner.head(h[sel]), labels[b][sel]))
    torch.testing.assert_close(losses, torch.stack(want))


def test_simcse_identical_views_score_lower_than_shuffled_pairs(corpus, tokenizer):
    ep = _episode(corpus, tokenizer)
    x = join_sets(ep.support_x, ep.query_x)
    enc = SentenceEncoder(tiny_bert(vocab_size=len(tokenizer)))
    e = enc(**{k: v[0] for k, v in x.items()})
    perm = torch.roll(torch.arange(len(e)), 1)  # every sentence paired with another one
    assert simcse_loss(e, e).item() < simcse_loss(e, e[perm]).item()
    # without dropout both views are identical: the control's loss is simcse_loss(e, e) per task
    control = SimCSEControl(enc)
    torch.testing.assert_close(control.task_losses(*ep.tensors())[0], simcse_loss(e, e))
    # with dropout (as MiniLM has) the views differ in train mode, and only there
    drop = SimCSEControl(SentenceEncoder(tiny_bert(vocab_size=len(tokenizer), dropout=0.1))).train()
    torch.manual_seed(0)
    noisy = drop.task_losses(*ep.tensors())
    drop.eval()
    with torch.no_grad():
        e0 = drop.encoder(**{k: v[0] for k, v in x.items()})
        clean = drop.task_losses(*ep.tensors())
    torch.testing.assert_close(clean[0], simcse_loss(e0, e0))
    assert noisy[0].item() > clean[0].item()


def test_controls_keep_the_learner_contract(corpus, tokenizer, shared_data):
    from metabook import EpisodeSampler, load_dataset

    ep = _episode(corpus, tokenizer, size=3)
    bert = tiny_bert(vocab_size=len(tokenizer))
    for learner in (MaskedLMControl(bert, tokenizer.mask_token_id, tokenizer.all_special_ids, task_chunk=2),
                    SimCSEControl(SentenceEncoder(bert), task_chunk=2)):
        torch.manual_seed(0)
        losses = learner.task_losses(*ep.tensors())
        assert losses.shape == (3,) and losses.requires_grad
        params = [p for p in learner.parameters()]
        torch.manual_seed(0)
        want = torch.autograd.grad(learner.meta_loss(*ep.tensors()), params, allow_unused=True)
        learner.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = learner.outer_backward(*ep.tensors(), scale=1 / 3)  # chunks of 2 + 1 tasks
        torch.testing.assert_close(out, losses.detach())
        for p, g in zip(params, want):
            if g is not None:
                torch.testing.assert_close(p.grad, g)
        # the validation probe: nearest class mean of the sentence embeddings
        intents = TextCollator(tokenizer, max_length=16)(EpisodeSampler.from_dataset(
            load_dataset("banking77"), "01", "train", 3, 2, 2, seed=0).batch(2))
        assert learner.logits(intents.support_x, intents.support_y, intents.query_x).shape == (2, 6, 3)
        assert learner.predict(intents.support_x, intents.support_y, intents.query_x).shape == (2, 6)
        one = {k: v[0] for k, v in ep.support_x.items()}
        with pytest.raises(ValueError, match="leading task dimension"):
            learner.task_losses(one, ep.support_y[0], ep.query_x, ep.query_y)
    with pytest.raises(TypeError, match="token mappings"):
        MaskedLMControl(bert, 103, [0]).task_losses(torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 3, 4),
                                                    torch.zeros(2, 3))


def test_bad_input_is_refused_with_one_line(tmp_path, corpus, capsys):
    from metabook.train.__main__ import main

    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "metabook.train", "--task", "sinusoid", "--algorithm", "mlm",
                          "--out", str(out), "--steps", "1"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("metabook.train: error: --algorithm mlm trains a text encoder"), lines[0]
    for args, match in ((["--task", "text", "--corpus", str(corpus), "--algorithm", "maml"],
                         "--task text has no labels"),
                        (["--task", "text", "--algorithm", "simcse", "--encoder", "tiny"], "needs --corpus"),
                        (["--task", "intents", "--data", "banking77", "--algorithm", "mlm", "--exclude", "hwu64"],
                         "options of --task supervised")):
        assert main([*args, "--out", str(out), "--steps", "1", "--no-progress"]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("metabook.train: error:") and match in lines[0], lines
    assert not out.exists()
