"""Look inside few-shot episodes: a sentence table, an embedding plot, and an explorer widget.

* :func:`episode_table` -- the support and query sentences of a text episode as an HTML
  table, one row per class, coloured by class, queries marked right/wrong;
* :func:`plot_episode` -- a 2-D PCA view of an episode's embeddings: support points,
  query points (marked correct/incorrect under the nearest-prototype rule, decided in
  the full embedding space) and the class prototypes (stars);
* :func:`episode_explorer` -- an ipywidgets UI (episode index, ``n_way``, ``k_shot``,
  class-split part) that redraws both for real episodes of an
  :class:`~metabook.data.IntentDataset`.

Prototypes and predictions come from :func:`metabook.prototypes` and
:class:`metabook.ProtoNet`.  matplotlib and ipywidgets are imported only inside the
functions that need them.
"""
from __future__ import annotations

import html
import io
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from metabook.algorithms.protonet import ProtoNet, prototypes
from metabook.tasks import Episode, EpisodeSampler

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.axes import Axes

    from metabook.data.intents import IntentDataset

__all__ = ["CLASS_COLORS", "class_colors", "episode_embeddings", "nearest_prototype", "project_2d",
           "episode_table", "plot_episode", "EpisodePlot", "episode_figure_png", "episode_explorer"]

#: Class colours (Tableau 10, then Tableau 20's light shades); class ``j`` gets colour ``j``.
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
                "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def class_colors(n: int) -> list[str]:
    """``n`` distinct hex colours, the same ones the table and the plot use."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n > len(CLASS_COLORS):
        raise ValueError(f"at most {len(CLASS_COLORS)} classes can be coloured apart, got {n}")
    return list(CLASS_COLORS[:n])


def _tint(color: str, amount: float = 0.85) -> str:
    """``color`` mixed with white (``amount`` = share of white)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(c + (255 - c) * amount)  # noqa: E731
    return f"#{mix(r):02x}{mix(g):02x}{mix(b):02x}"


# --------------------------------------------------------------------------------------
# argument checks
def _labels(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor, got {type(t).__name__}"
                        + (f" {t.dtype}" if isinstance(t, torch.Tensor) else ""))
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one episode, no task dimension), got shape "
                         f"{tuple(t.shape)}; pass one episode of a batch, e.g. sampler.episode(i)")
    return t


def _check_episode(episode: Any, texts: bool = False) -> int:
    """Validate one (unbatched) episode; return its number of classes."""
    if not isinstance(episode, Episode):
        raise TypeError(f"episode must be a metabook Episode, got {type(episode).__name__}")
    sy = _labels(episode.support_y, "support_y")
    qy = _labels(episode.query_y, "query_y")
    for name, x, y in (("support", episode.support_x, sy), ("query", episode.query_x, qy)):
        if len(x) != len(y):
            raise ValueError(f"episode has {len(x)} {name} inputs but {len(y)} {name} labels")
        if texts and not all(isinstance(s, str) for s in x):
            raise TypeError(f"episode.{name}_x must be a list of sentences for a table, got "
                            f"{type(x).__name__}; use an episode from EpisodeSampler.from_dataset(...)")
    if len(sy) == 0:
        raise ValueError("episode has an empty support set")
    n_way = int(sy.max()) + 1
    if int(sy.min()) < 0 or (len(qy) and (int(qy.min()) < 0 or int(qy.max()) >= n_way)):
        raise ValueError(f"labels must lie in 0..{n_way - 1} (support labels define the classes)")
    missing = sorted(set(range(n_way)) - set(sy.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no support example")
    if episode.classes and len(episode.classes) != n_way:
        raise ValueError(f"episode.classes names {len(episode.classes)} classes but the labels "
                         f"have {n_way}")
    return n_way


def _class_names(episode: Episode, n_way: int) -> list[str]:
    return [str(c) for c in episode.classes] if episode.classes else [f"class {j}" for j in range(n_way)]


def _predictions(predictions: Any, n_query: int) -> torch.Tensor | None:
    if predictions is None:
        return None
    pred = torch.as_tensor(predictions).flatten()
    if pred.numel() != n_query:
        raise ValueError(f"got {pred.numel()} predictions for {n_query} queries")
    return pred.long().cpu()


# --------------------------------------------------------------------------------------
# embeddings, prototypes, projection
def episode_embeddings(episode: Episode, embeddings: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Support and query embeddings ``(M_s, D), (M_q, D)`` of one episode.

    Args:
        episode: one episode (no task dimension).
        embeddings: one of

            * ``None`` -- the episode already holds embeddings in ``support_x``/``query_x``;
            * a pair ``(support_emb, query_emb)``;
            * a table ``(num_examples, D)`` aligned with the data the episode was sampled
              from; rows ``episode.support_idx`` and ``episode.query_idx`` are taken.

    Raises:
        ValueError: when sizes do not match the episode.
        TypeError: when ``embeddings`` has an unsupported type.
    """
    _check_episode(episode)
    ns, nq = len(episode.support_y), len(episode.query_y)
    if embeddings is None:
        s, q = episode.support_x, episode.query_x
        if not (isinstance(s, torch.Tensor) and isinstance(q, torch.Tensor)):
            raise TypeError("episode holds no embeddings (support_x is "
                            f"{type(s).__name__}); pass embeddings=(support_emb, query_emb) "
                            "or an embedding table aligned with the dataset")
    elif isinstance(embeddings, (tuple, list)):
        if len(embeddings) != 2:
            raise ValueError(f"embeddings as a sequence must be (support_emb, query_emb), got "
                             f"{len(embeddings)} items")
        s, q = (torch.as_tensor(e) for e in embeddings)
    elif isinstance(embeddings, torch.Tensor):
        if embeddings.dim() != 2:
            raise ValueError(f"an embedding table must be 2-D (num_examples, dim), got shape "
                             f"{tuple(embeddings.shape)}")
        if episode.support_idx is None or episode.query_idx is None:
            raise ValueError("episode has no support_idx/query_idx to look up an embedding table")
        top = int(max(episode.support_idx.max(), episode.query_idx.max()))
        if top >= len(embeddings):
            raise ValueError(f"the episode uses example {top} but the embedding table has "
                             f"{len(embeddings)} rows; it must be aligned with the sampled data")
        s = embeddings[episode.support_idx.to(embeddings.device)]
        q = embeddings[episode.query_idx.to(embeddings.device)]
    else:
        raise TypeError(f"embeddings must be None, a (support, query) pair or a 2-D tensor, got "
                        f"{type(embeddings).__name__}")
    if s.dim() != 2 or q.dim() != 2 or s.shape[1] != q.shape[1]:
        raise ValueError(f"support/query embeddings must be 2-D with the same width, got "
                         f"{tuple(s.shape)} and {tuple(q.shape)}")
    if len(s) != ns or len(q) != nq:
        raise ValueError(f"got {len(s)} support and {len(q)} query embeddings for an episode with "
                         f"{ns} support and {nq} query examples")
    return s.detach().float().cpu(), q.detach().float().cpu()


@torch.no_grad()
def nearest_prototype(episode: Episode, embeddings: Any = None,
                      distance: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """``(prototypes (N, D), predicted query labels (M_q,))`` of the nearest-prototype rule.

    Uses :func:`metabook.prototypes` and :class:`metabook.ProtoNet` in the full embedding
    space; ``embeddings`` as in :func:`episode_embeddings`.
    """
    s, q = episode_embeddings(episode, embeddings)
    sy = episode.support_y.cpu()
    protos = prototypes(s, sy)
    pred = ProtoNet(distance=distance).predict(s[None], sy[None], q[None])[0]
    return protos, pred


def project_2d(points: torch.Tensor,
               *others: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """PCA to two dimensions, fitted on ``points`` and applied to ``points`` and ``others``.

    Returns ``((points_2d, *others_2d), explained)`` where ``explained`` holds the share
    of ``points``' variance along each of the two axes.  The signs are fixed (largest
    loading positive), so the same data always gives the same picture.
    """
    x = points.double()
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"need at least two points (n, d) to fit a PCA, got shape {tuple(x.shape)}")
    mean = x.mean(0, keepdim=True)
    _, sv, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comps = vh[:2]
    if comps.shape[0] < 2:  # one-dimensional data: pad with a zero axis
        comps = torch.cat([comps, torch.zeros_like(comps)])
        sv = torch.cat([sv, sv.new_zeros(1)])
    flip = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(flip == 0, torch.ones_like(flip), flip)
    var = sv.pow(2)
    explained = var[:2] / var.sum().clamp_min(1e-12)
    out = tuple(((t.double() - mean) @ comps.T).float() for t in (points, *others))
    return out, explained.float()


# --------------------------------------------------------------------------------------
# the table
def episode_table(episode: Episode, predictions: Any = None, *, max_chars: int | None = None,
                  caption: str | None = None) -> str:
    """The sentences of a text episode as an HTML table, one row per class.

    Each row shows the class name (e.g. the intent) on the class's colour, its support
    sentences and its query sentences.  With ``predictions`` (one label per query), each
    query is marked ✓ or ✗ and a wrong one names the class it was given.

    Args:
        episode: a text episode (``support_x``/``query_x`` lists of sentences).
        predictions: predicted query labels (tensor or sequence), or ``None``.
        max_chars: shorten longer sentences to this many characters (``None``: keep).
        caption: an optional caption above the table.

    Returns:
        an HTML string (inline styles only, so it renders the same in Jupyter and in the book).
    """
    n_way = _check_episode(episode, texts=True)
    pred = _predictions(predictions, len(episode.query_y))
    names, colors = _class_names(episode, n_way), class_colors(n_way)

    def text(s: str) -> str:
        if max_chars is not None and len(s) > max_chars:
            s = s[: max(1, max_chars - 1)] + "…"
        return html.escape(s)

    cell = "padding:4px 8px;vertical-align:top;border-bottom:1px solid #ddd;text-align:left"
    rows = []
    for j in range(n_way):
        sup = [text(s) for s, y in zip(episode.support_x, episode.support_y.tolist()) if y == j]
        qry = []
        for i, (s, y) in enumerate(zip(episode.query_x, episode.query_y.tolist())):
            if y != j:
                continue
            if pred is None:
                qry.append(text(s))
            elif int(pred[i]) == j:
                qry.append(f'<span style="color:#1a7f37" title="correct">✓</span> {text(s)}')
            else:
                other = int(pred[i])
                wrong = html.escape(names[other]) if 0 <= other < n_way else f"label {other}"
                qry.append(f'<span style="color:#c0392b" title="wrong">✗</span> {text(s)} '
                           f'<span style="color:#c0392b;font-size:90%">→ {wrong}</span>')
        rows.append(
            f'<tr style="background:{_tint(colors[j])};color:#222">'
            f'<td style="{cell};border-left:6px solid {colors[j]};font-weight:600;'
            f'white-space:nowrap">{html.escape(names[j])}</td>'
            f'<td style="{cell}">{"<br>".join(sup)}</td>'
            f'<td style="{cell}">{"<br>".join(qry)}</td></tr>')
    k = len(episode.support_y) // n_way
    q = len(episode.query_y) // n_way
    head = (f'<tr style="background:#f4f4f4;color:#222"><th style="{cell}">class</th>'
            f'<th style="{cell}">support (K = {k})</th><th style="{cell}">query (Q = {q})</th></tr>')
    cap = (f'<caption style="caption-side:top;text-align:left;padding:4px 0;color:inherit">'
           f'{html.escape(caption)}</caption>' if caption else "")
    return ('<table class="metabook-episode" style="border-collapse:collapse;font-size:0.85em;'
            f'margin:0.5em 0;width:100%">{cap}<thead>{head}</thead><tbody>{"".join(rows)}'
            '</tbody></table>')


# --------------------------------------------------------------------------------------
# the plot
@dataclass
class EpisodePlot:
    """What :func:`plot_episode` drew: 2-D coordinates, predictions and accuracy.

    Attributes:
        support_2d: PCA coordinates of the support points, ``(M_s, 2)``.
        query_2d: PCA coordinates of the queries, ``(M_q, 2)``.
        prototypes_2d: PCA coordinates of the prototypes, ``(N, 2)``.
        predictions: nearest-prototype labels of the queries (decided in the full space).
        accuracy: share of correct queries, in percent.
        explained: share of variance along the two PCA axes.
    """

    support_2d: torch.Tensor
    query_2d: torch.Tensor
    prototypes_2d: torch.Tensor
    predictions: torch.Tensor
    accuracy: float
    explained: torch.Tensor


def plot_episode(ax: "Axes", episode: Episode, embeddings: Any = None, *, distance: str = "euclidean",
                 title: str | None = None, legend: bool = True, max_name: int = 28) -> EpisodePlot:
    """Draw one episode's embeddings in 2-D (PCA) on ``ax``.

    Circles are support examples, triangles correctly classified queries, black-edged
    crosses misclassified queries (with a dotted line to the prototype they were
    assigned to), stars the class prototypes; colours are the true classes.
    Predictions use the nearest prototype in the *full* embedding space, so a query
    can look closer to another star in 2-D.

    Args:
        ax: a matplotlib ``Axes``.
        episode: one episode.
        embeddings: as in :func:`episode_embeddings` (``None`` if the episode holds them).
        distance: ``"euclidean"`` or ``"cosine"``, as in :class:`metabook.ProtoNet`.
        title: axes title; ``None`` writes the accuracy.
        legend: draw the class legend (right of the axes) and the marker legend.
        max_name: shorten class names in the legend to this many characters.

    Returns:
        an :class:`EpisodePlot`.
    """
    from matplotlib.lines import Line2D

    n_way = _check_episode(episode)
    s, q = episode_embeddings(episode, embeddings)
    protos, pred = nearest_prototype(episode, (s, q), distance)
    (_, s2, q2, p2), explained = project_2d(torch.cat([s, q]), s, q, protos)
    sy, qy = episode.support_y.cpu(), episode.query_y.cpu()
    colors = class_colors(n_way)
    ok = pred == qy
    acc = 100.0 * ok.double().mean().item() if len(qy) else float("nan")

    ax.scatter(s2[:, 0], s2[:, 1], c=[colors[y] for y in sy.tolist()], marker="o", s=46,
               edgecolors="white", linewidths=0.6, zorder=3, label="support")
    ax.scatter(q2[ok, 0], q2[ok, 1], c=[colors[y] for y in qy[ok].tolist()], marker="^", s=40,
               alpha=0.8, edgecolors="none", zorder=2, label="query, correct")
    bad = ~ok
    ax.scatter(q2[bad, 0], q2[bad, 1], c=[colors[y] for y in qy[bad].tolist()], marker="X", s=80,
               edgecolors="black", linewidths=0.9, zorder=4, label="query, wrong")
    for i in torch.nonzero(bad).flatten().tolist():
        ax.plot([q2[i, 0], p2[pred[i], 0]], [q2[i, 1], p2[pred[i], 1]], ls=":", lw=0.9,
                color="0.35", zorder=1)
    ax.scatter(p2[:, 0], p2[:, 1], c=colors, marker="*", s=300, edgecolors="black",
               linewidths=0.9, zorder=5, label="prototypes")
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else
                 f"{n_way}-way {len(sy) // n_way}-shot: {acc:.0f}% of queries correct", fontsize=10)
    if legend:
        names = [n if len(n) <= max_name else n[: max_name - 1] + "…"
                 for n in _class_names(episode, n_way)]
        g = "0.45"
        kinds = [Line2D([], [], ls="", marker="o", color=g, markersize=7),
                 Line2D([], [], ls="", marker="^", color=g, markersize=7),
                 Line2D([], [], ls="", marker="X", color=g, markeredgecolor="black", markersize=8),
                 Line2D([], [], ls="", marker="*", color=g, markeredgecolor="black", markersize=13)]
        markers = ax.legend(kinds, ["support", "query", "query, wrong", "prototype"],
                            loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8,
                            frameon=False)
        ax.add_artist(markers)  # the class legend below becomes ax.get_legend()
        handles = [Line2D([], [], ls="", marker="o", color=c, markersize=7) for c in colors]
        ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False, title="class", title_fontsize=8)
    return EpisodePlot(s2, q2, p2, pred, acc, explained)


def episode_figure_png(episode: Episode, embeddings: Any = None, *,
                       figsize: tuple[float, float] = (7.5, 4.2), dpi: int = 90,
                       **kwargs: Any) -> tuple[bytes, EpisodePlot]:
    """Render :func:`plot_episode` to PNG bytes (no pyplot, no display); for widgets and files."""
    from matplotlib.figure import Figure

    from matplotlib.legend import Legend

    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.subplots()
    info = plot_episode(ax, episode, embeddings, **kwargs)
    legends = [a for a in ax.get_children() if isinstance(a, Legend)]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", bbox_extra_artists=legends)
    return buf.getvalue(), info


# --------------------------------------------------------------------------------------
# the explorer
def episode_explorer(dataset: "IntentDataset", encoder: Any, *, split: str | int = "01",
                     n_query: int = 5, seed: int = 0, num_episodes: int = 1000,
                     max_way: int = 10, max_shot: int = 10, n_way: int = 5, k_shot: int = 1,
                     part: str = "test", episode: int = 0,
                     distance: str = "euclidean") -> "ipywidgets.VBox":
    """An ipywidgets explorer of the episodes of one class split.

    Controls: the episode index, ``n_way``, ``k_shot`` and the part of the class split
    (``train``/``valid``/``test``).  Each change samples
    ``EpisodeSampler.from_dataset(dataset, split, part, n_way, k_shot, n_query, seed).episode(index)`` and
    shows the nearest-prototype accuracy, the 2-D plot of :func:`plot_episode` (as an
    image) and the :func:`episode_table`.

    Args:
        dataset: an :class:`~metabook.data.IntentDataset` with the class split ``split``.
        encoder: an object with ``encode(list_of_sentences) -> (n, D)`` (e.g.
            :class:`metabook.encoders.MiniLMEncoder`), or a precomputed ``(len(dataset), D)``
            embedding table aligned with ``dataset.texts`` (instant updates).
        split: the class split id.
        n_query: query sentences per class.
        seed: sampler seed; episode ``i`` depends only on (seed, i).
        num_episodes: range of the episode slider.
        max_way, max_shot: upper ends of the ``n_way`` and ``k_shot`` sliders.
        n_way, k_shot, part, episode: the initial settings.
        distance: ``"euclidean"`` or ``"cosine"`` for the nearest-prototype rule.

    Returns:
        an ``ipywidgets.VBox``; ``.controls`` maps ``"episode"``, ``"n_way"``, ``"k_shot"``,
        ``"part"`` to their widgets, and ``.update()`` redraws.
    """
    import ipywidgets as w

    table_emb = None
    if isinstance(encoder, torch.Tensor):
        if encoder.dim() != 2 or len(encoder) != len(dataset):
            raise ValueError(f"an embedding table must have shape (len(dataset)={len(dataset)}, D), "
                             f"got {tuple(encoder.shape)}")
        table_emb = encoder.detach().float().cpu()
    elif not callable(getattr(encoder, "encode", None)):
        raise TypeError("encoder must have an encode(list_of_str) method or be a (len(dataset), D) "
                        f"tensor, got {type(encoder).__name__}")
    cs = dataset.split(split)
    parts = [p for p in ("train", "valid", "test") if len(cs[p]) >= 2]
    if part not in parts:
        raise ValueError(f"part must be one of {parts}, got {part!r}")
    top_way = min(max_way, max(len(cs[p]) for p in parts), len(CLASS_COLORS))
    for name, v in (("n_query", n_query), ("num_episodes", num_episodes), ("max_shot", max_shot)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if isinstance(episode, bool) or not isinstance(episode, numbers.Integral) \
            or not 0 <= episode < num_episodes:
        raise ValueError(f"episode must be an int in 0..{num_episodes - 1}, got {episode!r}")
    style = {"description_width": "initial"}
    controls = {
        "episode": w.IntSlider(value=int(episode), min=0, max=num_episodes - 1, description="episode",
                               continuous_update=False, style=style),
        "n_way": w.IntSlider(value=min(n_way, top_way), min=2, max=top_way, description="n_way",
                             continuous_update=False, style=style),
        "k_shot": w.IntSlider(value=min(k_shot, max_shot), min=1, max=max_shot, description="k_shot",
                              continuous_update=False, style=style),
        "part": w.ToggleButtons(options=parts, value=part, description="classes",
                                style={"button_width": "70px", **style}),
    }
    status = w.HTML()
    image = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px", height="auto"))
    table = w.HTML()

    def update(*_: Any) -> None:
        part_, nw = controls["part"].value, controls["n_way"].value
        try:
            sampler = EpisodeSampler.from_dataset(dataset, split, part_, nw, controls["k_shot"].value, n_query, seed=seed)
            ep = sampler.episode(controls["episode"].value)
        except ValueError as err:  # e.g. n_way larger than the part's classes
            status.value = f'<span style="color:#c0392b">{html.escape(str(err))}</span>'
            image.value, table.value = b"", ""
            return
        emb = table_emb if table_emb is not None else encoder_pair(ep)
        png, info = episode_figure_png(ep, emb, distance=distance)
        image.value = png
        table.value = episode_table(ep, info.predictions)
        n_ok = int((info.predictions == ep.query_y).sum())
        status.value = (f"<b>{part_}</b> classes of split {html.escape(str(split))}, episode "
                        f"{controls['episode'].value}: nearest prototype gets {n_ok} of "
                        f"{len(ep.query_y)} queries right ({info.accuracy:.0f}%).")

    def encoder_pair(ep: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.as_tensor(encoder.encode(list(ep.support_x) + list(ep.query_x)))
        return emb[: len(ep.support_y)], emb[len(ep.support_y):]

    for c in controls.values():
        c.observe(update, names="value")
    box = w.VBox([w.HBox([controls["episode"], controls["n_way"], controls["k_shot"]]),
                  controls["part"], status, image, table])
    box.controls, box.update = controls, update
    update()
    return box
