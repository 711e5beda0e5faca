"""Control (d): supervised multi-task training is MAML with zero inner steps (Lv et al., 2020).

The tasks come from :class:`~metabook.train.sources.SupervisedSource` (labelled intents of two
datasets, GLOBAL label ids, one linear head over all 12 classes); the model is the tiny BERT in
float64.  With ``inner_steps=0``, MAML's meta-loss must be the mean cross-entropy of
``model(**x)`` over the tasks' query sets, and its gradient w.r.t. every parameter the gradient
of that plain supervised loss, both to 1e-6; and the trainer must run the configuration.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metabook import MAML, TextCollator, load_dataset
from metabook.bert import TextClassifier, load_encoder, split_top, tiny_bert
from metabook.data.pooled import pool_intents, read_overlap_list
from metabook.train import TrainConfig, build, build_source, check_unseen, read_record, run
from metabook.train.sources import SupervisedSource

REPO = Path(__file__).resolve().parents[1]
OVERLAP = REPO / "benchmarks" / "results" / "overlap" / "banking77.json"
TOL = 1e-6
B, K, Q, C = 4, 3, 5, 12


@pytest.fixture(scope="module")
def tokenizer():
    return load_encoder("tiny")[1]


@pytest.fixture(scope="module")
def source(shared_data):
    """12 global classes: 6 intents of BANKING77 and 6 of HWU64 (the rest removed)."""
    remove = {}
    for name in ("banking77", "hwu64"):
        ds = load_dataset(name)
        remove[name] = set(ds.class_names[6:])
    pool = pool_intents(["banking77", "hwu64"], remove)
    assert pool.num_classes == C
    return SupervisedSource(pool, K, Q, seed=3)


def _model(tokenizer, body: bool):
    """Tiny BERT + a random (not zero: else no gradient reaches the encoder) head over C classes."""
    bert = tiny_bert(vocab_size=len(tokenizer), seed=1).double()
    if body:  # the trainer's --adapt top1: a body (embeddings + layer 0) that runs once per task
        front, model = split_top(bert, C, 1, scale=10.0, zero_head=False)
    else:
        front, model = None, TextClassifier(bert, C, scale=10.0, zero_head=False)
    return front, model.double()


def _supervised_loss(front, model, query_x, query_y):
    """Ordinary supervised training: cross-entropy of model(**x) over all query sentences."""
    flat = {k: v.flatten(0, 1) for k, v in query_x.items()}
    if front is not None:
        flat = front(**flat)
    logits = model(**flat)
    return F.cross_entropy(logits, query_y.flatten())


def _batch(source, tokenizer, step=0):
    return TextCollator(tokenizer, max_length=24)(source.batch(step, B))


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def _max_diff(a, b):
    return max(float((x - y).abs().max()) if x is not None else float(y.abs().max()) for x, y in zip(a, b))


def test_source_has_global_labels_one_dataset_per_task_and_is_seeded(source):
    pool = source.pool
    seen = set()
    for i in range(40):
        ep = source.episode(i)
        y = torch.cat([ep.support_y, ep.query_y])
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < C
        assert len(ep.support_x) == K and len(ep.query_x) == Q
        names = {pool.classes[int(c)] for c in y}
        datasets = {n.split(":")[0] for n in names}
        assert len(datasets) == 1, names  # one dataset per task
        seen |= datasets
        # the label is the sentence's global class, the same in every task
        idx = torch.cat([ep.support_idx, ep.query_idx])
        assert [pool.label_ids[j] for j in idx.tolist()] == y.tolist()
        assert [pool.texts[j] for j in idx.tolist()] == ep.support_x + ep.query_x
        assert list(ep.classes) == pool.classes and "global classes" in repr(ep.classes)
    assert seen == {"banking77", "hwu64"}
    again = SupervisedSource(pool, K, Q, seed=3).episode(7)
    assert again.support_x == source.episode(7).support_x
    assert SupervisedSource(pool, K, Q, seed=4).episode(7).support_x != again.support_x


@pytest.mark.parametrize("body", [False, True], ids=["whole-model", "body+top"])
def test_zero_step_maml_is_supervised_training(source, tokenizer, body):
    front, model = _model(tokenizer, body)
    maml = MAML(model, inner_lr=0.5, inner_steps=0, body=front)
    ep = _batch(source, tokenizer)
    assert int(torch.cat([ep.support_y, ep.query_y], 1).max()) >= 6  # global labels beyond any N-way range
    params = list(maml.parameters())

    # (i) the loss: MAML's meta-loss = mean over the tasks' query sets of the cross-entropy
    calls = []
    if front is not None:  # the body runs on the query only: no compute is spent on the unread support
        front.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    meta = maml.meta_loss(*ep.tensors())
    assert calls == ([B * Q] if front is not None else [])
    plain = _supervised_loss(front, model, ep.query_x, ep.query_y)
    assert meta.dtype == torch.float64
    assert abs(meta.item() - plain.item()) < TOL, (meta.item(), plain.item())
    assert abs(meta.item() - plain.item()) < 1e-12  # in fact float64 round-off

    # (ii) the gradient w.r.t. every parameter (encoder and head)
    g_meta, g_plain = _grads(meta, params), _grads(plain, params)
    assert all(g is not None for g in g_plain)
    assert any(float(g.abs().max()) > 1e-3 for g in g_plain)  # not a vacuous comparison
    assert _max_diff(g_meta, g_plain) < TOL
    # ... and through the trainer's path: outer_backward (scale 1/B, two chunks of tasks)
    maml.task_chunk = 2
    maml.zero_grad(set_to_none=True)
    maml.outer_backward(*ep.tensors(), scale=1.0 / B)
    assert _max_diff([p.grad for p in params], g_plain) < TOL

    # the support set is not read, and one inner step is something else
    other = _batch(source, tokenizer, step=1)
    assert abs(maml.meta_loss(other.support_x, other.support_y, ep.query_x, ep.query_y).item() - plain.item()) < TOL
    one = MAML(model, inner_lr=0.5, inner_steps=1, body=front).meta_loss(*ep.tensors())
    assert abs(one.item() - plain.item()) > 1e-4


def test_trainer_step_is_a_supervised_step(tmp_path, shared_data):
    """One SGD step of the trainer (--task supervised --algorithm maml --inner-steps 0) moves every
    weight exactly as one SGD step on the plain supervised loss of the same batch."""
    cfg = TrainConfig(task="supervised", exclude="banking77", overlap=str(OVERLAP), algorithm="maml",
                      inner_steps=0, adapt="top1", encoder="tiny", dtype="float64", optimizer="sgd", meta_lr=0.5,
                      k_shot=2, n_query=3, meta_batch=3, max_length=16, steps=1, progress=False,
                      tensorboard=False, device="cpu", threads=1, out=str(tmp_path), checkpoint_every=0)
    from metabook.device import seed_everything

    seed_everything(cfg.seed)  # what run() does before build()
    ref = build(cfg.resolved())
    learner = ref.learner
    ep = TextCollator(ref.tokenizer, max_length=16)(build_source(cfg).batch(0, 3))
    # a step on the plain supervised loss, on a copy of the same initial weights
    front, model = learner.body, learner.model
    loss = _supervised_loss(front, model, ep.query_x, ep.query_y)
    params = [p for p in learner.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    want = [(p - 0.5 * g).detach() for p, g in zip(params, grads)]
    res = run(cfg)
    got = [p for p in res.learner.parameters() if p.requires_grad]
    assert len(got) == len(want) and res.losses[0] == pytest.approx(loss.item(), abs=TOL)
    assert max(float((a.detach() - b).abs().max()) for a, b in zip(got, want)) < TOL
    assert learner.model.head.out_features == build_source(cfg).num_classes == 181  # 64 + 150 - 33 removed


def test_cli_runs_supervised_multitask_and_records_it(tmp_path, shared_data):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["--task", "supervised", "--exclude", "banking77", "--overlap", str(OVERLAP), "--algorithm", "maml",
            "--inner-steps", "0", "--encoder", "tiny", "--steps", "3", "--meta-batch", "2", "--k-shot", "2",
            "--n-query", "4", "--max-length", "16", "--meta-lr", "1e-3", "--threads", "1", "--no-progress",
            "--no-tensorboard", "--device", "cpu", "--out", str(out)]
    res = subprocess.run([sys.executable, "-m", "metabook.train", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert len(losses) == 3 and all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[0] == pytest.approx(torch.log(torch.tensor(181.0)).item(), abs=1e-4)  # zero head: uniform
    rec = read_record(out / "encoder")
    t = rec["trained_on"]
    assert t["task"] == "supervised" and t["datasets"] == ["clinc150", "hwu64"] and t["classes"] == 181
    assert t["removed_overlap"] == {d: sorted(v) for d, v in read_overlap_list(OVERLAP, "banking77").items()}
    check_unseen(out / "encoder", "banking77")  # the target: never seen
    from metabook.train import TrainedOnError
    with pytest.raises(TrainedOnError, match="every class of hwu64"):
        check_unseen(out / "encoder", "hwu64")


def test_supervised_options_are_checked(shared_data):
    bad = [
        (dict(algorithm="protonet", exclude="banking77"), "global labels"),
        (dict(algorithm="maml"), "needs --data"),
        (dict(algorithm="maml", data="clinc150", overlap=str(OVERLAP)), "--exclude TARGET"),
        (dict(algorithm="maml", data="banking77,hwu64", exclude="banking77"), "must not include"),
        (dict(algorithm="maml", exclude="hwu64", overlap=str(OVERLAP)), "not an overlap list for 'hwu64'"),
        (dict(algorithm="maml", exclude="nope"), "is not one of"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            build_source(TrainConfig(task="supervised", encoder="tiny", device="cpu", **kw))
    with pytest.raises(ValueError, match="options of --task supervised"):
        TrainConfig(task="intents", data="banking77", exclude="hwu64").validate()
    # the explicit list works too, and equal intent names of two datasets stay two classes
    src = build_source(TrainConfig(task="supervised", data="clinc150,hwu64", encoder="tiny", device="cpu"))
    assert "clinc150:alarm" in src.pool.classes and "hwu64:alarm/set" in src.pool.classes
    assert len(set(src.pool.classes)) == src.num_classes == 150 + 64
