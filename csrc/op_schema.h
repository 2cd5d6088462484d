// The op schema of ost_kernels, written once: csrc/ops.cpp defines the ops with it, and the
// tests' emulation of the CUDA code (tests/helpers/cuda_emulation/) its own copy of the library.
//
// Shapes: video (B, T, d), desc (A, N, d), frame_mask (B, T) bool, desc_mask (A, N) bool.
// od_forward returns scores (B, A), the Sinkhorn potentials f (B, A, T) and g (B, A, N) with
// P_ij = exp((f_i + g_j - C_ij) / eps), the iterations used (B, A) int32, the final
// row-marginal error (B, A), and a cache for the backward: with keep_cache, the sims
// (B * T, A * N) that the backend's backward then reuses instead of recomputing them (the CPU
// kernel keeps cosines, the CUDA kernel raw dot products), zero-size otherwise. Scores, potentials, errors and cache are float64 for float64 inputs
// and float32 otherwise. od_backward turns grad_scores (B, A) into gradients of video and desc
// with the plan held constant, computing only those asked for (video_grad, desc_grad); a
// gradient not asked for is returned as a zero-size tensor.
#pragma once

namespace ost_kernels {

constexpr const char* kForwardSchema =
    "od_forward(Tensor video, Tensor desc, Tensor? frame_mask, Tensor? desc_mask, Tensor? frame_weights, "
    "Tensor? desc_weights, float eps, int max_iter, float tol, float reg_frames, float reg_desc, bool normalize, "
    "bool keep_cache=False) "
    "-> (Tensor scores, Tensor f, Tensor g, Tensor iterations, Tensor error, Tensor cache)";
constexpr const char* kBackwardSchema =
    "od_backward(Tensor grad_scores, Tensor video, Tensor desc, Tensor? frame_mask, "
    "Tensor? desc_mask, Tensor f, Tensor g, Tensor cache, float eps, bool normalize, bool video_grad, "
    "bool desc_grad) "
    "-> (Tensor grad_video, Tensor grad_desc)";

}  // namespace ost_kernels
