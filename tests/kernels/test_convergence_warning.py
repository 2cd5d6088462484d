"""Pairs that stop at max_iter before meeting tol are reported once, through Python's warnings
(ost_kernels.ConvergenceWarning; ost_kernels/_convergence.py says when it is checked)."""
import warnings

import pytest
import torch

from tests.helpers.inputs import case
from ost_kernels import ConvergenceWarning, od_plan, od_solve
from ost_kernels import _convergence


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(_convergence, "_told", set())


def test_unconverged_pairs_are_reported_once_with_share_and_worst_error(gen):
    video, desc, _, _ = case(3, 5, 8, 4, 16, gen)
    with pytest.warns(ConvergenceWarning) as caught:
        _, info = od_solve(video, desc, eps=1e-3, max_iter=5, backend="cpu", return_info=True)
    stuck = (info.iterations == 5) & (info.marginal_error > 1e-3)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert f"{int(stuck.sum())} of 15 (video, class) pairs" in text
    assert f"worst row-marginal error: {float(info.marginal_error[stuck].max()):.3g}" in text
    assert "max_iter = 5" in text and "tol = 0.001" in text
    with warnings.catch_warnings():  # same settings again: said already
        warnings.simplefilter("error", ConvergenceWarning)
        od_solve(video, desc, eps=1e-3, max_iter=5, backend="cpu")
    with pytest.warns(ConvergenceWarning):  # other settings: said again
        od_solve(video, desc, eps=1e-3, max_iter=6, backend="torch")
    with pytest.warns(ConvergenceWarning, match="od_plan"):
        od_plan(video, desc, eps=1e-3, max_iter=5, backend="cpu")


def test_converged_and_fixed_iteration_solves_say_nothing(gen):
    video, desc, _, _ = case(3, 5, 8, 4, 16, gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        od_solve(video, desc, backend="cpu")  # eps 0.1 converges
        od_solve(video, desc, eps=1e-3, max_iter=5, tol=0.0, backend="cpu")  # fixed iterations asked for
        od_solve(video, desc, eps=1e-3, max_iter=5, grad="implicit", backend="torch", tol=0.0)


def test_relaxed_solves_name_their_stop_rule(gen):
    video, desc, _, _ = case(2, 3, 8, 4, 16, gen)
    with pytest.warns(ConvergenceWarning, match="row marginal's change over the last iteration"):
        od_solve(video, desc, eps=1e-3, max_iter=3, reg_m=0.5, backend="torch")


def test_can_be_silenced(gen):
    video, desc, _, _ = case(2, 3, 8, 4, 16, gen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        od_solve(video, desc, eps=1e-3, max_iter=3, backend="cpu")
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
