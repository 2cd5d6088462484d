// The cosine normalization of embedding rows and its backward, fused into single passes over
// the rows (the tensor-expression versions in common.h take five to eight passes with
// temporaries; on the CPU those passes cost as much as the solver at small class counts).
// Same convention: x / max(||x||, kNormEps), masked rows zero.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>

#include "common.h"

namespace ost_kernels::cpu {

// The factor that turns row x (d values, compute dtype) into what the sims use:
// 1 / max(||x||, eps) when normalizing, else 1.
template <typename scalar_t>
inline scalar_t row_scale(const scalar_t* x, int64_t d, bool normalize) {
  if (!normalize) return scalar_t(1);
  scalar_t ss = 0;
  _Pragma("omp simd reduction(+ : ss)")
  for (int64_t k = 0; k < d; ++k) ss += x[k] * x[k];
  return scalar_t(1) / std::max(std::sqrt(ss), scalar_t(kNormEps));
}

// out_row(r)[0:d] = x[r] * row_scale(x[r]) for rows [0, rows) of x (rows, d), zeros for masked
// rows (even where they hold NaN): one pass, one parallel region (the row is still in L1
// when it is scaled).
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
      const scalar_t k = row_scale(src, d, normalize);
      _Pragma("omp simd")
      for (int64_t q = 0; q < d; ++q) dst[q] = src[q] * k;
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
        scalar_t ss = 0, xg = 0;
        _Pragma("omp simd reduction(+ : ss, xg)")
        for (int64_t k = 0; k < d; ++k) {
          ss += xr[k] * xr[k];
          xg += xr[k] * gr[k];
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
