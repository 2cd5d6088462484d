// The lane-parallel Sinkhorn solver of the CPU kernel: groups of kLanes (video, class) pairs
// solved at once, one pair per SIMD lane. Included by od_cpu.cpp only (hence the anonymous
// namespace), which cuts the work into tiles and registers the ops.
//
// Every loop runs over the lanes innermost, so the compiler vectorizes across pairs and no
// loop needs a horizontal reduction, whatever T and N are.
//
//   * Scaling form where it is safe: with hi / lo the pair's largest / smallest valid sim,
//     K_ij = exp((sim_ij - hi) / eps) lies in [exp(-64), 1] whenever (hi - lo) / eps <= 64,
//     so r = mu / (K c), c = nu / (K^T r) neither underflows nor overflows. This is the
//     iteration of docs/design.md section 3 with f_i = eps log r_i + (1 - hi), g_j = eps log c_j,
//     with multiply-adds instead of exponentials in the loop.
//   * Log domain otherwise (small eps with widely spread sims): that pair is solved on its
//     own, exactly as docs/design.md writes it.
//
// Weights and relaxed marginals (docs/design.md section 3): the marginals are the weights
// normalized over the valid entries (a weight of 0 counts as masked); a relaxed side damps its
// update by tau = rho / (rho + eps), u = (mu / K v)^tau, computed as exp(tau log x), and its
// stop rule is the row marginal's L1 change over one iteration. With the shift hi the stored
// row scaling is r = u exp((hi - 1) / eps), so a damped row update carries the factor
// exp((1 - tau)(hi - 1) / eps) per lane (1 with the fixed shift hi = 1).
//
// Per-pair stopping: a lane whose row-marginal error meets tol is frozen (its r and c are no
// longer written) while the other lanes iterate on; the group ends when no lane is active.
// Lanes never mix, and every choice is made from the pair's own data, so a pair's result does
// not depend on the other pairs of its group or tile. The row sums that the stop rule needs
// are r * (K c), and K c is what the next row update needs anyway.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.h"
#include "cpu/fast_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// One build that uses AVX2 + FMA where the CPU has them, chosen at load time.
#define OST_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OST_MULTIVERSION
#endif
#define OST_INLINE [[gnu::always_inline]] inline
#define OST_LANES _Pragma("omp simd") for (int l = 0; l < kLanes; ++l)

namespace ost_kernels::cpu {
namespace {

constexpr int kLanes = 16;                          // pairs per SIMD group (two AVX2 float vectors)
constexpr double kMaxScaledRange = 64.0;            // scaling form while (hi - lo) / eps <= this

int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// One tile: nb videos from b0, na classes from a0, stored with room for na_pad classes
// (a multiple of kLanes; the padding holds zeros).
template <typename scalar_t>
struct Tile {
  const scalar_t* sim;  // (nb * T, N * na_pad): sim[(b * T + i) * ld + j * na_pad + a]
  int64_t nb, na, na_pad, T, N;
  int64_t b0, a0, A;        // tile origin; A = classes in total (output strides)
  const bool* frame_mask;   // (B, T) or nullptr
  const bool* desc_valid;   // (N, na_pad) for this tile; padded classes read as valid
  const scalar_t* frame_w;  // (B, T) frame weights, or nullptr (uniform)
  const scalar_t* desc_w;   // (N, na_pad) descriptor weights for this tile (ones without weights)
  SolverScalars s;  // the op's solver scalars (csrc/op_schema.h): the loops read them here

  double tau_f() const { return damping(s.eps, s.reg_frames); }  // damping of the frame updates, 1 = exact
  double tau_d() const { return damping(s.eps, s.reg_desc); }
  bool relaxed() const { return tau_f() != 1 || tau_d() != 1; }
  // The frame's weight in the video's marginal (before normalizing): 0 where masked.
  scalar_t row_weight(int64_t b, int64_t i) const {
    if (!frame_ok(b, i)) return 0;
    const scalar_t w = frame_w ? frame_w[(b0 + b) * T + i] : scalar_t(1);
    return w > 0 ? w : scalar_t(0);
  }
  // forward outputs, full (B, A, ...) tensors
  scalar_t *scores, *f, *g, *error;  // f, g null: scores only (the potentials are not written)
  int32_t* iterations;

  int64_t ld() const { return N * na_pad; }
  const scalar_t* sim_row(int64_t b, int64_t i, int64_t j) const { return sim + (b * T + i) * ld() + j * na_pad; }
  bool frame_ok(int64_t b, int64_t i) const { return !frame_mask || frame_mask[(b0 + b) * T + i]; }
};

// Per-thread scratch for one group: k is (N, T, lanes), r and kc (T, lanes), c and nu (N, lanes).
template <typename scalar_t>
struct GroupScratch {
  std::vector<scalar_t> k, r, kc, c, nu, acc, mu, s, nu_one;  // s, nu_one: one pair, for the log domain
  std::vector<scalar_t> prev;  // (T, lanes): the row marginal of the previous iteration (relaxed sides)
  GroupScratch(int64_t T, int64_t N)
      : k(N * T * kLanes), r(T * kLanes), kc(T * kLanes), c(N * kLanes), nu(N * kLanes), acc(N * kLanes), mu(T),
        s(T * N), nu_one(N), prev(T * kLanes) {}
};

// x^tau for x > 0 (the damped updates), in the fast exp / log of fast_math.h.
template <typename scalar_t>
OST_INLINE scalar_t damped(scalar_t x, scalar_t tau) {
  return fast_exp(tau * fast_log(x));
}

template <typename scalar_t>
OST_INLINE bool keep_going(scalar_t err, double tol) {
  // NaN compares false, so a poisoned pair stops instead of running on (as backend "torch").
  return tol <= 0 || err > scalar_t(tol);
}

// Log-sum-exp of z[q * stride] + add[q] over q < n; -inf when every term is -inf.
template <typename scalar_t>
OST_INLINE scalar_t strided_lse(const scalar_t* z, int64_t stride, int64_t n, const scalar_t* add) {
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t m = ninf;
  for (int64_t q = 0; q < n; ++q) m = std::max(m, z[q * stride] + add[q]);
  if (!(m > ninf)) return m;
  scalar_t s = 0;
  for (int64_t q = 0; q < n; ++q) s += std::exp(z[q * stride] + add[q] - m);
  return m + std::log(s);
}

// The log-domain iteration of docs/design.md section 3 for one pair, whose sims (column-major,
// s[j * T + i]) and marginal weights (mu over T, nu over N; 0 = masked) are given.
template <typename scalar_t>
void solve_log_domain(const Tile<scalar_t>& t, int64_t pair, const scalar_t* s, const scalar_t* mu,
                      const scalar_t* nu) {
  const int64_t T = t.T, N = t.N;
  const scalar_t inv_eps = scalar_t(1.0 / t.s.eps), eps = scalar_t(t.s.eps);
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  std::vector<scalar_t> z(T * N), alpha(T), beta(N, scalar_t(0)), row_lse(T);
  for (int64_t j = 0; j < N; ++j)
    for (int64_t i = 0; i < T; ++i)
      z[j * T + i] = (nu[j] > 0 && mu[i] > 0) ? (s[j * T + i] - scalar_t(1)) * inv_eps : ninf;
  for (int64_t i = 0; i < T; ++i) row_lse[i] = strided_lse(z.data() + i, T, N, beta.data());
  const scalar_t tau_f = scalar_t(t.tau_f()), tau_d = scalar_t(t.tau_d());
  const bool relaxed = t.relaxed();
  std::vector<scalar_t> prev(T);  // the row marginal before the iteration (relaxed: the stop rule's)
  for (int64_t i = 0; i < T; ++i) prev[i] = mu[i] > 0 ? std::exp(row_lse[i]) : scalar_t(0);
  scalar_t err = 0;
  int64_t it = 0;
  while (it < t.s.max_iter) {
    for (int64_t i = 0; i < T; ++i) alpha[i] = mu[i] > 0 ? tau_f * (std::log(mu[i]) - row_lse[i]) : scalar_t(0);
    for (int64_t j = 0; j < N; ++j)
      beta[j] = nu[j] > 0 ? tau_d * (std::log(nu[j]) - strided_lse(z.data() + j * T, 1, T, alpha.data()))
                          : scalar_t(0);
    err = 0;
    for (int64_t i = 0; i < T; ++i) {
      row_lse[i] = strided_lse(z.data() + i, T, N, beta.data());
      if (!(mu[i] > 0)) continue;
      const scalar_t row = std::exp(alpha[i] + row_lse[i]);
      err += std::abs(row - (relaxed ? prev[i] : mu[i]));
      prev[i] = row;
    }
    ++it;
    if (!keep_going(err, t.s.tol)) break;
  }
  scalar_t score = 0;
  for (int64_t j = 0; j < N; ++j)
    for (int64_t i = 0; i < T; ++i)
      if (nu[j] > 0 && mu[i] > 0) score += std::exp(z[j * T + i] + alpha[i] + beta[j]) * s[j * T + i];
  if (t.f) {  // (null: scores only)
    for (int64_t i = 0; i < T; ++i) t.f[pair * T + i] = eps * alpha[i];
    for (int64_t j = 0; j < N; ++j) t.g[pair * N + j] = eps * beta[j];
  }
  t.scores[pair] = score;
  t.iterations[pair] = static_cast<int32_t>(it);
  t.error[pair] = err;
}

// out[j] = sum_i k[j][i] * x[i] * (kExtra ? extra(i, j) : 1), lane by lane, for k laid out (N, T, lanes).
// Columns go four at a time with their sums in local arrays, which the compiler keeps in
// registers: four independent chains, no store-to-load round trips.
template <bool kExtra, typename scalar_t, typename Extra>
OST_INLINE void column_sums(const scalar_t* __restrict k, const scalar_t* __restrict x, int64_t T, int64_t N,
                            scalar_t* __restrict out, Extra extra) {
  int64_t j = 0;
  for (; j + 4 <= N; j += 4) {
    scalar_t a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
    for (int64_t i = 0; i < T; ++i) {
      const scalar_t* xi = x + i * kLanes;
      const scalar_t *k0 = k + (j * T + i) * kLanes, *k1 = k0 + T * kLanes, *k2 = k1 + T * kLanes,
                     *k3 = k2 + T * kLanes;
      const scalar_t *e0 = extra(i, j), *e1 = extra(i, j + 1), *e2 = extra(i, j + 2), *e3 = extra(i, j + 3);
      OST_LANES {
        a0[l] += k0[l] * xi[l] * (kExtra ? e0[l] : scalar_t(1));
        a1[l] += k1[l] * xi[l] * (kExtra ? e1[l] : scalar_t(1));
        a2[l] += k2[l] * xi[l] * (kExtra ? e2[l] : scalar_t(1));
        a3[l] += k3[l] * xi[l] * (kExtra ? e3[l] : scalar_t(1));
      }
    }
    OST_LANES {
      out[j * kLanes + l] = a0[l];
      out[(j + 1) * kLanes + l] = a1[l];
      out[(j + 2) * kLanes + l] = a2[l];
      out[(j + 3) * kLanes + l] = a3[l];
    }
  }
  for (; j < N; ++j) {
    scalar_t a0[kLanes] = {}, a1[kLanes] = {};  // two halves of the frames, two chains
    int64_t i = 0;
    for (; i + 2 <= T; i += 2) {
      const scalar_t *k0 = k + (j * T + i) * kLanes, *x0 = x + i * kLanes;
      const scalar_t *e0 = extra(i, j), *e1 = extra(i + 1, j);
      OST_LANES {
        a0[l] += k0[l] * x0[l] * (kExtra ? e0[l] : scalar_t(1));
        a1[l] += k0[kLanes + l] * x0[kLanes + l] * (kExtra ? e1[l] : scalar_t(1));
      }
    }
    if (i < T) {
      const scalar_t *k0 = k + (j * T + i) * kLanes, *x0 = x + i * kLanes, *e0 = extra(i, j);
      OST_LANES { a0[l] += k0[l] * x0[l] * (kExtra ? e0[l] : scalar_t(1)); }
    }
    OST_LANES { out[j * kLanes + l] = a0[l] + a1[l]; }
  }
}

// Solves the pairs (b, a_first + l), l < kLanes, of a tile. Lanes past the tile's classes
// are padding: they run along inactive and write nothing.
template <typename scalar_t>
OST_INLINE void solve_group(const Tile<scalar_t>& t, int64_t b, int64_t a_first, GroupScratch<scalar_t>& w) {
  const int64_t T = t.T, N = t.N;
  const scalar_t inv_eps = scalar_t(1.0 / t.s.eps), eps = scalar_t(t.s.eps);
  const scalar_t inf = std::numeric_limits<scalar_t>::infinity();
  const int64_t lanes = std::min<int64_t>(kLanes, t.na - a_first);
  // Distinct buffers: __restrict lets the compiler keep partial sums in registers.
  scalar_t* __restrict k = w.k.data();
  scalar_t* __restrict r = w.r.data();
  scalar_t* __restrict kc = w.kc.data();
  scalar_t* __restrict c = w.c.data();
  scalar_t* __restrict nu = w.nu.data();
  scalar_t* __restrict acc = w.acc.data();
  scalar_t* __restrict mu = w.mu.data();

  // Marginals: the frames' are the video's, shared by all lanes; the descriptors' are per
  // class. Weights (1 without) normalized over the valid entries; a weight of 0 is masked.
  scalar_t tv = 0;
  for (int64_t i = 0; i < T; ++i) tv += t.row_weight(b, i);
  for (int64_t i = 0; i < T; ++i) mu[i] = t.row_weight(b, i) / tv;
  scalar_t nv[kLanes] = {};
  for (int64_t j = 0; j < N; ++j) {
    const bool* valid = t.desc_valid + j * t.na_pad + a_first;
    const scalar_t* wj = t.desc_w + j * t.na_pad + a_first;
    OST_LANES { nv[l] += (valid[l] && wj[l] > 0) ? wj[l] : scalar_t(0); }
  }
  for (int64_t j = 0; j < N; ++j) {
    const bool* valid = t.desc_valid + j * t.na_pad + a_first;
    const scalar_t* wj = t.desc_w + j * t.na_pad + a_first;
    OST_LANES { nu[j * kLanes + l] = (valid[l] && wj[l] > 0) ? wj[l] / nv[l] : scalar_t(0); }
  }

  // The shift hi keeps K = exp((sim - hi) / eps) in [exp(-64), 1]. Cosines lie in [-1, 1],
  // so hi = 1 does it for every pair once 2 / eps <= 64; otherwise each lane's own range of
  // valid sims decides its form and gives its shift.
  scalar_t lo[kLanes], hi[kLanes];
  const bool fixed_shift = t.s.normalize && 2.0 / t.s.eps <= kMaxScaledRange;
  OST_LANES { lo[l] = fixed_shift ? scalar_t(-1) : inf; hi[l] = fixed_shift ? scalar_t(1) : -inf; }
  for (int64_t j = 0; j < N && !fixed_shift; ++j) {
    for (int64_t i = 0; i < T; ++i) {
      if (!(mu[i] > 0)) continue;
      const scalar_t* src = t.sim_row(b, i, j) + a_first;
      const scalar_t* nuj = nu + j * kLanes;
      OST_LANES {
        // Plain selects on values (std::min / max return references and defeat registers).
        const bool ok = nuj[l] > 0;
        const scalar_t v = src[l];
        const scalar_t v_lo = ok ? v : inf, v_hi = ok ? v : -inf;
        lo[l] = v_lo < lo[l] ? v_lo : lo[l];
        hi[l] = v_hi > hi[l] ? v_hi : hi[l];
      }
    }
  }
  scalar_t active[kLanes], err[kLanes] = {};
  int32_t iters[kLanes] = {};
  bool log_domain[kLanes];
  const bool relaxed = t.relaxed();
  const scalar_t tau_f = scalar_t(t.tau_f()), tau_d = scalar_t(t.tau_d());
  // A damped row update's factor exp((1 - tau_f)(hi - 1) / eps) (see the top of this file).
  scalar_t factor[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const double lift = (1.0 - t.tau_f()) * (double(hi[l]) - 1.0) / t.s.eps;
    bool scaled = (hi[l] - lo[l]) / t.s.eps <= kMaxScaledRange;  // false for NaN
    scaled = scaled && std::abs(lift) <= kMaxScaledRange;
    log_domain[l] = l < lanes && !scaled;
    active[l] = (l < lanes && scaled) ? scalar_t(1) : scalar_t(0);
    if (!(active[l] > 0)) hi[l] = 0;  // keeps an idle lane's arithmetic finite
    factor[l] = active[l] > 0 ? scalar_t(std::exp(lift)) : scalar_t(1);
  }

  for (int64_t j = 0; j < N; ++j) {
    const scalar_t* nuj = nu + j * kLanes;
    for (int64_t i = 0; i < T; ++i) {
      const scalar_t* src = t.sim_row(b, i, j) + a_first;
      scalar_t* kij = k + (j * T + i) * kLanes;
      const bool row = mu[i] > 0;
      OST_LANES {
        // In range: an active lane's valid entries lie in [(lo - hi) / eps, 0], within
        // [-kMaxScaledRange, 0] (rounding aside). Other lanes' K is never used.
        const scalar_t e = exp_in_range((src[l] - hi[l]) * inv_eps);
        kij[l] = (row && nuj[l] > 0) ? e : scalar_t(0);
      }
    }
    OST_LANES { c[j * kLanes + l] = nuj[l] > 0 ? scalar_t(1) : scalar_t(0); }  // g = 0
  }
  // kc = K c, a row at a time: each row's short sum stays in a register.
  auto k_times_c = [&] {
    for (int64_t i = 0; i < T; ++i) {
      scalar_t sum[kLanes] = {};
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t *kij = k + (j * T + i) * kLanes, *cj = c + j * kLanes;
        OST_LANES { sum[l] += kij[l] * cj[l]; }
      }
      OST_LANES { kc[i * kLanes + l] = sum[l]; }
    }
  };
  auto no_extra = [](int64_t, int64_t) -> const scalar_t* { return nullptr; };
  k_times_c();
  std::fill(r, r + T * kLanes, scalar_t(0));
  scalar_t* __restrict prev = w.prev.data();
  if (relaxed) {  // the row marginal at f = g = 0: exp((hi - 1) / eps) K 1
    scalar_t lift0[kLanes];
    for (int l = 0; l < kLanes; ++l) lift0[l] = scalar_t(std::exp((double(hi[l]) - 1.0) / t.s.eps));
    for (int64_t i = 0; i < T; ++i) {
      const scalar_t* kci = kc + i * kLanes;
      OST_LANES { prev[i * kLanes + l] = lift0[l] * kci[l]; }
    }
  }

  // One Sinkhorn loop, compiled twice: exact marginals (divisions, the row-marginal error)
  // and relaxed ones (damped updates, the row marginal's change): no per-entry branch on it.
  auto iterate = [&](auto relaxed_tag) __attribute__((always_inline)) {  // inlined: into the AVX2 clone too
    constexpr bool kRelaxed = decltype(relaxed_tag)::value;
    for (int64_t it = 0; it < t.s.max_iter; ++it) {
      bool any = false;
      for (int l = 0; l < kLanes; ++l) any |= active[l] > 0;
      if (!any) break;
      for (int64_t i = 0; i < T; ++i) {
        if (!(mu[i] > 0)) continue;  // masked frames keep r = 0
        scalar_t* ri = r + i * kLanes;
        const scalar_t* kci = kc + i * kLanes;
        const scalar_t m = mu[i];
        if (kRelaxed && tau_f != scalar_t(1)) {
          OST_LANES { ri[l] = active[l] > 0 ? factor[l] * damped(m / kci[l], tau_f) : ri[l]; }
        } else {
          OST_LANES { ri[l] = active[l] > 0 ? m / kci[l] : ri[l]; }
        }
      }
      column_sums<false>(k, r, T, N, acc, no_extra);  // K^T r
      for (int64_t j = 0; j < N; ++j) {
        scalar_t* cj = c + j * kLanes;
        const scalar_t *nuj = nu + j * kLanes, *accj = acc + j * kLanes;
        if (kRelaxed && tau_d != scalar_t(1)) {
          OST_LANES { cj[l] = (active[l] > 0 && nuj[l] > 0) ? damped(nuj[l] / accj[l], tau_d) : cj[l]; }
        } else {
          OST_LANES { cj[l] = (active[l] > 0 && nuj[l] > 0) ? nuj[l] / accj[l] : cj[l]; }
        }
      }
      k_times_c();
      // The stop rule's error, summed in two halves of the frames: two chains instead of one.
      // Exact: the row-marginal error; relaxed: the row marginal's change since the last one.
      scalar_t e[kLanes] = {}, e1[kLanes] = {};
      int64_t i = 0;
      for (; i + 2 <= T; i += 2) {
        const scalar_t *ri = r + i * kLanes, *kci = kc + i * kLanes;
        if constexpr (kRelaxed) {
          scalar_t* p0 = prev + i * kLanes;
          const bool v0 = mu[i] > 0, v1 = mu[i + 1] > 0;
          OST_LANES {
            const scalar_t row0 = v0 ? ri[l] * kci[l] : scalar_t(0), row1 = v1 ? ri[kLanes + l] * kci[kLanes + l]
                                                                                : scalar_t(0);
            e[l] += std::abs(row0 - p0[l]);
            e1[l] += std::abs(row1 - p0[kLanes + l]);
            p0[l] = active[l] > 0 ? row0 : p0[l];
            p0[kLanes + l] = active[l] > 0 ? row1 : p0[kLanes + l];
          }
        } else {
          const scalar_t m0 = mu[i], m1 = mu[i + 1];
          OST_LANES {
            e[l] += std::abs(ri[l] * kci[l] - m0);
            e1[l] += std::abs(ri[kLanes + l] * kci[kLanes + l] - m1);
          }
        }
      }
      if (i < T) {
        const scalar_t *ri = r + i * kLanes, *kci = kc + i * kLanes;
        if constexpr (kRelaxed) {
          scalar_t* p0 = prev + i * kLanes;
          const bool v0 = mu[i] > 0;
          OST_LANES {
            const scalar_t row0 = v0 ? ri[l] * kci[l] : scalar_t(0);
            e[l] += std::abs(row0 - p0[l]);
            p0[l] = active[l] > 0 ? row0 : p0[l];
          }
        } else {
          const scalar_t m0 = mu[i];
          OST_LANES { e[l] += std::abs(ri[l] * kci[l] - m0); }
        }
      }
      OST_LANES { e[l] += e1[l]; }
      for (int l = 0; l < kLanes; ++l) {
        if (!(active[l] > 0)) continue;
        err[l] = e[l];
        ++iters[l];
        if (!keep_going(e[l], t.s.tol)) active[l] = 0;
      }
    }
  };
  if (relaxed) {
    iterate(std::true_type{});
  } else {
    iterate(std::false_type{});
  }

  if (relaxed) {
    // A relaxed side loses the gauge freedom that lets the exact iteration keep r and c in
    // range: the potentials of the other side then carry the whole cost (at eps = 0.01 that
    // overflowed c = exp(g / eps) in float32). A lane whose scalings left a safe range is
    // solved again in the log domain: the choice still rests on the pair's own data only.
    const scalar_t tiny = std::sqrt(std::numeric_limits<scalar_t>::min()),
                   huge = std::sqrt(std::numeric_limits<scalar_t>::max());
    for (int l = 0; l < lanes; ++l) {
      if (log_domain[l]) continue;
      bool ok = true;
      for (int64_t i = 0; i < T; ++i)
        if (mu[i] > 0) ok = ok && r[i * kLanes + l] >= tiny && r[i * kLanes + l] <= huge;
      for (int64_t j = 0; j < N; ++j)
        if (nu[j * kLanes + l] > 0) ok = ok && c[j * kLanes + l] >= tiny && c[j * kLanes + l] <= huge;
      log_domain[l] = !ok;
    }
  }

  // Scores of the scaling-form lanes: sum_j c_j sum_i r_i K_ij sim_ij, frames outer so that
  // the N column sums are independent.
  column_sums<true>(k, r, T, N, acc, [&](int64_t i, int64_t j) { return t.sim_row(b, i, j) + a_first; });
  scalar_t score[kLanes] = {};
  for (int64_t j = 0; j < N; ++j) {
    const scalar_t *cj = c + j * kLanes, *accj = acc + j * kLanes;
    OST_LANES { score[l] += cj[l] * accj[l]; }
  }
  for (int64_t i = 0; t.f && i < T; ++i) {  // (no potentials asked for: no logs either)
    scalar_t* ri = r + i * kLanes;
    const bool row = mu[i] > 0;
    OST_LANES { ri[l] = row ? eps * fast_log(ri[l]) + (scalar_t(1) - hi[l]) : scalar_t(0); }  // f, in place
  }
  for (int64_t j = 0; t.f && j < N; ++j) {
    scalar_t* cj = c + j * kLanes;
    const scalar_t* nuj = nu + j * kLanes;
    OST_LANES { cj[l] = nuj[l] > 0 ? eps * fast_log(cj[l]) : scalar_t(0); }  // g, in place
  }
  // The group's pairs are consecutive classes of one video, so their outputs are contiguous:
  // f is one (lanes, T) block, g one (lanes, N) block. Written as such (a small transpose).
  const int64_t pair0 = (t.b0 + b) * t.A + (t.a0 + a_first);
  for (int64_t l = 0; l < lanes; ++l) {
    if (t.f) {  // (null: scores only)
      for (int64_t i = 0; i < T; ++i) t.f[(pair0 + l) * T + i] = r[i * kLanes + l];
      for (int64_t j = 0; j < N; ++j) t.g[(pair0 + l) * N + j] = c[j * kLanes + l];
    }
    t.scores[pair0 + l] = score[l];
    t.iterations[pair0 + l] = iters[l];
    t.error[pair0 + l] = err[l];
  }
  for (int64_t l = 0; l < lanes; ++l) {
    if (!log_domain[l]) continue;
    // Rare: small eps with widely spread sims. Solved alone, in the log domain (overwriting).
    for (int64_t j = 0; j < N; ++j) {
      w.nu_one[j] = nu[j * kLanes + l];
      for (int64_t i = 0; i < T; ++i) w.s[j * T + i] = t.sim_row(b, i, j)[a_first + l];
    }
    solve_log_domain(t, pair0 + l, w.s.data(), mu, w.nu_one.data());
  }
}

template <typename scalar_t>
OST_INLINE void forward_groups(const Tile<scalar_t>& t, int64_t begin, int64_t end) {
  GroupScratch<scalar_t> w(t.T, t.N);
  const int64_t groups_per_video = ceil_div(t.na, kLanes);
  for (int64_t q = begin; q < end; ++q) solve_group(t, q / groups_per_video, (q % groups_per_video) * kLanes, w);
}

// Compiled twice (AVX2 + FMA and baseline x86-64) where target_clones is available.
OST_MULTIVERSION void forward_groups_f32(const Tile<float>& t, int64_t b, int64_t e) { forward_groups(t, b, e); }
OST_MULTIVERSION void forward_groups_f64(const Tile<double>& t, int64_t b, int64_t e) { forward_groups(t, b, e); }
void run_forward(const Tile<float>& t, int64_t b, int64_t e) { forward_groups_f32(t, b, e); }
void run_forward(const Tile<double>& t, int64_t b, int64_t e) { forward_groups_f64(t, b, e); }

}  // namespace
}  // namespace ost_kernels::cpu
