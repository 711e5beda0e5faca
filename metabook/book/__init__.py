"""Plumbing for the book's chapters: one setup call, glue, run times.

A chapter starts with::

    from metabook.book import setup, glue
    device = setup("ch02")

and ends with a hidden ``record_runtime("ch02")``, which glues ``ch02_runtime`` (the wall time
of this run and the device) for the chapter's *Prerequisites*. Outside a book build, ``glue``
shows the value instead of storing it.

This package sits on top of the library (it may import any layer); nothing in the library
imports it.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from metabook.device import default_device

__all__ = ["setup", "glue", "record_runtime", "runtime_text", "check"]

_STARTED: dict[str, float] = {}


def glue(name: str, variable: Any, display: bool = True) -> None:
    """``myst_nb.glue`` when it is installed; otherwise show ``variable`` (if ``display``)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # a plain kernel without the book's tools
        if display:
            from IPython.display import display as _show
            _show(variable)
        return
    _glue(name, variable, display=display)


def setup(chapter: str, device: torch.device | str | None = None, quiet: bool = False
          ) -> torch.device:
    """Start the clock for ``chapter`` and return the device its cells use.

    Args:
        chapter: the chapter's glue prefix, e.g. ``"ch02"``.
        device: force a device; default :func:`metabook.default_device` (CUDA, MPS, else CPU).
        quiet: do not print the one-line banner.
    """
    if not chapter or not chapter.replace("_", "").isalnum():
        raise ValueError(f"chapter must be a short name such as 'ch02', got {chapter!r}")
    _STARTED[chapter] = time.perf_counter()
    dev = torch.device(device) if device is not None else default_device()
    if not quiet:
        import metabook
        print(f"metabook {metabook.__version__}, torch {torch.__version__}, device: {dev}")
    return dev


def runtime_text(seconds: float, device: torch.device | str) -> str:
    """``"73 s on CPU"`` / ``"4.2 min on GPU (cuda)"``: a run time as the prose shows it."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    dev = torch.device(device)
    where = "CPU" if dev.type == "cpu" else f"GPU ({dev.type})"
    amount = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"{amount} on {where}"


def record_runtime(chapter: str, device: torch.device | str | None = None) -> float:
    """Glue ``<chapter>_runtime`` with the time since :func:`setup`; return the seconds."""
    if chapter not in _STARTED:
        raise RuntimeError(f"record_runtime({chapter!r}) before setup({chapter!r})")
    from IPython.display import Markdown
    secs = time.perf_counter() - _STARTED[chapter]
    glue(f"{chapter}_runtime", Markdown(runtime_text(secs, device or default_device())),
         display=False)
    return secs


def check(condition: bool, claim: str) -> None:
    """Assert a claim the prose, a table or a figure makes; the message says which.

    Hidden ``remove-cell`` cells use it so that a wrong table fails the notebook test.
    """
    if not bool(condition):
        raise AssertionError(f"the book claims: {claim}")
