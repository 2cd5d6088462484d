// CPU implementation of ost_kernels::od_forward and od_backward.
//
// Sims come from a chunked matmul: for a tile of nb videos x na classes, one at::mm gives
// the (nb * T, N * na_pad) block of dot products, so memory stays bounded whatever A is.
// Its columns are ordered (descriptor j, class a) rather than (a, j), so that for a fixed
// (video, frame, descriptor) the sims of consecutive classes are contiguous: the layout the
// lane-parallel solver of sinkhorn_lanes.h reads. In the forward each thread computes and
// solves its own tiles, small enough to stay in its cache.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <tuple>

#include "common.h"
#include "cpu/sinkhorn_lanes.h"

namespace ost_kernels::cpu {
namespace {

// Work is cut in sub-tiles of kSubClasses classes x a block of videos (see videos_per_item):
// one thread computes a sub-tile's sims with a single-threaded matmul into its own
// buffer (small enough to stay in its cache) and solves them right away. Descriptors are
// normalized kChunkClasses at a time, so no full copy of desc is ever made.
constexpr int64_t kSubClasses = 32;
constexpr int64_t kChunkClasses = 1024;
constexpr int64_t kMaxRows = 256;  // matmul rows (video frames) per work item, at most ...
constexpr int64_t kMinRows = 64;   // ... and at least, where there are that many

// Videos per work item: up to kMaxRows frames, fewer while that leaves under 4 items a thread.
int64_t videos_per_item(int64_t B, int64_t T, int64_t n_sub, int64_t threads) {
  int64_t vb = std::min(B, std::max<int64_t>(1, kMaxRows / T));
  const int64_t vb_min = std::min(B, std::max<int64_t>(1, kMinRows / T));
  while (vb > vb_min && ceil_div(B, vb) * n_sub < 4 * threads) vb = std::max(vb_min, vb / 2);
  return vb;
}

// Unit descriptors of classes [a0, a0 + na), laid out per sub-tile as (N * kSubClasses, d)
// with rows in (j, a) order and zero rows for padding classes; and their mask as
// (n_sub, N, kSubClasses), padding classes reading as valid.
struct ClassChunk {
  at::Tensor dn;     // (n_sub, N * kSubClasses, d)
  at::Tensor valid;  // (n_sub, N, kSubClasses) bool
  int64_t n_sub;
};

ClassChunk class_chunk(const at::Tensor& desc, const std::optional<at::Tensor>& desc_mask, int64_t a0, int64_t na,
                       bool normalize) {
  const int64_t N = desc.size(1), d = desc.size(2), n_sub = ceil_div(na, kSubClasses);
  const auto mask = narrow_mask(desc_mask, a0, na);
  // As unit_rows, but the division writes straight into the sub-tile layout (one pass less).
  at::Tensor x = desc.narrow(0, a0, na).to(compute_type(desc.scalar_type())).contiguous();  // (na, N, d)
  if (mask.has_value()) x = x.masked_fill(mask->logical_not().unsqueeze(-1), 0);
  const at::Tensor norms = normalize ? x.norm(2, {-1}, true).clamp_min_(kNormEps) : at::Tensor();
  at::Tensor dn = at::empty({n_sub, N, kSubClasses, d}, x.options());
  at::Tensor valid = at::ones({n_sub, N, kSubClasses}, desc.options().dtype(at::kBool));
  for (int64_t s = 0; s < n_sub; ++s) {
    const int64_t c0 = s * kSubClasses, nc = std::min(kSubClasses, na - c0);
    at::Tensor block = dn[s].transpose(0, 1);  // (kSubClasses, N, d)
    at::Tensor dst = block.narrow(0, 0, nc);
    if (normalize)
      at::div_out(dst, x.narrow(0, c0, nc), norms.narrow(0, c0, nc));
    else
      dst.copy_(x.narrow(0, c0, nc));
    if (nc < kSubClasses) block.narrow(0, nc, kSubClasses - nc).zero_();
    if (mask.has_value()) valid[s].narrow(1, 0, nc).copy_(mask->narrow(0, c0, nc).t());
  }
  return {dn.view({n_sub, N * kSubClasses, d}), valid, n_sub};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> od_forward_cpu(
    const at::Tensor& video, const at::Tensor& desc, const std::optional<at::Tensor>& frame_mask_in,
    const std::optional<at::Tensor>& desc_mask_in, double eps, int64_t max_iter, double tol, bool normalize) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_solver_args(eps, max_iter, tol);
  TORCH_CHECK(video.device().is_cpu(), "ost_kernels::od_forward (CPU): inputs must be CPU tensors");
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(compute_type(video.scalar_type()));
  at::Tensor scores = at::empty({B, A}, opts);
  at::Tensor f = at::empty({B, A, T}, opts);
  at::Tensor g = at::empty({B, A, N}, opts);
  at::Tensor iterations = at::empty({B, A}, video.options().dtype(at::kInt));
  at::Tensor error = at::empty({B, A}, opts);
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const at::Tensor vn = unit_rows(video, normalize, frame_mask).view({B * T, d});
  const int64_t threads = at::get_num_threads();

  for (int64_t a0 = 0; a0 < A; a0 += kChunkClasses) {
    const int64_t na = std::min(kChunkClasses, A - a0);
    const ClassChunk cc = class_chunk(desc, desc_mask_in, a0, na, normalize);
    const int64_t vb = videos_per_item(B, T, cc.n_sub, threads);
    const int64_t n_vb = ceil_div(B, vb), n_items = n_vb * cc.n_sub;
    // Threads take items from a shared counter: pairs differ in iteration counts, so a static
    // split would leave a thread waiting on the slowest block.
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min(threads, n_items), 1, [&](int64_t, int64_t) {
      at::Tensor sim_buf = at::empty({vb * T, N * kSubClasses}, opts);
      for (int64_t item = next++; item < n_items; item = next++) {
        const int64_t b0 = (item / cc.n_sub) * vb, s = item % cc.n_sub;
        const int64_t nb = std::min(vb, B - b0), c0 = s * kSubClasses, nc = std::min(kSubClasses, na - c0);
        at::Tensor sim = sim_buf.narrow(0, 0, nb * T);
        at::mm_out(sim, vn.narrow(0, b0 * T, nb * T), cc.dn[s].t());
        AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "od_forward_cpu", [&] {
          Tile<scalar_t> t{};
          t.sim = sim.data_ptr<scalar_t>();
          t.nb = nb, t.na = nc, t.na_pad = kSubClasses, t.T = T, t.N = N, t.b0 = b0, t.a0 = a0 + c0, t.A = A;
          t.frame_mask = data_or_null(frame_mask);
          t.desc_valid = cc.valid[s].data_ptr<bool>();
          t.eps = eps, t.max_iter = max_iter, t.tol = tol, t.unit_sims = normalize;
          t.scores = scores.data_ptr<scalar_t>(), t.f = f.data_ptr<scalar_t>(), t.g = g.data_ptr<scalar_t>();
          t.error = error.data_ptr<scalar_t>(), t.iterations = iterations.data_ptr<int32_t>();
          run_forward(t, 0, nb * ceil_div(nc, kLanes));
        });
      }
    });
  }
  return {scores, f, g, iterations, error};
}

std::tuple<at::Tensor, at::Tensor> od_backward_cpu(const at::Tensor& grad_scores_in, const at::Tensor& video,
                                                   const at::Tensor& desc,
                                                   const std::optional<at::Tensor>& frame_mask_in,
                                                   const std::optional<at::Tensor>& desc_mask_in,
                                                   const at::Tensor& f, const at::Tensor& g, double eps,
                                                   bool normalize, bool video_grad, bool desc_grad) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_potentials(grad_scores_in, f, g, video, desc);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "ost_kernels::od_backward: eps must be finite and > 0, got ", eps);
  TORCH_CHECK(video.device().is_cpu(), "ost_kernels::od_backward (CPU): inputs must be CPU tensors");
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(compute_type(video.scalar_type()));
  if (!video_grad && !desc_grad) return {not_requested(video), not_requested(desc)};
  const at::Tensor grad_scores = grad_scores_in.to(opts.dtype().toScalarType());
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const at::Tensor vn = unit_rows(video, normalize, frame_mask).view({B * T, d});
  at::Tensor grad_vn = video_grad ? at::zeros({B * T, d}, opts) : at::Tensor();
  at::Tensor grad_desc = desc_grad ? at::empty_like(desc) : not_requested(desc);
  // Backward runs one sub-tile of classes at a time over videos in blocks of ~2^20 sims,
  // with multi-threaded matmuls: each thread writing its own rows keeps it deterministic.
  const int64_t nb_max = std::min(B, std::max<int64_t>(1, (int64_t(1) << 20) / (T * N * kSubClasses)));
  at::Tensor sim_buf = at::empty({nb_max * T, N * kSubClasses}, opts);
  at::Tensor weight_buf = at::empty({nb_max * T, N * kSubClasses}, opts);

  for (int64_t a0 = 0; a0 < A; a0 += kChunkClasses) {
    const int64_t na = std::min(kChunkClasses, A - a0);
    const ClassChunk cc = class_chunk(desc, desc_mask_in, a0, na, normalize);
    at::Tensor grad_dn = desc_grad ? at::zeros({cc.n_sub, N * kSubClasses, d}, opts) : at::Tensor();
    for (int64_t s = 0; s < cc.n_sub; ++s) {
      const int64_t c0 = a0 + s * kSubClasses, nc = std::min(kSubClasses, A - c0);
      for (int64_t b0 = 0; b0 < B; b0 += nb_max) {
        const int64_t nb = std::min(nb_max, B - b0);
        at::Tensor sim = sim_buf.narrow(0, 0, nb * T);
        at::Tensor weights = weight_buf.narrow(0, 0, nb * T);
        const at::Tensor vn_tile = vn.narrow(0, b0 * T, nb * T);
        at::mm_out(sim, vn_tile, cc.dn[s].t());
        // The tile's grad, f and g with classes innermost, zero-padded to kSubClasses.
        at::Tensor grad_t = at::zeros({nb, kSubClasses}, opts);
        at::Tensor f_t = at::zeros({nb, T, kSubClasses}, opts);
        at::Tensor g_t = at::zeros({nb, N, kSubClasses}, opts);
        grad_t.narrow(1, 0, nc).copy_(grad_scores.narrow(0, b0, nb).narrow(1, c0, nc));
        f_t.narrow(2, 0, nc).copy_(f.narrow(0, b0, nb).narrow(1, c0, nc).transpose(1, 2));
        g_t.narrow(2, 0, nc).copy_(g.narrow(0, b0, nb).narrow(1, c0, nc).transpose(1, 2));
        AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "od_backward_cpu", [&] {
          Tile<scalar_t> t{};
          t.sim = sim.data_ptr<scalar_t>();
          t.nb = nb, t.na = nc, t.na_pad = kSubClasses, t.T = T, t.N = N, t.b0 = b0, t.a0 = c0, t.A = A;
          t.frame_mask = data_or_null(frame_mask);
          t.desc_valid = cc.valid[s].data_ptr<bool>();
          t.eps = eps;
          t.grad_t = grad_t.data_ptr<scalar_t>(), t.f_t = f_t.data_ptr<scalar_t>(), t.g_t = g_t.data_ptr<scalar_t>();
          t.weights = weights.data_ptr<scalar_t>();
          at::parallel_for(0, nb, 1, [&](int64_t begin, int64_t end) { run_backward(t, begin, end); });
        });
        // d/d vn = W dn and d/d dn = W^T vn, W being the (video frames x descriptors) weights.
        if (video_grad) grad_vn.narrow(0, b0 * T, nb * T).addmm_(weights, cc.dn[s]);
        if (desc_grad) grad_dn[s].addmm_(weights.t(), vn_tile);
      }
    }
    if (!desc_grad) continue;
    // Back from the sub-tile layout (n_sub, N, kSubClasses, d) to classes (na, N, d).
    const at::Tensor grad_units =
        grad_dn.view({cc.n_sub, N, kSubClasses, d}).transpose(1, 2).reshape({cc.n_sub * kSubClasses, N, d}).narrow(0, 0, na);
    grad_desc.narrow(0, a0, na).copy_(unit_rows_backward(desc.narrow(0, a0, na), grad_units, normalize));
  }
  at::Tensor grad_video = video_grad ? unit_rows_backward(video, grad_vn.view({B, T, d}), normalize)
                                    : not_requested(video);
  return {grad_video, grad_desc};
}

}  // namespace

TORCH_LIBRARY_IMPL(ost_kernels, CPU, m) {
  m.impl("od_forward", &od_forward_cpu);
  m.impl("od_backward", &od_backward_cpu);
}

}  // namespace ost_kernels::cpu
