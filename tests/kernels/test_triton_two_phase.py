"""The two-phase path (backend "triton": a GEMM per chunk of classes, then the Sinkhorn kernel
over the stored sims) under the interpreter: chunk sizes that split the classes unevenly or
hold one class, per-pair independence (bitwise at a fixed chunking, within the GEMM's float32
rounding across chunkings), and its chunk-size setting."""
import pytest
import torch

from tests.helpers.backends_under_test import require
from tests.helpers.checks import check_scores, float32_rtol
from tests.helpers.inputs import case
from ost_kernels import od_solve
from ost_kernels.triton import ops


@pytest.fixture(autouse=True)
def _triton():
    require("triton")


def _mb(classes: int, B: int, T: int, N: int) -> str:
    """OST_KERNELS_CHUNK_MB holding exactly `classes` classes of float32 sims a chunk."""
    return repr(classes * B * T * N * 4 / 2**20)


@pytest.mark.parametrize("classes", [1, 3, 7], ids=lambda c: f"{c}-a-chunk")
def test_chunks_of_classes_match_the_reference(classes, gen, monkeypatch):
    """7 classes in chunks of 1 (seven chunks), 3 (3 + 3 + 1: uneven) and 7 (one chunk)."""
    video, desc, fm, dm = case(3, 7, 5, 3, 24, gen, masks=True)
    monkeypatch.setenv(ops.CHUNK_ENV, _mb(classes, 3, 5, 3))
    assert ops.chunk_classes(3, 5, 3, 7, ops.resolve_chunk_mb()) == classes
    check_scores("triton", video, desc, fm, dm, eps=0.1, tol=1e-3)


def test_chunkings_agree_within_the_gemms_rounding(gen, monkeypatch):
    video, desc, fm, dm = case(4, 9, 6, 4, 32, gen, masks=True)
    fw = torch.rand(4, 6, generator=gen) + 0.1
    results = []
    for classes in (1, 4, 9):
        monkeypatch.setenv(ops.CHUNK_ENV, _mb(classes, 4, 6, 4))
        results.append(od_solve(video, desc, frame_mask=fm, desc_mask=dm, frame_weights=fw, reg_m=(float("inf"), 0.5),
                                eps=0.05, tol=0, max_iter=40, backend="triton"))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=float32_rtol(0.05), atol=float32_rtol(0.05) * 0.1)


def test_a_pair_does_not_depend_on_the_other_pairs_at_a_fixed_chunking(gen, monkeypatch):
    """Other videos' frames and other classes' descriptors changed, the shapes and chunks
    kept: every output of pair (1, 4) stays bitwise the same (its sims come from its own rows
    and columns of each GEMM, and the kernel solves each pair on its own)."""
    monkeypatch.setenv(ops.CHUNK_ENV, _mb(3, 3, 8, 4))
    video, desc, fm, dm = case(3, 7, 8, 4, 32, gen, masks=True)
    op = torch.ops.ost_kernels.od_forward_triton
    args = (None, None, 0.05, 100, 1e-4, float("inf"), float("inf"), True)
    first = op(video, desc, fm, dm, *args)
    other_v, other_d = video.clone(), desc.clone()
    other_v[[0, 2]] = torch.randn(2, 8, 32, generator=gen)
    other_d[[0, 3, 5, 6]] = torch.randn(4, 4, 32, generator=gen)
    second = op(other_v, other_d, fm, dm, *args)
    for name, x, y in zip(("scores", "f", "g", "iterations", "error"), first, second):
        assert torch.equal(x[1, 4], y[1, 4]), name
    assert not torch.equal(first[0], second[0])  # the others did change


def test_chunk_size_setting_is_checked(monkeypatch):
    video, desc, _, _ = case(2, 3, 4, 3, 8, torch.Generator().manual_seed(0))
    for bad in ("lots", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(ops.CHUNK_ENV, bad)
        with pytest.raises(ValueError, match=f"OST_KERNELS_CHUNK_MB must be a number of MiB > 0, got '{bad}'"):
            od_solve(video, desc, backend="triton")
    monkeypatch.delenv(ops.CHUNK_ENV)
    assert ops.resolve_chunk_mb() == ops.DEFAULT_CHUNK_MB == 24.0
    # 256 videos of 32 frames and 4 descriptors: 192 classes of float32 sims in 24 MiB.
    assert ops.chunk_classes(256, 32, 4, 10_000, ops.resolve_chunk_mb()) == 192
    # od_solve's chunk_mb wins over the variable; a bad one is refused by name.
    monkeypatch.setenv(ops.CHUNK_ENV, "1000")
    assert ops.resolve_chunk_mb(2.0) == 2.0
    with pytest.raises(ValueError, match="`chunk_mb` must be a finite number of MiB > 0"):
        od_solve(video, desc, chunk_mb=-1.0, backend="triton")


def test_scores_at_large_eps_read_the_sims_back(gen):
    """The score reads the stored sims again (no recovery from K): float32-exact at eps = 1e8
    even in the scaling form."""
    video, desc, _, _ = case(2, 5, 8, 4, 32, gen)
    want = od_solve(video.double(), desc.double(), eps=1e8, backend="torch")
    got = od_solve(video, desc, eps=1e8, backend="triton")
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("t_lo_first", [False, True])
def test_both_block_orders_give_the_same_results(t_lo_first, gen, monkeypatch):
    """The kernel's 5-D block comes in two orders (one per Triton version's lane assignment,
    sinkhorn._pairs); both rename the same entries: the interpreter runs each."""
    video, desc, fm, dm = case(3, 6, 7, 3, 24, gen, masks=True)
    monkeypatch.setattr(ops, "T_LO_FIRST", t_lo_first)
    check_scores("triton", video, desc, fm, dm, eps=0.1, tol=1e-3)
    check_scores("triton", video, desc, eps=0.05, tol=1e-4)  # the dense launch
