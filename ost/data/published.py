"""The OST paper's published data files (label CSVs, descriptor files, split lists), fetched
from the official repository at a pinned commit and checked against SHA-256 hashes.

The files are not part of this package (they belong to the paper's repository, MIT licence);
`ost/data/published_manifest.json` lists each one with its path in the official repository, its
path under the destination folder, its size and its SHA-256. The two differ only for the split
lists, which upstream keeps under `datasets_splits/` and which land under `splits/` here:

    labels/<file>.csv        <- labels/<file>.csv
    descriptors/<...>.json   <- descriptors/<...>.json
    splits/<...>.txt         <- datasets_splits/<...>.txt

To regenerate the manifest from a folder holding the files in the local layout:

    from ost.files import atomic_write_json
    from ost.data.published import MANIFEST_PATH, OFFICIAL_COMMIT, build_manifest
    atomic_write_json(MANIFEST_PATH, build_manifest("/path/to/ost-data", OFFICIAL_COMMIT))
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..files import atomic_write

REPOSITORY = "tomchen-ctj/OST"
# `git log` of the official repository: 1810ae6 "Modify link bug", 2024-04-27 (its HEAD).
OFFICIAL_COMMIT = "1810ae6e56ebcb549b333ea349a8ca80d41a62d1"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{OFFICIAL_COMMIT}"
MANIFEST_PATH = Path(__file__).with_name("published_manifest.json")

# Local folder -> folder in the official repository.
UPSTREAM_FOLDERS = {"labels/": "labels/", "descriptors/": "descriptors/", "splits/": "datasets_splits/"}

# HTTP statuses worth another try: the server or something on the way is busy or timed out.
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 16


# -- manifest ---------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def upstream_path(local: str) -> str:
    """The official repository's path of a file whose local path is `local`."""
    for mine, theirs in UPSTREAM_FOLDERS.items():
        if local.startswith(mine):
            return theirs + local[len(mine):]
    raise ValueError(f"{local}: not under one of the published folders {sorted(UPSTREAM_FOLDERS)}")


def build_manifest(source_dir: str | os.PathLike, commit: str) -> dict:
    """The manifest of every file under `source_dir`'s labels/, descriptors/ and splits/
    (hidden files such as .DS_Store left out), published at `commit` of the official repository."""
    source_dir = Path(source_dir)
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(f"commit must be a full 40-hex git commit hash, got {commit!r}")
    files = []
    for folder in UPSTREAM_FOLDERS:
        root = source_dir / folder
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: folder not found (expected labels/, descriptors/ and splits/ "
                                    f"under {source_dir})")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            local = path.relative_to(source_dir).as_posix()
            if any(part.startswith(".") for part in PurePosixPath(local).parts):
                continue
            files.append({"path": local, "upstream": upstream_path(local),
                          "size": path.stat().st_size, "sha256": sha256_file(path)})
    if not files:
        raise ValueError(f"{source_dir}: no files under {', '.join(UPSTREAM_FOLDERS)}")
    return {"repository": REPOSITORY, "commit": commit, "licence": "MIT",
            "folders": dict(UPSTREAM_FOLDERS), "files": files}


def _check_entry(entry, source: str) -> dict:
    """One manifest entry, validated: paths relative and inside the destination (a manifest is
    data, and must not make the download write outside `dest`)."""
    if not isinstance(entry, Mapping) or not {"path", "upstream", "sha256"} <= set(entry):
        raise ValueError(f"{source}: each file entry needs 'path', 'upstream' and 'sha256', got {entry!r}")
    for key in ("path", "upstream"):
        parts = PurePosixPath(entry[key]).parts
        if not parts or entry[key].startswith("/") or ".." in parts or "\\" in entry[key]:
            raise ValueError(f"{source}: file entry {key} {entry[key]!r} must be a relative path inside the folder")
    if not re.fullmatch(r"[0-9a-f]{64}", str(entry["sha256"])):
        raise ValueError(f"{source}: {entry['path']}: sha256 {entry['sha256']!r} is not a hex SHA-256")
    return dict(entry)


def load_manifest(manifest: Mapping | str | os.PathLike | None = None) -> dict:
    """The manifest (default: the one shipped with the package), validated."""
    if manifest is None:
        manifest = MANIFEST_PATH
    if isinstance(manifest, Mapping):
        source, obj = "manifest", dict(manifest)
    else:
        source = str(manifest)
        if not Path(manifest).is_file():
            raise FileNotFoundError(f"manifest {manifest} does not exist")
        with open(manifest, encoding="utf-8") as fh:
            obj = json.load(fh)
    if not isinstance(obj.get("files"), list) or not obj["files"]:
        raise ValueError(f"{source}: no 'files' list")
    obj["files"] = [_check_entry(e, source) for e in obj["files"]]
    return obj


def select_files(files: list[dict], only: Iterable[str] | str | None) -> list[dict]:
    """The entries whose local path starts with one of the prefixes in `only` (all if None)."""
    if only is None:
        return list(files)
    prefixes = [only] if isinstance(only, str) else list(only)
    chosen = [f for f in files if any(f["path"].startswith(p) for p in prefixes)]
    if not chosen:
        folders = sorted({f["path"].split("/")[0] + "/" for f in files})
        raise ValueError(f"no published file is under {prefixes}; the folders are {folders} "
                         f"(e.g. 'labels/', 'descriptors/hmdb/', 'splits/ucf_splits/')")
    return chosen


# -- download ---------------------------------------------------------------------------------
class _TransientError(Exception):
    """A failure that another attempt may not see (busy server, dropped connection)."""


# Failures another attempt may not see: refused or dropped connections, timeouts, bodies cut
# short. (Other OSErrors, e.g. a full disk while writing, are not retried.)
_NETWORK_ERRORS = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError)


def _stream(url: str, fh, digest, bar, timeout: float) -> None:
    """Copy `url`'s body to `fh`, feeding `digest` and `bar`; transient failures raise
    _TransientError, a missing file FileNotFoundError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                digest.update(block)
                bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if exc.code in TRANSIENT_HTTP:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from None
        if exc.code == 404:
            raise FileNotFoundError(f"{url}: not found (HTTP 404)") from None
        raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except _NETWORK_ERRORS as exc:
        raise _TransientError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


def _download_once(url: str, target: Path, entry: dict, bar, timeout: float) -> None:
    """One attempt: stream to a temporary file beside `target`, renamed to it only if the
    SHA-256 matches the manifest (atomic_write removes the temporary file on any error)."""
    digest = hashlib.sha256()

    def write(fh):
        _stream(url, fh, digest, bar, timeout)
        got = digest.hexdigest()
        if got != entry["sha256"]:
            raise ValueError(f"{entry['path']}: downloaded from {url} has SHA-256 {got}, "
                             f"the manifest expects {entry['sha256']}; the file was not kept")

    atomic_write(target, write, binary=True)


def _fetch_verified(url: str, target: Path, entry: dict, bar, attempts: int, backoff: float,
                    timeout: float) -> None:
    """_download_once, retried on transient failures with exponential back-off."""
    for attempt in range(1, attempts + 1):
        start = bar.n
        try:
            return _download_once(url, target, entry, bar, timeout)
        except _TransientError as exc:
            bar.update(start - bar.n)  # this attempt's bytes will be fetched again
            if attempt == attempts:
                raise ConnectionError(f"{url}: failed after {attempts} attempts ({exc})") from None
            time.sleep(backoff * 2 ** (attempt - 1))


def download_published(dest: str | os.PathLike, *, base_url: str = DEFAULT_BASE_URL,
                       only: Iterable[str] | str | None = None, progress: bool = True,
                       manifest: Mapping | str | os.PathLike | None = None, attempts: int = 4,
                       backoff: float = 1.0, timeout: float = 60.0) -> dict:
    """Fetch the paper's published files into `dest` (labels/, descriptors/, splits/).

    Each manifest file is fetched from `{base_url}/{upstream path}` and kept only if its SHA-256
    matches; files already at `dest` with the right hash are skipped, ones with a wrong hash
    are fetched again. `only`: local path prefixes to restrict to (e.g. ["labels/",
    "descriptors/hmdb/"]). Transient HTTP failures are retried (`attempts` tries in all, waiting
    backoff * 1, 2, 4 ... seconds between them).

    Returns {"downloaded": n, "skipped": n, "dest": str}. Raises ValueError on a hash mismatch
    (naming the file and both hashes), FileNotFoundError on HTTP 404, ConnectionError when the
    attempts run out.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    dest = Path(dest)
    entries = select_files(load_manifest(manifest)["files"], only)
    base_url = base_url.rstrip("/")

    todo, skipped = [], 0
    for entry in entries:
        target = dest / entry["path"]
        if target.is_file():
            if sha256_file(target) == entry["sha256"]:
                skipped += 1
                continue
            # A file that does not match the manifest is removed first, so that `dest` never
            # holds a wrong copy, even if this download then fails.
            target.unlink()
        todo.append(entry)

    # Folders this call creates are removed again if it fails and leaves them empty: a failed
    # download leaves nothing behind.
    created = sorted({p for e in todo for p in (dest / e["path"]).parents if not p.exists()},
                     key=lambda p: len(p.parts), reverse=True)
    try:
        _fetch_all(todo, dest, base_url, progress, attempts, backoff, timeout)
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return {"downloaded": len(todo), "skipped": skipped, "dest": str(dest)}


def _fetch_all(todo, dest: Path, base_url: str, progress: bool, attempts: int, backoff: float, timeout: float):
    total = sum(int(e.get("size", 0)) for e in todo) or None
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="published files",
              disable=not progress or not todo) as bar:
        for entry in todo:
            bar.set_postfix_str(entry["path"], refresh=False)
            url = f"{base_url}/{urllib.parse.quote(entry['upstream'], safe='/')}"
            _fetch_verified(url, dest / entry["path"], entry, bar, attempts, backoff, timeout)
