"""What every benchmark JSON records: versions, hardware, the git SHA and the exact command."""
from __future__ import annotations

import os
import platform
import sys

import torch

from metabook.train.export import git_sha

__all__ = ["versions", "hardware", "provenance", "default_runs_dir"]

#: The commit of the code this process loaded, read once at import (a run that lasts an hour
#: must not record a commit made while it ran); ``-dirty`` when the checkout had changes.
START_SHA = git_sha()


def versions() -> dict:
    """Python, torch, transformers and metabook versions."""
    from importlib.metadata import version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("transformers", "metabook"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


def hardware(device: torch.device) -> dict:
    """Device, CPU count, torch threads, machine and GPU name."""
    return {"device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}


def provenance(command: str) -> dict:
    """``{"command": "python -m metabook.bench <command> <args>", "git_sha": ...}`` of this process."""
    return {"command": f"python -m metabook.bench {command} " + " ".join(sys.argv[2:]), "git_sha": START_SHA}


def default_runs_dir() -> str:
    """Where benchmark training runs go: ``$METABOOK_CACHE/runs`` or ``~/.cache/metabook/runs``."""
    root = os.environ.get("METABOOK_CACHE")
    base = os.path.expanduser(root) if root else os.path.join(os.path.expanduser("~"), ".cache", "metabook")
    return os.path.join(base, "runs")
