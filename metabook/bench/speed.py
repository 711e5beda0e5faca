"""MAML meta-step speed: metabook (torch.func + vmap) against higher and a plain autograd loop.

Two workloads (``--workload``):

* ``sinusoid`` (Finn et al. 2017): meta-batch 25, K = 10 support and 10 query
  points, 5 inner SGD steps, a 1-40-40-1 ReLU MLP, MSE;
* ``text``: 5-way 5-shot 5-query intent episodes (meta-batch 16) drawn from the
  frozen MiniLM embeddings of BANKING77's train split, 5 inner SGD steps of the
  episodic benchmark's head (a 384x384 linear map, then 384 -> 5), cross-entropy.

One Adam outer step each.  Every method gets the same model initialization and the same tasks.  Timings are
interleaved round-robin in one process and reported as medians; peak memory is
the peak extra memory of one meta-step (CPU: live tensor storage, tracked per
operator call; CUDA: the allocator's peak).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from metabook.algorithms.maml import MAML
from metabook.bench.memory import peak_memory_mib
from metabook.data.sinusoid import SinusoidTasks
from metabook.device import default_device
from metabook.models import sinusoid_mlp

METHODS = ("metabook", "metabook-fo", "autograd", "higher")


class SinusoidWorkload:
    """Sinusoid regression tasks and the 1-40-40-1 MLP."""

    loss_fn = staticmethod(F.mse_loss)

    def __init__(self, args, device) -> None:
        self.args, self.device, self.tasks = args, device, SinusoidTasks(seed=args.seed)
        self.meta_batch = args.meta_batch or 25
        self.k_shot = args.k_shot or 10
        self.inner_lr = args.inner_lr if args.inner_lr is not None else 0.01

    def model(self) -> torch.nn.Module:
        return sinusoid_mlp()

    def batch(self, i: int):
        return self.tasks.batch(self.meta_batch, self.k_shot, self.k_shot, i, self.device)

    def describe(self) -> dict:
        return {"family": "sinusoid", "meta_batch": self.meta_batch, "k_shot": self.k_shot, "k_query": self.k_shot,
                "model": "1-40-40-1 MLP", "loss": "mse"}


class TextWorkload:
    """5-way K-shot episodes from frozen MiniLM embeddings and the episodic benchmark's head.

    ``embeddings``/``labels`` default to BANKING77's official train split, encoded
    once (and cached) by :class:`~metabook.encoders.MiniLMEncoder`.
    """

    loss_fn = staticmethod(F.cross_entropy)

    def __init__(self, args, device, embeddings: torch.Tensor | None = None, labels=None) -> None:
        from metabook.tasks import EpisodeSampler

        self.args, self.device = args, device
        self.meta_batch = args.meta_batch or 16
        self.k_shot = args.k_shot or 5
        self.inner_lr = args.inner_lr if args.inner_lr is not None else 0.5
        self.n_way = 5
        if embeddings is None:
            from metabook.data.intents import load_official
            from metabook.encoders import MiniLMEncoder

            train = load_official("banking77", data_dir=getattr(args, "data_dir", None)).train
            embeddings = MiniLMEncoder(device="cpu").encode(train.texts, cache=True)
            labels = train.labels
        self.dim = int(embeddings.shape[1])
        self.sampler = EpisodeSampler(labels, self.n_way, self.k_shot, self.k_shot, data=embeddings, seed=args.seed)

    def model(self) -> torch.nn.Module:
        from metabook.bench.episodic import ProtoHead

        head = ProtoHead(self.dim, self.n_way)
        torch.nn.init.normal_(head.out.weight, std=0.01)  # not all-zero, so every weight gets a gradient
        return head

    def batch(self, i: int):
        return self.sampler.batch(self.meta_batch, start=i * self.meta_batch).to(self.device)

    def describe(self) -> dict:
        return {"family": "text", "data": "banking77 official train split, frozen MiniLM embeddings",
                "n_way": self.n_way, "meta_batch": self.meta_batch, "k_shot": self.k_shot, "k_query": self.k_shot,
                "model": f"{self.dim}x{self.dim} linear + {self.dim}->{self.n_way} linear", "loss": "cross_entropy"}


WORKLOADS = {"sinusoid": SinusoidWorkload, "text": TextWorkload}


def _unrolled_loss(model, ep, lr, steps, loss_fn=F.mse_loss) -> torch.Tensor:
    losses = []
    for sx, sy, qx, qy in zip(*ep.tensors()):
        fast = dict(model.named_parameters())
        for _ in range(steps):
            loss = loss_fn(torch.func.functional_call(model, fast, (sx,)), sy)
            gs = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), gs)}
        losses.append(loss_fn(torch.func.functional_call(model, fast, (qx,)), qy))
    return torch.stack(losses).mean()


def _higher_loss(model, ep, lr, steps, loss_fn=F.mse_loss) -> torch.Tensor:
    import higher

    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for sx, sy, qx, qy in zip(*ep.tensors()):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(loss_fn(fmodel(sx), sy))
            losses.append(loss_fn(fmodel(qx), qy))
    return torch.stack(losses).mean()


def make_step(method: str, model: torch.nn.Module, lr: float, steps: int, loss_fn: Callable = F.mse_loss) -> Callable:
    """A function ``fn(episode) -> meta-loss`` for ``method``."""
    if method in ("metabook", "metabook-fo"):
        maml = MAML(model, lr, steps, first_order=method == "metabook-fo", loss_fn=loss_fn)
        return lambda ep: maml.meta_loss(*ep.tensors())
    if method == "autograd":
        return lambda ep: _unrolled_loss(model, ep, lr, steps, loss_fn)
    if method == "higher":
        return lambda ep: _higher_loss(model, ep, lr, steps, loss_fn)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _workload(args, device):
    """The workload object for ``args`` (built once and kept on ``args.wl``)."""
    if getattr(args, "wl", None) is None:
        args.wl = WORKLOADS[args.workload](args, device)
    return args.wl


def _setup(args, method, device):
    torch.manual_seed(args.seed)
    wl = _workload(args, device)
    model = wl.model().to(device)
    fn = make_step(method, model, wl.inner_lr, args.inner_steps, wl.loss_fn)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    return model, fn, opt


def _meta_step(model, fn, opt, ep) -> None:
    opt.zero_grad(set_to_none=True)
    fn(ep).backward()
    opt.step()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def meta_gradients(args, device) -> dict[str, list[torch.Tensor]]:
    """Meta-gradients of each available method on the same model and tasks."""
    ep = _workload(args, device).batch(0)
    out = {}
    for m in args.methods:
        model, fn, _ = _setup(args, m, device)
        out[m] = [g.detach().cpu() for g in torch.autograd.grad(fn(ep), list(model.parameters()))]
    return out


def time_methods(args, device) -> dict[str, list[float]]:
    """Per-step wall times (ms), methods interleaved round-robin."""
    setups = {m: _setup(args, m, device) for m in args.methods}
    eps = [_workload(args, device).batch(i) for i in range(args.warmup + args.repeats)]
    times = {m: [] for m in args.methods}
    for i, ep in enumerate(eps):
        for m in (args.methods if i % 2 == 0 else args.methods[::-1]):
            _sync(device)
            t = time.perf_counter()
            _meta_step(*setups[m], ep)
            _sync(device)
            if i >= args.warmup:
                times[m].append(1e3 * (time.perf_counter() - t))
    return times


def peak_memory(args, method: str, device) -> float:
    """Peak extra memory (MiB) of one meta-step of ``method`` (see :mod:`metabook.bench.memory`)."""
    model, fn, opt = _setup(args, method, device)
    _meta_step(model, fn, opt, args.wl.batch(0))  # warm-up
    ep = args.wl.batch(1)
    return peak_memory_mib(lambda: _meta_step(model, fn, opt, ep), device)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="sinusoid", choices=sorted(WORKLOADS))
    p.add_argument("--meta-batch", type=int, default=None, help="default: 25 (sinusoid), 16 (text)")
    p.add_argument("--k-shot", type=int, default=None, help="default: 10 (sinusoid), 5 (text)")
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=None, help="default: 0.01 (sinusoid), 0.5 (text)")
    p.add_argument("--data-dir", default=None, help="text workload: dataset folder")
    p.add_argument("--repeats", type=int, default=30, help="timed meta-steps per method")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", default=None,
                   help="default benchmarks/results/maml_speed.json (sinusoid), maml_speed_text.json (text)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    _workload(args, device)
    if args.out is None:
        args.out = "benchmarks/results/" + ("maml_speed.json" if args.workload == "sinusoid" else
                                            f"maml_speed_{args.workload}.json")
    if "higher" in args.methods:
        try:
            import higher  # noqa: F401
        except ImportError:  # pragma: no cover
            print("[speed] higher is not installed; skipping it (pip install higher)", file=sys.stderr)
            args.methods = [m for m in args.methods if m != "higher"]
    grads = meta_gradients(args, device)
    ref = grads["autograd"] if "autograd" in grads else grads[args.methods[0]]
    max_diff = {m: max(float((a - b).abs().max()) for a, b in zip(g, ref)) for m, g in grads.items()}
    times = time_methods(args, device)
    med = {m: statistics.median(t) for m, t in times.items()}
    mem = {m: peak_memory(args, m, device) for m in args.methods}
    base = med.get("higher", med.get("autograd"))
    rows = []
    for m in args.methods:
        rows.append({"method": m, "median_ms": med[m], "speedup_vs_higher": base / med[m] if "higher" in med else None,
                     "speedup_vs_autograd": med["autograd"] / med[m] if "autograd" in med else None,
                     "peak_mib": mem[m], "max_abs_grad_diff_vs_autograd": max_diff[m]})
    result = {
        "benchmark": "maml_speed", "command": "python -m metabook.bench speed " + " ".join(sys.argv[2:]),
        "workload": {**args.wl.describe(), "inner_steps": args.inner_steps, "inner_lr": args.wl.inner_lr,
                     "outer": "Adam 1e-3", "order": "second (metabook-fo: first)"},
        "repeats": args.repeats, "seed": args.seed, "rows": rows, "raw_ms": times,
        "versions": {"torch": torch.__version__, "python": platform.python_version(), "higher": _version("higher")},
        "hardware": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
    }
    print("| method | median ms/meta-step | x vs higher | x vs autograd | peak MiB | max |grad diff| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v, f: "n/a" if v is None else format(v, f)
        print(f"| {r['method']} | {r['median_ms']:.1f} | {fmt(r['speedup_vs_higher'], '.1f')} | "
              f"{fmt(r['speedup_vs_autograd'], '.1f')} | {fmt(r['peak_mib'], '.1f')} | "
              f"{r['max_abs_grad_diff_vs_autograd']:.1e} |")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return 0


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None
