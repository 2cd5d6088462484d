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
#include "cpu/rows.h"
#include "cpu/sinkhorn_lanes.h"

namespace ost_kernels::cpu {
namespace {

// Work is cut in sub-tiles of up to kMaxSubClasses classes x a block of videos (see
// videos_per_item): one thread normalizes the sub-tile's descriptors into its own buffer,
// computes the sims with a single-threaded matmul into another (both small enough to stay in
// its cache) and solves them right away. Sub-tiles as wide as the classes allow, without
// padding: the per-thread matmuls then run about as fast as one big multi-threaded one
// (fixed 64 x 128 tiles were slower at T = 8). Normalizing per sub-tile instead of into a
// copy of all of desc first saves a pass over memory and a parallel region (the profile:
// benchmarks/history/2026-12-02-cpu-forward-goal-reached.md).
constexpr int64_t kMaxSubClasses = 128;
constexpr int64_t kMaxRows = 256;  // matmul rows (video frames) per work item, at most ...
constexpr int64_t kMinRows = 64;   // ... and at least, where there are that many

// Videos per work item: up to kMaxRows frames, fewer while that leaves under 2 items a thread.
int64_t videos_per_item(int64_t B, int64_t T, int64_t n_sub, int64_t threads) {
  int64_t vb = std::min(B, std::max<int64_t>(1, kMaxRows / T));
  const int64_t vb_min = std::min(B, std::max<int64_t>(1, kMinRows / T));
  while (vb > vb_min && ceil_div(B, vb) * n_sub < 2 * threads) vb = std::max(vb_min, vb / 2);
  return vb;
}

// Classes [0, A) in n sub-tiles of at most kMaxSubClasses classes; sub-tile s holds classes
// [start(s), start(s) + width(s)). Equal widths (to a class): equal work items, so no thread
// waits on a wider one.
struct SubTiles {
  int64_t A, n;
  explicit SubTiles(int64_t classes) : A(classes), n(ceil_div(classes, kMaxSubClasses)) {}
  int64_t start(int64_t s) const { return s * A / n; }
  int64_t width(int64_t s) const { return start(s + 1) - start(s); }
};

// The unit descriptors of classes [c0, c0 + nc) of desc (A, N, d), compute dtype, contiguous,
// as N * nc rows of dn in (j, a) order, so that the sims of consecutive classes are contiguous
// for each descriptor j; valid: the same layout for the descriptor mask. No padding classes:
// the solver's last SIMD group of a row reads past the sub-tile's classes into the next values
// (finite, or the kLanes slack at the end of each buffer), runs those lanes idle and never
// writes them.
template <typename scalar_t>
void place_descriptors(const scalar_t* desc, const bool* mask, const scalar_t* weights, int64_t c0, int64_t nc,
                       int64_t N, int64_t d, bool normalize, scalar_t* dn, bool* valid, scalar_t* w) {
  auto place = [&](int64_t row) { return (row % N) * nc + row / N; };  // row (a, j) -> (j, a)
  scale_rows(desc + c0 * N * d, nc * N, d, normalize, mask ? mask + c0 * N : nullptr,
             [&](int64_t row) { return dn + place(row) * d; });
  for (int64_t row = 0; row < nc * N; ++row) {
    valid[place(row)] = !mask || mask[c0 * N + row];
    w[place(row)] = weights ? weights[c0 * N + row] : scalar_t(1);  // (A, N) in (j, a) order, like valid
  }
}

// Copies a sub-tile's sims, (nb * T, N * sub) in (j, a) order, into the cache's rows and
// columns of its nb videos and nc classes, (B * T, A * N) in (a, j) order.
template <typename scalar_t>
void keep_sims(const scalar_t* sim, int64_t rows, int64_t N, int64_t sub, int64_t nc, scalar_t* cache, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* src = sim + r * N * sub;
    scalar_t* dst = cache + r * ld;
    for (int64_t a = 0; a < nc; ++a)
      for (int64_t j = 0; j < N; ++j) dst[a * N + j] = src[j * sub + a];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> od_forward_cpu(
    const at::Tensor& video, const at::Tensor& desc, const std::optional<at::Tensor>& frame_mask_in,
    const std::optional<at::Tensor>& desc_mask_in, const std::optional<at::Tensor>& frame_weights_in,
    const std::optional<at::Tensor>& desc_weights_in, const SolverScalars& scalars, bool keep_cache, bool potentials) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_solver_args(scalars);
  const bool normalize = scalars.normalize;
  check_weights(frame_weights_in, video.size(0), video.size(1), video, "frame_weights");
  check_weights(desc_weights_in, desc.size(0), desc.size(1), video, "desc_weights");
  TORCH_CHECK(video.device().is_cpu(), "ost_kernels::od_forward (CPU): inputs must be CPU tensors");
  check_mask_rows(frame_mask_in, "frame_mask");
  check_mask_rows(desc_mask_in, "desc_mask");
  const int64_t B = video.size(0), T = video.size(1), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(compute_type(video.scalar_type()));
  at::Tensor scores = at::empty({B, A}, opts);
  // Without potentials (scores only) f and g are neither allocated nor written.
  at::Tensor f = potentials ? at::empty({B, A, T}, opts) : at::empty({0}, opts);
  at::Tensor g = potentials ? at::empty({B, A, N}, opts) : at::empty({0}, opts);
  at::Tensor iterations = at::empty({B, A}, video.options().dtype(at::kInt));
  at::Tensor error = at::empty({B, A}, opts);
  // The sims, kept for the backward when asked (the caller decides: when gradients will be
  // needed and B * T * A * N fits its budget); the backward then does not recompute them.
  at::Tensor cache = keep_cache ? at::empty({B * T, A * N}, opts) : at::empty({0}, opts);
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const at::Tensor vn = unit_rows_fused(video, normalize, frame_mask);  // (B * T, d)
  const int64_t threads = at::get_num_threads();
  const at::Tensor desc_c = desc.to(opts.dtype().toScalarType()).contiguous();  // (A, N, d)
  const auto desc_mask = contiguous_mask(desc_mask_in);
  // Weights in the compute dtype, contiguous: (B, T) and (A, N), or none (uniform).
  auto as_compute = [&](const std::optional<at::Tensor>& w) -> std::optional<at::Tensor> {
    if (!w.has_value()) return std::nullopt;
    return w->to(opts.dtype().toScalarType()).contiguous();
  };
  const auto frame_weights = as_compute(frame_weights_in), desc_weights = as_compute(desc_weights_in);
  const int64_t d = desc.size(2);
  const SubTiles st(A);
  const int64_t vb = videos_per_item(B, T, st.n, threads);
  const int64_t n_vb = ceil_div(B, vb), n_items = n_vb * st.n;
  const int64_t max_width = std::min(kMaxSubClasses, A);
  // Threads take items from a shared counter: pairs differ in iteration counts, so a static
  // split would leave a thread waiting on the slowest block. Items go sub-tile by sub-tile,
  // so that consecutive items of a thread often share their descriptors (placed once).
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(threads, n_items), 1, [&](int64_t, int64_t) {
    // kLanes of slack: the last SIMD group of the last row may read past the sims.
    at::Tensor sim_buf = at::zeros({vb * T * N * max_width + kLanes}, opts);
    at::Tensor dn_buf = at::empty({N * max_width, d}, opts);
    at::Tensor valid_buf = at::ones({N * max_width + kLanes}, desc.options().dtype(at::kBool));
    at::Tensor weight_buf = at::ones({N * max_width + kLanes}, opts);
    int64_t placed = -1;  // the sub-tile whose descriptors dn_buf holds
    for (int64_t item = next++; item < n_items; item = next++) {
      const int64_t s = item / n_vb, b0 = (item % n_vb) * vb;
      const int64_t nb = std::min(vb, B - b0), c0 = st.start(s), nc = st.width(s);
      AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "od_forward_cpu", [&] {
        if (s != placed) {
          place_descriptors(desc_c.data_ptr<scalar_t>(), data_or_null(desc_mask),
                            desc_weights ? desc_weights->data_ptr<scalar_t>() : nullptr, c0, nc, N, d, normalize,
                            dn_buf.data_ptr<scalar_t>(), valid_buf.data_ptr<bool>(), weight_buf.data_ptr<scalar_t>());
          placed = s;
        }
        at::Tensor sim = sim_buf.narrow(0, 0, nb * T * N * nc).view({nb * T, N * nc});
        at::mm_out(sim, vn.narrow(0, b0 * T, nb * T), dn_buf.narrow(0, 0, N * nc).t());
        Tile<scalar_t> t{};
        t.sim = sim.data_ptr<scalar_t>();
        t.nb = nb, t.na = nc, t.na_pad = nc, t.T = T, t.N = N, t.b0 = b0, t.a0 = c0, t.A = A;
        t.frame_mask = data_or_null(frame_mask);
        t.desc_valid = valid_buf.data_ptr<bool>();
        t.frame_w = frame_weights ? frame_weights->data_ptr<scalar_t>() : nullptr;
        t.desc_w = weight_buf.data_ptr<scalar_t>();
        t.s = scalars;
        t.scores = scores.data_ptr<scalar_t>();
        t.f = potentials ? f.data_ptr<scalar_t>() : nullptr, t.g = potentials ? g.data_ptr<scalar_t>() : nullptr;
        t.error = error.data_ptr<scalar_t>(), t.iterations = iterations.data_ptr<int32_t>();
        run_forward(t, 0, nb * ceil_div(nc, kLanes));
        if (keep_cache)
          keep_sims(t.sim, nb * T, N, nc, nc, cache.data_ptr<scalar_t>() + b0 * T * A * N + c0 * N, A * N);
      });
    }
  });
  return {scores, f, g, iterations, error, cache};
}

// Backward works on chunks of classes whose weights, (B * T, classes * N), hold about
// kBackwardElements values: big enough for efficient multi-threaded matmuls, small enough to
// stay a modest buffer.
constexpr int64_t kBackwardElements = int64_t(1) << 22;

// weights[row, c] = grad_scores[b, a] * exp((sim[row, c] - 1 + f[b, a, i] + g[b, a, j]) / eps) for
// row = b * T + i and column c = (a - a0) * N + j of the chunk, 0 where the frame or the
// descriptor is masked. The per-column terms go to scratch first, so that the exponentials run
// in one vectorizable pass.
template <typename scalar_t>
OST_INLINE void backward_weights(const scalar_t* sim, int64_t ld_sim, scalar_t* weights, int64_t rows_begin,
                                 int64_t rows_end, int64_t T, int64_t N, int64_t A, int64_t a0, int64_t na,
                                 const scalar_t* grad, const scalar_t* f, const scalar_t* g, const bool* frame_mask,
                                 const bool* desc_mask, double eps) {
  const int64_t cols = na * N;
  const scalar_t inv_eps = scalar_t(1.0 / eps);
  std::vector<scalar_t> add(cols), scale(cols);
  for (int64_t row = rows_begin; row < rows_end; ++row) {
    const int64_t b = row / T, i = row % T;
    scalar_t* __restrict out = weights + (row - rows_begin) * cols;
    if (frame_mask && !frame_mask[row]) {
      std::fill(out, out + cols, scalar_t(0));
      continue;
    }
    const scalar_t* gb = g + (b * A + a0) * N;
    for (int64_t a = 0; a < na; ++a) {
      const int64_t pair = b * A + a0 + a;
      const scalar_t fa = f[pair * T + i] - scalar_t(1), ga = grad[pair];
      for (int64_t j = 0; j < N; ++j) {
        const bool ok = !desc_mask || desc_mask[(a0 + a) * N + j];
        add[a * N + j] = fa + gb[a * N + j];
        scale[a * N + j] = ok ? ga : scalar_t(0);
      }
    }
    const scalar_t* __restrict s = sim + row * ld_sim;
    const scalar_t* __restrict ad = add.data();
    const scalar_t* __restrict sc = scale.data();
    _Pragma("omp simd")
    for (int64_t c = 0; c < cols; ++c) {
      const scalar_t e = fast_exp((s[c] + ad[c]) * inv_eps);
      out[c] = sc[c] != scalar_t(0) ? sc[c] * e : scalar_t(0);
    }
  }
}

// Compiled twice (AVX2 + FMA and baseline x86-64) where target_clones is available.
#define OST_BACKWARD_WEIGHTS(scalar_t, name)                                                                      \
  OST_MULTIVERSION void name(const scalar_t* sim, int64_t ld_sim, scalar_t* weights, int64_t rows_begin,           \
                             int64_t rows_end, int64_t T, int64_t N, int64_t A, int64_t a0, int64_t na,           \
                             const scalar_t* grad, const scalar_t* f, const scalar_t* g, const bool* frame_mask, \
                             const bool* desc_mask, double eps) {                                                 \
    backward_weights(sim, ld_sim, weights, rows_begin, rows_end, T, N, A, a0, na, grad, f, g, frame_mask,         \
                     desc_mask, eps);                                                                             \
  }
OST_BACKWARD_WEIGHTS(float, backward_weights_dispatch)
OST_BACKWARD_WEIGHTS(double, backward_weights_dispatch)
#undef OST_BACKWARD_WEIGHTS

std::tuple<at::Tensor, at::Tensor> od_backward_cpu(const at::Tensor& grad_scores_in, const at::Tensor& video,
                                                   const at::Tensor& desc,
                                                   const std::optional<at::Tensor>& frame_mask_in,
                                                   const std::optional<at::Tensor>& desc_mask_in,
                                                   const at::Tensor& f_in, const at::Tensor& g_in,
                                                   const at::Tensor& cache, double eps, bool normalize,
                                                   bool video_grad, bool desc_grad) {
  check_embeddings(video, desc, frame_mask_in, desc_mask_in);
  check_potentials(grad_scores_in, f_in, g_in, video, desc);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "ost_kernels::od_backward: eps must be finite and > 0, got ", eps);
  TORCH_CHECK(video.device().is_cpu(), "ost_kernels::od_backward (CPU): inputs must be CPU tensors");
  const int64_t B = video.size(0), T = video.size(1), d = video.size(2), A = desc.size(0), N = desc.size(1);
  const auto opts = video.options().dtype(compute_type(video.scalar_type()));
  const bool cached = cache.numel() > 0;
  TORCH_CHECK(!cached || (cache.dim() == 2 && cache.size(0) == B * T && cache.size(1) == A * N &&
                          cache.scalar_type() == opts.dtype().toScalarType() && cache.is_contiguous()),
              "ost_kernels::od_backward (CPU): cache must be the forward's (B * T, A * N) sims or empty, got ",
              cache.sizes());
  if (!video_grad && !desc_grad) return {not_requested(video), not_requested(desc)};
  const at::Tensor grad_scores = grad_scores_in.to(opts.dtype().toScalarType()).contiguous();
  const at::Tensor f = f_in.contiguous(), g = g_in.contiguous();
  const auto frame_mask = contiguous_mask(frame_mask_in);
  const auto desc_mask = contiguous_mask(desc_mask_in);
  const at::Tensor vn = unit_rows_fused(video, normalize, frame_mask);  // (B * T, d)
  at::Tensor grad_vn = video_grad ? at::zeros({B * T, d}, opts) : at::Tensor();
  at::Tensor grad_dn = desc_grad ? at::empty({A * N, d}, opts) : at::Tensor();
  const int64_t chunk = std::min(A, std::max<int64_t>(16, kBackwardElements / std::max<int64_t>(1, B * T * N)));
  at::Tensor weight_buf = at::empty({B * T * chunk * N}, opts);
  for (int64_t a0 = 0; a0 < A; a0 += chunk) {
    const int64_t na = std::min(chunk, A - a0);
    const at::Tensor dn = unit_rows_fused(desc.narrow(0, a0, na), normalize, narrow_mask(desc_mask, a0, na));
    at::Tensor weights = weight_buf.narrow(0, 0, B * T * na * N).view({B * T, na * N});
    if (!cached) at::mm_out(weights, vn, dn.t());  // the sims again, in place of the weights
    AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "od_backward_cpu", [&] {
      const scalar_t* sim = cached ? cache.data_ptr<scalar_t>() + a0 * N : weights.data_ptr<scalar_t>();
      const int64_t ld_sim = cached ? A * N : na * N;
      at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
        backward_weights_dispatch(sim, ld_sim, weights.data_ptr<scalar_t>() + begin * na * N, begin, end, T, N, A, a0,
                                  na, grad_scores.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                  data_or_null(frame_mask), data_or_null(desc_mask), eps);
      });
    });
    // d/d vn = W dn and d/d dn = W^T vn: two matmuls over the whole chunk.
    if (video_grad) grad_vn.addmm_(weights, dn);
    if (desc_grad) {
      at::Tensor out = grad_dn.narrow(0, a0 * N, na * N);
      at::mm_out(out, weights.t(), vn);
    }
  }
  at::Tensor grad_video = video_grad ? unit_rows_backward_fused(video, grad_vn, normalize) : not_requested(video);
  at::Tensor grad_desc = desc_grad ? unit_rows_backward_fused(desc, grad_dn, normalize) : not_requested(desc);
  return {grad_video, grad_desc};
}

}  // namespace

TORCH_LIBRARY_IMPL(ost_kernels, CPU, m) {
  m.impl("od_forward", &forward_entry<&od_forward_cpu>);
  m.impl("od_backward", &od_backward_cpu);
}

}  // namespace ost_kernels::cpu
