"""Every committed result file says how to make it again.

Each JSON under ``benchmarks/results/`` records a ``command`` that the current CLI parses,
its hardware and versions. Files made by the current code also record the git commit, and
their command's ``--out`` is the file's own path, so running the command rewrites that file.
``legacy/`` keeps results of the earlier loops that the current code regenerated, for the
reproduction table (:mod:`metabook.bench.rerun`); where a rerun regenerated a file, the canonical
name is a link to ``rerun/<name>``. Files made by older code are listed in ``LEGACY``; the list may only shrink: a file that
gains a commit must leave it, and no new file may join it.
"""
import argparse
import importlib
import json
import shlex
from pathlib import Path

import pytest

from metabook.bench import COMMANDS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FILES = sorted(p for p in RESULTS.rglob("*.json") if "legacy" not in p.relative_to(RESULTS).parts)

#: Made by code older than the commit-recording provenance; to be regenerated (issue 13).
LEGACY = {
    "encoder.json", "maml_speed.json", "maml_speed_1thread.json", "maml_speed_minilm-all.json", "maml_speed_minilm-top2.json",
    "maml_speed_text.json",
    "rerun/pretrain_no-banking77.json", "rerun/pretrain_no-clinc150.json", "rerun/pretrain_no-hwu64.json",
}

#: Files whose ``git_sha`` ends in ``-dirty``; no new file may join this list.
#: Reruns made before the commit was read at process start, while the checkout had changes:
DIRTY_CODE = {
    "rerun/episodic_banking77_anil.json", "rerun/episodic_banking77_fomaml.json", "rerun/episodic_banking77_maml.json",
    "rerun/episodic_banking77_metasgd.json", "rerun/episodic_banking77_protonet-xdata.json",
    "rerun/episodic_banking77_protonet.json", "rerun/episodic_clinc150_protonet-indomain.json",
    "rerun/episodic_clinc150_protonet-xdata.json", "rerun/episodic_clinc150_protonet.json",
    "rerun/fullway_banking77_protonet-xdata.json",
}
#: Made by a queue of runs in a checkout of a commit whose only changes were the result files the
#: queue had just rewritten (``git status`` showed nothing else); ``git_sha`` has ignored
#: ``benchmarks/results/`` since.
DIRTY_RESULTS_ONLY = {
    "episodic_banking77_anil.json", "episodic_banking77_fomaml.json", "episodic_banking77_frozen-cl2n.json",
    "episodic_banking77_maml.json", "episodic_banking77_metasgd.json", "episodic_banking77_protonet-xdata.json",
    "episodic_banking77_reptile.json", "episodic_clinc150_frozen-cl2n.json", "episodic_clinc150_frozen.json",
    "episodic_clinc150_protonet-xdata.json", "episodic_hwu64_frozen-cl2n.json", "episodic_hwu64_frozen.json",
    "episodic_hwu64_protonet-xdata.json", "fullway_banking77_frozen.json", "fullway_banking77_protonet-xdata.json",
    "fullway_clinc150_frozen.json", "fewshot_intent/sweep/fullway_hwu64_protonet_lr1e-4_valid.json",
    "fewshot_intent/sweep/fullway_hwu64_protonet_lr2e-5_valid.json",
    "fewshot_intent/sweep/fullway_hwu64_protonet_lr5e-5_valid.json",
}
DIRTY = DIRTY_CODE | DIRTY_RESULTS_ONLY


def _rel(path: Path) -> str:
    return path.relative_to(RESULTS).as_posix()


def _parse(command: str) -> tuple[str, argparse.Namespace]:
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "metabook.bench"], f"not a metabook.bench command: {command}"
    sub = words[3]
    assert sub in COMMANDS, f"unknown subcommand {sub!r}"
    parser = argparse.ArgumentParser(prog=f"python -m metabook.bench {sub}", exit_on_error=False)
    importlib.import_module(COMMANDS[sub]).add_arguments(parser)
    return sub, parser.parse_args(words[4:])


def test_there_are_result_files():
    assert len(FILES) > 30


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_command_parses_and_provenance_is_recorded(path):
    if path.is_symlink():  # a regenerated result whose rerun (rerun/<same name>) is the canonical file
        real = path.resolve()
        assert real == RESULTS / "rerun" / path.name and real.is_file(), f"{_rel(path)} links to {real}"
        assert (RESULTS / "legacy" / path.name).is_file(), "the earlier file it replaced is not in legacy/"
        path = real
    record = json.loads(path.read_text())
    assert record.get("hardware") or _rel(path) in LEGACY, "no hardware recorded"
    if _rel(path).startswith("rerun/pretrain_"):  # recorded the trainer's argv, not the bench command
        assert _rel(path) in LEGACY
        return
    sub, args = _parse(record["command"])
    if _rel(path) in LEGACY:
        assert not (record.get("git_sha") and record.get("hardware")
                    and getattr(args, "record" if sub == "pretrain" else "out", None)
                    == f"benchmarks/results/{_rel(path)}"), (
            "this file now records its commit, hardware and --out: remove it from LEGACY")
        return
    assert record.get("git_sha"), "no git commit recorded"
    assert record["git_sha"].endswith("-dirty") == (_rel(path) in DIRTY), (
        "made from uncommitted code" if _rel(path) not in DIRTY else "no longer dirty: remove it from DIRTY")
    assert record.get("versions", {}).get("torch"), "no versions recorded"
    target = args.record if sub == "pretrain" else args.out  # pretrain: --out is the run folder
    assert target == f"benchmarks/results/{_rel(path)}", f"its command writes {target!r}, not this file"


def test_legacy_list_names_only_existing_files():
    names = {_rel(p) for p in FILES}
    assert LEGACY <= names, f"stale LEGACY entries: {sorted(LEGACY - names)}"
    linked = sorted(n for n in LEGACY if (RESULTS / n).is_symlink())
    assert not linked, f"regenerated (a link to rerun/), remove from LEGACY: {linked}"


def test_each_legacy_file_has_its_rerun():
    """``legacy/`` keeps what the earlier loops wrote, for the reproduction table only."""
    for path in sorted((RESULTS / "legacy").glob("*.json")):
        assert (RESULTS / "rerun" / path.name).is_file(), f"legacy/{path.name} has no rerun"
        assert (RESULTS / path.name).is_file(), f"legacy/{path.name} has no regenerated file"


def test_a_command_with_a_wrong_option_does_not_parse():
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parse("python -m metabook.bench episodic --data banking77 --no-such-flag 3")


def test_fewshot_learning_rates_were_chosen_on_valid():
    """Each committed meta-trained full-way run on the DNNC/CPFT splits uses the learning rate
    that did best on ``valid`` in the committed sweep of its dataset."""
    from metabook.bench.report import lr_sweeps

    sweeps = lr_sweeps(RESULTS)
    for path in sorted((RESULTS / "fewshot_intent").glob("fullway_*_protonet.json")):
        data = path.name.split("_")[1]
        assert data in sweeps, f"{path.name}: no learning-rate sweep on valid is committed"
        lr = json.loads(path.read_text())["settings"]["lr"]
        assert lr == max(sweeps[data], key=sweeps[data].get), f"{path.name}: lr {lr} is not the best on valid"
    for data, by_lr in sweeps.items():
        assert len(by_lr) >= 3, f"{data}: a sweep needs at least 3 learning rates"


def test_git_sha_counts_code_changes_not_result_files(tmp_path):
    import subprocess

    from metabook.train.export import git_sha

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git_sha(tmp_path)
    assert len(sha) == 40
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}\n')  # an output
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_sha(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")  # code
    assert git_sha(tmp_path) == sha + "-dirty"
