// The op schema of ost_kernels, the C++ mirror of ost_kernels/contract.py (which writes it
// once for Python: FORWARD_SCHEMA / BACKWARD_SCHEMA; tests/kernels/test_contract.py checks
// these strings against it). csrc/ops.cpp defines the ops with them, and the tests' emulation
// of the CUDA code (tests/helpers/cuda_emulation/) its own copy of the library.
//
// Shapes: video (B, T, d), desc (A, N, d), frame_mask (B, T) bool, desc_mask (A, N) bool.
// od_forward returns scores (B, A), the Sinkhorn potentials f (B, A, T) and g (B, A, N) with
// P_ij = exp((f_i + g_j - C_ij) / eps), the iterations used (B, A) int32, the final
// row-marginal error (B, A), and a cache for the backward: with keep_cache, the sims
// (B * T, A * N) that the backend's backward then reuses instead of recomputing them (the CPU
// kernel keeps cosines, the CUDA kernel raw dot products), zero-size otherwise. Scores,
// potentials, errors and cache are float64 for float64 inputs and float32 otherwise.
// od_backward turns grad_scores (B, A) into gradients of video and desc with the plan held
// constant, computing only those asked for (video_grad, desc_grad); a gradient not asked for
// is returned as a zero-size tensor.
//
// The solver's scalars (contract.SOLVER_SCALARS) are listed in C++ here only: in the schema
// string, in SolverScalars and in forward_entry, which turns an op call into a backend's
// forward(tensors..., const SolverScalars&, keep_cache). A backend's implementation and the
// loops read the scalars from the struct, so a new one is added in this file and read where
// it is used.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace ost_kernels {

constexpr const char* kForwardSchema =
    "od_forward(Tensor video, Tensor desc, Tensor? frame_mask, Tensor? desc_mask, Tensor? frame_weights, "
    "Tensor? desc_weights, float eps, int max_iter, float tol, float reg_frames, float reg_desc, bool normalize, "
    "float chunk_mb=0., bool keep_cache=False, bool potentials=True) "
    "-> (Tensor scores, Tensor f, Tensor g, Tensor iterations, Tensor error, Tensor cache)";
constexpr const char* kBackwardSchema =
    "od_backward(Tensor grad_scores, Tensor video, Tensor desc, Tensor? frame_mask, "
    "Tensor? desc_mask, Tensor f, Tensor g, Tensor cache, float eps, bool normalize, bool video_grad, "
    "bool desc_grad) "
    "-> (Tensor grad_video, Tensor grad_desc)";

// The solver scalars of one od_forward call, in the schema's order.
struct SolverScalars {
  double eps;          // entropic regularization, > 0
  int64_t max_iter;    // iterations at most, >= 1
  double tol;          // per-pair stop rule; 0 = exactly max_iter iterations
  double reg_frames;   // KL penalty rho of the frame side; inf = exact
  double reg_desc;     // ... of the descriptor side
  bool normalize;      // cosines (true) or plain dot products
  double chunk_mb;     // MiB of float32 sims a GPU tile holds; 0 = the backend's default
};

using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// forward(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, scalars, keep_cache,
// potentials): with potentials false, f and g come back zero-size and are never written.
using ForwardFn = ForwardResult (*)(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, const SolverScalars&, bool, bool);

// The od_forward kernel registered for a backend whose implementation is Impl:
// m.impl("od_forward", &forward_entry<&my_forward>).
template <ForwardFn Impl>
ForwardResult forward_entry(const at::Tensor& video, const at::Tensor& desc,
                            const std::optional<at::Tensor>& frame_mask, const std::optional<at::Tensor>& desc_mask,
                            const std::optional<at::Tensor>& frame_weights,
                            const std::optional<at::Tensor>& desc_weights, double eps, int64_t max_iter, double tol,
                            double reg_frames, double reg_desc, bool normalize, double chunk_mb, bool keep_cache,
                            bool potentials) {
  return Impl(video, desc, frame_mask, desc_mask, frame_weights, desc_weights,
              SolverScalars{eps, max_iter, tol, reg_frames, reg_desc, normalize, chunk_mb}, keep_cache, potentials);
}

}  // namespace ost_kernels
