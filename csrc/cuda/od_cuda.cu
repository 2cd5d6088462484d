// CUDA implementation of ost_kernels::od_forward and od_backward: the fallback GPU path where
// Triton is not available. The device code is sinkhorn_groups.cuh, the host side od_host.h;
// this file runs them on the GPU: cuBLAS GEMMs on the current stream, kernel launches.
//
// Limits (backends/cuda.py's reason repeats them, so backend="auto" passes over a shape the
// kernels do not take): T <= kMaxFrames (128), N <= kMaxDescriptors (16).
#include <ATen/ATen.h>
// c10's CUDA headers only: ATen/cuda/CUDAContext.h pulls in cuSPARSE / cuBLAS headers that a
// bare CUDA toolkit (nvcc alone) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/od_host.h"

namespace ost_kernels::cuda {
namespace {

constexpr int kSinkhornThreads = 128;
constexpr int kWeightsThreads = 256;

struct WarpExchange {
  __device__ __forceinline__ float xor_shuffle(float v, int offset) {
    return __shfl_xor_sync(0xffffffffu, v, offset);
  }
  __device__ __forceinline__ bool any(bool p) { return __any_sync(0xffffffffu, p); }
};

// Min. 2 blocks an SM: without a floor, ptxas's occupancy heuristic held some instances at 96
// registers and spilled a few bytes (make cuda-resources); with it none spills on sm_80 / sm_90.
template <int NMAX, int G>
__global__ void __launch_bounds__(kSinkhornThreads, 2) sinkhorn_groups_kernel(PairTile t, PairOutputs out) {
  WarpExchange exchange;
  const int lane32 = threadIdx.x % 32;
  GroupLanes<WarpExchange, G> lanes{exchange, lane32};
  const int64_t warp = (int64_t(blockIdx.x) * kSinkhornThreads + threadIdx.x) / 32;
  // Whole warps past the tile leave together; a partly filled warp runs with empty groups.
  if (warp * (32 / G) >= t.nb * t.na) return;
  solve_pair<NMAX>(t, out, lanes, warp * (32 / G) + lane32 / G);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kWeightsThreads)
    plan_weights_kernel(PairTile t, const float* grad_scores, const float* f, const float* g, scalar_t* weights) {
  for (int64_t row = blockIdx.x; row < t.nb * t.T; row += gridDim.x)
    plan_weights_row(t, grad_scores, f, g, row, threadIdx.x, kWeightsThreads, weights);
}

struct Gpu {
  static constexpr const char* name = "CUDA";

  struct Guard {
    c10::cuda::CUDAGuard guard;
    explicit Guard(const at::Tensor& x) : guard(x.device()) {}
  };

  static void check_device(const at::Tensor& x, const char* op) {
    TORCH_CHECK(x.is_cuda(), "ost_kernels::", op, " (CUDA): inputs must be CUDA tensors");
  }

  // out = a @ b in float32: bf16 / fp16 operands on tensor cores with float32 accumulation.
  static void mm_f32_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
    if (a.scalar_type() == at::kFloat)
      at::mm_out(out, a, b);
    else
      at::mm_out(out, a, b, at::kFloat);
  }

  static void add_mm_f32(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
    if (a.scalar_type() == at::kFloat)
      out.addmm_(a, b);
    else
      out.add_(at::mm(a, b, at::kFloat));
  }

  static void sinkhorn(const PairTile& t, const PairOutputs& out) {
    switch (nmax_for(t.N)) {
      case 4: return sinkhorn_nmax<4>(t, out);
      case 8: return sinkhorn_nmax<8>(t, out);
      default: return sinkhorn_nmax<16>(t, out);
    }
  }

  template <int NMAX>
  static void sinkhorn_nmax(const PairTile& t, const PairOutputs& out) {
    switch (group_size_for(t.T)) {
      case 1: return launch<NMAX, 1>(t, out);
      case 2: return launch<NMAX, 2>(t, out);
      case 4: return launch<NMAX, 4>(t, out);
      case 8: return launch<NMAX, 8>(t, out);
      case 16: return launch<NMAX, 16>(t, out);
      default: return launch<NMAX, 32>(t, out);
    }
  }

  template <int NMAX, int G>
  static void launch(const PairTile& t, const PairOutputs& out) {
    const int64_t pairs_per_block = int64_t(kSinkhornThreads / 32) * (32 / G);
    const int64_t blocks = (t.nb * t.na + pairs_per_block - 1) / pairs_per_block;
    TORCH_CHECK(blocks <= INT_MAX, "ost_kernels::od_forward (CUDA): tile of ", t.nb * t.na, " pairs is too large");
    sinkhorn_groups_kernel<NMAX, G><<<unsigned(blocks), kSinkhornThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(t, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t>
  static void weights(const PairTile& t, const float* grad_scores, const float* f, const float* g, scalar_t* w) {
    const unsigned blocks = unsigned(std::min<int64_t>(t.nb * t.T, INT_MAX));
    plan_weights_kernel<scalar_t>
        <<<blocks, kWeightsThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(t, grad_scores, f, g, w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

ForwardResult od_forward_cuda(const at::Tensor& video, const at::Tensor& desc,
                              const std::optional<at::Tensor>& frame_mask, const std::optional<at::Tensor>& desc_mask,
                              const std::optional<at::Tensor>& frame_weights,
                              const std::optional<at::Tensor>& desc_weights, const SolverScalars& scalars,
                              bool keep_cache, bool potentials) {
  return od_forward_impl<Gpu>(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, scalars, keep_cache,
                              potentials, tile_elements_for(scalars));
}

std::tuple<at::Tensor, at::Tensor> od_backward_cuda(const at::Tensor& grad_scores, const at::Tensor& video,
                                                    const at::Tensor& desc,
                                                    const std::optional<at::Tensor>& frame_mask,
                                                    const std::optional<at::Tensor>& desc_mask, const at::Tensor& f,
                                                    const at::Tensor& g, const at::Tensor& cache,
                                                    double eps, bool normalize, bool video_grad, bool desc_grad) {
  return od_backward_impl<Gpu>(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize,
                               video_grad, desc_grad, kTileElements);
}

}  // namespace

TORCH_LIBRARY_IMPL(ost_kernels, CUDA, m) {
  m.impl("od_forward", &forward_entry<&od_forward_cuda>);
  m.impl("od_backward", &od_backward_cuda);
}

}  // namespace ost_kernels::cuda
