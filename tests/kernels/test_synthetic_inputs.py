"""`clip_like_inputs`, the benchmarks' inputs: the cosine statistics its docstring promises (so
a benchmark's iteration counts are those of CLIP-like features), classes that the solver
separates, and a refusal of weights that leave no room for noise."""
import pytest
import torch

from ost_kernels import clip_like_inputs, od_solve


def test_cosines_follow_the_documented_mix():
    video, desc, labels = clip_like_inputs(6, 5, T=8, N=4, d=2048, seed=3)
    assert video.shape == (6, 8, 2048) and desc.shape == (5, 4, 2048) and labels.tolist() == [0, 1, 2, 3, 4, 0]
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(6, 8))
    torch.testing.assert_close(desc.norm(dim=-1), torch.ones(5, 4))
    cos = torch.einsum("btd,and->batn", video, desc)  # (B, A, T, N)
    own = torch.nn.functional.one_hot(labels, 5).bool()  # (B, A)
    # In d = 2048 the noise terms are ~1/sqrt(d) = 0.02: means within 0.02 of w_shared (+ w_class).
    assert abs(cos[~own].mean().item() - 0.25) < 0.02
    assert abs(cos[own].mean().item() - 0.60) < 0.02


def test_the_solver_tells_the_classes_apart_and_the_seed_repeats():
    video, desc, labels = clip_like_inputs(12, 7, T=8, N=4, d=256, w_class=0.2, dtype=torch.float64)
    assert video.dtype == desc.dtype == torch.float64
    assert torch.equal(od_solve(video, desc, backend="torch").argmax(dim=1), labels)
    again, _, _ = clip_like_inputs(12, 7, T=8, N=4, d=256, w_class=0.2, dtype=torch.float64)
    other, _, _ = clip_like_inputs(12, 7, T=8, N=4, d=256, w_class=0.2, dtype=torch.float64, seed=1)
    assert torch.equal(video, again) and not torch.equal(video, other)


@pytest.mark.parametrize("w_shared, w_class", [(0.5, 0.5), (-0.1, 0.3), (0.3, -0.1)])
def test_weights_that_leave_no_noise_are_refused(w_shared, w_class):
    with pytest.raises(ValueError, match="w_shared \\+ w_class < 1"):
        clip_like_inputs(2, 2, w_shared=w_shared, w_class=w_class)
