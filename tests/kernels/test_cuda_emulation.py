"""The CUDA fallback's own structure, run on the CPU (tests/helpers/cuda_emulation/): what the shared
matrices do not reach. Its numerics run in those matrices as backend "cuda-emulated"."""
import pytest
import torch

from tests.helpers.backends_under_test import require
from tests.helpers.checks import check_scores
from tests.helpers.cuda_emulation import backend as emulation
from tests.helpers.inputs import case
from ost_kernels import od_solve
from ost_kernels.backends import cuda

NAME = emulation.NAME

INF = float("inf")


@pytest.fixture
def emulated():
    require(NAME)
    module = emulation.module()
    yield module
    module.set_tile_elements(512)  # the default of emulate.cpp


def test_python_limits_are_the_kernels(emulated):
    assert emulated.limits() == (cuda.MAX_FRAMES, cuda.MAX_DESCRIPTORS)


def test_group_sizes(emulated):
    """Lanes per pair: four frames a lane, a power of two from 1 to 32, so that T <= 8 packs
    eight to thirty-two pairs into a warp and T = 128 fills one."""
    for T in range(1, cuda.MAX_FRAMES + 1):
        G = emulated.group_size_for(T)
        assert G & (G - 1) == 0 and 4 * G >= T and (G == 1 or 4 * G // 2 < T), (T, G)
    assert [emulated.group_size_for(T) for T in (1, 4, 8, 32, 33, 128)] == [1, 1, 2, 8, 16, 32]


@pytest.mark.parametrize("shape", [(2, 3, 128, 16, 16), (3, 2, 97, 9, 8), (2, 2, 5, 13, 32)],
                         ids=["T128N16", "T97N9", "T5N13"])
@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_largest_blocks(emulated, shape, eps, gen):
    """T up to 128 (a warp per pair) and N up to 16 (the widest register arrays), with masks,
    where eps = 0.01 puts log-domain and scaling-form pairs in one warp."""
    check_scores(NAME, *case(*shape, gen, masks=True), eps=eps)


@pytest.mark.parametrize("cache_mb", ["0", "256"], ids=["recomputed-sims", "kept-sims"])
@pytest.mark.parametrize("tile_elements", [1, 40, 1 << 24])
def test_tiling_and_kept_sims_do_not_change_results(emulated, tile_elements, cache_mb, gen, monkeypatch):
    """One pair a tile (one video a tile when the sims are kept: whole rows), tiles cutting
    through videos and classes, one tile for all, the backward recomputing the sims or reading
    the forward's: the scores, iterations and gradients of the default tiling without a cache,
    up to float32 rounding (the GEMMs sum in an order that depends on the tile's shape)."""
    video, desc, fm, dm = case(5, 7, 6, 3, 16, gen, masks=True)
    results = []
    for elements, budget in ((512, "0"), (tile_elements, cache_mb)):
        emulated.set_tile_elements(elements)
        monkeypatch.setenv(cuda.CACHE_BUDGET_ENV, budget)
        v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
        assert cuda.keeps_sims(v, d) == (budget != "0")
        scores, info = od_solve(v, d, frame_mask=fm, desc_mask=dm, backend=NAME, return_info=True)
        grads = torch.autograd.grad(scores, (v, d), torch.ones_like(scores))
        results.append((scores, info.iterations, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_pair_count_not_a_multiple_of_a_warp(emulated, gen):
    """T = 8 puts 16 pairs in a warp; 3 x 7 = 21 pairs leave a warp part empty, whose lanes
    take part in every shuffle without writing anything."""
    video, desc, _, _ = case(3, 7, 8, 4, 16, gen)
    emulated.set_tile_elements(1 << 24)
    full = od_solve(video, desc, backend=NAME)
    alone = torch.stack([od_solve(video[b:b + 1], desc, backend=NAME)[0] for b in range(3)])
    torch.testing.assert_close(full, alone, rtol=1e-6, atol=1e-7)


def test_op_refuses_shapes_over_its_limits(emulated):
    with pytest.raises(RuntimeError, match="take T <= 128 frames and N <= 16 descriptors, got T = 129"):
        torch.ops.ost_kernels_emulated.od_forward(torch.randn(1, 129, 4), torch.randn(2, 3, 4), None, None, None,
                                                  None, 0.1, 10, 0.0, INF, INF, True)
    with pytest.raises(RuntimeError, match="float64 is not supported"):
        torch.ops.ost_kernels_emulated.od_forward(torch.randn(1, 3, 4, dtype=torch.float64),
                                                  torch.randn(2, 3, 4, dtype=torch.float64), None, None, None,
                                                  None, 0.1, 10, 0.0, INF, INF, True)
    with pytest.raises(RuntimeError, match=r"frame_weights must be \(1, 3\)"):
        torch.ops.ost_kernels_emulated.od_forward(torch.randn(1, 3, 4), torch.randn(2, 3, 4), None, None,
                                                  torch.ones(3, 1), None, 0.1, 10, 0.0, 0.5, INF, True)
