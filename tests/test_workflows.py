"""The GitHub Actions workflows (.github/workflows) and the local action they share.

* Each workflow validates against the GitHub workflow schema and the local action against the
  action schema (``check-jsonschema --builtin-schema``, bundled with it: no network), and the
  validator is shown to bite on a copy of a real workflow with one invalid key.
* Every local path they use exists: scripts and files named in ``run:`` steps (and, one level
  down, in the scripts those run), local actions, cache and hash inputs; what a step runs
  directly (``.ci/run``) is executable, in the working tree and in git's index.
* book.yml runs README's two commands verbatim, publishes ``_build/html`` to GitHub Pages with
  the permissions and environment deploy-pages needs; ci.yml runs ``.ci/run`` on pull requests;
  both install the pinned torch from the CPU index and put the data in the loader's cache.
* The data action, run as the workflows run it, downloads every registry file (from a local
  server standing in for raw.githubusercontent.com, serving the shared data by its pinned
  URL), writes a SOURCES.tsv identical to the shared one and points METABOOK_DATA at it.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
BOOK, CI = WORKFLOWS / "book.yml", WORKFLOWS / "ci.yml"
DATA_ACTION = ROOT / ".github" / "actions" / "metabook-data" / "action.yml"
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# A repository path in a shell command: .ci/..., scripts/..., .github/..., tests/...
LOCAL_PATH = re.compile(r"(?<![\w./-])(?:\./)?((?:\.ci|\.github|scripts|tests)/[\w./-]*[\w-])")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    return {on: None} if isinstance(on, str) else dict.fromkeys(on) if isinstance(on, list) else on


def steps(doc: dict) -> list[dict]:
    if "runs" in doc:  # a composite action
        return doc["runs"]["steps"]
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def run_scripts(doc: dict) -> list[str]:
    return [s["run"] for s in steps(doc) if "run" in s]


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    cmd = [str(exe)] if exe.exists() else [shutil.which("check-jsonschema") or "check-jsonschema"]
    return subprocess.run(cmd + ["--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def git_mode(path: Path) -> str | None:
    """The file mode git records for ``path`` (``100755``...), None if untracked."""
    out = subprocess.run(["git", "ls-files", "-s", "--", str(path.relative_to(ROOT))], cwd=ROOT,
                         capture_output=True, text=True)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------------------ schema

@pytest.mark.parametrize("path,schema", [(BOOK, "vendor.github-workflows"),
                                         (CI, "vendor.github-workflows"),
                                         (DATA_ACTION, "vendor.github-actions")],
                         ids=["book.yml", "ci.yml", "metabook-data/action.yml"])
def test_valid_against_the_github_schema(path, schema):
    assert path.is_file(), f"{path} is missing"
    proc = check_jsonschema(schema, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_validator_bites(tmp_path):
    """A copy of book.yml with one misspelt job key, and an action with a bad key, fail."""
    text = BOOK.read_text(encoding="utf-8")
    assert "    runs-on: ubuntu" in text
    bad = tmp_path / "book.yml"
    bad.write_text(text.replace("    runs-on: ubuntu", "    runs_on: ubuntu", 1), encoding="utf-8")
    proc = check_jsonschema("vendor.github-workflows", bad)
    assert proc.returncode != 0 and "runs_on" in proc.stdout + proc.stderr, proc.stdout
    bad_action = tmp_path / "action.yml"
    bad_action.write_text(DATA_ACTION.read_text(encoding="utf-8").replace(
        "using: composite", "using: composite\n  entrypoint: nope", 1), encoding="utf-8")
    proc = check_jsonschema("vendor.github-actions", bad_action)
    assert proc.returncode != 0, proc.stdout


# ------------------------------------------------------------------------------ paths

def _commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script (split at newlines, &&, ||, ;, |), as word lists."""
    script = re.sub(r"<<-?\s*'?(\w+)'?\n.*?\n\s*\1\n", "\n", script + "\n", flags=re.S)  # heredocs
    script = re.sub(r"\\\n", " ", script)
    out = []
    for line in script.splitlines():
        line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            if words:
                out.append(words)
    return out


def _local_uses(doc: dict) -> list[str]:
    return [s["uses"] for s in steps(doc) if str(s.get("uses", "")).startswith("./")]


def referenced_paths(docs: list[dict] | None = None) -> dict[Path, set[str]]:
    """Every repository path the workflows use -> how ({"run", "arg"}), following scripts."""
    found: dict[Path, set[str]] = {}
    docs = [load(BOOK), load(CI)] if docs is None else list(docs)
    for doc in list(docs):
        for uses in _local_uses(doc):
            action = ROOT / uses / "action.yml"
            found.setdefault(action, set()).add("arg")
            if action.is_file():
                docs.append(load(action))
    queue = [script for doc in docs for script in run_scripts(doc)]
    seen_scripts = set()
    while queue:
        script = queue.pop()
        for words in _commands(script):
            while words and re.match(r"^\w+=", words[0]):  # VAR=value cmd
                words = words[1:]
            for i, word in enumerate(words):
                m = LOCAL_PATH.fullmatch(word)
                if m:
                    path = ROOT / m.group(1)
                elif i > 0 and words[i - 1] in ("-r", "--requirement"):  # pip install -r FILE
                    path = ROOT / word
                else:
                    continue
                found.setdefault(path, set()).add("run" if i == 0 else "arg")
                # Follow scripts one level down (bash x.sh, or x run directly).
                if path.suffix in (".sh", "") and path.is_file() and path not in seen_scripts:
                    seen_scripts.add(path)
                    queue.append(path.read_text(encoding="utf-8"))
    return found


def test_every_local_path_exists_and_direct_commands_are_executable():
    found = referenced_paths()
    names = {p.relative_to(ROOT).as_posix() for p in found}
    # What the workflows are known to use must be among what the scan found.
    for need in (".ci/run", "scripts/setup.sh", "scripts/build_book.sh", "requirements.txt",
                 ".github/actions/metabook-data/action.yml"):
        assert need in names, f"the scan did not find {need}: {sorted(names)}"
    missing = sorted(n for p, n in zip(found, names) if not p.exists())
    assert not missing, f"the workflows use paths that do not exist: {missing}"
    for path, how in found.items():
        if "run" in how:
            rel = path.relative_to(ROOT).as_posix()
            assert path.is_file() and os.access(path, os.X_OK), f"{rel} is run directly but not executable"
            mode = git_mode(path)
            assert mode in (None, "100755"), f"{rel} is {mode} in git: `git update-index --chmod=+x {rel}`"
            assert path.read_text(encoding="utf-8").startswith("#!"), f"{rel} has no #! line"


def test_the_path_scan_bites():
    """On a made-up workflow: a missing script, one run directly, and a heredoc that is skipped."""
    fake = {"jobs": {"j": {"steps": [
        {"run": "FOO=1 scripts/nope.sh --x && bash scripts/setup.sh\n"
                "python - <<'PY'\nopen('tests/inside_heredoc.py')\nPY\n"
                "pip install -r requirements.txt  # and a comment: scripts/commented.sh"},
        {"uses": "./.github/actions/missing"}]}}}
    found = {p.relative_to(ROOT).as_posix(): how for p, how in referenced_paths([fake]).items()}
    assert found.pop("scripts/nope.sh") == {"run"}
    assert found.pop(".github/actions/missing/action.yml") == {"arg"}
    assert found.pop("scripts/setup.sh") == {"arg"} and found.pop("requirements.txt") == {"arg"}
    assert "tests/inside_heredoc.py" not in found and "scripts/commented.sh" not in found
    assert not (ROOT / "scripts" / "nope.sh").exists()


def test_cache_and_hash_inputs_exist():
    for wf in (BOOK, CI):
        text = wf.read_text(encoding="utf-8")
        hashed = re.findall(r"hashFiles\('([^']+)'\)", text)
        deps = [str(s["with"]["cache-dependency-path"]) for s in steps(load(wf))
                if "cache-dependency-path" in s.get("with", {})]
        assert hashed and deps
        for rel in hashed + deps:
            assert (ROOT / rel).is_file(), f"{wf.name} hashes {rel}, which does not exist"


# ------------------------------------------------------------------------------ content

def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_book_workflow_runs_readme_commands_and_deploys_pages():
    wf = load(BOOK)
    on = triggers(wf)
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    commands = readme_commands()
    assert commands == ["bash scripts/setup.sh && bash scripts/build_book.sh", "python -m pytest"]
    runs = [r.strip() for r in run_scripts(wf)]
    for cmd in commands:
        assert cmd in runs, f"book.yml does not run README's command `{cmd}` as a step"
    assert runs.index(commands[0]) < runs.index(commands[1])
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    uses = [s.get("uses", "") for s in build["steps"]]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert uses.index(upload["uses"]) > max(i for i, s in enumerate(build["steps"])
                                            if s.get("run", "").strip() in commands)
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    assert "Chinese edition" in BOOK.read_text(encoding="utf-8")


def test_ci_workflow_runs_ci_script_on_pull_requests():
    wf = load(CI)
    assert "pull_request" in triggers(wf)
    runs = [r.strip() for r in run_scripts(wf)]
    assert runs[-1] == ".ci/run"


@pytest.mark.parametrize("wf", [BOOK, CI], ids=["book.yml", "ci.yml"])
def test_torch_cpu_wheel_and_data_cache(wf):
    doc = load(wf)
    runs = run_scripts(doc)
    torch = [r for r in runs if TORCH in r]
    assert torch and CPU_INDEX in torch[0], f"{wf.name} must install {TORCH} from {CPU_INDEX}"
    assert runs.index(torch[0]) == min(i for i, r in enumerate(runs)
                                       if "setup.sh" in r or ".ci/run" in r or TORCH in r)
    for script in (ROOT / "scripts" / "setup.sh", ROOT / ".ci" / "run"):
        assert TORCH in script.read_text(encoding="utf-8"), f"{script} pins another torch"
    cache = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/metabook"
    uses = [s.get("uses") for s in steps(doc)]
    assert "./.github/actions/metabook-data" in uses
    assert uses.index("./.github/actions/metabook-data") < max(
        i for i, s in enumerate(steps(doc)) if s.get("run", "").strip() in ("python -m pytest", ".ci/run"))
    assert "METABOOK_DATA" not in str(doc.get("env", {})) + str(
        [j.get("env", {}) for j in doc["jobs"].values()]), "set by the data action, not by hand"


# ------------------------------------------------------------------------------ the data action

class _PinnedURLs(http.server.BaseHTTPRequestHandler):
    """Serves <repository>/<commit>/<upstream_path> from the shared data, like raw.githubusercontent."""

    files: dict[str, Path] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        path = self.files.get(unquote(self.path.lstrip("/")))
        self.hits.append(self.path)
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_data_action_downloads_everything_and_sets_metabook_data(shared_data, tmp_path):
    from metabook.data import REGISTRY

    handler = type("Handler", (_PinnedURLs,), {"hits": [], "files": {
        f"{e.repository}/{e.commit}/{e.upstream_path}": shared_data / e.local_path
        for e in REGISTRY.values()}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache, github_env = tmp_path / "cache", tmp_path / "github_env"
    github_env.write_text("")
    env = dict(os.environ, METABOOK_CACHE=str(cache), GITHUB_ENV=str(github_env),
               METABOOK_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}",
               METABOOK_DATA=str(shared_data),  # must be ignored: everything is downloaded
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    (script,) = run_scripts(load(DATA_ACTION))
    try:
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(handler.hits) == len(REGISTRY), "every file must be downloaded once"
    for e in REGISTRY.values():
        data = (cache / e.local_path).read_bytes()
        assert len(data) == e.bytes and hashlib.sha256(data).hexdigest() == e.sha256
    # tests/conftest.py's shared_data fixture accepts the folder, and its SOURCES.tsv is the real one.
    assert (cache / "SOURCES.tsv").read_bytes() == (shared_data / "SOURCES.tsv").read_bytes()
    assert github_env.read_text().splitlines() == [f"METABOOK_DATA={cache}"]
