"""Covering designs for the test matrices: every pair of factor values at least once, instead
of the full product (a matrix of six factors that took ~960 cases takes ~60).

    @pytest.mark.parametrize("backend, dtype, eps", pairwise(backend=BACKENDS, dtype=DTYPES, eps=EPS))

`allowed(values: dict) -> bool` rules out combinations that cannot run (float64 on the Triton
kernels); it is asked about partial rows too, so it must answer for the factors it is given.
The design is deterministic (allpairspy's greedy construction), so a failing case keeps its id.
"""
from __future__ import annotations

from itertools import combinations, product

import pytest
from allpairspy import AllPairs


def _id(value) -> str:
    if isinstance(value, tuple) and len(value) == 5 and all(isinstance(v, int) for v in value):
        return "B{}A{}T{}N{}d{}".format(*value)
    return str(value).removeprefix("torch.")


def pairwise(allowed=None, heavy=None, **factors) -> list:
    """pytest.param rows covering every allowed pair of values of the keyword factors, in the
    keywords' order; rows for which heavy(row as a dict) holds are marked heavy (pytest -m heavy,
    `make test-heavy`)."""
    names = list(factors)

    def ok(row):
        return allowed is None or allowed(dict(zip(names, row)))

    values = [list(v) for v in factors.values()]
    rows = [tuple(r) for r in AllPairs(values, filter_func=ok)]
    # The greedy construction can leave a pair uncovered where the filter blocked its turn:
    # each such pair gets a row of its own (the first allowed completion).
    for name_a, a, name_b, b in uncovered_pairs(rows, allowed, **factors):
        i, j = names.index(name_a), names.index(name_b)
        for row in product(*[[a] if k == i else [b] if k == j else vals for k, vals in enumerate(values)]):
            if ok(row):
                rows.append(row)
                break
    def marks(row):
        return [pytest.mark.heavy] if heavy is not None and heavy(dict(zip(names, row))) else []

    return [pytest.param(*row, id="-".join(map(_id, row)), marks=marks(row)) for row in rows]


def uncovered_pairs(rows, allowed=None, **factors) -> list:
    """The allowed pairs of factor values that no row holds (empty for a covering design)."""
    names = list(factors)
    have = {(i, row[i], j, row[j]) for row in rows for i, j in combinations(range(len(names)), 2)}
    missing = []
    for i, j in combinations(range(len(names)), 2):
        for a in factors[names[i]]:
            for b in factors[names[j]]:
                if allowed is not None and not allowed({names[i]: a, names[j]: b}):
                    continue
                if (i, a, j, b) not in have:
                    missing.append((names[i], a, names[j], b))
    return missing
