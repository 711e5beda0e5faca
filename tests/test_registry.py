"""The registry and fetch(), driven through the real download path on a loopback HTTP server."""
import csv
import os
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metabook.data import registry
from metabook.data.registry import (REGISTRY, ChecksumError, DataUnavailableError, fetch,
                                    fetch_all)

SMALL = "protaugment/HWU64/few_shot/01/labels.train.txt"
BIG = "clinc150/data_full.json"  # 2.5 MB: several reads, so a drop happens mid-stream


class Loopback:
    """Serves the shared data at ``/<repository>/<commit>/<upstream_path>``.

    ``behave[local_path]`` is ``"corrupt"``, ``"404"`` or ``"drop"`` to misbehave.
    """

    def __init__(self, root: Path) -> None:
        # built from the fields, independently of DataFile.url()
        self.local = {f"/{e.repository}/{e.commit}/{e.upstream_path}": e.local_path
                      for e in REGISTRY.values()}
        self.routes = {url: root / local for url, local in self.local.items()}
        self.behave: dict = {}
        self.hits: list = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server.hits.append(server.local.get(self.path, self.path))
                mode = server.behave.get(server.local.get(self.path))
                if self.path not in server.routes or mode == "404":
                    self.send_error(404, "Not Found")
                    return
                body = server.routes[self.path].read_bytes()
                if mode == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop":  # half the body, then hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(shared_data):
    srv = Loopback(shared_data)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path, server):
    """No local data, a fresh cache, the loopback server as base URL, no proxies."""
    monkeypatch.delenv("METABOOK_DATA", raising=False)
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("METABOOK_BASE_URL", server.base_url)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server.behave.clear()
    server.hits.clear()


def files_under(path: Path) -> list:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ------------------------------------------------------------------ the table

def test_registry_matches_sources_tsv(shared_data):
    with open(shared_data / "SOURCES.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == len(REGISTRY) == 91
    for r in rows:
        e = REGISTRY[r["local_path"]]
        assert (e.repository, e.commit, e.upstream_path, e.sha256, e.bytes, e.license) == (
            r["repository"], r["commit"], r["upstream_path"], r["sha256"], int(r["bytes"]),
            r["license"])
        assert e.url(registry.DEFAULT_BASE_URL) == "https://raw.githubusercontent.com/" + (
            f"{r['repository']}/{r['commit']}/{r['upstream_path']}")


def test_registry_covers_the_datasets():
    need = ["banking77/train.csv", "banking77/test.csv", "banking77/categories.json",
            "clinc150/data_full.json", "clinc150/domains.json", "clinc150/all_wiki_sents.txt",
            "hwu64/LICENSE"]
    for ds in ("BANKING77", "HWU64", "OOS"):
        need += [f"protaugment/{ds}/full.jsonl", f"protaugment/{ds}/raw.txt"]
        need += [f"protaugment/{ds}/few_shot/0{s}/labels.{p}.txt"
                 for s in range(1, 6) for p in ("train", "valid", "test")]
    assert set(need) <= set(REGISTRY)


def test_registry_covers_fewshot_intent(shared_data):
    need = [f"fewshot_intent/{ds}/{split}/{name}"
            for ds in ("BANKING77", "CLINC150", "HWU64")
            for split in ("train", "valid", "test", "train_5", "train_10")
            for name in ("seq.in", "label")]
    assert len(need) == 30 and set(need) <= set(REGISTRY)
    seq = fetch("fewshot_intent/BANKING77/train_5/seq.in", data_dir=shared_data)
    label = fetch("fewshot_intent/BANKING77/train_5/label", data_dir=shared_data)
    assert seq == shared_data / "fewshot_intent/BANKING77/train_5/seq.in"
    n = len(seq.read_text(encoding="utf-8").splitlines())
    assert n > 0 and n == len(label.read_text(encoding="utf-8").splitlines())


def test_unknown_path_suggests():
    with pytest.raises(ValueError, match="did you mean 'banking77/train.csv'"):
        fetch("banking77/trian.csv")


# ------------------------------------------------------------------ downloads

def test_download_good_file(server, shared_data, tmp_path):
    cache = tmp_path / "cache"
    path = fetch(BIG, progress=True)
    assert path == cache / BIG
    assert path.read_bytes() == (shared_data / BIG).read_bytes()
    assert server.hits == [BIG]
    assert files_under(cache) == [path]  # no temp file left behind
    assert fetch(BIG) == path and server.hits == [BIG]  # second call: no request
    registry._VERIFIED.clear()  # a new process: re-verifies the cache, still no request
    assert fetch(BIG) == path and server.hits == [BIG]


def test_cache_dir_and_base_url_arguments(server, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_BASE_URL", "http://127.0.0.1:9")  # the argument wins
    path = fetch(SMALL, cache_dir=tmp_path / "elsewhere", base_url=server.base_url, progress=False)
    assert path == tmp_path / "elsewhere" / SMALL and server.hits == [SMALL]


def test_corrupt_download_leaves_nothing(server, tmp_path):
    server.behave[BIG] = "corrupt"
    with pytest.raises(ChecksumError, match="clinc150/data_full.json") as err:
        fetch(BIG, progress=False)
    assert server.base_url in str(err.value) and "SHA-256" in str(err.value)
    assert files_under(tmp_path / "cache") == []


def test_404_is_a_clear_error(server, tmp_path):
    server.behave[SMALL] = "404"
    with pytest.raises(DataUnavailableError, match="HTTP 404") as err:
        fetch(SMALL, progress=False)
    assert SMALL in str(err.value) and "METABOOK_DATA" in str(err.value)
    assert files_under(tmp_path / "cache") == []


def test_dropped_connection_leaves_nothing(server, tmp_path):
    server.behave[BIG] = "drop"
    with pytest.raises(DataUnavailableError, match="connection closed after"):
        fetch(BIG, progress=False)
    assert files_under(tmp_path / "cache") == []


def test_offline_with_nothing_local(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataUnavailableError) as err:
        fetch(SMALL, base_url=f"http://127.0.0.1:{port}", progress=False, timeout=5)
    msg = str(err.value)
    for hint in (SMALL, "METABOOK_DATA", "data_dir", "online", str(tmp_path / "cache")):
        assert hint in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one error, not a chain
    assert files_under(tmp_path / "cache") == []


def test_fetch_all_prefix(server):
    paths = fetch_all("protaugment/HWU64/few_shot/01", progress=False)
    assert sorted(p.name for p in paths) == ["labels.test.txt", "labels.train.txt",
                                             "labels.valid.txt"]
    assert len(server.hits) == 3
    with pytest.raises(ValueError):
        fetch_all("nope/")


def test_load_dataset_through_download(server):
    from metabook.data import load_dataset
    ds = load_dataset("hwu64", progress=False)
    assert len(ds) == 11036 and ds.splits() == ["01", "02", "03", "04", "05"]
    assert len(server.hits) == 16  # full.jsonl + 5 splits x 3 files
    load_dataset("hwu64")
    assert len(server.hits) == 16


# ------------------------------------------------------------------ local folders

def test_data_dir_then_env_then_cache(server, shared_data, tmp_path, monkeypatch):
    assert fetch(SMALL, data_dir=shared_data) == shared_data / SMALL
    monkeypatch.setenv("METABOOK_DATA", str(shared_data))
    assert fetch(SMALL) == shared_data / SMALL
    mine = tmp_path / "mine"
    (mine / SMALL).parent.mkdir(parents=True)
    shutil.copy(shared_data / SMALL, mine / SMALL)
    assert fetch(SMALL, data_dir=mine) == mine / SMALL  # the argument wins over the env
    assert fetch(BIG, data_dir=mine) == shared_data / BIG  # missing there: falls through
    assert server.hits == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("where", ["data_dir", "METABOOK_DATA"])
def test_bad_local_copy_is_an_error(server, shared_data, tmp_path, monkeypatch, damage, where):
    root = tmp_path / "data"
    bad = root / BIG
    bad.parent.mkdir(parents=True)
    body = (shared_data / BIG).read_bytes()
    bad.write_bytes(body[:1000] if damage == "truncate" else b"X" + body[1:])
    fetch(BIG, progress=False)  # a good copy in the cache must not be used instead
    kwargs = {"data_dir": root} if where == "data_dir" else {}
    if where == "METABOOK_DATA":
        monkeypatch.setenv("METABOOK_DATA", str(root))
    with pytest.raises(ChecksumError, match=where) as err:
        fetch(BIG, **kwargs)
    assert str(bad) in str(err.value) and err.value.path == bad
    assert bad.stat().st_size == (1000 if damage == "truncate" else len(body))  # untouched


def test_bad_cache_copy_is_reported_and_replaced(server, shared_data, tmp_path):
    cached = tmp_path / "cache" / SMALL
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=str(cached)):
        assert fetch(SMALL, progress=False) == cached
    assert cached.read_bytes() == (shared_data / SMALL).read_bytes()
    assert server.hits == [SMALL]


def test_verification_is_memoized(shared_data, tmp_path, monkeypatch):
    calls = []
    real = registry._sha256_file
    monkeypatch.setattr(registry, "_sha256_file", lambda p: calls.append(p) or real(p))
    root = tmp_path / "data"
    (root / SMALL).parent.mkdir(parents=True)
    shutil.copy(shared_data / SMALL, root / SMALL)
    for _ in range(3):
        fetch(SMALL, data_dir=root)
    assert len(calls) == 1
    st = (root / SMALL).stat()  # same size, new mtime: hashed again, and caught
    (root / SMALL).write_bytes(b"x" * st.st_size)
    os.utime(root / SMALL, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ChecksumError):
        fetch(SMALL, data_dir=root)
    assert len(calls) == 2
