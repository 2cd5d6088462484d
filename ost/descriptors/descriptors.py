"""Class names and Spatio-Temporal Descriptors: loading, validation, saving.

Files follow the OST paper's formats:
  * label CSV with header `id,name`, ids 0..A-1 (one row per class);
  * descriptor JSON: an object keyed by the class id as a string ("0", "1", ...) whose value
    is the list of that class's descriptor strings. Where the classes are given by name
    (`ost predict`, ost.Recognizer) it may be keyed by class name instead.

Classes may have different numbers of descriptors (the paper's own stated limitation);
`DescriptorSet.padded` turns them into the padded list + (A, N_max) mask that
`ost_kernels.od_solve` takes as `desc_mask`.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_json, load_json, read_text

KINDS = ("spatio", "temporal")
ASCII_INT = re.compile(r"-?[0-9]+")


class DescriptorError(ValueError):
    """A label or descriptor file is malformed or does not match the classes."""


def load_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a label CSV (`id,name`), indexed by id; ids must be 0..A-1."""
    path = Path(path)
    try:
        text = read_text(path)
    except ValueError as exc:
        raise DescriptorError(str(exc)) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames[:2]] != ["id", "name"]:
        raise DescriptorError(f"{path}: expected a CSV with header 'id,name', got {reader.fieldnames}")
    names: dict[int, str] = {}
    for line, row in enumerate(reader, start=2):
        if not isinstance(row["id"], str) or not ASCII_INT.fullmatch(row["id"].strip()):
            # int() would read other scripts' digits ("٣" is 3): ids are ASCII digits.
            raise DescriptorError(f"{path}:{line}: class id {row['id']!r} is not an integer")
        cid = int(row["id"])
        name = (row["name"] or "").strip()
        if not name:
            raise DescriptorError(f"{path}:{line}: class {cid} has an empty name")
        if cid in names:
            raise DescriptorError(f"{path}:{line}: class id {cid} appears twice")
        names[cid] = name
    if not names:
        raise DescriptorError(f"{path}: no classes")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))[:5]
        raise DescriptorError(f"{path}: class ids must be 0..{len(names) - 1} without gaps; missing e.g. {missing}")
    return [names[i] for i in range(len(names))]


def _descriptor_items(value, what: str, source: str) -> list[str]:
    """One class's descriptors: a non-empty list of non-empty strings, stripped."""
    if not isinstance(value, list) or not value:
        raise DescriptorError(f"{source}: {what} has no descriptors (expected a non-empty list of strings)")
    for k, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise DescriptorError(f"{source}: {what} descriptor {k} is not a non-empty string: {text!r}")
    return [t.strip() for t in value]


def parse_descriptor_object(obj, num_classes: int | None, source: str = "descriptors",
                            order: str = "the label file's order") -> list[list[str]]:
    """Validate a decoded descriptor JSON object; returns one list of strings per class id.
    order: what the ids index, for the error that a key is not an id."""
    if not isinstance(obj, dict):
        raise DescriptorError(f"{source}: expected a JSON object keyed by class id, got {type(obj).__name__}")
    last = f"{num_classes - 1}" if num_classes else "N-1"
    by_id: dict[int, list[str]] = {}
    for key, value in obj.items():
        if not ASCII_INT.fullmatch(key) or str(int(key)) != key or int(key) < 0:
            raise DescriptorError(f"{source}: key {key!r} is not a class id: keys must be class ids 0..{last} "
                                  f"in {order}")
        cid = int(key)
        by_id[cid] = _descriptor_items(value, f"class {cid}", source)
    expected = num_classes if num_classes is not None else (max(by_id) + 1 if by_id else 0)
    missing = sorted(set(range(expected)) - set(by_id))
    extra = sorted(set(by_id) - set(range(expected)))
    if extra:
        raise DescriptorError(f"{source}: unknown class ids {extra[:10]} (there are {expected} classes)")
    if missing:
        raise DescriptorError(f"{source}: missing class ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return [by_id[i] for i in range(expected)]


def class_descriptor_object(obj, names: list[str], source: str, order: str = "the order of the names"
                            ) -> list[list[str]]:
    """Descriptor lists in `names`' order from a decoded JSON object keyed by class name
    ({"riding a bike": [...]}), or by class id in the paper's format (ids 0..N-1 in `order`)."""
    if not isinstance(obj, dict):
        raise DescriptorError(f"{source}: expected a JSON object keyed by class name or id, got {type(obj).__name__}")
    known = set(names)
    if obj and all(key in known for key in obj):
        lacking = [n for n in names if n not in obj]
        if lacking:
            raise DescriptorError(f"{source}: no descriptors for the classes {lacking[:5]}"
                                  f"{' ...' if len(lacking) > 5 else ''}")
        return [_descriptor_items(obj[n], f"class {n!r}", source) for n in names]
    if all(ASCII_INT.fullmatch(key) for key in obj):
        return parse_descriptor_object(obj, len(names), source, order)
    key = next(k for k in obj if k not in known)
    raise DescriptorError(f"{source}: key {key!r} is not one of the {len(names)} classes: keys must be the class "
                          f"names, or class ids 0..{len(names) - 1} in {order} (not both)")


def load_class_descriptors(path: str | os.PathLike, names: list[str], order: str = "the order of the names"
                           ) -> list[list[str]]:
    """Descriptor lists in `names`' order from a JSON file keyed by class name or by class id
    (class_descriptor_object)."""
    try:
        obj = load_json(path)
    except ValueError as exc:
        raise DescriptorError(str(exc)) from None
    return class_descriptor_object(obj, names, str(path), order)


def load_descriptors(path: str | os.PathLike, num_classes: int | None = None,
                     order: str = "the label file's order") -> list[list[str]]:
    """Descriptor lists per class from a JSON file in the paper's format (keyed by class id;
    `order`: what the ids index, for the error)."""
    path = Path(path)
    try:
        obj = load_json(path)
    except ValueError as exc:
        raise DescriptorError(str(exc)) from None
    return parse_descriptor_object(obj, num_classes, str(path), order)


def save_descriptors(path: str | os.PathLike, descriptors: list[list[str]]) -> None:
    """Write descriptor lists (index = class id) in the paper's JSON format."""
    obj = {str(i): list(d) for i, d in enumerate(descriptors)}
    parse_descriptor_object(obj, len(descriptors), str(path))
    atomic_write_json(path, obj)


@dataclass
class DescriptorSet:
    """Class names with their Spatio and Temporal descriptors (index = class id)."""

    class_names: list[str]
    spatio: list[list[str]]
    temporal: list[list[str]]

    def __post_init__(self):
        A = len(self.class_names)
        for kind in KINDS:
            got = len(getattr(self, kind))
            if got != A:
                raise DescriptorError(f"{kind} descriptors are given for {got} classes but there are {A} class names")
            for cid, items in enumerate(getattr(self, kind)):
                if not items:
                    raise DescriptorError(f"{kind} descriptors: class {cid} ({self.class_names[cid]!r}) has none")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_files(cls, labels_csv, spatio_json, temporal_json) -> "DescriptorSet":
        names = load_class_names(labels_csv)
        order = f"the order of {labels_csv}"
        return cls(names, load_descriptors(spatio_json, len(names), order),
                   load_descriptors(temporal_json, len(names), order))

    def save(self, spatio_json, temporal_json) -> None:
        save_descriptors(spatio_json, self.spatio)
        save_descriptors(temporal_json, self.temporal)

    def padded(self, kind: str):
        """(texts, mask): texts is A * N_max strings, row-major (class, descriptor), with ""
        for padding; mask is an (A, N_max) bool list of lists, True = a real descriptor."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        lists = getattr(self, kind)
        n_max = max(len(x) for x in lists)
        texts = [t for items in lists for t in items + [""] * (n_max - len(items))]
        mask = [[k < len(items) for k in range(n_max)] for items in lists]
        return texts, mask
