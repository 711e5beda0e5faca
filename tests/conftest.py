"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data: $METABOOK_DATA, else <repo>/../shared/data (read once, before tests edit the env).
SHARED_DATA = Path(os.environ.get("METABOOK_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data files (laid out like ``metabook.data.REGISTRY``)."""
    assert (SHARED_DATA / "SOURCES.tsv").is_file(), (
        f"real data not found at {SHARED_DATA}; set METABOOK_DATA to the shared data folder")
    return SHARED_DATA


def cli_flags(options: dict) -> list[str]:
    """``{"k_shot": 5, "progress": False}`` -> ``["--k-shot", "5", "--no-progress"]``."""
    out = []
    for k, v in options.items():
        flag = k.replace("_", "-")
        out += ([f"--{flag}" if v else f"--no-{flag}"] if isinstance(v, bool) else [f"--{flag}", str(v)])
    return out
