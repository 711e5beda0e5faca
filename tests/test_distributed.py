"""Data parallel over the task batch: 2 gloo ranks on CPU give the single-process update
for the same global meta-batch (uneven split 3 + 2), and agree on non-finite losses.

One ``torchrun --nproc-per-node 2`` launch runs this file as a script (``_ranks``): the
command line ``python -m metabook.train`` (MAML), Reptile, and two runs with an inf loss in
a task of rank 1 (``skip`` and ``raise`` policies).  The test then compares with single-process
runs in the pytest process.
""" 
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_flags
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from metabook.train import NonFiniteLossError, TrainConfig, run, shard
from metabook.train.__main__ import main

REPO = Path(__file__).resolve().parents[1]
# Global meta-batch 5 over 2 ranks: rank 0 gets tasks 0-2, rank 1 tasks 3-4.
COMMON = dict(meta_batch=5, k_shot=5, n_query=5, hidden=16, dtype="float64", threads=1, progress=False,
              device="cpu")
MAML_RUN = dict(algorithm="maml", steps=6, inner_steps=2, inner_lr=0.05, meta_lr=0.01, **COMMON)
REPTILE_RUN = dict(algorithm="reptile", steps=3, inner_steps=3, inner_lr=0.02, meta_lr=0.5, **COMMON)
SKIP_RUN = dict(algorithm="metasgd", steps=3, on_nonfinite="skip", **COMMON)
NAN_RUN = dict(algorithm="maml", steps=3, **COMMON)
# Intent episodes through the tiny BERT (MiniLM's tokenizer, random 2-layer model): global
# meta-batch 3 over 2 ranks (2 + 1 tasks), second-order MAML adapting the top layer and head.
TEXT_RUN = dict(task="intents", data="banking77", split="01", encoder="tiny", algorithm="maml", adapt="top1",
                n_way=3, k_shot=2, n_query=2, meta_batch=3, steps=3, inner_steps=2, max_length=16,
                dtype="float64", threads=1, progress=False, tensorboard=False, device="cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan_in_task_4(step, ep):
    if step == 1:
        ep.query_y[4] = float("inf")  # task 4 lives on rank 1
    return ep


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _final_weights(out: Path) -> dict:
    ck = out / "checkpoints"
    side = json.loads(sorted(ck.glob("step_*.json"))[-1].read_text())
    w = load_file(ck / side["weights"]["file"])
    return side, w




def test_shard_partitions_the_global_batch():
    for total in range(10):
        for world in range(1, 5):
            parts = [shard(total, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
    assert [shard(5, r, 2) for r in range(2)] == [(0, 3), (3, 5)]


def _ranks(tmp_path: Path, port: int) -> None:
    """Executed on each rank by torchrun (see the test below)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # Exactly what `torchrun -m metabook.train ...` runs: run() joins and leaves torchrun's group.
    assert main(cli_flags({**MAML_RUN, "checkpoint_every": 3, "out": str(tmp_path / "ddp")})) == 0
    # A group re-formed on torchrun's store would find stale keys there: use a fresh store, held
    # open for the runs below (run() joins a group that is already initialized and leaves it open).
    store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        _runs(tmp_path, rank)
    finally:
        dist.destroy_process_group()


def _runs(tmp_path: Path, rank: int) -> None:
    res = run(TrainConfig(out=str(tmp_path / "text"), **TEXT_RUN))
    save_file(res.learner.state_dict(), str(tmp_path / f"text{rank}.safetensors"))
    res = run(TrainConfig(out=str(tmp_path / "reptile"), **REPTILE_RUN))
    save_file(res.learner.state_dict(), str(tmp_path / f"reptile{rank}.safetensors"))
    res = run(TrainConfig(out=str(tmp_path / "skip"), **SKIP_RUN), transform_batch=_nan_in_task_4)
    save_file(res.learner.state_dict(), str(tmp_path / f"skip{rank}.safetensors"))
    (tmp_path / f"skipped{rank}.json").write_text(json.dumps(res.skipped))
    try:
        run(TrainConfig(out=str(tmp_path / "nan"), **NAN_RUN), transform_batch=_nan_in_task_4)
        err = None
    except NonFiniteLossError as e:
        err = {"step": e.step, "tasks": e.tasks, "text": str(e)}
    (tmp_path / f"nan{rank}.json").write_text(json.dumps(err))


def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("METABOOK_DIST_BACKEND", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), __file__, str(tmp_path), str(_free_port())]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 rank(s), backend gloo, device cpu" in proc.stderr

    # MAML through the command line: 2 ranks == 1 process, step for step.
    single = run(TrainConfig(out=str(tmp_path / "single"), **MAML_RUN))
    side, w = _final_weights(tmp_path / "ddp")
    assert side["step"] == 6 and side["world_size"] == 2
    assert not torch.equal(w["rng/0/torch_cpu"], w["rng/1/torch_cpu"])  # per-rank RNG streams
    ddp = {k[len("model/"):]: v for k, v in w.items() if k.startswith("model/")}
    assert _max_diff(ddp, single.learner.state_dict()) < 1e-6  # in practice ~1e-17
    ddp_loss = [json.loads(x)["loss"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert ddp_loss == pytest.approx(single.losses, rel=1e-10)
    # A checkpoint written by 2 ranks resumes in 1 process (the global batch does not change).
    resumed = run(TrainConfig(out=str(tmp_path / "ddp"), resume=True, **{**MAML_RUN, "steps": 8}))
    longer = run(TrainConfig(out=str(tmp_path / "single8"), **{**MAML_RUN, "steps": 8}))
    assert resumed.resumed_from == 6
    assert _max_diff(resumed.learner.state_dict(), longer.learner.state_dict()) < 1e-6

    # Text: intent episodes through the tiny BERT, tokenized per rank: 2 ranks == 1 process.
    single = run(TrainConfig(out=str(tmp_path / "text1"), **TEXT_RUN))
    for r in range(2):
        assert _max_diff(load_file(tmp_path / f"text{r}.safetensors"), single.learner.state_dict()) < 1e-6
    assert (tmp_path / "text" / "encoder" / "metabook.json").is_file()

    # Reptile: the all-reduced (theta - phi) equals the single-process update.
    single = run(TrainConfig(out=str(tmp_path / "reptile1"), **REPTILE_RUN))
    for r in range(2):
        assert _max_diff(load_file(tmp_path / f"reptile{r}.safetensors"), single.learner.state_dict()) < 1e-6
    # An inf loss in task 4 (rank 1): both ranks raise, naming the step and the global task index ...
    errs = [json.loads((tmp_path / f"nan{r}.json").read_text()) for r in range(2)]
    assert errs[0] == errs[1] and errs[0]["step"] == 1 and errs[0]["tasks"] == [4]
    assert "step 1: task 4 (loss=inf" in errs[0]["text"]
    # ... or both skip the step, and end equal to a single process that skipped it.
    single = run(TrainConfig(out=str(tmp_path / "skip1"), **SKIP_RUN), transform_batch=_nan_in_task_4)
    assert single.skipped == [1]
    for r in range(2):
        assert json.loads((tmp_path / f"skipped{r}.json").read_text()) == [1]
        assert _max_diff(load_file(tmp_path / f"skip{r}.safetensors"), single.learner.state_dict()) < 1e-6


if __name__ == "__main__":  # a rank launched by torchrun
    torch.set_num_threads(1)
    _ranks(Path(sys.argv[1]), int(sys.argv[2]))
