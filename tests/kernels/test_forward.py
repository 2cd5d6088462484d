"""Forward correctness of every backend against the float64 NumPy reference."""
import pytest
import torch

from backends_under_test import BACKENDS, require, shape_id
from checks import check_scores
from inputs import case

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
LOW_PRECISION = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tol", TOLS)
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_float32(backend, shape, eps, tol, gen):
    require(backend)
    check_scores(backend, *case(*shape, gen), eps=eps, tol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tol", TOLS)
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape", SHAPES[::2], ids=shape_id)
def test_masks(backend, shape, eps, tol, gen):
    require(backend)
    check_scores(backend, *case(*shape, gen, masks=True), eps=eps, tol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("shape", SHAPES[1::3], ids=shape_id)
def test_low_precision_inputs(backend, shape, dtype, eps, masks, gen):
    """fp16 / bf16 inputs, float32 math: compared with the float64 reference applied to the
    same rounded inputs, at float32 tolerance."""
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(*shape, gen, dtype=dtype, masks=masks)
    check_scores(backend, video, desc, fm, dm, eps=eps, tol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("shape", SHAPES[::3], ids=shape_id)
def test_float64(backend, shape, eps, gen):
    require(backend, dtype=torch.float64)
    video, desc, fm, dm = case(*shape, gen, dtype=torch.float64, masks=True)
    check_scores(backend, video, desc, fm, dm, eps=eps, tol=1e-3, rtol=1e-10)


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
