"""Checkpoints: written atomically, and every one a user passes loaded with weights_only=True.

torch.load(weights_only=True) refuses pickled code, so a checkpoint from elsewhere cannot run
anything on load. Training's own resume state is built to load the same way: the RNG states
are stored as tensors and plain tuples, the config as plain values.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile

import numpy as np
import torch

from ..files import atomic_write


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)


def not_a_torch_file(path) -> str | None:
    """Why the file is not one torch.save writes (None if it may be): torch.save writes a zip
    archive (PyTorch >= 1.6) or, in the legacy format, a pickle (first byte 0x80). Said before
    torch.load, whose error for other files advises re-running with weights_only=False."""
    if os.path.getsize(path) == 0:
        return "an empty file"
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head[:1] == b"\x80":
        return None
    looks = " (it looks like JSON)" if head.lstrip()[:1] in (b"{", b"[") else ""
    return f"not a checkpoint: not a file torch.save writes{looks}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint or state dict file, loaded with weights_only=True (no pickled code runs)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a folder, not a file")
    why = not_a_torch_file(path)
    if why:
        raise ValueError(f"{path}: {why}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's page of advice (re-run with weights_only=False: not for a file from elsewhere)
        # comes down to the one line that says what is in the file.
        found = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?:\. Please|\n|$)", str(exc))
        detail = _one_line(found.group(1)) if found else _one_line(str(exc))[:200]
        raise ValueError(f"{path}: cannot be loaded safely: weights_only=True refuses what it holds "
                         f"({detail})") from None
    except Exception as exc:  # a truncated or damaged archive: torch.load's RuntimeError, EOFError, ...
        raise ValueError(f"{path}: not a checkpoint torch.load can read ({type(exc).__name__}: "
                         f"{_one_line(str(exc))[:200]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint or state dict (a mapping), got {type(obj).__name__}")
    return obj


def model_state_dict(obj: dict, source: str = "checkpoint") -> dict:
    """The model's state dict from a loaded file: a plain state dict or one under 'model'."""
    if "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: not a state dict (nor a checkpoint with one under 'model')")
    return obj


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A model state dict from a checkpoint file (see model_state_dict)."""
    return model_state_dict(load_checkpoint(path), str(path))


def rng_state() -> dict:
    """Python, NumPy and torch RNG states, in types weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
