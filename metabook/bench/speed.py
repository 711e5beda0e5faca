"""MAML meta-step speed: metabook (torch.func + vmap) against higher and a plain autograd loop.

Three workloads (``--workload``):

* ``sinusoid`` (Finn et al. 2017): meta-batch 25, K = 10 support and 10 query
  points, 5 inner SGD steps, a 1-40-40-1 ReLU MLP, MSE;
* ``text``: 5-way 5-shot 5-query intent episodes (meta-batch 16) drawn from the
  frozen MiniLM embeddings of BANKING77's train split, 5 inner SGD steps of the
  episodic benchmark's head (a 384x384 linear map, then 384 -> 5), cross-entropy;
* ``minilm``: second-order MAML through all-MiniLM-L6-v2 itself: 5-way 5-shot
  5-query episodes of BANKING77's train split (train classes of class split
  01), sentences tokenized to exactly 16 tokens, meta-batch 4, 2 inner SGD steps,
  cross-entropy.  ``--variant top2`` adapts the top 2 layers and the head (the
  embeddings and the bottom 4 layers are the meta-learned body, see
  :func:`metabook.bert.split_top`); ``--variant all`` adapts the whole model.
  Methods: ``metabook`` (body once per task, ``vmap`` over tasks),
  ``metabook-chunked`` (the same, one task at a time through
  ``outer_backward``), ``autograd`` (a per-task loop over the full forward, the
  body recomputed at every inner step) and ``higher`` (``innerloop_ctx`` on the
  full model, an inner SGD over the adapted parameters only).  The loops
  back-propagate each task's query loss as it comes, as in higher's MAML
  example; meta-gradients are compared with higher's.

One Adam outer step each.  Every method gets the same model initialization and the same tasks.  Timings are
interleaved round-robin in one process and reported as medians; peak memory is
the peak extra memory of one meta-step (CPU: live tensor storage, tracked per
operator call; CUDA: the allocator's peak).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.base import call_model
from metabook.algorithms.maml import MAML
from metabook.bench.memory import peak_memory_mib
from metabook.data.sinusoid import SinusoidTasks
from metabook.device import default_device
from metabook.models import sinusoid_mlp

METHODS = ("metabook", "metabook-fo", "metabook-chunked", "autograd", "higher")
#: The per-task loops (the baselines).
LOOPS = ("autograd", "higher")


def _pick(value, default):
    return default if value is None else value


class Workload:
    """Tasks and a model for the benchmark; ``defaults`` fill the options left unset."""

    loss_fn = staticmethod(F.mse_loss)
    methods = ("metabook", "metabook-fo", "autograd", "higher")
    #: The method whose meta-gradients the others are compared with.
    reference = "autograd"
    #: The loops back-propagate each task's loss as it comes (else the mean over tasks, once).
    per_task_backward = False
    defaults: dict = {}

    def __init__(self, args, device) -> None:
        self.args, self.device = args, device
        for name, value in {"inner_steps": 5, "repeats": 30, "warmup": 3, "outer_lr": 1e-3,
                            **self.defaults}.items():
            setattr(self, name, _pick(getattr(args, name, None), value))

    def describe(self) -> dict:
        return {"inner_steps": self.inner_steps, "inner_lr": self.inner_lr, "outer": f"Adam {self.outer_lr:g}"}


class SinusoidWorkload(Workload):
    """Sinusoid regression tasks and the 1-40-40-1 MLP."""

    defaults = {"meta_batch": 25, "k_shot": 10, "inner_lr": 0.01}

    def __init__(self, args, device) -> None:
        super().__init__(args, device)
        self.tasks = SinusoidTasks(seed=args.seed)

    def model(self) -> torch.nn.Module:
        return sinusoid_mlp()

    def batch(self, i: int):
        return self.tasks.batch(self.meta_batch, self.k_shot, self.k_shot, i, self.device)

    def describe(self) -> dict:
        return {"family": "sinusoid", "meta_batch": self.meta_batch, "k_shot": self.k_shot, "k_query": self.k_shot,
                "model": "1-40-40-1 MLP", "loss": "mse", **super().describe(),
                "order": "second (metabook-fo: first)"}


class TextWorkload(Workload):
    """5-way K-shot episodes from frozen MiniLM embeddings and the episodic benchmark's head.

    ``embeddings``/``labels`` default to BANKING77's official train split, encoded
    once (and cached) by :class:`~metabook.encoders.MiniLMEncoder`.
    """

    loss_fn = staticmethod(F.cross_entropy)
    defaults = {"meta_batch": 16, "k_shot": 5, "inner_lr": 0.5}

    def __init__(self, args, device, embeddings: torch.Tensor | None = None, labels=None) -> None:
        from metabook.tasks import EpisodeSampler

        super().__init__(args, device)
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
                "model": f"{self.dim}x{self.dim} linear + {self.dim}->{self.n_way} linear", "loss": "cross_entropy",
                **super().describe(), "order": "second (metabook-fo: first)"}


class BodyThenTop(nn.Module):
    """``top(**body(**x))``: the full forward of a :func:`~metabook.bert.split_top` pair.

    The loops (``autograd``, ``higher``) run this whole model at every inner step
    and adapt only ``top``'s parameters; metabook runs ``body`` once per task.
    ``body=None`` is the whole model adapted.
    """

    def __init__(self, body: nn.Module | None, top: nn.Module) -> None:
        super().__init__()
        self.body, self.top = body, top

    def forward(self, **x: torch.Tensor) -> torch.Tensor:
        return self.top(**(x if self.body is None else self.body(**x)))


def _parts(model: nn.Module) -> tuple[nn.Module | None, nn.Module, list[str]]:
    """``(body, top, names of model's adapted parameters)``: all of them unless ``model`` is a BodyThenTop."""
    names = [n for n, _ in model.named_parameters()]
    if isinstance(model, BodyThenTop):
        return model.body, model.top, [n for n in names if n.startswith("top.")]
    return None, model, names


class MiniLMWorkload(Workload):
    """Second-order MAML through MiniLM on tokenized BANKING77 train-class episodes."""

    loss_fn = staticmethod(F.cross_entropy)
    methods = ("metabook", "metabook-chunked", "autograd", "higher")
    reference = "higher"
    per_task_backward = True
    defaults = {"meta_batch": 4, "k_shot": 5, "inner_lr": 0.5, "inner_steps": 2, "repeats": 8, "warmup": 1,
                "outer_lr": 1e-5}
    n_way, max_length, split_id, top_layers = 5, 16, "01", 2

    def __init__(self, args, device) -> None:
        from metabook.bert import load_encoder, tiny_bert
        from metabook.data.intents import load_dataset
        from metabook.tasks import EpisodeSampler

        super().__init__(args, device)
        self.encoder = _pick(getattr(args, "encoder", None), "minilm")
        self.variant = _pick(getattr(args, "variant", None), "top2")
        self.bert, self.tokenizer, self.info = load_encoder(self.encoder)
        if self.encoder == "tiny":  # 3 layers, so that top2 leaves a body
            self.bert = tiny_bert(vocab_size=len(self.tokenizer), layers=3)
            self.info = {**self.info, "layers": 3, "hidden_size": int(self.bert.config.hidden_size)}
        ds = load_dataset("banking77", data_dir=getattr(args, "data_dir", None))
        self.sampler = EpisodeSampler.from_dataset(ds, self.split_id, "train", self.n_way, self.k_shot,
                                                   self.k_shot, seed=args.seed)

    def model(self) -> torch.nn.Module:
        from metabook.bert import split_top

        top = self.top_layers if self.variant == "top2" else None
        return BodyThenTop(*split_top(copy.deepcopy(self.bert), self.n_way, top)).eval()

    def _tokens(self, tasks: list[list[str]]) -> dict[str, torch.Tensor]:
        flat = [s for task in tasks for s in task]
        enc = self.tokenizer(flat, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: enc[k].view(len(tasks), -1, self.max_length).to(self.device)
                for k in ("input_ids", "attention_mask")}

    def batch(self, i: int):
        ep = self.sampler.batch(self.meta_batch, start=i * self.meta_batch)
        return replace(ep, support_x=self._tokens(ep.support_x), query_x=self._tokens(ep.query_x),
                       support_y=ep.support_y.to(self.device), query_y=ep.query_y.to(self.device))

    def describe(self) -> dict:
        layers = self.info["layers"]
        adapted = (f"top {self.top_layers} of {layers} layers + head" if self.variant == "top2"
                   else "all: embeddings, layers, head")
        return {"family": "minilm", "encoder": self.info, "variant": self.variant, "adapted": adapted,
                "data": f"banking77 train split, train classes of class split {self.split_id}",
                "n_way": self.n_way, "meta_batch": self.meta_batch, "k_shot": self.k_shot, "k_query": self.k_shot,
                "tokens": self.max_length, "model": "split_top: BERT layers + mean pooling + scaled linear head",
                "loss": "cross_entropy", **super().describe(), "order": "second",
                "notes": {"metabook": "MAML(top, body=body): the body runs once per task (support and query); "
                                      "vmap over tasks",
                          "metabook-chunked": "the same with task_chunk=1 via outer_backward(scale=1/B)",
                          "autograd": "per-task loop of torch.autograd.grad(create_graph=True) over the adapted "
                                      "parameters of the full forward; the body is recomputed at every inner step",
                          "higher": "higher.innerloop_ctx on the full forward, inner SGD over the adapted "
                                    "parameters only; the body is recomputed at every inner step",
                          "loops": "autograd and higher back-propagate each task's query loss / B as it comes"}}


WORKLOADS = {"sinusoid": SinusoidWorkload, "text": TextWorkload, "minilm": MiniLMWorkload}


def _tasks(ep) -> Iterator[tuple]:
    """``(support_x, support_y, query_x, query_y)`` of each task of a meta-batch (x a tensor or a mapping)."""
    for i in range(len(ep.support_y)):
        yield tuple({k: v[i] for k, v in t.items()} if isinstance(t, Mapping) else t[i] for t in ep.tensors())


def _unrolled_losses(model, ep, lr, steps, loss_fn=F.mse_loss) -> Iterator[torch.Tensor]:
    """Each task's query loss after ``steps`` inner steps of a plain autograd loop over the full forward."""
    adapt = _parts(model)[2]
    for sx, sy, qx, qy in _tasks(ep):
        params = dict(model.named_parameters())
        fast = {n: params[n] for n in adapt}

        def forward(fast, x):
            return call_model(lambda *a, **kw: torch.func.functional_call(model, {**params, **fast}, a, kw), x)

        for _ in range(steps):
            gs = torch.autograd.grad(loss_fn(forward(fast, sx), sy), list(fast.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), gs)}
        yield loss_fn(forward(fast, qx), qy)


def _higher_losses(model, ep, lr, steps, loss_fn=F.mse_loss) -> Iterator[torch.Tensor]:
    """Each task's query loss with ``higher``: the full model patched, an inner SGD on the adapted parameters."""
    import higher

    params = dict(model.named_parameters())
    inner_opt = torch.optim.SGD([params[n] for n in _parts(model)[2]], lr=lr)
    for sx, sy, qx, qy in _tasks(ep):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(loss_fn(call_model(fmodel, sx), sy))
            yield loss_fn(call_model(fmodel, qx), qy)


_LOOP_LOSSES = {"autograd": _unrolled_losses, "higher": _higher_losses}


def _maml(method: str, model: nn.Module, lr: float, steps: int, loss_fn: Callable) -> MAML:
    body, top, _ = _parts(model)
    return MAML(top, lr, steps, first_order=method == "metabook-fo", loss_fn=loss_fn, body=body,
                task_chunk=1 if method == "metabook-chunked" else None)


def make_step(method: str, model: torch.nn.Module, lr: float, steps: int, loss_fn: Callable = F.mse_loss) -> Callable:
    """A function ``fn(episode) -> meta-loss`` (the mean over tasks) for ``method``.

    ``metabook-chunked`` back-propagates as it goes: see :func:`make_backward`.
    """
    if method in ("metabook", "metabook-fo"):
        maml = _maml(method, model, lr, steps, loss_fn)
        return lambda ep: maml.meta_loss(*ep.tensors())
    if method in LOOPS:
        return lambda ep: torch.stack(list(_LOOP_LOSSES[method](model, ep, lr, steps, loss_fn))).mean()
    if method == "metabook-chunked":
        raise ValueError("metabook-chunked back-propagates chunk by chunk: use make_backward")
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def make_backward(method: str, model: torch.nn.Module, lr: float, steps: int, loss_fn: Callable = F.mse_loss,
                  per_task: bool = False) -> Callable:
    """A function ``fn(episode)`` that accumulates ``method``'s meta-gradient (of the mean over
    tasks) into the parameters' ``.grad``.  ``per_task``: the loops back-propagate each task's
    loss as it comes (one task's graph alive at a time), as in higher's MAML example."""
    if method == "metabook-chunked":
        maml = _maml(method, model, lr, steps, loss_fn)
        return lambda ep: maml.outer_backward(*ep.tensors(), scale=1.0 / len(ep.support_y))
    if per_task and method in LOOPS:
        def backward(ep) -> None:
            for loss in _LOOP_LOSSES[method](model, ep, lr, steps, loss_fn):
                (loss / len(ep.support_y)).backward()
        return backward
    step = make_step(method, model, lr, steps, loss_fn)
    return lambda ep: step(ep).backward()


def _workload(args, device):
    """The workload object for ``args`` (built once and kept on ``args.wl``)."""
    if getattr(args, "wl", None) is None:
        args.wl = WORKLOADS[args.workload](args, device)
    return args.wl


def _setup(args, method, device):
    torch.manual_seed(args.seed)
    wl = _workload(args, device)
    model = wl.model().to(device)
    fn = make_backward(method, model, wl.inner_lr, wl.inner_steps, wl.loss_fn, wl.per_task_backward)
    opt = torch.optim.Adam(model.parameters(), wl.outer_lr)
    return model, fn, opt


def _meta_step(model, fn, opt, ep) -> None:
    opt.zero_grad(set_to_none=True)
    fn(ep)
    opt.step()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _methods(args, device) -> list[str]:
    return list(getattr(args, "methods", None) or _workload(args, device).methods)


def meta_gradients(args, device) -> dict[str, list[torch.Tensor]]:
    """Meta-gradients of each method on the same model and tasks (zeros where a parameter gets none)."""
    ep = _workload(args, device).batch(0)
    out = {}
    for m in _methods(args, device):
        model, fn, _ = _setup(args, m, device)
        fn(ep)
        out[m] = [torch.zeros_like(p).cpu() if p.grad is None else p.grad.detach().cpu()
                  for p in model.parameters()]
    return out


def time_methods(args, device) -> dict[str, list[float]]:
    """Per-step wall times (ms), methods interleaved round-robin."""
    wl, methods = _workload(args, device), _methods(args, device)
    setups = {m: _setup(args, m, device) for m in methods}
    eps = [wl.batch(i) for i in range(wl.warmup + wl.repeats)]
    times = {m: [] for m in methods}
    for i, ep in enumerate(eps):
        for m in (methods if i % 2 == 0 else methods[::-1]):
            _sync(device)
            t = time.perf_counter()
            _meta_step(*setups[m], ep)
            _sync(device)
            if i >= wl.warmup:
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
    p.add_argument("--meta-batch", type=int, default=None, help="default: 25 (sinusoid), 16 (text), 4 (minilm)")
    p.add_argument("--k-shot", type=int, default=None, help="default: 10 (sinusoid), 5 (text, minilm)")
    p.add_argument("--inner-steps", type=int, default=None, help="default: 5, 2 (minilm)")
    p.add_argument("--inner-lr", type=float, default=None, help="default: 0.01 (sinusoid), 0.5 (text, minilm)")
    p.add_argument("--encoder", default="minilm", choices=("minilm", "tiny"),
                   help="minilm workload: all-MiniLM-L6-v2, or a tiny random BERT (tests)")
    p.add_argument("--variant", default="top2", choices=("top2", "all"),
                   help="minilm workload: adapt the top 2 layers + head, or the whole model")
    p.add_argument("--data-dir", default=None, help="text, minilm workloads: dataset folder")
    p.add_argument("--repeats", type=int, default=None, help="timed meta-steps per method (default 30, 8 for minilm)")
    p.add_argument("--warmup", type=int, default=None, help="default 3, 1 for minilm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="default: metabook metabook-fo autograd higher; minilm: metabook metabook-chunked "
                        "autograd higher")
    p.add_argument("--out", default=None,
                   help="default benchmarks/results/maml_speed.json (sinusoid), maml_speed_text.json (text), "
                        "maml_speed_minilm-<variant>.json (minilm)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")


def _default_out(args) -> str:
    name = {"sinusoid": "maml_speed", "text": "maml_speed_text"}.get(args.workload)
    return f"benchmarks/results/{name or f'maml_speed_{args.workload}-{args.variant}'}.json"


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    wl = _workload(args, device)
    args.out = args.out or _default_out(args)
    args.methods = _methods(args, device)
    if "higher" in args.methods:
        try:
            import higher  # noqa: F401
        except ImportError:  # pragma: no cover
            print("[speed] higher is not installed; skipping it (pip install higher)", file=sys.stderr)
            args.methods = [m for m in args.methods if m != "higher"]
    load_before = _loadavg()
    grads = meta_gradients(args, device)
    ref_name = wl.reference if wl.reference in grads else args.methods[0]
    ref = grads[ref_name]
    max_diff = {m: max(float((a - b).abs().max()) for a, b in zip(g, ref)) for m, g in grads.items()}
    times = time_methods(args, device)
    med = {m: statistics.median(t) for m, t in times.items()}
    mem = {m: peak_memory(args, m, device) for m in args.methods}
    rows = []
    for m in args.methods:
        rows.append({"method": m, "median_ms": med[m],
                     "speedup_vs_higher": med["higher"] / med[m] if "higher" in med else None,
                     "speedup_vs_autograd": med["autograd"] / med[m] if "autograd" in med else None,
                     "peak_mib": mem[m], f"max_abs_grad_diff_vs_{ref_name}": max_diff[m]})
    result = {
        "benchmark": "maml_speed", "command": "python -m metabook.bench speed " + " ".join(sys.argv[2:]),
        "workload": wl.describe(), "repeats": wl.repeats, "warmup": wl.warmup, "seed": args.seed,
        "rows": rows, "raw_ms": times,
        "versions": {"torch": torch.__version__, "python": platform.python_version(), "higher": _version("higher"),
                     "transformers": _version("transformers")},
        "hardware": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                     "load_average_1min": {"before": load_before, "after": _loadavg()}},
    }
    print(f"| method | median ms/meta-step | x vs higher | x vs autograd | peak MiB | max |grad diff| vs {ref_name} |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    for r in rows:
        print(f"| {r['method']} | {r['median_ms']:.1f} | {fmt(r['speedup_vs_higher'], '.2f')} | "
              f"{fmt(r['speedup_vs_autograd'], '.2f')} | {fmt(r['peak_mib'], '.1f')} | "
              f"{r[f'max_abs_grad_diff_vs_{ref_name}']:.1e} |")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return 0


def _loadavg() -> float | None:
    """The 1-minute load average (another busy process skews every timing), where the OS has one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None
