"""Chapter 7's install probe: the committed install_status.json matches what the script runs.

Running the probe itself needs PyPI and a minute or two, so the tests check only that the
file and the script agree and that the archive-dating helper reads wheels and sdists.
"""
from __future__ import annotations

import importlib.util
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "ch07_tools" / "probe_install.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_status_commands_are_the_scripts(probe):
    status = json.loads(probe.STATUS.read_text(encoding="utf-8"))
    by_name = {p["name"]: p for p in status["packages"]}
    for name, (version, commands, _) in probe.PROBES.items():
        assert by_name[name]["command"] == commands[0], name
        assert by_name[name]["version"] == version, name
    assert by_name["torchmeta"]["forced"]["command"] == probe.FORCED_TORCHMETA


def test_key_error_patterns_match_the_recorded_errors(probe):
    import re

    status = json.loads(probe.STATUS.read_text(encoding="utf-8"))
    for p in status["packages"]:
        if p["name"] in probe.PROBES and p["outcome"] == "fails":
            pattern = probe.PROBES[p["name"]][2]
            assert re.fullmatch(pattern, p["key_error"]), (p["name"], p["key_error"])


def test_files_dated_reads_wheels_and_sdists(probe, tmp_path, monkeypatch):
    wheel = tmp_path / "dl" / "pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(zipfile.ZipInfo("a.py", date_time=(2020, 7, 14, 1, 2, 3)), "x = 1\n")
        z.writestr(zipfile.ZipInfo("b.py", date_time=(2019, 1, 1, 0, 0, 0)), "y = 2\n")

    def fake_sh(command):  # "pip download ... -d <dir>": put the archive there
        target = Path(command.split(" -d ")[1])
        target.joinpath(wheel.name).write_bytes(wheel.read_bytes())
        return 0, ""

    monkeypatch.setattr(probe, "sh", fake_sh)
    assert probe.files_dated("pkg", "1.0") == "2020-07-14"

    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo("pkg-1.0/setup.py")
        info.mtime = 1685750400  # 2023-06-03 00:00 UTC
        info.size = 1
        t.addfile(info, io.BytesIO(b"\n"))

    def fake_sh_sdist(command):
        Path(command.split(" -d ")[1]).joinpath(sdist.name).write_bytes(sdist.read_bytes())
        return 0, ""

    monkeypatch.setattr(probe, "sh", fake_sh_sdist)
    assert probe.files_dated("pkg", "1.0") == "2023-06-03"
