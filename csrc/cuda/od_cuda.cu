// CUDA implementation of ost_kernels::od_forward and od_backward: the fallback GPU path where
// Triton is not available.
//
// Like the CPU kernel, sims come from a chunked matmul (cuBLAS through at::mm_out, on the
// current stream) into a bounded scratch tile of nb videos x na classes, laid out
// (nb * T, na * N) row-major; memory stays bounded whatever A is. Then one warp solves one
// (video, class) pair: the pair's T x N block of scaled costs sits in shared memory, each lane
// owns frames i = lane, lane + 32, ..., and the column log-sum-exps are warp reductions. The
// Sinkhorn is the log-domain iteration of docs/design.md section 3 in base 2 (exp2 / log2 with
// log2(e) / eps folded into the scale), with the per-pair stop: all lanes see the same
// reduced error, so the loop ends for the whole warp at once. The backward builds the weights
// grad_scores * P elementwise for a tile and accumulates the gradients with matmuls.
#include <ATen/ATen.h>
// c10's CUDA headers only: ATen/cuda/CUDAContext.h pulls in cuSPARSE / cuBLAS headers that a
// bare CUDA toolkit (nvcc alone) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <tuple>

#include "common.h"

namespace ost_kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int64_t kTileElements = int64_t(1) << 24;  // sims per tile: 64 MiB in float32

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

struct TileArgs {
  const float* sim;  // (nb * T, na * N)
  int64_t nb, na, T, N, b0, a0, A;
  const bool* frame_mask;  // (B, T) or nullptr
  const bool* desc_mask;   // (A, N) or nullptr
  float scale2;            // log2(e) / eps
  float eps;
  int64_t max_iter;
  float tol;
};

// One warp per pair. Shared memory per warp: z (T * N), alpha (T), row_lse (T), beta (N).
__global__ void sinkhorn_pairs_kernel(TileArgs t, float* scores, float* f_out, float* g_out, int32_t* iters_out,
                                      float* err_out) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t pair_in_tile = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (pair_in_tile >= t.nb * t.na) return;  // whole warps exit together
  const int64_t T = t.T, N = t.N, ld = t.na * N;
  const int64_t b = pair_in_tile / t.na, a = pair_in_tile % t.na;
  const int64_t vb = t.b0 + b, ca = t.a0 + a;
  float* z = smem + warp * (T * N + 2 * T + N);
  float* alpha = z + T * N;
  float* row_lse = alpha + T;
  float* beta = row_lse + T;
  const float ninf = -INFINITY;
  auto row_ok = [&](int64_t i) { return !t.frame_mask || t.frame_mask[vb * T + i]; };
  auto col_ok = [&](int64_t j) { return !t.desc_mask || t.desc_mask[ca * N + j]; };

  float tv = 0, nv = 0;
  for (int64_t i = lane; i < T; i += 32) tv += row_ok(i) ? 1.f : 0.f;
  for (int64_t j = lane; j < N; j += 32) nv += col_ok(j) ? 1.f : 0.f;
  tv = warp_sum(tv);
  nv = warp_sum(nv);
  const float log2_mu = -log2f(tv), log2_nu = -log2f(nv), mu = 1.f / tv;
  const float* block = t.sim + b * T * ld + a * N;
  for (int64_t i = lane; i < T; i += 32)
    for (int64_t j = 0; j < N; ++j)
      z[i * N + j] = (row_ok(i) && col_ok(j)) ? (block[i * ld + j] - 1.f) * t.scale2 : ninf;
  for (int64_t j = lane; j < N; j += 32) beta[j] = 0.f;
  __syncwarp();

  // row_lse_i = log2 sum_j exp2(z_ij + beta_j), for the frames this lane owns.
  auto update_row_lse = [&] {
    for (int64_t i = lane; i < T; i += 32) {
      float m = ninf;
      for (int64_t j = 0; j < N; ++j) m = fmaxf(m, z[i * N + j] + beta[j]);
      float s = 0.f;
      if (m > ninf)
        for (int64_t j = 0; j < N; ++j) s += exp2f(z[i * N + j] + beta[j] - m);
      row_lse[i] = m > ninf ? m + log2f(s) : ninf;
    }
  };
  update_row_lse();
  float err = 0.f;
  int32_t it = 0;
  while (it < t.max_iter) {
    for (int64_t i = lane; i < T; i += 32) alpha[i] = row_ok(i) ? log2_mu - row_lse[i] : 0.f;
    __syncwarp();
    for (int64_t j = 0; j < N; ++j) {
      float m = ninf;
      for (int64_t i = lane; i < T; i += 32) m = fmaxf(m, z[i * N + j] + alpha[i]);
      m = warp_max(m);
      float s = 0.f;
      if (m > ninf)
        for (int64_t i = lane; i < T; i += 32) s += exp2f(z[i * N + j] + alpha[i] - m);
      s = warp_sum(s);
      if (lane == 0) beta[j] = col_ok(j) ? log2_nu - (m + log2f(s)) : 0.f;
    }
    __syncwarp();
    update_row_lse();
    float e = 0.f;
    for (int64_t i = lane; i < T; i += 32)
      if (row_ok(i)) e += fabsf(exp2f(alpha[i] + row_lse[i]) - mu);
    err = warp_sum(e);
    ++it;
    // NaN compares false, so a poisoned pair stops (as backend "torch"); err is warp-uniform.
    if (t.tol > 0.f && !(err > t.tol)) break;
  }

  float score = 0.f;
  for (int64_t i = lane; i < T; i += 32)
    for (int64_t j = 0; j < N; ++j)
      if (row_ok(i) && col_ok(j)) score += exp2f(z[i * N + j] + alpha[i] + beta[j]) * block[i * ld + j];
  score = warp_sum(score);
  const int64_t pair = vb * t.A + ca;
  const float to_natural = t.eps * float(kLn2);
  for (int64_t i = lane; i < T; i += 32) f_out[pair * T + i] = alpha[i] * to_natural;
  for (int64_t j = lane; j < N; j += 32) g_out[pair * N + j] = beta[j] * to_natural;
  if (lane == 0) {
    scores[pair] = score;
    iters_out[pair] = it;
    err_out[pair] = err;
  }
}

// weights = grad_scores[b, a] * exp2((sim - 1 + f_i + g_j) * scale2) on valid entries, 0 elsewhere.
__global__ void backward_weights_kernel(TileArgs t, const float* grad_scores, const float* f, const float* g,
                                        float* weights) {
  const int64_t ld = t.na * t.N, total = t.nb * t.T * ld;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / ld, col = idx % ld;
    const int64_t b = row / t.T, i = row % t.T, a = col / t.N, j = col % t.N;
    const int64_t vb = t.b0 + b, ca = t.a0 + a, pair = vb * t.A + ca;
    const bool ok = (!t.frame_mask || t.frame_mask[vb * t.T + i]) && (!t.desc_mask || t.desc_mask[ca * t.N + j]);
    const float p = exp2f((t.sim[idx] - 1.f + f[pair * t.T + i] + g[pair * t.N + j]) * t.scale2);
    weights[idx] = ok ? grad_scores[pair] * p : 0.f;
  }
}

std::pair<int64_t, int64_t> tile_shape(int64_t B, int64_t A, int64_t T, int64_t N) {
  const int64_t nb = std::min(B, std::max<int64_t>(1, kTileElements / (T * N)));
  const int64_t na = std::min(A, std::max<int64_t>(1, kTileElements / (nb * T * N)));
  return {nb, na};
}

void check_float32_compute(const at::Tensor& video, const char* op) {
  TORCH_CHECK(video.is_cuda(), "ost_kernels::", op, " (CUDA): inputs must be CUDA tensors");
  TORCH_CHECK(video.scalar_type() != at::kDouble, "ost_kernels::", op,
              " (CUDA): float64 is not supported by the CUDA kernels; use backend 'cpu' or 'torch'");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> od_forward_cuda(
    const at::Tensor& video, const at::Tensor& desc, const std::optional<at::Tensor>& frame_mask_in,
    const std::optional<at::Tensor>& desc_mask_in, double eps, int64_t max_iter, double tol, bool normalize,
    bool /*keep_cache: the CUDA backward recomputes the sims*/) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_solver_args(eps, max_iter, tol);
  check_float32_compute(video, "od_forward");
  const c10::cuda::CUDAGuard guard(video.device());
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(at::kFloat);
  at::Tensor scores = at::empty({B, A}, opts), f = at::empty({B, A, T}, opts), g = at::empty({B, A, N}, opts);
  at::Tensor iterations = at::empty({B, A}, video.options().dtype(at::kInt)), error = at::empty({B, A}, opts);
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const auto desc_mask = contiguous_mask(desc_mask_in);
  const at::Tensor vn = unit_rows(video, normalize, frame_mask).view({B * T, d});
  const auto [nb_max, na_max] = tile_shape(B, A, T, N);
  at::Tensor sim_buf = at::empty({nb_max * T * na_max * N}, opts);
  const size_t smem = size_t(kWarpsPerBlock) * (T * N + 2 * T + N) * sizeof(float);
  TORCH_CHECK(smem <= 48 * 1024, "ost_kernels::od_forward (CUDA): T * N = ", T * N,
              " is too large for the CUDA kernel's shared memory; use backend 'triton', 'cpu' or 'torch'");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t a0 = 0; a0 < A; a0 += na_max) {
    const int64_t na = std::min(na_max, A - a0);
    const at::Tensor dn = unit_rows(desc.narrow(0, a0, na), normalize, narrow_mask(desc_mask, a0, na)).view({na * N, d});
    for (int64_t b0 = 0; b0 < B; b0 += nb_max) {
      const int64_t nb = std::min(nb_max, B - b0);
      at::Tensor sim = sim_buf.narrow(0, 0, nb * T * na * N).view({nb * T, na * N});
      at::mm_out(sim, vn.narrow(0, b0 * T, nb * T), dn.t());
      TileArgs t{sim.data_ptr<float>(), nb, na, T, N, b0, a0, A, data_or_null(frame_mask), data_or_null(desc_mask),
                 float(kLog2e / eps), float(eps), max_iter, float(tol)};
      const int64_t pairs = nb * na;
      const unsigned blocks = unsigned((pairs + kWarpsPerBlock - 1) / kWarpsPerBlock);
      sinkhorn_pairs_kernel<<<blocks, 32 * kWarpsPerBlock, smem, stream>>>(
          t, scores.data_ptr<float>(), f.data_ptr<float>(), g.data_ptr<float>(), iterations.data_ptr<int32_t>(),
          error.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return {scores, f, g, iterations, error, at::empty({0}, opts)};  // no cache: the backward recomputes
}

std::tuple<at::Tensor, at::Tensor> od_backward_cuda(const at::Tensor& grad_scores_in, const at::Tensor& video,
                                                    const at::Tensor& desc,
                                                    const std::optional<at::Tensor>& frame_mask_in,
                                                    const std::optional<at::Tensor>& desc_mask_in,
                                                    const at::Tensor& f_in, const at::Tensor& g_in,
                                                    const at::Tensor& /*cache: none kept*/, double eps,
                                                    bool normalize, bool video_grad, bool desc_grad) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_potentials(grad_scores_in, f_in, g_in, video, desc);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "ost_kernels::od_backward: eps must be finite and > 0, got ", eps);
  check_float32_compute(video, "od_backward");
  const c10::cuda::CUDAGuard guard(video.device());
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(at::kFloat);
  if (!video_grad && !desc_grad) return {not_requested(video), not_requested(desc)};
  const at::Tensor grad_scores = grad_scores_in.to(at::kFloat).contiguous();
  const at::Tensor f = f_in.contiguous(), g = g_in.contiguous();
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const auto desc_mask = contiguous_mask(desc_mask_in);
  const at::Tensor vn = unit_rows(video, normalize, frame_mask).view({B * T, d});
  at::Tensor grad_vn = video_grad ? at::zeros({B * T, d}, opts) : at::Tensor();
  at::Tensor grad_desc = desc_grad ? at::empty_like(desc) : not_requested(desc);
  const auto [nb_max, na_max] = tile_shape(B, A, T, N);
  at::Tensor sim_buf = at::empty({nb_max * T * na_max * N}, opts);
  at::Tensor weight_buf = at::empty({nb_max * T * na_max * N}, opts);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t a0 = 0; a0 < A; a0 += na_max) {
    const int64_t na = std::min(na_max, A - a0);
    const at::Tensor desc_tile = desc.narrow(0, a0, na);
    const at::Tensor dn = unit_rows(desc_tile, normalize, narrow_mask(desc_mask, a0, na)).view({na * N, d});
    at::Tensor grad_dn = desc_grad ? at::zeros({na * N, d}, opts) : at::Tensor();
    for (int64_t b0 = 0; b0 < B; b0 += nb_max) {
      const int64_t nb = std::min(nb_max, B - b0);
      at::Tensor sim = sim_buf.narrow(0, 0, nb * T * na * N).view({nb * T, na * N});
      at::Tensor weights = weight_buf.narrow(0, 0, nb * T * na * N).view({nb * T, na * N});
      const at::Tensor vn_tile = vn.narrow(0, b0 * T, nb * T);
      at::mm_out(sim, vn_tile, dn.t());
      TileArgs t{sim.data_ptr<float>(), nb, na, T, N, b0, a0, A, data_or_null(frame_mask), data_or_null(desc_mask),
                 float(kLog2e / eps), float(eps), 1, 0.f};
      const int64_t total = nb * T * na * N;
      const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65535));
      backward_weights_kernel<<<blocks, 256, 0, stream>>>(t, grad_scores.data_ptr<float>(), f.data_ptr<float>(),
                                                          g.data_ptr<float>(), weights.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // d/d vn = W dn and d/d dn = W^T vn, W being the (video frames x descriptors) weights.
      if (video_grad) grad_vn.narrow(0, b0 * T, nb * T).addmm_(weights, dn);
      if (desc_grad) grad_dn.addmm_(weights.t(), vn_tile);
    }
    if (desc_grad)
      grad_desc.narrow(0, a0, na).copy_(unit_rows_backward(desc_tile, grad_dn.view({na, N, d}), normalize));
  }
  at::Tensor grad_video = video_grad ? unit_rows_backward(video, grad_vn.view({B, T, d}), normalize)
                                    : not_requested(video);
  return {grad_video, grad_desc};
}

}  // namespace

TORCH_LIBRARY_IMPL(ost_kernels, CUDA, m) {
  m.impl("od_forward", &od_forward_cuda);
  m.impl("od_backward", &od_backward_cuda);
}

}  // namespace ost_kernels::cuda
