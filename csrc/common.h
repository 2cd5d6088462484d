// Input checks and helpers shared by the CPU and CUDA implementations of the ost_kernels ops.
// The Python API checks everything first with friendlier messages; these guard direct
// torch.ops.ost_kernels calls.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <string>

#include "op_schema.h"

namespace ost_kernels {

// The numbers every C++ path shares (Python's copies: ost_kernels/constants.py).
constexpr double kNormEps = 1e-12;  // x / max(||x||, kNormEps): a zero vector has cosine 0
constexpr double kLog2e = 1.4426950408889634;  // potentials are kept in base 2 inside kernels
constexpr double kLn2 = 0.6931471805599453;

inline at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_mask(const std::optional<at::Tensor>& mask, const char* name, int64_t rows, int64_t cols,
                       const at::Tensor& like) {
  if (!mask.has_value()) return;
  TORCH_CHECK(mask->scalar_type() == at::kBool, "ost_kernels: ", name, " must be bool, got ", mask->scalar_type());
  TORCH_CHECK(mask->dim() == 2 && mask->size(0) == rows && mask->size(1) == cols, "ost_kernels: ", name,
              " must have shape (", rows, ", ", cols, "), got ", mask->sizes());
  TORCH_CHECK(mask->device() == like.device(), "ost_kernels: ", name, " is on ", mask->device(),
              " but the embeddings are on ", like.device());
}

inline void check_embeddings(const at::Tensor& video, const at::Tensor& desc,
                             const std::optional<at::Tensor>& frame_mask,
                             const std::optional<at::Tensor>& desc_mask) {
  TORCH_CHECK(video.dim() == 3, "ost_kernels: video must be (B, T, d), got ", video.sizes());
  TORCH_CHECK(desc.dim() == 3, "ost_kernels: desc must be (A, N, d), got ", desc.sizes());
  TORCH_CHECK(video.size(2) == desc.size(2), "ost_kernels: video has d=", video.size(2), " but desc has d=",
              desc.size(2));
  TORCH_CHECK(video.numel() > 0 && desc.numel() > 0, "ost_kernels: zero-size inputs: video ", video.sizes(),
              ", desc ", desc.sizes());
  TORCH_CHECK(video.scalar_type() == desc.scalar_type(), "ost_kernels: video is ", video.scalar_type(),
              " but desc is ", desc.scalar_type());
  const auto t = video.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
              "ost_kernels: unsupported dtype ", t, "; expected float32, float16, bfloat16 or float64");
  TORCH_CHECK(video.device() == desc.device(), "ost_kernels: video is on ", video.device(), " but desc is on ",
              desc.device());
  check_mask(frame_mask, "frame_mask", video.size(0), video.size(1), video);
  check_mask(desc_mask, "desc_mask", desc.size(0), desc.size(1), video);
}

inline void check_solver_args(const SolverScalars& s) {
  TORCH_CHECK(std::isfinite(s.eps) && s.eps > 0, "ost_kernels: eps must be finite and > 0, got ", s.eps);
  TORCH_CHECK(s.max_iter >= 1, "ost_kernels: max_iter must be >= 1, got ", s.max_iter);
  TORCH_CHECK(std::isfinite(s.tol) && s.tol >= 0, "ost_kernels: tol must be finite and >= 0, got ", s.tol);
  TORCH_CHECK(s.reg_frames > 0 && s.reg_desc > 0,
              "ost_kernels: reg_frames and reg_desc must be > 0 (inf = exact), got ", s.reg_frames, ", ", s.reg_desc);
}

// The damping tau = rho / (rho + eps) of a relaxed side, 1 for an exact one (rho = inf).
inline double damping(double eps, double reg) { return std::isinf(reg) ? 1.0 : reg / (reg + eps); }

// Frame / descriptor weights: (B, T) / (A, N) floats where given, as od_solve checks them
// (finite, >= 0 and a row of positive valid weight are checked there, before any work).
inline void check_weights(const std::optional<at::Tensor>& w, int64_t rows, int64_t cols, const at::Tensor& like,
                          const char* name) {
  if (!w.has_value()) return;
  TORCH_CHECK(w->dim() == 2 && w->size(0) == rows && w->size(1) == cols, "ost_kernels: ", name, " must be (", rows,
              ", ", cols, "), got ", w->sizes());
  TORCH_CHECK(at::isFloatingType(w->scalar_type()), "ost_kernels: ", name, " must be a float tensor");
  TORCH_CHECK(w->device() == like.device(), "ost_kernels: ", name, " must be on ", like.device());
}

inline void check_potentials(const at::Tensor& grad_scores, const at::Tensor& f, const at::Tensor& g,
                             const at::Tensor& video, const at::Tensor& desc) {
  const int64_t B = video.size(0), T = video.size(1), A = desc.size(0), N = desc.size(1);
  const auto ct = compute_type(video.scalar_type());
  TORCH_CHECK(grad_scores.dim() == 2 && grad_scores.size(0) == B && grad_scores.size(1) == A,
              "ost_kernels: grad_scores must be (B, A) = (", B, ", ", A, "), got ", grad_scores.sizes());
  TORCH_CHECK(f.dim() == 3 && f.size(0) == B && f.size(1) == A && f.size(2) == T,
              "ost_kernels: f must be (B, A, T), got ", f.sizes());
  TORCH_CHECK(g.dim() == 3 && g.size(0) == B && g.size(1) == A && g.size(2) == N,
              "ost_kernels: g must be (B, A, N), got ", g.sizes());
  TORCH_CHECK(f.scalar_type() == ct && g.scalar_type() == ct, "ost_kernels: potentials must be ", ct);
  TORCH_CHECK(grad_scores.device() == video.device() && f.device() == video.device() &&
                  g.device() == video.device(),
              "ost_kernels: grad_scores, f and g must be on ", video.device());
}

// A mask row with no valid entry has no mass to transport: refused, as od_solve refuses it.
// On CPU the answer is read at once; on a GPU it is a device-side assertion (no host sync),
// which surfaces at the next synchronization and, as every device assertion, is fatal to the
// CUDA context (the message is the device's printf).
inline void check_mask_rows(const std::optional<at::Tensor>& mask, const char* name) {
  if (!mask.has_value()) return;
  const std::string message = std::string("ost_kernels: ") + name +
                              " has rows with no valid entry (all False); every row needs at least one valid entry";
  const at::Tensor every_row = mask->any(1).all();
  if (mask->is_cpu()) {
    TORCH_CHECK(every_row.item<bool>(), message);
  } else {
    at::_assert_async(every_row, message);
  }
}

// Embeddings in the compute dtype, L2-normalized along d when asked, zeroed where masked
// (so whatever a masked row holds never reaches a score or a gradient); contiguous.
inline at::Tensor unit_rows(const at::Tensor& x, bool normalize, const std::optional<at::Tensor>& mask) {
  // Contiguous first, so that the norm reduces in the same order whatever the strides.
  at::Tensor y = x.to(compute_type(x.scalar_type())).contiguous();
  if (normalize) y = y / y.norm(2, {-1}, true).clamp_min(kNormEps);
  if (mask.has_value()) y = y.masked_fill(mask->logical_not().unsqueeze(-1), 0);
  return y.contiguous();
}

// Gradient of unit_rows(x) (without the mask) given the gradient of its output.
inline at::Tensor unit_rows_backward(const at::Tensor& x, const at::Tensor& grad_unit, bool normalize) {
  if (!normalize) return grad_unit.to(x.scalar_type());
  const at::Tensor xc = x.to(grad_unit.scalar_type());
  const at::Tensor n = xc.norm(2, {-1}, true);
  const at::Tensor nc = n.clamp_min(kNormEps);
  const at::Tensor u = xc / nc;
  const at::Tensor radial = at::where(n > kNormEps, (u * grad_unit).sum(-1, true), at::zeros_like(n));
  return ((grad_unit - u * radial) / nc).to(x.scalar_type());
}

// Masks as the kernels read them: contiguous bool, or nullptr without a mask.
inline std::optional<at::Tensor> contiguous_mask(const std::optional<at::Tensor>& m) {
  if (!m.has_value()) return std::nullopt;
  return m->contiguous();
}

inline const bool* data_or_null(const std::optional<at::Tensor>& m) {
  return m.has_value() ? m->data_ptr<bool>() : nullptr;
}

// What od_backward returns for a gradient nobody asked for (an op cannot return None).
inline at::Tensor not_requested(const at::Tensor& like) { return at::empty({0}, like.options()); }

inline std::optional<at::Tensor> narrow_mask(const std::optional<at::Tensor>& mask, int64_t start, int64_t len) {
  if (!mask.has_value()) return std::nullopt;
  return mask->narrow(0, start, len);
}

}  // namespace ost_kernels
