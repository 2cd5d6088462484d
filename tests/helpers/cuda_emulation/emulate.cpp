// The CUDA fallback (csrc/cuda/) run on the CPU, for the tests: the same host code
// (od_host.h) and device code (sinkhorn_groups.cuh), with a Device policy whose "kernels" run
// every lane of a warp as a thread. A shuffle is a write, a barrier and a read, so the device
// code runs with the warp semantics it was written for: all 32 lanes in every shuffle,
// warp-uniform loops, groups of G lanes per pair. Slow; for the tests' small problems only.
//
// Registers ost_kernels_emulated::od_forward / od_backward (the schema of ost_kernels's ops)
// for CPU tensors; tests/helpers/cuda_emulation/backend.py makes them the test backend "cuda-emulated".
#include <torch/extension.h>
#include <torch/library.h>

#include <barrier>
#include <thread>
#include <vector>

#include "cuda/od_host.h"
#include "op_schema.h"

namespace {

using namespace ost_kernels::cuda;
using ost_kernels::ForwardResult;
using ost_kernels::SolverScalars;
using ost_kernels::forward_entry;

int64_t tile_elements = 512;  // small, so that the tests' problems span several tiles

struct EmulatedWarp {
  std::barrier<> arrive{32};
  float slots[32];
};

struct EmulatedExchange {
  EmulatedWarp& warp;
  int lane32;

  float xor_shuffle(float v, int offset) {
    warp.slots[lane32] = v;
    warp.arrive.arrive_and_wait();
    const float got = warp.slots[lane32 ^ offset];
    warp.arrive.arrive_and_wait();
    return got;
  }
  bool any(bool p) {
    warp.slots[lane32] = p ? 1.f : 0.f;
    warp.arrive.arrive_and_wait();
    bool seen = false;
    for (float s : warp.slots) seen = seen || s != 0.f;
    warp.arrive.arrive_and_wait();
    return seen;
  }
};

// One warp of sinkhorn_groups_kernel (csrc/cuda/od_cuda.cu), lanes as threads.
template <int NMAX, int G>
void run_warp(const PairTile& t, const PairOutputs& out, int64_t warp_index) {
  EmulatedWarp warp;
  std::vector<std::thread> lanes;
  for (int lane32 = 0; lane32 < 32; ++lane32)
    lanes.emplace_back([&, lane32] {
      EmulatedExchange exchange{warp, lane32};
      GroupLanes<EmulatedExchange, G> group{exchange, lane32};
      solve_pair<NMAX>(t, out, group, warp_index * (32 / G) + lane32 / G);
    });
  for (auto& lane : lanes) lane.join();
}

// The warps of a tile, G and NMAX dispatched as sinkhorn_groups_kernel's instances are.
template <int NMAX, int G>
void run_warps(const PairTile& t, const PairOutputs& out) {
  const int64_t warps = (t.nb * t.na + 32 / G - 1) / (32 / G);
  for (int64_t w = 0; w < warps; ++w) run_warp<NMAX, G>(t, out, w);
}

template <int NMAX>
void run_nmax(const PairTile& t, const PairOutputs& out) {
  switch (group_size_for(t.T)) {
    case 1: return run_warps<NMAX, 1>(t, out);
    case 2: return run_warps<NMAX, 2>(t, out);
    case 4: return run_warps<NMAX, 4>(t, out);
    case 8: return run_warps<NMAX, 8>(t, out);
    case 16: return run_warps<NMAX, 16>(t, out);
    default: return run_warps<NMAX, 32>(t, out);
  }
}

struct EmulatedDevice {
  static constexpr const char* name = "CUDA code emulated on the CPU";

  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };

  static void check_device(const at::Tensor& x, const char* op) {
    TORCH_CHECK(x.is_cpu(), "ost_kernels_emulated::", op, ": inputs must be CPU tensors");
  }

  // Float32 products of the (exactly upcast) operands: what tensor cores with float32
  // accumulation compute, up to the order of the sums.
  static void mm_f32_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
    at::mm_out(out, a.to(at::kFloat), b.to(at::kFloat));
  }

  static void add_mm_f32(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
    out.addmm_(a.to(at::kFloat), b.to(at::kFloat));
  }

  static void sinkhorn(const PairTile& t, const PairOutputs& out) {
    switch (nmax_for(t.N)) {
      case 4: return run_nmax<4>(t, out);
      case 8: return run_nmax<8>(t, out);
      default: return run_nmax<16>(t, out);
    }
  }

  // plan_weights_kernel: a block per row, 256 threads striding over its columns.
  template <typename scalar_t>
  static void weights(const PairTile& t, const float* grad_scores, const float* f, const float* g, scalar_t* w) {
    constexpr int kThreads = 256;
    for (int64_t row = 0; row < t.nb * t.T; ++row)
      for (int thread = 0; thread < kThreads; ++thread) plan_weights_row(t, grad_scores, f, g, row, thread, kThreads, w);
  }
};

ForwardResult od_forward_emulated(const at::Tensor& video, const at::Tensor& desc,
                                  const std::optional<at::Tensor>& frame_mask,
                                  const std::optional<at::Tensor>& desc_mask,
                                  const std::optional<at::Tensor>& frame_weights,
                                  const std::optional<at::Tensor>& desc_weights, const SolverScalars& scalars,
                                  bool keep_cache, bool potentials) {
  return od_forward_impl<EmulatedDevice>(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, scalars,
                                         keep_cache, potentials, tile_elements);
}

std::tuple<at::Tensor, at::Tensor> od_backward_emulated(const at::Tensor& grad_scores, const at::Tensor& video,
                                                        const at::Tensor& desc,
                                                        const std::optional<at::Tensor>& frame_mask,
                                                        const std::optional<at::Tensor>& desc_mask,
                                                        const at::Tensor& f, const at::Tensor& g,
                                                        const at::Tensor& cache, double eps, bool normalize,
                                                        bool video_grad, bool desc_grad) {
  return od_backward_impl<EmulatedDevice>(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps,
                                          normalize, video_grad, desc_grad, tile_elements);
}

}  // namespace

TORCH_LIBRARY(ost_kernels_emulated, m) {
  m.def(ost_kernels::kForwardSchema);
  m.def(ost_kernels::kBackwardSchema);
}

TORCH_LIBRARY_IMPL(ost_kernels_emulated, CPU, m) {
  m.impl("od_forward", &forward_entry<&od_forward_emulated>);
  m.impl("od_backward", &od_backward_emulated);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_tile_elements", [](int64_t n) { tile_elements = n; }, "sims per tile (the GPU build: 2^24)");
  m.def("group_size_for", [](int T) { return group_size_for(T); });
  m.def("limits", [] { return std::make_pair(kMaxFrames, kMaxDescriptors); }, "(max T, max N)");
}
