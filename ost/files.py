"""Reading the user's text files with errors that name them, and writing files so that readers
(and a resumed run) never see half of one."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, IO


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents; ValueError naming the file (and the byte) when it is not."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a file") from None


def _no_duplicate_keys(path):
    def hook(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"{path}: key {key!r} appears twice in one object (which one is meant?)")
            seen[key] = value
        return seen

    return hook


def load_json(path: str | os.PathLike):
    """A JSON file, refusing what json.load would take silently or crash on: a key twice in one
    object (json keeps the last), nesting too deep to decode, text that is not UTF-8."""
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call write(fh) on a temporary file beside `path`, then rename it to `path`: the file is
    either the old one or the complete new one, even if the process is killed meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    def write(fh):
        json.dump(obj, fh, indent=1, ensure_ascii=False)
        fh.write("\n")

    return atomic_write(path, write)


@contextmanager
def output_folder(path: str | os.PathLike):
    """A folder to write files into, created if need be; if this created it and the work inside
    fails or is interrupted before a file lands there, it is removed again (no empty folder)."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created and not any(path.iterdir()):
            path.rmdir()
        raise


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_folder(folder: Path, what: str, path) -> None:
    """The folder `path` goes in, or its nearest existing ancestor (created when writing), must
    be a folder this process can write in."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ValueError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: no permission to write in {existing}")


def check_output_file(path: str | os.PathLike | None, what: str) -> None:
    """Refuse, before any work, an output file that could not be written (`what`: the flag or
    setting that names it): a folder in its place, a file where one of its folders should be."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {path}: is a folder; give a file name")
    _writable_folder(p.parent, what, path)


def check_output_folder(path: str | os.PathLike | None, what: str) -> None:
    """Refuse, before any work, an output folder that could not be written: a file in its
    place, a file where one of its parents should be."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {path}: is a file, not a folder")
    _writable_folder(p, what, path)
