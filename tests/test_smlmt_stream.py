"""SMLMT streamed from corpora larger than memory (metabook.data.smlmt_stream): valid episodes,
determinism per seed and rank, disjoint shards, bounded memory under an address-space cap,
`datasets` sources, clear errors, and the trainer's `--task smlmt|mixture --stream`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from metabook.data.episode import Episode
from metabook.data.intents import load_unlabeled
from metabook.data.smlmt import SMLMTSampler, mask_word, word_tokens
from metabook.data.smlmt_stream import StreamingSMLMTSampler, iter_texts
from metabook.train import TrainConfig, build_source, parse_args, read_record, run
from metabook.train import sources
from metabook.train.__main__ import main

REPO = Path(__file__).resolve().parents[1]
TINY = dict(encoder="tiny", n_way=3, k_shot=2, n_query=2, meta_batch=2, inner_steps=1, max_length=16,
            progress=False, tensorboard=False, device="cpu", threads=1, algorithm="protonet")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lines(shared_data) -> list[str]:
    """BANKING77's unlabeled sentences with a few blank lines, as written to the corpus file."""
    text = load_unlabeled("banking77", data_dir=shared_data)
    return [s if i % 97 else "" for i, s in enumerate(text)]  # blank lines count as lines


@pytest.fixture(scope="module")
def corpus(lines, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "banking.txt"
    path.write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    return path


def check_episode(s: StreamingSMLMTSampler, ep: Episode, lines: list[str]) -> None:
    """N distinct masked words; support and query disjoint; every sentence of class c is its
    corpus line with word c masked."""
    n, k, q = s.n_way, s.k_shot, s.n_query
    assert isinstance(ep, Episode) and not ep.batched
    assert len(ep.support_x) == n * k and len(ep.query_x) == n * q
    assert torch.equal(ep.support_y, torch.arange(n).repeat_interleave(k))
    assert torch.equal(ep.query_y, torch.arange(n).repeat_interleave(q))
    assert len(set(ep.classes)) == n
    sidx, qidx = ep.support_idx.tolist(), ep.query_idx.tolist()
    assert not set(sidx) & set(qidx) and len(set(sidx + qidx)) == n * (k + q)
    assert not set(ep.support_x) & set(ep.query_x)
    mask = s.buffer.mask_token
    for x, y, i in zip(ep.support_x + ep.query_x, ep.support_y.tolist() + ep.query_y.tolist(), sidx + qidx):
        word, orig = ep.classes[y], lines[i].strip()
        assert i % s.world_size == s.rank
        assert word in word_tokens(orig) and mask in x and word not in word_tokens(x)
        assert x == mask_word(orig, word, mask)


def same(a: Episode, b: Episode) -> bool:
    return (a.classes == b.classes and a.support_x == b.support_x and a.query_x == b.query_x
            and torch.equal(a.support_idx, b.support_idx) and torch.equal(a.query_idx, b.query_idx))


def test_episodes_are_valid_smlmt_episodes_across_buffers_and_passes(corpus, lines):
    s = StreamingSMLMTSampler(corpus, 5, 2, 3, buffer_size=3000, episodes_per_buffer=3, seed=0)
    ref = SMLMTSampler(lines[:3000], 5, 2, 3)  # the same Episode type and fields as the in-memory sampler
    assert [f for f in vars(s.episode(0))] == [f for f in vars(ref.episode(0))]
    buffers = set()
    for i in range(21):  # 7 buffers of 3000 lines over a 13,083-line corpus: the second pass included
        ep = s.episode(i)
        check_episode(s, ep, lines)
        buffers.add(s.buffer_index)
        assert len(s.buffer.sentences) <= 3000 and len(s.buffer_lines) == len(s.buffer.sentences)
    assert buffers == set(range(7)) and s.shard_lines == sum(1 for x in lines if x.strip())
    # buffer 4 crosses the end of the corpus: it holds its last lines and its first ones
    s.episode(4 * 3)
    assert s.buffer_lines.max() > len(lines) - 100 and s.buffer_lines.min() < 100


def test_deterministic_per_seed_rank_and_source_with_random_access(corpus, lines):
    kw = dict(buffer_size=2500, episodes_per_buffer=2, seed=3)
    a = StreamingSMLMTSampler(corpus, 4, 2, 2, **kw)
    b = StreamingSMLMTSampler(corpus, 4, 2, 2, **kw)
    c = StreamingSMLMTSampler(list(lines), 4, 2, 2, **kw)  # the same lines from an iterable
    order = [13, 0, 7, 2, 12, 1, 13]  # jumps ahead, back, past the end of the corpus
    got = {i: b.episode(i) for i in order}
    for i in range(14):
        ea = a.episode(i)
        assert same(ea, got[i] if i in got else b.episode(i)) and same(ea, c.episode(i))
    for i in order:
        assert same(c.episode(i), got[i])
    d = StreamingSMLMTSampler(corpus, 4, 2, 2, **{**kw, "seed": 4})
    assert [a.episode(i).classes for i in range(4)] != [d.episode(i).classes for i in range(4)]


def test_ranks_read_disjoint_lines(corpus, lines):
    kw = dict(buffer_size=2000, episodes_per_buffer=2, seed=0, world_size=2)
    r0 = StreamingSMLMTSampler(corpus, 5, 2, 2, rank=0, **kw)
    r1 = StreamingSMLMTSampler(corpus, 5, 2, 2, rank=1, **kw)
    seen = {0: set(), 1: set()}
    for i in range(8):
        for r, s in ((0, r0), (1, r1)):
            ep = s.episode(i)
            check_episode(s, ep, lines)
            assert set((s.buffer_lines % 2).tolist()) == {r}
            seen[r] |= set(ep.support_idx.tolist() + ep.query_idx.tolist())
        assert not same(r0.episode(i), r1.episode(i))
    assert not seen[0] & seen[1] and all(i % 2 == 0 for i in seen[0]) and all(i % 2 for i in seen[1])
    again = StreamingSMLMTSampler(corpus, 5, 2, 2, rank=1, **kw)
    assert all(same(again.episode(i), r1.episode(i)) for i in (5, 0, 3))
    # the shard rule is line i -> rank i % world_size, blank lines included
    assert r0.shard_lines is None or r0.shard_lines == sum(1 for i, x in enumerate(lines) if x.strip() and i % 2 == 0)


_CAPPED = textwrap.dedent("""
    import json, os, resource, sys, time
    from metabook.data.smlmt_stream import StreamingSMLMTSampler

    def status(key):  # bytes
        for ln in open("/proc/self/status"):
            if ln.startswith(key + ":"):
                return int(ln.split()[1]) * 1024

    path = sys.argv[1]
    size = os.path.getsize(path)
    cap = status("VmSize") + size // 2   # less address space than the file takes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                 # reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        pass
    rss0 = status("VmRSS")
    t0 = time.perf_counter()
    s = StreamingSMLMTSampler(path, 5, 2, 2, buffer_size=5000, episodes_per_buffer=1, seed=0)
    eps = [s.episode(0), s.episode(1)]
    eps.append(s.episode(10_000))        # past the end: the whole file is read, then it wraps
    eps.append(s.episode(10_001))
    seconds = time.perf_counter() - t0
    rss_peak_growth = status("VmHWM") - rss0
    try:
        with open(path, "rb") as f:
            f.read()
        whole = "read"
    except MemoryError:
        whole = "MemoryError"
    print(json.dumps({"size": size, "episodes": len(eps), "lines": s.shard_lines, "lines_read": s.lines_read,
                      "classes": [e.classes for e in eps], "rss_peak_growth": rss_peak_growth,
                      "whole_file": whole, "seconds": seconds}))
""")


def test_streams_a_file_larger_than_its_memory_cap(tmp_path):
    """~600k lines (~30 MB) read under an address-space cap of half the file's size above what
    the interpreter already uses: reading the file whole fails, the sampler still streams it."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"{a}{b}" for a in ("card", "bank", "loan", "rate", "cash", "fund", "bill", "debt")
                      for b in ("ing", "ers", "ed", "ly", "ish", "ment", "ful", "less", "ness", "ous")])
    path = tmp_path / "big.txt"
    n_lines = 600_000
    with open(path, "w", encoding="utf-8") as f:
        for chunk in range(0, n_lines, 100_000):
            words = vocab[rng.integers(0, len(vocab), size=(100_000, 6))]
            f.write("\n".join(" ".join(row) for row in words.tolist()) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _CAPPED, str(path)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"\nstreamed {out['size'] / 2**20:.1f} MiB in {out['seconds']:.1f} s; peak RSS growth "
          f"{out['rss_peak_growth'] / 2**20:.1f} MiB")
    assert out["whole_file"] == "MemoryError"  # the cap is real: the file does not fit
    assert out["episodes"] == 4 and all(len(set(c)) == 5 for c in out["classes"])
    assert out["lines"] == n_lines and out["lines_read"] >= n_lines
    assert out["rss_peak_growth"] < out["size"] / 2


def test_huggingface_datasets_sources(lines):
    datasets = pytest.importorskip("datasets")
    texts = lines[:4000]
    kw = dict(buffer_size=1500, episodes_per_buffer=2, seed=1, rank=1, world_size=2)
    ref = StreamingSMLMTSampler(texts, 4, 2, 2, **kw)
    ds = datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    col = iter_texts(ds, "text", batch_size=256)
    assert list(col)[:3] == texts[:3]
    sources_ = [col]
    if hasattr(ds, "to_iterable_dataset"):
        sources_.append(iter_texts(ds.to_iterable_dataset(num_shards=2)))
    for src in sources_:
        s = StreamingSMLMTSampler(src, 4, 2, 2, **kw)
        for i in (0, 1, 5, 2):
            ep = s.episode(i)
            check_episode(s, ep, texts)
            assert same(ep, ref.episode(i))
    with pytest.raises(ValueError, match=r"no column 'sentence'.*\['text', 'id'\]"):
        iter_texts(ds, "sentence")


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_corpora_raise_one_clear_line(tmp_path, lines):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(ValueError, match="is empty") as e:
        StreamingSMLMTSampler(empty, 3, 1, 1)
    assert str(empty) in _one_line_error(e)
    one = tmp_path / "one.txt"
    one.write_text("card refund please\n")
    with pytest.raises(ValueError, match=r"empty for rank 1 of 2"):
        StreamingSMLMTSampler(one, 3, 1, 1, rank=1, world_size=2)
    few = tmp_path / "few.txt"  # two usable words, each in 10 sentences
    few.write_text("".join(f"{w} {i}\n" for w in ("refund", "card") for i in range(10)))
    with pytest.raises(ValueError, match=r"only 2 word\(s\).*n_way=3") as e:
        StreamingSMLMTSampler(few, 3, 2, 2, min_freq=2)
    _one_line_error(e)
    with pytest.raises(ValueError, match=r"corpus <list>, rank 0 of 1, buffer 0 .*only \d+ word\(s\).*"
                                         r"raise buffer_size \(now 20\)"):
        StreamingSMLMTSampler(list(lines), 3, 2, 2, buffer_size=20)
    with pytest.raises(ValueError, match=r"buffer_size=11 is too small.*= 12"):
        StreamingSMLMTSampler(list(lines), 3, 2, 2, buffer_size=11)
    bad = tmp_path / "latin.txt"
    head = "good line\n".encode()
    bad.write_bytes(head + "caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as e:
        StreamingSMLMTSampler(bad, 3, 1, 1)
    assert str(bad) in _one_line_error(e) and f"byte offset {len(head) + 3} (line 2)" in str(e.value)
    # bytes that only a later buffer reaches fail there, with their offset, and again on a retry
    late = tmp_path / "late.txt"
    good = "".join(s + "\n" for s in [x for x in lines if x][:3000]).encode()  # buffers 0 and 1
    late.write_bytes(good + b"\xff\xfe broken\n" + good)
    s = StreamingSMLMTSampler(late, 3, 2, 2, buffer_size=1500, episodes_per_buffer=1)
    s.episode(1)
    for _ in range(2):
        with pytest.raises(ValueError, match=f"byte offset {len(good)} "):
            s.episode(2)
    with pytest.raises(ValueError, match="no such file"):
        StreamingSMLMTSampler(tmp_path / "missing.txt", 3, 1, 1)
    with pytest.raises(ValueError, match="one-shot iterator"):
        StreamingSMLMTSampler(iter(lines), 3, 1, 1)
    long = tmp_path / "long.txt"
    long.write_text("word " * 50 + "\n")
    with pytest.raises(ValueError, match="longer than max_line_bytes=100"):
        StreamingSMLMTSampler(long, 3, 1, 1, max_line_bytes=100)


def test_cli_bad_stream_corpus_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine words here\n\x80oops\n")
    few = tmp_path / "few.txt"
    few.write_text("".join(f"refund card {i}\n" for i in range(50)))
    for corpus, want in ((bad, "byte offset 16"), (few, "only 2 word(s)"), (tmp_path / "none.txt", "no such file")):
        out = tmp_path / "out"
        code = main(["--task", "smlmt", "--corpus", str(corpus), "--stream", "--encoder", "tiny", "--steps", "1",
                     "--out", str(out), "--no-progress"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("metabook.train: error:"), err
        assert want in err[0] and "Traceback" not in err[0]
        assert not out.exists()
    assert main(["--task", "smlmt", "--buffer-size", "0", "--corpus", str(few)]) == 2
    assert "buffer_size must be >= 1" in capsys.readouterr().err


def test_build_source_streams_when_asked_or_when_large(corpus, monkeypatch):
    cfg = TrainConfig(task="smlmt", corpus=str(corpus), n_way=3, k_shot=2, n_query=2, buffer_size=3000)
    assert isinstance(build_source(cfg), sources.SMLMTSource)
    src = build_source(TrainConfig(**{**cfg.to_dict(), "stream": True}), rank=1, world_size=3)
    assert isinstance(src, sources.StreamingSMLMTSource)
    assert (src.sampler.rank, src.sampler.world_size, src.sampler.buffer_size) == (1, 3, 3000)
    assert set((src.sampler.buffer_lines % 3).tolist()) == {1}
    monkeypatch.setattr(sources, "STREAM_BYTES", corpus.stat().st_size - 1)  # "large" now
    assert isinstance(build_source(cfg), sources.StreamingSMLMTSource)
    assert parse_stream(["--stream", "--buffer-size", "500"]) == (True, 500)


def parse_stream(argv: list[str]) -> tuple[bool, int]:
    cfg = parse_args(argv)
    return cfg.stream, cfg.buffer_size


@pytest.mark.parametrize("task", ["smlmt", "mixture"])
def test_trainer_runs_on_a_streamed_corpus(tmp_path, corpus, task):
    extra = dict(data="banking77", split="01") if task == "mixture" else {}
    cfg = TrainConfig(task=task, corpus=str(corpus), stream=True, buffer_size=2000, steps=2,
                      out=str(tmp_path / "run"), **extra, **TINY)
    if task == "mixture":  # Hybrid-SMLMT: of the 4 tasks run, some come from the streamed half
        mix = build_source(cfg)
        assert isinstance(mix.second, sources.StreamingSMLMTSource)
        assert any("[MASK]" in mix.episode(i).support_x[0] for i in range(4))
    res = run(cfg)
    assert res.step == 2 and len(res.losses) == 2 and all(map(torch.isfinite, torch.tensor(res.losses)))
    trained = read_record(tmp_path / "run" / "encoder")["trained_on"]
    smlmt = trained if task == "smlmt" else trained["second"]
    assert smlmt["stream"] is True and smlmt["buffer_size"] == 2000 and smlmt["corpus"] == str(corpus)


def _rank_main(corpus: str, out: Path) -> None:
    """Executed on each rank by torchrun (see the test below): the lines of the tasks it keeps."""
    from metabook.train import shard
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    kept = []

    def grab(step: int, ep: Episode) -> Episode:  # the global batch, before this rank takes its slice
        lo, hi = shard(ep.support_y.shape[0], rank, world)
        kept.append(torch.cat([ep.support_idx[lo:hi], ep.query_idx[lo:hi]], 1).flatten().tolist())
        return ep

    run(TrainConfig(task="smlmt", corpus=corpus, stream=True, buffer_size=2000, steps=2, out=str(out / "run"),
                    **TINY), transform_batch=grab)
    (out / f"lines{rank}.json").write_text(json.dumps(kept))


def test_torchrun_ranks_train_on_disjoint_shards(tmp_path, corpus):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("METABOOK_DIST_BACKEND", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           str(corpus), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 rank(s), backend gloo" in proc.stderr
    kept = [json.loads((tmp_path / f"lines{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        assert len(kept[r]) == 2 and all(len(step) == 3 * (2 + 2) for step in kept[r])
        assert {i % 2 for step in kept[r] for i in step} == {r}  # rank r trains on lines i with i % 2 == r


if __name__ == "__main__":  # a rank launched by torchrun
    torch.set_num_threads(1)
    _rank_main(sys.argv[1], Path(sys.argv[2]))
