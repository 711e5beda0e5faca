"""The one trainer on text: every learner through `python -m metabook.train`, the exported
encoder, validation and early stopping, exact resume after kill -9, and bad input.

All runs use the tiny randomly initialised BERT (``--encoder tiny``: MiniLM's tokenizer,
a 2-layer 32-wide model, no download) on BANKING77's class split 01.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_flags
import torch
from safetensors.torch import load_file

from metabook.train import TrainConfig, TrainedOnError, check_unseen, read_record, run

REPO = Path(__file__).resolve().parents[1]
TEXT = dict(task="intents", data="banking77", split="01", encoder="tiny", n_way=3, k_shot=2, n_query=2,
            meta_batch=2, inner_steps=1, max_length=16, progress=False, tensorboard=False, device="cpu",
            threads=1)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "metabook.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)




@pytest.mark.parametrize("algorithm", ["protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "icl"])
def test_every_learner_trains_on_intents_and_exports_its_encoder(tmp_path, algorithm):
    from transformers import AutoModel, AutoTokenizer

    res = run(TrainConfig(algorithm=algorithm, steps=3, out=str(tmp_path), val_every=3, val_episodes=4,
                          **TEXT))
    assert res.step == 3 and len(res.losses) == 3 and all(map(torch.isfinite, torch.tensor(res.losses)))
    assert res.best_step in (0, 3) and 0 <= res.best_score <= 100 and [e[0] for e in res.evals] == [0, 3]
    enc = tmp_path / "encoder"
    model, tok = AutoModel.from_pretrained(enc), AutoTokenizer.from_pretrained(enc)
    assert model.config.hidden_size == 32 and len(tok) == model.config.vocab_size
    rec = read_record(enc)
    assert rec["trained_on"]["data"] == "banking77" and rec["trained_on"]["split"] == "01"
    assert len(rec["trained_on"]["train_classes"]) == 25 and rec["command"] and rec["config"]["algorithm"] == algorithm
    # the exported weights are the trained ones
    trained = {k: v for k, v in res.learner.state_dict().items()}
    emb = [v for k, v in trained.items() if k.endswith("word_embeddings.weight")][0]
    assert torch.equal(model.embeddings.word_embeddings.weight.detach(), emb)


def test_exported_encoder_refuses_the_classes_it_saw(tmp_path, shared_data):
    run(TrainConfig(algorithm="protonet", steps=1, out=str(tmp_path), **TEXT))
    from metabook import load_dataset
    split = load_dataset("banking77").split("01")
    check_unseen(tmp_path / "encoder", "banking77", split.test)  # test classes: fine
    check_unseen(tmp_path / "encoder", "clinc150")  # another dataset: fine
    with pytest.raises(TrainedOnError, match="trained on banking77"):
        check_unseen(tmp_path / "encoder", "banking77", split.train[:3])
    with pytest.raises(TrainedOnError):
        check_unseen(tmp_path / "encoder", "banking77", load_dataset("banking77").split("02").test)


def test_validation_keeps_the_best_and_stops_early(tmp_path):
    res = run(TrainConfig(algorithm="protonet", steps=40, val_every=1, val_episodes=4, patience=2,
                          meta_lr=0.05, out=str(tmp_path), **TEXT))  # a large lr: validation soon stalls
    scores = [s for _, s in res.evals]
    assert res.step < 40 and len(scores) == res.step + 1 and res.evals[0][0] == 0  # step 0 is scored too
    assert res.best_score == max(scores) and res.evals[res.best_step][1] == res.best_score
    assert all(s <= res.best_score for s in scores[res.best_step:])
    assert len(scores) - 1 - res.best_step == 2  # stopped after `patience` evaluations without a gain
    best = json.loads(sorted((tmp_path / "best").glob("step_*.json"))[-1].read_text())
    assert best["step"] == res.best_step


def _weights(out: Path) -> dict:
    ck = out / "checkpoints"
    side = json.loads(sorted(ck.glob("step_*.json"))[-1].read_text())
    return side["step"], {k: v for k, v in load_file(ck / side["weights"]["file"]).items() if k.startswith("model/")}


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    opts = {**TEXT, "algorithm": "maml", "steps": 30, "checkpoint_every": 3, "adapt": "top1"}
    ref = _cli(*cli_flags({**opts, "out": str(tmp_path / "ref")}))
    assert ref.returncode == 0, ref.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "metabook.train", *cli_flags({**opts, "out": str(tmp_path / "run")})],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at, _ = _weights(tmp_path / "run")
    assert 0 < killed_at < 30  # it really died mid-run
    res = _cli(*cli_flags({**opts, "out": str(tmp_path / "run"), "resume": True}))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from step_{killed_at:08d}.json" in res.stderr
    (s1, a), (s2, b) = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert s1 == s2 == 30 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _refused(tmp_path: Path, *args: str, match: str, env: dict | None = None) -> None:
    out = tmp_path / "out"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    res = subprocess.run([sys.executable, "-m", "metabook.train", *args, "--out", str(out), "--steps", "1"],
                         cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("metabook.train: error:") and match in lines[0], lines[0]
    assert not out.exists()  # nothing written


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, shared_data):
    base = ["--task", "intents", "--data", "banking77", "--encoder", "tiny"]
    _refused(tmp_path, "--task", "intents", "--data", "banking77", "--encoder", "no/such/folder",
             match="no such folder")
    _refused(tmp_path, "--task", "intents", "--data", "banking77", "--encoder", "not-a-real-org/not-a-model",
             match="could not load encoder", env={"HF_HUB_OFFLINE": "1"})
    _refused(tmp_path, *base, "--split", "07", match="'07'")
    empty, latin = tmp_path / "empty.txt", tmp_path / "latin.txt"
    empty.write_text("\n \n")
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    _refused(tmp_path, "--task", "smlmt", "--corpus", str(empty), "--encoder", "tiny", match="empty")
    _refused(tmp_path, "--task", "smlmt", "--corpus", str(latin), "--encoder", "tiny", match="not UTF-8")
    _refused(tmp_path, *base, "--algorithm", "nope", match="algorithm")
    # a tokenizer whose vocabulary is larger than the model's embedding table
    from metabook.bert import load_encoder, tiny_bert
    _, tok, _ = load_encoder("tiny")
    bad = tmp_path / "mismatch"
    tiny_bert(vocab_size=100).save_pretrained(bad)
    tok.save_pretrained(bad)
    _refused(tmp_path, "--task", "intents", "--data", "banking77", "--encoder", str(bad), match="do not belong")
    # a data file whose bytes do not match the registry's SHA-256
    data = tmp_path / "data"
    (data / "protaugment").mkdir(parents=True)
    for sub in (shared_data / "protaugment").iterdir():
        (data / "protaugment" / sub.name).symlink_to(sub)
    (data / "protaugment" / "BANKING77").unlink()
    (data / "protaugment" / "BANKING77").mkdir()
    for f in (shared_data / "protaugment" / "BANKING77").iterdir():
        (data / "protaugment" / "BANKING77" / f.name).symlink_to(f)
    (data / "protaugment" / "BANKING77" / "full.jsonl").unlink()
    raw = bytearray((shared_data / "protaugment" / "BANKING77" / "full.jsonl").read_bytes())
    raw[100] ^= 1  # same size, one bit flipped
    (data / "protaugment" / "BANKING77" / "full.jsonl").write_bytes(bytes(raw))
    _refused(tmp_path, *base, match="ChecksumError", env={"METABOOK_DATA": str(data),
                                                    "METABOOK_CACHE": str(tmp_path / "cache"),
                                                    "METABOOK_BASE_URL": "http://127.0.0.1:9"})


@pytest.mark.parametrize("args", [["--help"], ["--task", "intents", "--help"]])
def test_help_exits_0(args):
    res = _cli(*args)
    assert res.returncode == 0 and "--algorithm" in res.stdout and "--encoder" in res.stdout


def test_meta_train_drives_a_learner_on_text_episodes(shared_data):
    from metabook import EpisodeSampler, ProtoNet, TextCollator, load_dataset, meta_train
    from metabook.bert import SentenceEncoder, load_encoder

    bert, tok, _ = load_encoder("tiny")
    learner = ProtoNet(SentenceEncoder(bert), distance="cosine", task_chunk=1)
    sampler = EpisodeSampler.from_dataset(load_dataset("banking77"), "01", "train", 3, 2, 2, seed=0)
    before = [p.detach().clone() for p in learner.parameters()]
    log = meta_train(learner, sampler.batches(2), torch.optim.SGD(learner.parameters(), 0.1), 3,
                     collate=TextCollator(tok, max_length=16), progress=False)
    assert len(log.losses) == 3 and all(map(torch.isfinite, torch.tensor(log.losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters()))


def test_lora_adapters_train_and_export_merged(tmp_path):
    from transformers import AutoModel

    res = run(TrainConfig(algorithm="maml", adapt="lora", steps=2, meta_lr=0.01, out=str(tmp_path), **TEXT))
    adapted = res.learner.adapt_names
    assert adapted and all("lora_" in n or n.startswith("head.") for n in adapted)
    model = AutoModel.from_pretrained(tmp_path / "encoder")
    assert not any("lora" in k or "base_layer" in k for k in model.state_dict())
    # the exported query weights are W + scale * B A of the trained adapters
    layer = res.learner.model.encoder.slice.layers[0].attention.self.query
    want = layer.base_layer.weight + layer.get_delta_weight("default")
    torch.testing.assert_close(model.encoder.layer[0].attention.self.query.weight, want.detach())


def test_trainer_takes_your_own_protaugment_folder(tmp_path):
    root = tmp_path / "my_intents"
    (root / "few_shot" / "01").mkdir(parents=True)
    names = ["weather", "alarm", "music", "taxi", "pizza", "timer", "news", "lights"]
    with open(root / "full.jsonl", "w") as f:
        for lab in names:
            for i in range(8):
                f.write(json.dumps({"sentence": f"please {lab} request number {i}", "label": lab}) + "\n")
    for part, cls in (("train", names[:4]), ("valid", names[4:6]), ("test", names[6:])):
        (root / "few_shot" / "01" / f"labels.{part}.txt").write_text("\n".join(cls) + "\n")
    opts = {**TEXT, "data": str(root), "n_way": 2}
    res = run(TrainConfig(algorithm="protonet", steps=2, val_every=2, val_episodes=2, out=str(tmp_path / "o"), **opts))
    rec = read_record(res.encoder_dir)
    assert rec["trained_on"]["data"] == "my_intents" and rec["trained_on"]["train_classes"] == names[:4]
    check_unseen(res.encoder_dir, str(root), names[6:])
    with pytest.raises(TrainedOnError):
        check_unseen(res.encoder_dir, str(root), names[4:6])  # selected on the valid classes
