"""The ``minilm`` speed workload on the tiny BERT: the four methods' meta-gradients agree; the CLI writes its JSON."""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from metabook.bench import speed
from metabook.bench.__main__ import main as bench_main

CPU = torch.device("cpu")


def _args(*argv):
    p = argparse.ArgumentParser()
    speed.add_arguments(p)
    return p.parse_args(["--workload", "minilm", "--encoder", "tiny", *argv])


@pytest.fixture(scope="module")
def tiny_workload(shared_data):
    """One tiny workload (3 layers, so top2 leaves a body), shared by the tests; float64 models."""
    args = _args("--data-dir", str(shared_data))
    wl = speed._workload(args, CPU)
    model = wl.model
    wl.model = lambda: model().double()
    return wl


def _grads(wl, variant, methods):
    args = _args("--variant", variant, "--methods", *methods)
    wl.variant, args.wl = variant, wl
    return speed.meta_gradients(args, CPU)


@pytest.mark.parametrize("variant", ["top2", "all"])
def test_minilm_meta_gradients_of_the_four_methods_agree(tiny_workload, variant):
    grads = _grads(tiny_workload, variant, speed.MiniLMWorkload.methods)
    assert set(grads) == {"metabook", "metabook-chunked", "autograd", "higher"}
    ref = grads["higher"]
    assert all(float(g.abs().max()) > 0 for g in ref)  # every parameter, body included, gets a gradient
    for method, gs in grads.items():
        assert len(gs) == len(ref)
        for a, b in zip(gs, ref):
            assert (a - b).abs().max() < 1e-8, method
    for a, b in zip(grads["metabook-chunked"], grads["metabook"]):
        assert (a - b).abs().max() < 1e-10


def test_minilm_workload_splits_body_and_adapted_top(tiny_workload):
    tiny_workload.variant = "top2"
    body, top, adapt = speed._parts(tiny_workload.model())
    assert body is not None and len(body.layers) == 1 and len(top.encoder.slice.layers) == 2
    assert adapt and all(n.startswith("top.") for n in adapt)
    ep = tiny_workload.batch(0)
    assert ep.support_x["input_ids"].shape == (4, 25, 16) == ep.query_x["attention_mask"].shape
    assert ep.support_y.shape == (4, 25)
    tiny_workload.variant = "all"
    body, top, adapt = speed._parts(tiny_workload.model())
    assert body is None and len(adapt) == len(list(top.parameters()))


def test_minilm_speed_cli_writes_results(tmp_path, shared_data):
    out = tmp_path / "minilm.json"
    assert bench_main(["speed", "--workload", "minilm", "--encoder", "tiny", "--repeats", "1", "--warmup", "0",
                       "--data-dir", str(shared_data), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"command", "workload", "rows", "raw_ms", "versions", "hardware", "repeats"} <= set(res)
    assert res["workload"]["family"] == "minilm" and res["workload"]["variant"] == "top2"
    assert res["workload"]["inner_steps"] == 2 and res["workload"]["meta_batch"] == 4
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"metabook", "metabook-chunked", "autograd", "higher"}
    for r in rows.values():
        assert {"method", "median_ms", "speedup_vs_higher", "peak_mib", "max_abs_grad_diff_vs_higher"} <= set(r)
        assert r["median_ms"] > 0 and r["peak_mib"] > 0 and r["max_abs_grad_diff_vs_higher"] < 1e-4
        assert len(res["raw_ms"][r["method"]]) == 1
    assert rows["higher"]["speedup_vs_higher"] == 1.0


def test_speed_help_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "metabook.bench", "speed", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--variant" in proc.stdout and "minilm" in proc.stdout
