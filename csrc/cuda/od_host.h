// The host side of the CUDA fallback's ops, written once over a Device policy: od_cuda.cu
// instantiates it with the GPU (cuBLAS GEMMs, kernel launches on the current stream), and
// tests/helpers/cuda_emulation/ with an executor that runs the same device code on CPU threads. So
// the tests exercise this tiling, the GEMM operands and the kernel arguments as the GPU
// build uses them, not a copy.
//
// A Device provides:
//   name                                    "CUDA" (error messages)
//   Guard(tensor)                           makes the tensor's device current
//   check_device(tensor, op)                refuses tensors of another device
//   mm_f32_out(out, a, b), add_mm_f32(out, a, b)
//                                           out = a @ b / out += a @ b, float32 results
//   sinkhorn(PairTile, PairOutputs)         runs solve_pair over the tile's pairs
//   weights<scalar_t>(PairTile, grad_scores, f, g, scalar_t* W)
//                                           runs plan_weights_row over the tile's rows
//
// Forward, per tile of nb videos x na classes (memory bounded whatever A is): one GEMM of the
// raw inputs with float32 out (bf16 / fp16 operands on tensor cores); the inverse norms,
// computed once per call, make the dot products cosines inside the Sinkhorn kernel, so nothing
// is normalized, cast or masked ahead of the GEMM (a masked row's values stay in its masked
// entries, which the kernel never reads). With keep_cache the sims of every tile stay in the
// returned cache and the backward reads them instead of repeating the GEMM. Backward, per
// tile: the same GEMM (unless cached), the weights
// grad_scores * P in the input dtype, and two GEMMs (float32 out) with the unit rows, as the
// Triton backward.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <tuple>

#include "common.h"
#include "cuda/sinkhorn_groups.cuh"

namespace ost_kernels::cuda {

// Sims per tile without a chunk size (the backward's; od_solve passes chunk_mb to the forward):
// 24 MiB of float32, half an H100 / H200 L2, as ost_kernels/options.py's DEFAULT_CHUNK_MB, so
// the GEMM's output is still in L2 when the Sinkhorn kernel reads it.
constexpr int64_t kTileElements = int64_t(24) << 18;

// Sims per tile for a forward: chunk_mb MiB of float32, or kTileElements without one.
inline int64_t tile_elements_for(const SolverScalars& s) {
  return s.chunk_mb > 0 ? std::max<int64_t>(1, int64_t(s.chunk_mb * double(1 << 20) / 4)) : kTileElements;
}

template <class Device>
void check_device_inputs(const at::Tensor& video, const at::Tensor& desc, const char* op) {
  Device::check_device(video, op);
  TORCH_CHECK(video.scalar_type() != at::kDouble, "ost_kernels::", op, " (", Device::name,
              "): float64 is not supported by the CUDA kernels; use backend 'cpu' or 'torch'");
  const int64_t T = video.size(1), N = desc.size(1);
  TORCH_CHECK(T <= kMaxFrames && N <= kMaxDescriptors, "ost_kernels::", op, " (", Device::name,
              "): the CUDA kernels take T <= ", kMaxFrames, " frames and N <= ", kMaxDescriptors,
              " descriptors, got T = ", T, ", N = ", N, "; use backend 'triton', 'cpu' or 'torch'");
}

// (rows,) float32: 1 / max(||x_r||, kNormEps) when normalizing, else ones.
inline at::Tensor inverse_norms(const at::Tensor& x, bool normalize) {
  const int64_t rows = x.size(0) * x.size(1);
  if (!normalize) return at::ones({rows}, x.options().dtype(at::kFloat));
  return at::linalg_vector_norm(x, 2, at::IntArrayRef{-1}, false, at::kFloat)
      .clamp_min(kNormEps)
      .reciprocal()
      .reshape({rows})
      .contiguous();
}

// Videos and classes per tile. With the sims kept for the backward (a cache of (B * T, A * N))
// a tile takes whole rows, every class, so that its sims are a contiguous slice of the cache.
inline std::pair<int64_t, int64_t> tile_shape(int64_t B, int64_t A, int64_t T, int64_t N, int64_t tile_elements,
                                              bool whole_rows) {
  if (whole_rows) return {std::min(B, std::max<int64_t>(1, tile_elements / (T * A * N))), A};
  const int64_t nb = std::min(B, std::max<int64_t>(1, tile_elements / (T * N)));
  const int64_t na = std::min(A, std::max<int64_t>(1, tile_elements / (nb * T * N)));
  return {nb, na};
}

inline PairTile make_tile(const at::Tensor& sim, const at::Tensor& inv_v, const at::Tensor& inv_d,
                          const std::optional<at::Tensor>& frame_mask, const std::optional<at::Tensor>& desc_mask,
                          int64_t nb, int64_t na, int64_t b0, int64_t a0, int64_t A, int64_t T, int64_t N,
                          const SolverScalars& s) {
  PairTile t{sim.data_ptr<float>(), inv_v.data_ptr<float>(), inv_d.data_ptr<float>(),
             data_or_null(frame_mask), data_or_null(desc_mask), nb, na, b0, a0, A, int(T), int(N),
             float(kLog2e / s.eps), float(s.eps * kLn2), int(std::min<int64_t>(s.max_iter, INT_MAX)), float(s.tol), s};
  if (s.eps > kScalingMaxEps) t.safe_range2 = -1.f;  // every pair in the log domain
  t.tau_f = float(damping(s.eps, s.reg_frames)), t.tau_d = float(damping(s.eps, s.reg_desc));
  return t;
}

template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> od_forward_impl(
    const at::Tensor& video, const at::Tensor& desc, const std::optional<at::Tensor>& frame_mask_in,
    const std::optional<at::Tensor>& desc_mask_in, const std::optional<at::Tensor>& frame_weights,
    const std::optional<at::Tensor>& desc_weights, const SolverScalars& scalars, bool keep_cache, bool potentials,
    int64_t tile_elements) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_solver_args(scalars);
  const bool normalize = scalars.normalize;
  check_weights(frame_weights, video.size(0), video.size(1), video, "frame_weights");
  check_weights(desc_weights, desc.size(0), desc.size(1), video, "desc_weights");
  check_device_inputs<Device>(video, desc, "od_forward");
  const typename Device::Guard guard(video);
  check_mask_rows(frame_mask_in, "frame_mask");
  check_mask_rows(desc_mask_in, "desc_mask");
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(at::kFloat);
  // Without potentials (scores only) f and g are neither allocated nor written.
  at::Tensor scores = at::empty({B, A}, opts);
  at::Tensor f = potentials ? at::empty({B, A, T}, opts) : at::empty({0}, opts);
  at::Tensor g = potentials ? at::empty({B, A, N}, opts) : at::empty({0}, opts);
  at::Tensor iterations = at::empty({B, A}, video.options().dtype(at::kInt)), error = at::empty({B, A}, opts);
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const auto desc_mask = contiguous_mask(desc_mask_in);
  const at::Tensor inv_v = inverse_norms(video, normalize), inv_d = inverse_norms(desc, normalize);
  // Weights as float32, contiguous ((B, T) and (A, N)), or none.
  std::optional<at::Tensor> w_frames, w_desc;
  if (frame_weights.has_value()) w_frames = frame_weights->to(at::kFloat).contiguous();
  if (desc_weights.has_value()) w_desc = desc_weights->to(at::kFloat).contiguous();
  const at::Tensor v2 = video.reshape({B * T, d}), d2 = desc.reshape({A * N, d});
  const auto [nb_max, na_max] = tile_shape(B, A, T, N, tile_elements, keep_cache);
  // The sims: kept whole for the backward when asked (the caller's memory budget decides),
  // else a tile's worth reused by every tile.
  at::Tensor cache = keep_cache ? at::empty({B * T, A * N}, opts) : at::empty({0}, opts);
  at::Tensor sim_buf = keep_cache ? cache.view({-1}) : at::empty({nb_max * T * na_max * N}, opts);
  const PairOutputs out{scores.data_ptr<float>(), potentials ? f.data_ptr<float>() : nullptr,
                        potentials ? g.data_ptr<float>() : nullptr, iterations.data_ptr<int32_t>(),
                        error.data_ptr<float>()};
  for (int64_t a0 = 0; a0 < A; a0 += na_max) {
    const int64_t na = std::min(na_max, A - a0);
    const at::Tensor d_tile = d2.narrow(0, a0 * N, na * N).t();
    for (int64_t b0 = 0; b0 < B; b0 += nb_max) {
      const int64_t nb = std::min(nb_max, B - b0);
      const int64_t offset = keep_cache ? b0 * T * A * N : 0;
      at::Tensor sim = sim_buf.narrow(0, offset, nb * T * na * N).view({nb * T, na * N});
      Device::mm_f32_out(sim, v2.narrow(0, b0 * T, nb * T), d_tile);
      PairTile t = make_tile(sim, inv_v, inv_d, frame_mask, desc_mask, nb, na, b0, a0, A, T, N, scalars);
      t.frame_w = w_frames ? w_frames->data_ptr<float>() : nullptr;
      t.desc_w = w_desc ? w_desc->data_ptr<float>() : nullptr;
      Device::sinkhorn(t, out);
    }
  }
  return {scores, f, g, iterations, error, cache};
}

template <class Device>
std::tuple<at::Tensor, at::Tensor> od_backward_impl(const at::Tensor& grad_scores_in, const at::Tensor& video,
                                                    const at::Tensor& desc,
                                                    const std::optional<at::Tensor>& frame_mask_in,
                                                    const std::optional<at::Tensor>& desc_mask_in,
                                                    const at::Tensor& f_in, const at::Tensor& g_in,
                                                    const at::Tensor& cache, double eps, bool normalize,
                                                    bool video_grad, bool desc_grad, int64_t tile_elements) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_potentials(grad_scores_in, f_in, g_in, video, desc);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "ost_kernels::od_backward: eps must be finite and > 0, got ", eps);
  check_device_inputs<Device>(video, desc, "od_backward");
  if (!video_grad && !desc_grad) return {not_requested(video), not_requested(desc)};
  const typename Device::Guard guard(video);
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(at::kFloat);
  const bool cached = cache.numel() > 0;
  TORCH_CHECK(!cached || (cache.scalar_type() == at::kFloat && cache.is_contiguous() &&
                          cache.sizes() == at::IntArrayRef{B * T, A * N} && cache.device() == video.device()),
              "ost_kernels::od_backward (", Device::name, "): cache must be the forward's (B * T, A * N) = (", B * T,
              ", ", A * N, ") contiguous float32 sims on ", video.device(), " or empty, got ", cache.sizes(), " ",
              cache.scalar_type());
  const at::Tensor grad_scores = grad_scores_in.to(at::kFloat).contiguous();
  const at::Tensor f = f_in.contiguous(), g = g_in.contiguous();
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const auto desc_mask = contiguous_mask(desc_mask_in);
  const at::Tensor inv_v = inverse_norms(video, normalize), inv_d = inverse_norms(desc, normalize);
  const at::Tensor v2 = video.reshape({B * T, d}), d2 = desc.reshape({A * N, d});
  // The gradients' GEMM operands: unit rows in the input dtype, zero where masked (so a masked
  // row's values, NaN included, never reach a gradient).
  const at::Tensor vn = unit_rows(video, normalize, frame_mask).to(video.scalar_type()).view({B * T, d});
  const at::Tensor dn = unit_rows(desc, normalize, desc_mask).to(desc.scalar_type()).view({A * N, d});
  at::Tensor grad_vn = video_grad ? at::zeros({B * T, d}, opts) : at::Tensor();
  at::Tensor grad_dn = desc_grad ? at::zeros({A * N, d}, opts) : at::Tensor();
  const auto [nb_max, na_max] = tile_shape(B, A, T, N, tile_elements, cached);
  at::Tensor sim_buf = cached ? cache.view({-1}) : at::empty({nb_max * T * na_max * N}, opts);
  at::Tensor weight_buf = at::empty({nb_max * T * na_max * N}, video.options());
  const float* grad_ptr = grad_scores.data_ptr<float>();
  for (int64_t a0 = 0; a0 < A; a0 += na_max) {
    const int64_t na = std::min(na_max, A - a0);
    const at::Tensor d_tile = d2.narrow(0, a0 * N, na * N).t();
    const at::Tensor dn_tile = dn.narrow(0, a0 * N, na * N);
    for (int64_t b0 = 0; b0 < B; b0 += nb_max) {
      const int64_t nb = std::min(nb_max, B - b0);
      at::Tensor sim = sim_buf.narrow(0, cached ? b0 * T * A * N : 0, nb * T * na * N).view({nb * T, na * N});
      at::Tensor weights = weight_buf.narrow(0, 0, nb * T * na * N).view({nb * T, na * N});
      if (!cached) Device::mm_f32_out(sim, v2.narrow(0, b0 * T, nb * T), d_tile);
      const PairTile t = make_tile(sim, inv_v, inv_d, frame_mask, desc_mask, nb, na, b0, a0, A, T, N,
                                   SolverScalars{eps, 1, 0.0, INFINITY, INFINITY, normalize});
      switch (video.scalar_type()) {
        case at::kHalf:
          Device::template weights<at::Half>(t, grad_ptr, f.data_ptr<float>(), g.data_ptr<float>(),
                                             weights.data_ptr<at::Half>());
          break;
        case at::kBFloat16:
          Device::template weights<at::BFloat16>(t, grad_ptr, f.data_ptr<float>(), g.data_ptr<float>(),
                                                 weights.data_ptr<at::BFloat16>());
          break;
        default:
          Device::template weights<float>(t, grad_ptr, f.data_ptr<float>(), g.data_ptr<float>(),
                                          weights.data_ptr<float>());
      }
      // d/d vn = W dn and d/d dn = W^T vn, W being the (video frames x descriptors) weights.
      if (video_grad) Device::add_mm_f32(grad_vn.narrow(0, b0 * T, nb * T), weights, dn_tile);
      if (desc_grad) Device::add_mm_f32(grad_dn.narrow(0, a0 * N, na * N), weights.t(), vn.narrow(0, b0 * T, nb * T));
    }
  }
  at::Tensor grad_video = video_grad ? unit_rows_backward(video, grad_vn.view({B, T, d}), normalize)
                                    : not_requested(video);
  at::Tensor grad_desc = desc_grad ? unit_rows_backward(desc, grad_dn.view({A, N, d}), normalize)
                                   : not_requested(desc);
  return {grad_video, grad_desc};
}

}  // namespace ost_kernels::cuda
