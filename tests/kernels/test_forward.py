"""Forward correctness of every backend against the float64 NumPy reference: a covering design
over backend, dtype, shape, masks, eps and tol, then the stop rule's cap and plain dot products."""
import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.checks import check_scores
from tests.helpers.covering import pairwise, uncovered_pairs
from tests.helpers.inputs import case
from ost_kernels.backends import REGISTRY

# (B, A, T, N, d): deliberately odd sizes; together they cover T in {1, 3, 8, 17, 32},
# N in {1, 2, 4, 5, 8} and d in {1, 7, 64, 512}.
SHAPES = [
    (2, 3, 1, 4, 7),
    (3, 2, 3, 1, 64),
    (2, 5, 8, 2, 512),
    (3, 3, 17, 5, 64),
    (1, 4, 32, 8, 7),
    (4, 1, 8, 4, 1),
    (2, 2, 3, 8, 512),
    (5, 3, 17, 1, 1),
    (2, 2, 32, 4, 64),
    (3, 4, 1, 1, 64),
    (2, 3, 17, 2, 7),
    (1, 2, 32, 5, 512),
]
EPS = [0.01, 0.05, 0.1, 0.5, 1.0]
TOLS = [0.0, 1e-3]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _runs(case: dict) -> bool:
    """Combinations a backend can take (the Triton and CUDA kernels take no float64)."""
    return "backend" not in case or "dtype" not in case or case["dtype"] in REGISTRY[case["backend"]].dtypes


FACTORS = dict(backend=BACKENDS, dtype=DTYPES, shape=SHAPES, masks=[False, True], eps=EPS, tol=TOLS)
# Every pair of factor values at least once (tests/helpers/covering.py): ~60 cases where the
# full product was ~960 (test_covering_design_covers_every_pair checks it).
MATRIX = pairwise(_runs, **FACTORS)


@pytest.mark.parametrize("backend, dtype, shape, masks, eps, tol", MATRIX)
def test_forward_matches_the_reference(backend, dtype, shape, masks, eps, tol, gen):
    """Scores, errors and iterations against the float64 reference on the same (rounded)
    inputs: float32 tolerance for float32 / float16 / bfloat16 inputs (float32 math), 1e-10
    for float64."""
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(*shape, gen, dtype=dtype, masks=masks)
    check_scores(backend, video, desc, fm, dm, eps=eps, tol=tol, rtol=1e-10 if dtype == torch.float64 else None)


def test_covering_design_covers_every_pair():
    assert not uncovered_pairs([p.values for p in MATRIX], _runs, **FACTORS)
    assert len(MATRIX) < 100


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_iter", [1, 2, 7])
def test_max_iter_caps_iterations(backend, max_iter, gen):
    require(backend)
    check_scores(backend, *case(3, 4, 8, 4, 64, gen, masks=True), eps=0.05, max_iter=max_iter, tol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unnormalized_inputs_use_plain_dot_products(backend, gen):
    require(backend)
    video, desc, fm, dm = case(3, 2, 8, 4, 64, gen, masks=True)
    video = video / video.norm(dim=-1, keepdim=True)
    desc = desc / desc.norm(dim=-1, keepdim=True)
    check_scores(backend, video, desc, fm, dm, normalize=False)
    # Vectors that are not unit length are taken as they are: sim is the raw dot product.
    check_scores(backend, 0.5 * video, desc, fm, dm, normalize=False)
