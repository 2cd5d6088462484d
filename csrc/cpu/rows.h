// The cosine normalization of embedding rows and its backward, fused into single passes over
// the rows (the tensor-expression versions in common.h take five to eight passes with
// temporaries; on the CPU those passes are a large share of the time at small class counts).
// Same convention: x / max(||x||, kNormEps), masked rows zero.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>

#include "common.h"

namespace ost_kernels::cpu {

// Rows with an entry above this are divided by their largest magnitude first: the sum of
// squares would overflow (float32 from ~1e19). The same rule as ost_kernels/_magnitudes.py
// applies for the other backends in Python; here it costs one compare per row, where a
// separate pass over the inputs was a visible share of the forward at small A
// (benchmarks/history/2026-12-02-cpu-forward-goal-reached.md).
template <typename scalar_t>
constexpr scalar_t kRescaleAbove = sizeof(scalar_t) == sizeof(float) ? scalar_t(1e15) : scalar_t(1e150);
// Rows whose largest magnitude is below this (and above 0) are divided by it too: their norm
// would otherwise meet the kNormEps clamp (or underflow in the squares) and their cosines
// shrink towards 0; a zero row stays zero (cosine 0).
constexpr double kRescaleBelow = 1e-10;

// Whether a row with largest magnitude `top` is divided by it first (finite rows only: NaN or
// inf rows poison only themselves).
template <typename scalar_t>
inline bool rescales(scalar_t top) {
  return (top > kRescaleAbove<scalar_t> || (top < scalar_t(kRescaleBelow) && top > scalar_t(0))) &&
         std::isfinite(top);
}

// What turns row x (d values, compute dtype) into what the sims use: x / pre * post, with
// post = 1 / max(||x / pre||, eps) when normalizing (else 1), and pre the row's largest
// magnitude for finite rows beyond kRescaleAbove or below kRescaleBelow, else 1 (exact: the
// cosine is homogeneous of degree 0). NaN or inf rows keep pre = 1 and poison only themselves.
template <typename scalar_t>
struct RowScale {
  scalar_t pre = 1, post = 1;
  bool rescaled() const { return pre != scalar_t(1); }
};

template <typename scalar_t>
inline RowScale<scalar_t> row_scale(const scalar_t* x, int64_t d, bool normalize) {
  RowScale<scalar_t> s;
  if (!normalize) return s;
  scalar_t ss = 0, top = 0;
  _Pragma("omp simd reduction(+ : ss) reduction(max : top)")
  for (int64_t k = 0; k < d; ++k) {
    const scalar_t a = std::abs(x[k]);
    ss += x[k] * x[k];
    top = a > top ? a : top;  // a select, not std::max (a reference): stays vectorized
  }
  if (rescales(top)) {
    s.pre = top;
    ss = 0;
    for (int64_t k = 0; k < d; ++k) ss += (x[k] / top) * (x[k] / top);
  }
  s.post = scalar_t(1) / std::max(std::sqrt(ss), scalar_t(kNormEps));
  return s;
}

// out_row(r)[0:d] = x[r] / pre * post (row_scale) for rows [0, rows) of x (rows, d), zeros for
// masked rows (even where they hold NaN): one pass, one parallel region (the row is still in
// L1 when it is scaled).
template <typename scalar_t, typename OutRow>
void scale_rows(const scalar_t* x, int64_t rows, int64_t d, bool normalize, const bool* mask, OutRow out_row) {
  at::parallel_for(0, rows, 32, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* dst = out_row(r);
      if (mask && !mask[r]) {
        std::fill(dst, dst + d, scalar_t(0));
        continue;
      }
      const scalar_t* src = x + r * d;
      const RowScale<scalar_t> s = row_scale(src, d, normalize);
      const scalar_t k = s.post, pre = s.pre;
      if (s.rescaled()) {
        for (int64_t q = 0; q < d; ++q) dst[q] = src[q] / pre * k;
      } else {
        _Pragma("omp simd")
        for (int64_t q = 0; q < d; ++q) dst[q] = src[q] * k;
      }
    }
  });
}

// unit_rows of common.h in one pass: x (..., d) in the compute dtype, contiguous, scaled per
// row, as (rows, d).
inline at::Tensor unit_rows_fused(const at::Tensor& x_in, bool normalize, const std::optional<at::Tensor>& mask) {
  const at::Tensor x = x_in.to(compute_type(x_in.scalar_type())).contiguous();
  const int64_t d = x.size(-1), rows = x.numel() / d;
  at::Tensor out = at::empty({rows, d}, x.options());
  const auto m = contiguous_mask(mask);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "unit_rows_fused", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    scale_rows(x.data_ptr<scalar_t>(), rows, d, normalize, data_or_null(m), [&](int64_t r) { return dst + r * d; });
  });
  return out;
}

// unit_rows_backward of common.h in one pass: the gradient of x (..., d) given the gradient
// of its unit rows (rows, d) in the compute dtype; returned shaped and typed like x.
// With n = ||x||: (g - u (u . g)) / n for n > eps, g / eps below.
inline at::Tensor unit_rows_backward_fused(const at::Tensor& x_in, const at::Tensor& grad_unit_in, bool normalize) {
  if (!normalize) return grad_unit_in.reshape(x_in.sizes()).to(x_in.scalar_type());
  const at::Tensor grad_unit = grad_unit_in.contiguous();
  const at::Tensor x = x_in.to(grad_unit.scalar_type()).contiguous();
  const int64_t d = x.size(-1), rows = x.numel() / d;
  at::Tensor out = at::empty({rows, d}, grad_unit.options());
  AT_DISPATCH_FLOATING_TYPES(grad_unit.scalar_type(), "unit_rows_backward_fused", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* gs = grad_unit.data_ptr<scalar_t>();
    scalar_t* os = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t *xr = xs + r * d, *gr = gs + r * d;
        scalar_t* o = os + r * d;
        scalar_t ss = 0, xg = 0, top = 0;
        _Pragma("omp simd reduction(+ : ss, xg) reduction(max : top)")
        for (int64_t k = 0; k < d; ++k) {
          ss += xr[k] * xr[k];
          xg += xr[k] * gr[k];
          const scalar_t a = std::abs(xr[k]);
          top = a > top ? a : top;
        }
        if (rescales(top)) {
          // The forward divided this row by top (a constant): the gradient of x is that of
          // x / top, divided by top.
          ss = 0, xg = 0;
          for (int64_t k = 0; k < d; ++k) {
            const scalar_t y = xr[k] / top;
            ss += y * y;
            xg += y * gr[k];
          }
          const scalar_t n = std::sqrt(ss), inv = scalar_t(1) / n, radial = xg * inv * inv;
          for (int64_t k = 0; k < d; ++k) o[k] = (gr[k] - xr[k] / top * radial) * inv / top;
          continue;
        }
        const scalar_t n = std::sqrt(ss);
        if (n > scalar_t(kNormEps)) {
          const scalar_t inv = scalar_t(1) / n, radial = xg * inv * inv;  // (u . g) / n
          _Pragma("omp simd")
          for (int64_t k = 0; k < d; ++k) o[k] = (gr[k] - xr[k] * radial) * inv;
        } else {
          const scalar_t inv = scalar_t(1) / scalar_t(kNormEps);
          _Pragma("omp simd")
          for (int64_t k = 0; k < d; ++k) o[k] = gr[k] * inv;
        }
      }
    });
  });
  return out.view(x_in.sizes()).to(x_in.scalar_type());
}

}  // namespace ost_kernels::cpu
