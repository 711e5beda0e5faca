"""Watching adaptation happen: sinusoid regression from a meta-learned or a joint-trained start.

The chapter on algorithms compares two initializations of the same network on the
sinusoid family of Finn et al. (2017):

- a MAML initialization, meta-trained so that a few gradient steps on a task's support
  set fit that task;
- a *joint-training* baseline: the same network trained by plain regression on the
  points of all tasks at once (multi-task pre-training, no inner loop).

Both are then adapted with :meth:`~metabook.algorithms.maml.MAML.adapt_task` -- the same inner loop, the
same step size -- so the only difference is where the steps start.  This module holds
the pieces: :func:`train_joint_baseline`, :func:`adaptation_curve` (query loss after
0..k steps, averaged over many tasks), :func:`adaptation_frames` and
:func:`plot_adaptation` (one task, drawn), :func:`adaptation_animation` (a JavaScript
player that works in static HTML) and :func:`adaptation_widget` (ipywidgets sliders,
needs a live kernel).

matplotlib and ipywidgets are imported inside the functions that need them.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from metabook.algorithms.maml import MAML
from metabook.data.sinusoid import SinusoidTasks
from metabook.tasks import Episode
from metabook.viz.animation import animation_html
from metabook.train import TrainLog, meta_train

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["train_joint_baseline", "adaptation_curve", "AdaptationFrames", "adaptation_frames",
           "plot_adaptation", "adaptation_animation", "adaptation_widget"]

#: Line colours of the models, in the order they are given.
COLORS = ("#2c5aa0", "#d35400", "#27ae60", "#8e44ad")


# --------------------------------------------------------------------------------------
# argument checks
def _check_steps(steps: Any, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"{name} must be an int >= 0, got {steps!r}")
    return int(steps)


def _check_lr(inner_lr: Any) -> float:
    try:
        lr = float(inner_lr)
    except (TypeError, ValueError):
        raise ValueError(f"inner_lr must be a number >= 0, got {inner_lr!r}") from None
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"inner_lr must be a finite number >= 0, got {inner_lr!r}")
    return lr


def _check_models(models: Any) -> dict[str, nn.Module]:
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty dict {name: nn.Module}, e.g. "
                        "{'MAML init': maml.model, 'joint training': joint}")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{name!r}] is a {type(m).__name__}, not an nn.Module")
    if len(models) > len(COLORS):
        raise ValueError(f"at most {len(COLORS)} models can be drawn, got {len(models)}")
    return dict(models)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _inner(model: nn.Module, inner_lr: float) -> MAML:
    """The library's inner loop (plain SGD on the support MSE) around ``model``."""
    return MAML(model, inner_lr=inner_lr, inner_steps=1, loss_fn=F.mse_loss)


def _path(maml: MAML, params: dict[str, torch.Tensor], sx: torch.Tensor, sy: torch.Tensor,
          x: torch.Tensor, steps: int) -> torch.Tensor:
    """Outputs on ``x`` after 0, 1, ..., ``steps`` inner steps: ``(steps + 1, *out.shape)``.

    Each step is one call of :meth:`~metabook.algorithms.maml.MAML.adapt_task` from the previous fast weights.
    """
    outs = [maml.forward_with(params, x)]
    for _ in range(steps):
        params = maml.adapt_task(params, sx, sy, steps=1)
        outs.append(maml.forward_with(params, x))
    return torch.stack(outs)


def _detached(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------------------
# training the baseline
def train_joint_baseline(model: nn.Module, tasks: SinusoidTasks, steps: int, *,
                         batch_size: int = 25, k_shot: int = 10, n_query: int = 10,
                         lr: float = 1e-3, start_index: int = 0,
                         optimizer: torch.optim.Optimizer | None = None,
                         progress: bool = False) -> TrainLog:
    """Train ``model`` by plain regression on all tasks at once (multi-task pre-training).

    Each step draws the same meta-batch a MAML run would (``tasks.batch(batch_size,
    k_shot, n_query, index)``) and minimises the mean squared error on *all* its
    points, support and query, with no inner loop.  The network therefore learns the
    average function of the family -- the fair non-meta-learned starting point.

    Args:
        model: the network to train in place (e.g. :func:`metabook.sinusoid_mlp`).
        tasks: the task family.
        steps: optimizer steps.
        batch_size, k_shot, n_query: the meta-batch drawn per step.
        lr: Adam step size (ignored when ``optimizer`` is given).
        start_index: index of the first batch (batch ``i`` depends only on the seed and ``i``).
        optimizer: use this optimizer instead of ``Adam(model.parameters(), lr)``.
        progress: show a progress bar.

    Returns:
        the :class:`metabook.train.TrainLog` of the run (per-step losses, seconds).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(tasks, SinusoidTasks):
        raise TypeError(f"tasks must be a SinusoidTasks, got {type(tasks).__name__}")
    steps = _check_steps(steps)
    device = _device(model)
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr)

    def batches() -> Iterator[Episode]:
        i = start_index
        while True:
            yield tasks.batch(batch_size, k_shot, n_query, index=i, device=device)
            i += 1

    def loss(ep: Episode) -> torch.Tensor:
        x = torch.cat([ep.support_x, ep.query_x], 1)
        y = torch.cat([ep.support_y, ep.query_y], 1)
        return F.mse_loss(model(x), y)

    return meta_train(loss, batches(), opt, steps, progress=progress)


# --------------------------------------------------------------------------------------
# many tasks: the loss curve
@torch.no_grad()
def adaptation_curve(model: nn.Module, episode: Episode, steps: int = 10,
                     inner_lr: float = 0.01) -> np.ndarray:
    """Query MSE of every task after 0, 1, ..., ``steps`` inner SGD steps.

    Args:
        model: the initialization to adapt (its parameters are not changed).
        episode: a stacked batch of regression tasks, ``(B, K, 1)`` support and
            ``(B, M, 1)`` query tensors (``SinusoidTasks.batch``).
        steps: largest number of inner steps.
        inner_lr: inner step size alpha.

    Returns:
        an array of shape ``(B, steps + 1)``; column ``k`` is the query MSE after ``k`` steps.
    """
    steps, inner_lr = _check_steps(steps), _check_lr(inner_lr)
    # (Episode.batched looks at the label tensor's rank, which is one more for regression.)
    if not isinstance(episode, Episode) or episode.support_x.dim() != 3:
        raise ValueError("adaptation_curve needs a batched Episode (leading task dimension), "
                         "e.g. SinusoidTasks(...).batch(100, k_shot=10, n_query=100)")
    maml = _inner(model, inner_lr)
    device = _device(model)
    sx, sy, qx, qy = (t.to(device) for t in episode.tensors())
    params = _detached(model)

    def one(sx, sy, qx, qy):  # (steps+1,) query losses of one task
        preds = _path(maml, params, sx, sy, qx, steps)
        return ((preds - qy) ** 2).flatten(1).mean(1)

    return vmap(one, randomness="different")(sx, sy, qx, qy).cpu().numpy()


# --------------------------------------------------------------------------------------
# one task: frames to draw
@dataclass
class AdaptationFrames:
    """Everything needed to draw the adaptation of several models to one task.

    Attributes:
        x: the task's query grid, shape ``(M,)``.
        y_true: the true function values on the grid, shape ``(M,)``.
        support_x: the support inputs, shape ``(K,)``.
        support_y: the support targets, shape ``(K,)``.
        preds: ``name -> (steps + 1, M)`` predictions after 0..steps inner steps.
        mse: ``name -> (steps + 1,)`` query MSE after 0..steps inner steps.
        inner_lr: the step size used.
    """

    x: np.ndarray
    y_true: np.ndarray
    support_x: np.ndarray
    support_y: np.ndarray
    preds: dict[str, np.ndarray]
    mse: dict[str, np.ndarray]
    inner_lr: float

    @property
    def steps(self) -> int:
        """The largest number of inner steps held."""
        return len(next(iter(self.mse.values()))) - 1


@torch.no_grad()
def adaptation_frames(models: Mapping[str, nn.Module], task: Episode, steps: int = 10,
                      inner_lr: float = 0.01) -> AdaptationFrames:
    """Adapt each model to one task for 0..``steps`` steps and keep every prediction.

    Args:
        models: ``{name: network}``, each mapping ``(M, 1) -> (M, 1)``.
        task: one regression task without a task dimension, e.g.
            ``SinusoidTasks().task(amplitude, phase, k_shot)`` (queries on an even grid).
        steps: largest number of inner steps.
        inner_lr: inner step size, the same for every model.
    """
    models = _check_models(models)
    steps, inner_lr = _check_steps(steps), _check_lr(inner_lr)
    if not isinstance(task, Episode) or task.support_x.dim() != 2:
        raise ValueError("adaptation_frames needs a single task (no task dimension), e.g. "
                         "SinusoidTasks().task(amplitude=2.0, phase=1.0, k_shot=10)")
    if task.support_x.shape[-1] != 1 or task.query_x.shape[-1] != 1:
        raise ValueError("adaptation_frames draws 1-d regression tasks: inputs must have shape (M, 1)")
    preds, mse = {}, {}
    for name, model in models.items():
        device = _device(model)
        sx, sy, qx, qy = (t.to(device) for t in task.tensors())
        out = _path(_inner(model, inner_lr), _detached(model), sx, sy, qx, steps)
        if out.shape[1:] != qy.shape:
            raise ValueError(f"models[{name!r}] maps {tuple(qx.shape)} to {tuple(out.shape[1:])}; "
                             f"expected {tuple(qy.shape)}")
        preds[name] = out[..., 0].cpu().numpy()
        mse[name] = ((out - qy) ** 2).flatten(1).mean(1).cpu().numpy()
    order = task.query_x[:, 0].argsort()
    return AdaptationFrames(
        x=task.query_x[order, 0].cpu().numpy(), y_true=task.query_y[order, 0].cpu().numpy(),
        support_x=task.support_x[:, 0].cpu().numpy(), support_y=task.support_y[:, 0].cpu().numpy(),
        preds={k: v[:, order.cpu().numpy()] for k, v in preds.items()}, mse=mse, inner_lr=inner_lr)


def plot_adaptation(ax: "Axes", frames: AdaptationFrames, step: int,
                    names: list[str] | None = None, ylim: tuple[float, float] | None = None,
                    legend: bool = True) -> dict[str, Any]:
    """Draw the true function, the support points and each model after ``step`` steps.

    The legend gives each model's query MSE at that step.  Returns the artists
    (``{"true": line, "support": collection, name: line, ...}``) so that an animation
    can update them.
    """
    step = _check_steps(step, "step")
    if step > frames.steps:
        raise ValueError(f"step {step} is beyond the {frames.steps} steps held in frames")
    names = list(frames.preds) if names is None else list(names)
    unknown = [n for n in names if n not in frames.preds]
    if unknown:
        raise ValueError(f"names {unknown} are not in frames (have {list(frames.preds)})")
    artists: dict[str, Any] = {}
    (artists["true"],) = ax.plot(frames.x, frames.y_true, color="0.6", lw=3, alpha=0.6,
                                 label="true function")
    artists["support"] = ax.scatter(frames.support_x, frames.support_y, s=36, color="black",
                                    zorder=4, label=f"support (K = {len(frames.support_x)})")
    all_names = list(frames.preds)
    for name in names:
        color = COLORS[all_names.index(name) % len(COLORS)]
        (artists[name],) = ax.plot(frames.x, frames.preds[name][step], color=color, lw=2,
                                   label=_label(name, frames.mse[name][step]))
    if ylim is None:
        span = max(float(np.abs(frames.y_true).max()), float(np.abs(frames.support_y).max()), 1.0)
        ylim = (-1.6 * span, 1.6 * span)
    ax.set(xlim=(frames.x[0], frames.x[-1]), ylim=ylim, xlabel="x", ylabel="y")
    if legend:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    ax.set_title(f"after {step} step{'s' if step != 1 else ''} (α = {frames.inner_lr:g})", fontsize=10)
    return artists


def _label(name: str, mse: float) -> str:
    return f"{name}: query MSE {mse:.3f}"


# --------------------------------------------------------------------------------------
# JavaScript animation (static HTML)
def adaptation_animation(frames: AdaptationFrames, interval: int = 600, dpi: int = 72,
                         figsize: tuple[float, float] | None = None) -> str:
    """An HTML/JavaScript player of the adaptation, one panel per model, frames 0..steps.

    Built with ``matplotlib.animation.FuncAnimation(...).to_jshtml()``: the frames are
    embedded as images, so it plays in a static page with no kernel.  Display it with
    ``IPython.display.HTML(html)``.
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    if not isinstance(frames, AdaptationFrames):
        raise TypeError(f"frames must be AdaptationFrames (from adaptation_frames), got "
                        f"{type(frames).__name__}")
    if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
        raise ValueError(f"interval must be a positive int (milliseconds), got {interval!r}")
    names = list(frames.preds)
    figsize = figsize or (4.2 * len(names), 3.0)
    fig, axes = plt.subplots(1, len(names), figsize=figsize, dpi=dpi, sharey=True, squeeze=False)
    lines = []
    for ax, name in zip(axes[0], names):
        art = plot_adaptation(ax, frames, 0, names=[name], legend=False)
        lines.append(art[name])
        ax.legend([art["true"], art["support"]], ["true", "support"], loc="lower left", fontsize=8)

    def draw(i: int) -> list:
        for ax, line, name in zip(axes[0], lines, names):
            line.set_ydata(frames.preds[name][i])
            ax.set_title(f"{name}, step {i}: query MSE {frames.mse[name][i]:.3f}", fontsize=9,
                         color=line.get_color())
        return lines

    draw(0)
    fig.tight_layout()
    # blit=True: only the player's own frame grab redraws the whole figure.
    anim = animation.FuncAnimation(fig, draw, frames=frames.steps + 1, interval=interval, blit=True)
    try:
        return animation_html(anim)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------
# ipywidgets (live kernel)
def adaptation_widget(models: Mapping[str, nn.Module], tasks: SinusoidTasks | None = None,
                      max_steps: int = 10, inner_lr: float = 0.01, k_shot: int = 10,
                      amplitude: float = 3.0, phase: float = 1.0, seed: int = 0,
                      max_k: int = 40):
    """Sliders for inner steps, inner lr, K, amplitude, phase and the support-sample seed.

    Each change adapts every model to the chosen task with :meth:`~metabook.algorithms.maml.MAML.adapt_task` and
    redraws one panel: the true function, the support points and each model after
    ``steps`` steps, with its query MSE in the legend.

    Args:
        models: ``{name: network}``, drawn in one panel (at most four).
        tasks: the task family (its amplitude and phase ranges bound the sliders).
        max_steps: the largest number of inner steps on the slider.
        inner_lr, k_shot, amplitude, phase, seed: the sliders' initial values
            (``inner_lr`` within [0.001, 0.316], the log-scale slider's range).
        max_k: the largest number of support points on the slider.

    Returns:
        an ``ipywidgets.interactive`` (a ``VBox`` of the sliders and an output area).
        In a static page it shows the figure of its initial values.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    models = _check_models(models)
    tasks = SinusoidTasks() if tasks is None else tasks
    if not isinstance(tasks, SinusoidTasks):
        raise TypeError(f"tasks must be a SinusoidTasks, got {type(tasks).__name__}")
    max_steps = _check_steps(max_steps, "max_steps")
    if max_steps < 1:
        raise ValueError("max_steps must be >= 1")
    inner_lr = _check_lr(inner_lr)
    if isinstance(max_k, bool) or not isinstance(max_k, numbers.Integral) or max_k < 1:
        raise ValueError(f"max_k must be an int >= 1, got {max_k!r}")
    if isinstance(k_shot, bool) or not isinstance(k_shot, numbers.Integral) or not 1 <= k_shot <= max_k:
        raise ValueError(f"k_shot must be an int in [1, max_k={max_k}], got {k_shot!r}")
    (a_lo, a_hi), (p_lo, p_hi) = tasks.amplitude, tasks.phase
    if not a_lo <= amplitude <= a_hi:
        raise ValueError(f"amplitude {amplitude} is outside the family's range {tasks.amplitude}")
    if not p_lo <= phase <= p_hi:
        raise ValueError(f"phase {phase} is outside the family's range {tasks.phase}")
    lr_lo, lr_hi = -3.0, -0.5  # log10 range of the inner-lr slider
    if not 10 ** lr_lo <= inner_lr <= 10 ** lr_hi:
        raise ValueError(f"inner_lr must be in the slider's range [{10 ** lr_lo:g}, "
                         f"{10 ** lr_hi:.3f}], got {inner_lr}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= 99:
        raise ValueError(f"seed must be an int in [0, 99], got {seed!r}")
    style = {"description_width": "initial"}

    def show(steps: int, inner_lr: float, k_shot: int, amplitude: float, phase: float, seed: int):
        task = tasks.task(amplitude, phase, k_shot, n_query=200, seed=seed)
        frames = adaptation_frames(models, task, steps, inner_lr)
        fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=80)
        plot_adaptation(ax, frames, steps, ylim=(-1.6 * a_hi, 1.6 * a_hi))
        fig.tight_layout()
        plt.show()

    return widgets.interactive(
        show,
        steps=widgets.IntSlider(value=min(1, max_steps), min=0, max=max_steps,
                                description="inner steps S", style=style),
        inner_lr=widgets.FloatLogSlider(value=inner_lr, base=10, min=lr_lo,
                                        max=lr_hi, step=0.05, description="inner lr α",
                                        readout_format=".3f", style=style),
        k_shot=widgets.IntSlider(value=int(k_shot), min=1, max=int(max_k), description="shots K",
                                 style=style),
        amplitude=widgets.FloatSlider(value=float(amplitude), min=a_lo, max=a_hi, step=0.1,
                                      description="amplitude A", style=style),
        phase=widgets.FloatSlider(value=float(phase), min=p_lo, max=p_hi, step=0.05,
                                  description="phase", style=style),
        seed=widgets.IntSlider(value=int(seed), min=0, max=99, description="support seed",
                               style=style),
    )
