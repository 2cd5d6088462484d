"""Re-indexing descriptor files to a subset of classes (the base-to-novel protocol).

The published descriptor files are keyed by the full data set's class id, while a base or
novel run labels its videos with the subset's own ids 0..S-1 (e.g. labels/hmdb_51_base_labels.csv
with the split lists under splits/base2novel_splits/). The two are matched by class name.
"""
from __future__ import annotations

import difflib
import os
from collections import defaultdict

from .descriptors import DescriptorError, load_class_names, load_descriptors, save_descriptors

MAX_LISTED = 10


def _duplicates(names: list[str]) -> dict[str, list[int]]:
    """Names that occur more than once, with their ids."""
    ids = defaultdict(list)
    for i, name in enumerate(names):
        ids[name.strip()].append(i)
    return {name: found for name, found in ids.items() if len(found) > 1}


def subset_to_full_ids(full_names: list[str], subset_names: list[str], *, full_source: str = "full labels",
                       subset_source: str = "subset labels") -> list[int]:
    """For each subset class id, the full set's id of the class with the same name (exact match
    after stripping whitespace).

    Refuses (DescriptorError, a ValueError) subset names missing from the full set (listing
    them, with close matches), a subset naming a class twice, and a subset name that occurs
    more than once in the full set (it would be ambiguous which class's descriptors to take).
    """
    dup_subset = _duplicates(subset_names)
    if dup_subset:
        listed = "; ".join(f"{n!r} (ids {ids})" for n, ids in list(dup_subset.items())[:MAX_LISTED])
        raise DescriptorError(f"{subset_source}: class names appear more than once: {listed}")

    full_ids = defaultdict(list)
    for i, name in enumerate(full_names):
        full_ids[name.strip()].append(i)

    missing = [n for n in subset_names if n.strip() not in full_ids]
    if missing:
        hints = []
        for name in missing[:MAX_LISTED]:
            close = difflib.get_close_matches(name.strip(), list(full_ids), n=1)
            hints.append(f"{name!r}" + (f" (closest: {close[0]!r})" if close else ""))
        more = f" ... ({len(missing)} in all)" if len(missing) > MAX_LISTED else ""
        raise DescriptorError(f"{subset_source}: {len(missing)} class names are not in {full_source}: "
                              f"{', '.join(hints)}{more}")

    ambiguous = {n.strip(): full_ids[n.strip()] for n in subset_names if len(full_ids[n.strip()]) > 1}
    if ambiguous:
        listed = "; ".join(f"{n!r} (ids {ids})" for n, ids in list(ambiguous.items())[:MAX_LISTED])
        raise DescriptorError(f"{full_source}: class names the subset uses appear more than once, so their "
                              f"descriptors are ambiguous: {listed}")
    return [full_ids[n.strip()][0] for n in subset_names]


def reindex_descriptor_lists(full_names: list[str], subset_names: list[str],
                             descriptors: list[list[str]], **sources) -> list[list[str]]:
    """Descriptor lists indexed by the full set's ids -> indexed by the subset's ids."""
    if len(descriptors) != len(full_names):
        raise DescriptorError(f"descriptors cover {len(descriptors)} classes but the full set has {len(full_names)}")
    return [list(descriptors[i]) for i in subset_to_full_ids(full_names, subset_names, **sources)]


def reindex_descriptors(full_labels_csv: str | os.PathLike, subset_labels_csv: str | os.PathLike,
                        descriptors_json: str | os.PathLike, out_json: str | os.PathLike) -> list[list[str]]:
    """Write `descriptors_json` (keyed by `full_labels_csv`'s ids) re-keyed by the ids of
    `subset_labels_csv`, matching classes by name; returns the re-indexed lists.

    The descriptor file must cover exactly the full set's classes. Errors (DescriptorError, a
    ValueError; FileNotFoundError for a missing file) name the file at fault. The output is
    written atomically, and not at all on an error.
    """
    full = load_class_names(full_labels_csv)
    subset = load_class_names(subset_labels_csv)
    descriptors = load_descriptors(descriptors_json, len(full))
    out = reindex_descriptor_lists(full, subset, descriptors, full_source=str(full_labels_csv),
                                   subset_source=str(subset_labels_csv))
    save_descriptors(out_json, out)
    return out
