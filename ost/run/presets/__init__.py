"""The paper's runs as YAML presets (this folder), usable by name: `ost train --config
k400_zero_shot`. `ost presets` lists them. Each sets `data_dir` to `ost-data`, the folder
`ost data download --dest ost-data` fills with the paper's labels, descriptors and split lists;
videos come from `root`, which the user sets.
"""
from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent


def list_presets() -> dict[str, str]:
    """{name: first comment line} of every bundled preset (files starting with _ are bases)."""
    out = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        first = next((l[1:].strip() for l in path.read_text().splitlines() if l.startswith("#")), "")
        out[path.stem] = first
    return out


def preset_path(name_or_path: str) -> Path:
    """A config file's path: the path itself when it exists, else the bundled preset of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = PRESETS_DIR / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    raise FileNotFoundError(f"config {name_or_path}: no such file, nor a bundled preset "
                            f"(presets: {', '.join(list_presets())})")
