"""metabook.viz.adaptation: joint baseline, adaptation curves, frames, animation, widget."""
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from metabook import MAML, SinusoidTasks, sinusoid_mlp  # noqa: E402
from metabook.viz.adaptation import (AdaptationFrames, adaptation_animation,  # noqa: E402
                                     adaptation_curve, adaptation_frames, adaptation_widget,
                                     plot_adaptation, train_joint_baseline)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _models(hidden=8):
    torch.manual_seed(0)
    return {"MAML init": sinusoid_mlp(hidden), "joint training": sinusoid_mlp(hidden)}


def test_joint_baseline_trains_on_all_points_of_each_batch():
    torch.manual_seed(0)
    model, tasks = sinusoid_mlp(8), SinusoidTasks(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = train_joint_baseline(model, tasks, 5, batch_size=4, k_shot=3, n_query=2, lr=1e-2)
    assert len(log.losses) == 5 and log.seconds >= 0
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # The first logged loss is the MSE on support + query points of batch 0, before the step.
    torch.manual_seed(0)
    fresh = sinusoid_mlp(8)
    ep = tasks.batch(4, 3, 2, index=0)
    x, y = torch.cat([ep.support_x, ep.query_x], 1), torch.cat([ep.support_y, ep.query_y], 1)
    assert log.losses[0] == pytest.approx(F.mse_loss(fresh(x), y).item(), rel=1e-6)


def test_adaptation_curve_matches_maml_adapt():
    torch.manual_seed(0)
    model = sinusoid_mlp(8)
    ep = SinusoidTasks(seed=1).batch(3, 5, 7)
    curve = adaptation_curve(model, ep, steps=4, inner_lr=0.05)
    assert curve.shape == (3, 5) and np.isfinite(curve).all()
    maml = MAML(model, inner_lr=0.05, loss_fn=F.mse_loss)
    for k in (0, 2, 4):
        phis = maml.adapt(ep.support_x, ep.support_y, steps=k)  # every task at once
        for i in range(3):
            phi = {n: v[i] for n, v in phis.items()}
            mse = F.mse_loss(maml.forward_with(phi, ep.query_x[i]), ep.query_y[i]).item()
            assert curve[i, k] == pytest.approx(mse, rel=1e-4, abs=1e-6)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_frames_plot_and_animation_html():
    models = _models()
    task = SinusoidTasks().task(2.0, 1.0, k_shot=5, n_query=30)
    frames = adaptation_frames(models, task, steps=3, inner_lr=0.05)
    assert isinstance(frames, AdaptationFrames) and frames.steps == 3
    assert set(frames.preds) == set(models)
    assert frames.preds["MAML init"].shape == (4, 30) and frames.mse["joint training"].shape == (4,)
    assert np.all(np.diff(frames.x) >= 0)
    # Step 0 is the unadapted model.
    with torch.no_grad():
        y0 = models["MAML init"](task.query_x)[:, 0].numpy()
    np.testing.assert_allclose(np.sort(frames.preds["MAML init"][0]), np.sort(y0), rtol=1e-6)

    fig, ax = plt.subplots()
    art = plot_adaptation(ax, frames, 2)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"{frames.mse['MAML init'][2]:.3f}" in s for s in labels)
    assert {"true", "support", "MAML init", "joint training"} <= set(art)

    html = adaptation_animation(frames, interval=100, dpi=30)
    assert "<script" in html and "animation" in html.lower()
    for control in ("play_animation", "pause_animation", "next_frame", "previous_frame"):
        assert control in html, control
    n_frames = len(re.findall(r"frames\[\d+\] = ", html))
    assert n_frames == frames.steps + 1, n_frames
    assert "font-awesome" not in html and "https://" not in html, "the player must work offline"


def test_widget_has_the_sliders():
    ipywidgets = pytest.importorskip("ipywidgets")
    w = adaptation_widget(_models(), SinusoidTasks(), max_steps=4, inner_lr=0.01, k_shot=5)
    assert isinstance(w, ipywidgets.interactive)
    sliders = {c.description: c for c in w.children if isinstance(c, ipywidgets.widgets.ValueWidget)
               and hasattr(c, "min")}
    assert set(sliders) == {"inner steps S", "inner lr α", "shots K", "amplitude A", "phase",
                            "support seed"}
    assert (sliders["inner steps S"].min, sliders["inner steps S"].max) == (0, 4)
    assert sliders["shots K"].value == 5
    assert isinstance(sliders["inner lr α"], ipywidgets.FloatLogSlider)
    # Moving a slider re-runs the plot without error.
    sliders["inner steps S"].value = 3
    sliders["shots K"].value = 2


def test_bad_input_is_refused_clearly():
    models = _models()
    task = SinusoidTasks().task(2.0, 1.0, k_shot=5, n_query=30)
    batch = SinusoidTasks().batch(2, 5, 5)
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        adaptation_frames(models, task, steps=-1)
    with pytest.raises(ValueError, match="inner_lr"):
        adaptation_frames(models, task, inner_lr=float("nan"))
    with pytest.raises(TypeError, match="non-empty dict"):
        adaptation_frames({}, task)
    with pytest.raises(TypeError, match="not an nn.Module"):
        adaptation_frames({"a": "model"}, task)
    with pytest.raises(ValueError, match="single task"):
        adaptation_frames(models, batch)
    with pytest.raises(ValueError, match="batched Episode"):
        adaptation_curve(models["MAML init"], task)
    with pytest.raises(TypeError, match="SinusoidTasks"):
        train_joint_baseline(models["MAML init"], [1, 2], 3)
    frames = adaptation_frames(models, task, steps=2)
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="beyond the 2 steps"):
        plot_adaptation(ax, frames, 5)
    with pytest.raises(ValueError, match="not in frames"):
        plot_adaptation(ax, frames, 1, names=["nope"])
    with pytest.raises(TypeError, match="AdaptationFrames"):
        adaptation_animation({"x": 1})
    with pytest.raises(ValueError, match="amplitude"):
        adaptation_widget(models, amplitude=50.0)
    with pytest.raises(ValueError, match="k_shot"):
        adaptation_widget(models, k_shot=0)
    with pytest.raises(ValueError, match="slider's range"):
        adaptation_widget(models, inner_lr=2.0)
