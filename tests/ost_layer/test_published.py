"""ost.data.published: the manifest matches the paper's files, and download_published fetches,
verifies, skips, re-fetches and retries, against a local HTTP server (no internet)."""
import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ost.data.published import (DEFAULT_BASE_URL, MANIFEST_PATH, OFFICIAL_COMMIT, build_manifest, download_published,
                           load_manifest)

from tests.helpers.paper_data import PAPER_DATA as DATA
from tests.helpers.paper_data import needs_paper_data as needs_data
PREFIX = "/tomchen-ctj/OST/" + OFFICIAL_COMMIT  # the server mimics raw.githubusercontent.com's layout


class FakeUpstream:
    """Serves `root` (local layout) under the manifest's upstream paths on 127.0.0.1.

    corrupt: upstream paths served with wrong bytes; fail: upstream path -> how many requests
    get HTTP 503 first (None: always); hits: requests per upstream path."""

    def __init__(self, root: Path, manifest: dict):
        self.files = {f["upstream"]: root / f["path"] for f in manifest["files"]}
        self.corrupt: set[str] = set()
        self.fail: dict[str, int | None] = {}
        self.hits: Counter = Counter()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.removeprefix(PREFIX + "/")
                upstream.hits[path] += 1
                if path in upstream.fail:
                    left = upstream.fail[path]
                    if left is None or left > 0:
                        if left is not None:
                            upstream.fail[path] = left - 1
                        return self.send_error(503, "busy")
                if path not in upstream.files or not self.path.startswith(PREFIX + "/"):
                    return self.send_error(404)
                body = upstream.files[path].read_bytes()
                if path in upstream.corrupt:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = FakeUpstream(DATA, load_manifest())
    yield server
    server.close()


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_default_url_is_pinned_to_the_manifest_commit():
    manifest = load_manifest()
    assert manifest["commit"] == OFFICIAL_COMMIT and len(OFFICIAL_COMMIT) == 40
    assert DEFAULT_BASE_URL == f"https://raw.githubusercontent.com/tomchen-ctj/OST/{OFFICIAL_COMMIT}"
    # Upstream keeps the split lists under datasets_splits/; everything else keeps its folder.
    for f in manifest["files"]:
        if f["path"].startswith("splits/"):
            assert f["upstream"] == "datasets_splits/" + f["path"].removeprefix("splits/")
        else:
            assert f["upstream"] == f["path"]


@needs_data
def test_manifest_is_built_from_the_shared_files():
    """The shipped manifest is exactly what build_manifest makes of ../shared/ost-data."""
    built = build_manifest(DATA, OFFICIAL_COMMIT)
    assert built == load_manifest(MANIFEST_PATH)
    folders = Counter(f["path"].split("/")[0] for f in built["files"])
    assert set(folders) == {"labels", "descriptors", "splits"} and sum(folders.values()) == 106


@needs_data
def test_full_download_is_byte_exact_and_a_second_run_skips_everything(upstream, tmp_path):
    manifest = load_manifest()
    summary = download_published(tmp_path, base_url=upstream.url, progress=False)
    assert summary == {"downloaded": len(manifest["files"]), "skipped": 0, "dest": str(tmp_path)}
    assert _files_under(tmp_path) == {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        assert (tmp_path / f["path"]).read_bytes() == (DATA / f["path"]).read_bytes(), f["path"]

    hits = sum(upstream.hits.values())
    again = download_published(tmp_path, base_url=upstream.url, progress=False)
    assert again == {"downloaded": 0, "skipped": len(manifest["files"]), "dest": str(tmp_path)}
    assert sum(upstream.hits.values()) == hits  # nothing was requested


@needs_data
def test_a_corrupted_file_is_fetched_again(upstream, tmp_path):
    download_published(tmp_path, base_url=upstream.url, only=["labels/"], progress=False)
    bad = tmp_path / "labels" / "hmdb_51_labels.csv"
    bad.write_text("id,name\n0,not the file\n")
    summary = download_published(tmp_path, base_url=upstream.url, only=["labels/"], progress=False)
    assert summary["downloaded"] == 1 and summary["skipped"] == len(list(DATA.glob("labels/*.csv"))) - 1
    assert bad.read_bytes() == (DATA / "labels" / "hmdb_51_labels.csv").read_bytes()


@needs_data
def test_wrong_bytes_from_the_server_are_refused_and_not_kept(upstream, tmp_path):
    entry = next(f for f in load_manifest()["files"] if f["path"] == "splits/hmdb_splits/val1.txt")
    upstream.corrupt.add(entry["upstream"])
    with pytest.raises(ValueError) as err:
        download_published(tmp_path, base_url=upstream.url, only=["splits/hmdb_splits/"], progress=False)
    message = str(err.value)
    data = (DATA / entry["path"]).read_bytes()
    wrong = hashlib.sha256(data[:-1] + bytes([data[-1] ^ 1])).hexdigest()
    assert entry["path"] in message and entry["sha256"] in message and wrong in message
    assert not (tmp_path / entry["path"]).exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no partial file either


@needs_data
def test_only_restricts_to_the_given_prefixes(upstream, tmp_path):
    only = ["labels/", "descriptors/hmdb/"]
    summary = download_published(tmp_path, base_url=upstream.url, only=only, progress=False)
    expected = {p for p in _files_under(DATA) if p.startswith(tuple(only))}
    assert _files_under(tmp_path) == expected and summary["downloaded"] == len(expected)
    assert any(p.startswith("descriptors/hmdb/") for p in expected)
    with pytest.raises(ValueError, match=r"no published file is under \['nope/'\]"):
        download_published(tmp_path, base_url=upstream.url, only=["nope/"], progress=False)


@needs_data
def test_transient_errors_are_retried_a_bounded_number_of_times(upstream, tmp_path):
    entry = next(f for f in load_manifest()["files"] if f["path"] == "labels/ucf_101_labels.csv")
    upstream.fail[entry["upstream"]] = 2  # two 503s, then the file
    summary = download_published(tmp_path, base_url=upstream.url, only=[entry["path"]], progress=False,
                                 attempts=3, backoff=0)
    assert summary["downloaded"] == 1 and upstream.hits[entry["upstream"]] == 3
    assert (tmp_path / entry["path"]).read_bytes() == (DATA / entry["path"]).read_bytes()

    upstream.fail[entry["upstream"]] = None  # always busy
    upstream.hits.clear()
    (tmp_path / entry["path"]).unlink()
    with pytest.raises(ConnectionError, match=r"ucf_101_labels\.csv: failed after 3 attempts \(HTTP 503"):
        download_published(tmp_path, base_url=upstream.url, only=[entry["path"]], progress=False,
                           attempts=3, backoff=0)
    assert upstream.hits[entry["upstream"]] == 3 and not (tmp_path / entry["path"]).exists()


# -- without the shared files: a small synthetic source -------------------------------------------
@pytest.fixture
def small_source(tmp_path):
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "a.csv").write_text("id,name\n0,a\n")
    (src / "descriptors" / "x").mkdir(parents=True)
    (src / "descriptors" / "x" / "2_descriptors.json").write_text('{"0": ["d1", "d2"]}\n')
    (src / "descriptors" / ".DS_Store").write_bytes(b"\0")
    (src / "splits" / "s").mkdir(parents=True)
    (src / "splits" / "s" / "val.txt").write_text("v.avi 0\n")
    return src


def test_build_manifest_maps_splits_and_leaves_hidden_files_out(small_source):
    manifest = build_manifest(small_source, OFFICIAL_COMMIT)
    assert [(f["path"], f["upstream"]) for f in manifest["files"]] == [
        ("labels/a.csv", "labels/a.csv"),
        ("descriptors/x/2_descriptors.json", "descriptors/x/2_descriptors.json"),
        ("splits/s/val.txt", "datasets_splits/s/val.txt"),
    ]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(b"id,name\n0,a\n").hexdigest()
    with pytest.raises(ValueError, match="40-hex"):
        build_manifest(small_source, "1810ae6")
    with pytest.raises(FileNotFoundError, match="labels"):
        build_manifest(small_source / "labels", OFFICIAL_COMMIT)


def test_missing_upstream_file_is_a_clear_error(small_source, tmp_path):
    manifest = build_manifest(small_source, OFFICIAL_COMMIT)
    server = FakeUpstream(small_source, manifest)
    try:
        manifest["files"][0]["upstream"] = "labels/gone.csv"
        with pytest.raises(FileNotFoundError, match=r"labels/gone\.csv: not found \(HTTP 404\)"):
            download_published(tmp_path / "out", base_url=server.url, manifest=manifest, progress=False)
        assert server.hits["labels/gone.csv"] == 1  # a 404 is not retried
    finally:
        server.close()


@pytest.mark.parametrize("path", ["../evil.csv", "/etc/evil.csv", "labels/../../evil.csv"])
def test_manifest_paths_must_stay_inside_the_destination(small_source, tmp_path, path):
    manifest = build_manifest(small_source, OFFICIAL_COMMIT)
    manifest["files"][0]["path"] = path
    with pytest.raises(ValueError, match="relative path inside"):
        download_published(tmp_path / "out", base_url="http://127.0.0.1:9", manifest=manifest, progress=False)


def test_offline_download_is_one_error_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """No network (here: a port nothing listens on): one `ost: error:` line, exit 2, and no
    empty folders left behind."""
    import socket

    import ost.data.published

    with socket.socket() as s:  # a free port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ost.data.published.time, "sleep", lambda _s: None)  # the back-off, not the test's time
    dest = tmp_path / "ost-data"
    from ost.cli import main

    assert main(["data", "download", "--dest", str(dest), "--only", "labels/", "--base-url",
                 f"http://127.0.0.1:{port}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ost: error: ") and "failed after" in err[0], err
    assert not dest.exists() or not any(dest.rglob("*"))
