"""SetFit (Tunstall et al., 2022) as the full-way peer: contrastive fine-tuning of the same
MiniLM on pairs of the K shots, then a logistic-regression head (the ``setfit`` package).

SetFit's documented default draws sentence pairs by ``sampling_strategy="oversampling"``:
every unique pair, with the positives repeated to balance them. For 77 intents x 10 shots
that is 585,200 pairs, hours of training per draw on a CPU. :func:`default_pairs` counts
them, so a record can say what the default would cost; ``num_iterations`` (SetFit's own
budget knob: ``2 * iterations`` pairs per sentence) is what the CPU runs choose on ``valid``.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from typing import Callable, Sequence

import numpy as np


def default_pairs(labels: Sequence[str]) -> int:
    """Sentence pairs in one epoch of SetFit's default ``oversampling`` strategy for ``labels``."""
    from setfit.sampler import ContrastiveDataset

    return len(ContrastiveDataset([str(i) for i in range(len(labels))], list(labels), None, None, "oversampling"))


def fit_predict(model_dir: str, texts: Sequence[str], labels: Sequence[str], evaluate: dict[str, Sequence[str]],
                iterations: int | None, seed: int, batch_size: int = 16, body_lr: float = 2e-5) -> dict:
    """Train SetFit on ``texts``/``labels`` and predict every list in ``evaluate``.

    ``iterations=None`` keeps SetFit's default sampling. Returns ``{"pred": {name: labels},
    "pairs": ..., "steps": ..., "train_seconds": ...}``.
    """
    import datasets
    import setfit
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import PrinterCallback, ProgressCallback

    if iterations is not None and iterations < 1:
        raise ValueError(f"--setfit-iterations needs positive values, got {iterations}")
    setfit.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    model = SetFitModel.from_pretrained(model_dir)
    train = datasets.Dataset.from_dict({"text": list(texts), "label": list(labels)})
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(batch_size=batch_size, num_epochs=1, num_iterations=iterations, seed=seed,
                                 body_learning_rate=body_lr, report_to="none", output_dir=tmp,
                                 save_strategy="no")
        trainer = Trainer(model=model, args=args, train_dataset=train)
        for quiet in (ProgressCallback, PrinterCallback):
            trainer.st_trainer.remove_callback(quiet)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "pin_memory" on a CPU
            trainer.train()
        seconds = time.perf_counter() - start
    pairs = 2 * iterations * len(texts) if iterations else default_pairs(labels)
    pred = {name: [str(p) for p in model.predict(list(x), as_numpy=True)] for name, x in evaluate.items()}
    return {"pred": pred, "pairs": pairs, "steps": -(-pairs // batch_size), "train_seconds": seconds}


def setfit_draws(model_dir: str, shots: list[tuple[list[str], list[str]]], valid, test, grid: list[int | None],
                 n_draws: int, log: Callable[[str], None], k: int, seed: int = 0) -> dict:
    """SetFit on each draw of ``shots`` for every ``num_iterations`` in ``grid``; the value is
    chosen by the mean ``valid`` accuracy over the first ``n_draws`` draws (over the published
    draw when ``n_draws`` is 0), and test is reported for that value only."""
    from metabook.bench.fullway import draw_summary

    if not grid:
        raise ValueError("--setfit-iterations needs at least one value")
    voters = n_draws if n_draws > 0 else len(shots)
    v_y, t_y = np.asarray(valid.labels), np.asarray(test.labels)
    runs: dict[str, list[dict]] = {}
    for it in grid:
        key = "default" if it is None else str(it)
        runs[key] = []
        for d, (texts, labels) in enumerate(shots):
            r = fit_predict(model_dir, texts, labels, {"valid": valid.texts, "test": test.texts}, it, seed + 100 * d + k)
            r["valid"] = 100.0 * float((np.asarray(r["pred"]["valid"]) == v_y).mean())
            r["test"] = 100.0 * float((np.asarray(r["pred"]["test"]) == t_y).mean())
            del r["pred"]
            runs[key].append(r)
            log(f"setfit {k}-shot iterations {key} draw {d}: valid {r['valid']:.2f}, test {r['test']:.2f}, "
                f"{r['pairs']} pairs in {r['train_seconds']:.0f} s")
    sweep = {key: float(np.mean([r["valid"] for r in rs[:voters]])) for key, rs in runs.items()}
    best = max(sweep, key=sweep.get)
    accs = [r["test"] for r in runs[best]]
    out = draw_summary(accs, n_draws)
    s_per_step = float(np.median([r["train_seconds"] / r["steps"] for rs in runs.values() for r in rs]))
    pairs_default = default_pairs(shots[0][1])
    return {**out, "iterations": None if best == "default" else int(best), "valid_sweep": sweep,
            "runs": runs, "seconds_per_step": s_per_step, "default_pairs": pairs_default,
            "default_seconds_estimate": s_per_step * -(-pairs_default // 16)}
