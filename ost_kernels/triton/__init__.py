"""The Triton kernels (backend "triton"). Nothing is imported here: ost_kernels.triton.ops,
which imports Triton and registers the ops, is loaded the first time the backend is asked for."""
