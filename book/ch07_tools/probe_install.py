"""Refresh ``install_status.json``: does each meta-learning library install here?

Chapter 7 (§7.5) renders the file this script writes. It runs the commands recorded in the
file, in a throwaway virtual environment that sees the installed torch
(``python -m venv --system-site-packages``), so that pip never downloads or replaces torch:
``--no-deps`` and ``--dry-run`` keep it away. It needs the package index (PyPI) and takes
a minute or two.

    python book/ch07_tools/probe_install.py            # rewrite install_status.json
    python book/ch07_tools/probe_install.py --dry-run  # print the JSON only

What it measures for each package: the outcome (``works``/``fails``), the key error line,
the newest timestamp inside the release's package file (``files_dated``) and the
environment. The explanations (``summary``, ``cause``, ``upstream``, notes) are written by
hand and kept from the existing file; if an outcome changes, the script says so, and they
need rewriting.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATUS = HERE / "install_status.json"
VENV = "/tmp/venv_l2l"  # the name the recorded commands use

# The probe of higher: one differentiable inner step, and a gradient back to the weights.
HIGHER_CHECK = """
import torch, higher
m = torch.nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1)
with higher.innerloop_ctx(m, opt, copy_initial_weights=False) as (f, d):
    d.step(f(torch.ones(3, 2)).pow(2).mean())
    g = torch.autograd.grad(f(torch.ones(3, 2)).sum(), m.weight)[0]
assert torch.isfinite(g).all()
"""

# (package, version, [(command, where to look for the key error)])
PROBES = {
    "learn2learn": ("0.2.0", [f"{VENV}/bin/pip install --no-deps learn2learn"],
                    r"\S+: fatal error: [^\n]*"),
    "torchmeta": ("1.8.0", [f"{VENV}/bin/pip install --dry-run torchmeta"],
                  r"torchmeta 1\.8\.0 depends on torch[^\n]*"),
    "higher": ("0.2.1", [f"{VENV}/bin/pip install --no-deps higher==0.2.1",
                         f"{VENV}/bin/python -c {shlex.quote(HIGHER_CHECK)}"],
               r"\w*Error: [^\n]*"),
}
FORCED_TORCHMETA = (f"{VENV}/bin/pip install --no-deps torchmeta==1.8.0 && "
                    f"{VENV}/bin/python -c 'import torchmeta'")


def sh(command: str) -> tuple[int, str]:
    """Run ``command`` in a shell; return its exit status and its output (both streams)."""
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def files_dated(name: str, version: str) -> str | None:
    """The newest timestamp inside the release's wheel (else sdist), as YYYY-MM-DD."""
    with tempfile.TemporaryDirectory() as tmp:
        rc, _ = sh(f"{sys.executable} -m pip download --quiet --no-deps {name}=={version} -d {tmp}")
        files = sorted(Path(tmp).iterdir())
        if rc or not files:
            return None
        path = files[0]
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                newest = max(dt.datetime(*i.date_time) for i in z.infolist())
        else:
            with tarfile.open(path) as t:
                newest = dt.datetime.fromtimestamp(max(m.mtime for m in t.getmembers()), dt.timezone.utc)
        return newest.strftime("%Y-%m-%d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the JSON, do not write it")
    args = parser.parse_args()

    old = json.loads(STATUS.read_text(encoding="utf-8"))
    sh(f"rm -rf {VENV}")
    rc, out = sh(f"{sys.executable} -m venv --system-site-packages {VENV}")
    if rc:
        sys.exit(f"could not create {VENV}:\n{out}")
    _, pip = sh(f"{VENV}/bin/pip --version")
    _, torch_version = sh(f"{VENV}/bin/python -c 'import torch; print(torch.__version__)'")

    by_name = {p["name"]: p for p in old["packages"]}
    for name, (version, commands, pattern) in PROBES.items():
        entry = by_name[name]
        rc, out = 0, ""
        for command in commands:
            rc, out = sh(command)
            if rc:
                break
        outcome = "works" if rc == 0 else "fails"
        match = re.search(pattern, out)
        key_error = None if rc == 0 else (match.group(0).strip() if match else out.strip().splitlines()[-1])
        if outcome != entry["outcome"]:
            print(f"NOTE: {name} now {outcome} (was {entry['outcome']}): rewrite its summary and cause",
                  file=sys.stderr)
        entry.update(version=version, command=commands[0], outcome=outcome, key_error=key_error,
                     files_dated=files_dated(name, version) or entry.get("files_dated"))
        print(f"{name} {version}: {outcome}" + (f" ({key_error})" if key_error else ""), file=sys.stderr)
    forced = by_name["torchmeta"].get("forced")
    if forced is not None:
        _, out = sh(FORCED_TORCHMETA)
        match = re.search(r"ModuleNotFoundError: [^\n]*", out)
        forced["key_error"] = match.group(0) if match else out.strip().splitlines()[-1]

    old["measured_on"] = dt.date.today().isoformat()
    old["environment"] = {
        "os": f"{platform.system()} {platform.machine()} (glibc {platform.libc_ver()[1]}), "
              f"{__import__('os').cpu_count()} CPU cores",
        "python": platform.python_version(),
        "torch": torch_version.strip(),
        "pip": pip.split()[1],
    }
    old["about"] = ("Install checks for Chapter 7, made by book/ch07_tools/probe_install.py in a "
                    "throwaway virtual environment that sees the system torch (python -m venv "
                    "--system-site-packages /tmp/venv_l2l), so that no torch was downloaded. "
                    "files_dated is the newest timestamp inside the release's package file. "
                    "Rerun the script to refresh this file.")
    text = json.dumps(old, indent=2, ensure_ascii=False) + "\n"
    if args.dry_run:
        print(text)
    else:
        STATUS.write_text(text, encoding="utf-8")
        print(f"wrote {STATUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
