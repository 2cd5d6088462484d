// The CUDA fallback's Sinkhorn: one group of G lanes per (video, class) pair, 32 / G pairs a
// warp, the pair's T x N block held in registers (lane l of its group owns frames
// i = l, l + G, ..., l + (R - 1) G, each with all N descriptors). Row sums are sums in a
// lane's registers; column sums and the pair's error are butterfly shuffles within the group.
//
// Written once for two executors: the GPU (WarpLanes: __shfl_xor_sync) and a host emulation
// that runs each lane as a thread (tests/helpers/cuda_emulation/), which is how the tests check this
// code on a machine without a GPU. Nothing here may use a CUDA-only construct outside the
// Lanes class and the OST_HD / math helpers below.
//
// Per pair, as the Triton kernel (ost_kernels/triton/kernels.py) and docs/design.md:
//   * Scaling form where it is safe: with hi / lo the pair's largest / smallest valid sim,
//     K = exp2((sim - hi) * log2(e) / eps) lies in [2^-SAFE_RANGE2, 1] when
//     (hi - lo) * log2(e) / eps <= SAFE_RANGE2, so r = mu / (K c), c = nu / (K^T r) neither
//     underflows nor overflows: one exp2 per entry per solve, multiply-adds in the loop.
//   * Base-2 log domain otherwise (and for every pair at eps > kScalingMaxEps, where sims
//     recovered from K would lose ~eps * 2^-23): z = (sim - hi) * log2(e) / eps, a = log2 mu - LSE2_j(z + b),
//     b = log2 nu - LSE2_i(z + a); that loop runs only when a warp holds such a pair.
//   One register array X holds K (safe pairs) or z (the others); u / v hold r / c or a / b.
//   Each pair is frozen once it meets the stop rule; the loops run while any pair of the warp
//   is active, so every shuffle has all 32 lanes (a frozen pair's lanes compute and discard).
// Outputs: f = a * eps * ln 2 + 1 - hi, g = b * eps * ln 2 (0 where masked), the score
// sum_ij P_ij sim_ij with sim recovered from X as hi + log2(K) / scale2, the iterations and the
// final row-marginal error.
#pragma once

#include <cmath>
#include <cstdint>

#include "op_schema.h"

#if defined(__CUDACC__)
#define OST_HD __host__ __device__ __forceinline__
#else
#define OST_HD inline
#endif

namespace ost_kernels::cuda {

constexpr float kSafeRange2 = float(64.0 * 1.4426950408889634);  // 64 in natural units, as every kernel
// The scaling form's sims come back from K as hi + log2(K) / scale2, which loses ~eps * 2^-23
// of them: above this eps (ost_kernels/constants.py, SCALING_MAX_EPS) every pair runs in the
// log domain, whose z = (sim - hi) * scale2 keeps every bit (PairTile::safe_range2 < 0).
constexpr double kScalingMaxEps = 16.0;
constexpr int kRowsPerLane = 4;                                     // R: frames a lane owns
constexpr int kMaxGroup = 32;                                       // lanes per pair at most
constexpr int kMaxFrames = kRowsPerLane * kMaxGroup;                // T limit: 128
constexpr int kMaxDescriptors = 16;                                 // N limit (NMAX templates 4, 8, 16)

// Where the sims and masks of one launch live. sim is the raw dot products of a tile of nb
// videos x na classes, (nb * T, na * N) row-major, float32; inv_v (B * T) and inv_d (A * N)
// turn them into cosines (all ones without normalization).
struct PairTile {
  const float* sim;
  const float* inv_v;
  const float* inv_d;
  const bool* frame_mask;  // (B, T) or nullptr
  const bool* desc_mask;   // (A, N) or nullptr
  int64_t nb, na, b0, a0, A;
  int T, N;
  float scale2;   // log2(e) / eps
  float eps_ln2;  // eps * ln 2
  int max_iter;
  float tol;
  SolverScalars s;  // the op's solver scalars (csrc/op_schema.h); the fields above derive from them
  float safe_range2 = kSafeRange2;  // the scaling form's largest (hi - lo) * scale2; < 0: none
  const float* frame_w = nullptr;  // (B, T) frame weights, float32, or nullptr (uniform)
  const float* desc_w = nullptr;   // (A, N) descriptor weights, float32, or nullptr
  float tau_f = 1.f, tau_d = 1.f;  // damping of the relaxed updates (1: exact side)
};

// Lanes per pair: enough for T frames at kRowsPerLane each, a power of two (groups tile the
// warp), 1 to 32.
OST_HD int group_size_for(int T) {
  int G = 1;
  while (G < kMaxGroup && G * kRowsPerLane < T) G *= 2;
  return G;
}

// The register width for N descriptors: 4, 8 or 16 (one template instance each).
OST_HD int nmax_for(int N) { return N <= 4 ? 4 : N <= 8 ? 8 : 16; }

// The group operations solve_pair needs, from an Exchange giving xor_shuffle(v, offset) among
// the 32 lanes of a warp and any(p) over them. Butterfly sums give every lane of the group
// the same bits (a + b == b + a), so group-uniform decisions stay uniform.
template <class Exchange, int G>
struct GroupLanes {
  Exchange& x;
  int lane32;  // 0..31

  static constexpr int group_size() { return G; }  // a template parameter: the butterflies unroll
  OST_HD int lane() const { return lane32 % G; }
  OST_HD float group_sum(float v) {
    for (int o = G / 2; o > 0; o /= 2) v += x.xor_shuffle(v, o);
    return v;
  }
  OST_HD float group_max(float v) {
    for (int o = G / 2; o > 0; o /= 2) v = fmaxf(v, x.xor_shuffle(v, o));
    return v;
  }
  OST_HD float group_min(float v) {
    for (int o = G / 2; o > 0; o /= 2) v = fminf(v, x.xor_shuffle(v, o));
    return v;
  }
  OST_HD bool warp_any(bool p) { return x.any(p); }
};

struct PairOutputs {
  float* scores;  // (B, A)
  float* f;       // (B, A, T), or null: scores only
  float* g;       // (B, A, N), or null
  int32_t* iterations;
  float* error;
};

// The special functions on the GPU's approximate instructions (one MUFU each, as the Triton
// kernels: ex2.approx, lg2.approx ~2^-22 relative, flushing denormals, which the scaling
// form's K >= 2^-92 never is); exact functions in the host emulation. A GPU run confirms the
// float32 tolerances (benchmarks/gpu_check.py compares every backend with "torch").
OST_HD float ost_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
OST_HD float ost_log2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return log2f(x);
#endif
}

// x / y as a reciprocal and a multiply (__fdividef: 0 for |y| > 2^126, which the scaling
// form's bounded K c and K^T r never reach), ~2 ulp; an IEEE division in the emulation.
OST_HD float fast_div(float x, float y) {
#if defined(__CUDA_ARCH__)
  return __fdividef(x, y);
#else
  return x / y;
#endif
}

// log2 sum exp2(x) of n values already reduced to their max m (m = -inf: all -inf).
OST_HD float lse2_finish(float m, float s) { return m == -INFINITY ? -INFINITY : m + ost_log2(s); }

// Solves the pair `pair` of the tile (pair >= nb * na: no pair; its lanes still take part in
// the shuffles). Lanes: group_sum / group_max / group_min over the G lanes of the pair's
// group, warp_any over all 32 lanes, lane() in [0, G), and G (a compile-time constant).
template <int NMAX, class Lanes>
OST_HD void solve_pair(const PairTile& t, const PairOutputs& out, Lanes& lanes, int64_t pair) {
  constexpr int R = kRowsPerLane;
  const int G = lanes.group_size(), l = lanes.lane();
  const int T = t.T, N = t.N;
  const bool have = pair < t.nb * t.na;
  const int64_t b = have ? pair / t.na : 0, a = have ? pair % t.na : 0;
  const int64_t vb = t.b0 + b, ca = t.a0 + a;
  const int64_t ld = t.na * N;

  bool row_ok[R], col_ok[NMAX];
  float X[R][NMAX];
  // Marginals: the weights (1 without) normalized over the valid entries; a weight <= 0 is
  // masked. Weighted marginals are read back from the weights when needed (registers).
  float rows_here = 0.f;
#pragma unroll
  for (int k = 0; k < R; ++k) {
    const int i = l + k * G;
    const bool kept = have && i < T && (!t.frame_mask || t.frame_mask[vb * T + i]);
    const float w = kept ? (t.frame_w ? t.frame_w[vb * T + i] : 1.f) : 0.f;
    row_ok[k] = w > 0.f;
    rows_here += row_ok[k] ? w : 0.f;
  }
  float cols = 0.f;
#pragma unroll
  for (int j = 0; j < NMAX; ++j) {
    const bool kept = have && j < N && (!t.desc_mask || t.desc_mask[ca * N + j]);
    const float w = kept ? (t.desc_w ? t.desc_w[ca * N + j] : 1.f) : 0.f;
    col_ok[j] = w > 0.f;
    cols += col_ok[j] ? w : 0.f;
  }
  // Empty rows are refused by the ops; the guard keeps a refused-but-launched pair finite.
  const float rows_total = lanes.group_sum(rows_here);
  const float mu = rows_total > 0.f ? 1.f / rows_total : 0.f;  // uniform mu, or 1 / sum w
  const float nu = cols > 0.f ? 1.f / cols : 0.f;
  auto mu_of = [&](int k) { return t.frame_w ? t.frame_w[vb * T + l + k * G] * mu : mu; };
  auto nu_of = [&](int j) { return t.desc_w ? t.desc_w[ca * N + j] * nu : nu; };
  const bool relax_f = t.tau_f != 1.f, relax_d = t.tau_d != 1.f, relaxed = relax_f || relax_d;

  // Cosines into X, and the pair's range.
  float inv_d[NMAX];
#pragma unroll
  for (int j = 0; j < NMAX; ++j) inv_d[j] = col_ok[j] ? t.inv_d[ca * N + j] : 0.f;
  float hi = -INFINITY, lo = INFINITY;
#pragma unroll
  for (int k = 0; k < R; ++k) {
    const int i = l + k * G;
    const float iv = row_ok[k] ? t.inv_v[vb * T + i] : 0.f;
    const float* row = t.sim + (b * T + i) * ld + a * N;
#pragma unroll
    for (int j = 0; j < NMAX; ++j) {
      const bool ok = row_ok[k] && col_ok[j];
      const float s = ok ? row[j] * iv * inv_d[j] : 0.f;
      X[k][j] = s;
      hi = ok ? fmaxf(hi, s) : hi;
      lo = ok ? fminf(lo, s) : lo;
    }
  }
  hi = lanes.group_max(hi);
  lo = lanes.group_min(lo);
  if (hi == -INFINITY) hi = lo = 0.f;  // no pair
  // fmaxf / fminf pass over NaN, but a NaN sim (from a NaN input) reaches the sums below, so
  // its pair's score is NaN, as the reference's, and no other pair's.
  // Relaxed marginals run in the log domain: without the exact iteration's gauge freedom the
  // scalings can leave float32's range (csrc/cpu/sinkhorn_lanes.h checks and falls back per
  // lane; here that fallback spilled registers), and a pair's form rests on its own data.
  const bool safe = (hi - lo) * t.scale2 <= t.safe_range2 && !relaxed;
#pragma unroll
  for (int k = 0; k < R; ++k)
#pragma unroll
    for (int j = 0; j < NMAX; ++j) {
      const float z = (X[k][j] - hi) * t.scale2;
      const bool ok = row_ok[k] && col_ok[j];
      X[k][j] = safe ? (ok ? ost_exp2(z) : 0.f) : (ok ? z : -INFINITY);
    }
  float u[R], v[NMAX], rowv[R];  // safe: r, c, K c; log: a, b, LSE2_j(z + b)
  float prev[R];                  // relaxed: the row marginal before the iteration
  int32_t iters = 0;
  float err = 0.f;
  const bool tol_stop = t.tol > 0.f;
  bool active = false;
  // After an iteration of either form: the pair's row-marginal error from the lanes' partial
  // sums; an active pair records it and stays active while it exceeds tol (tol = 0: never
  // stops early). NaN errors compare false, so a poisoned pair stops (as backend "torch").
  auto stop_rule = [&](float lane_error) {
    const float e = lanes.group_sum(lane_error);
    if (active) {
      err = e;
      active = !tol_stop || e > t.tol;
    }
  };

  // Scaling form.
#pragma unroll
  for (int k = 0; k < R; ++k) u[k] = 0.f;
#pragma unroll
  for (int j = 0; j < NMAX; ++j) v[j] = 1.f;
  auto k_times_c = [&] {
#pragma unroll
    for (int k = 0; k < R; ++k) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < NMAX; ++j) s += X[k][j] * v[j];
      rowv[k] = s;
    }
  };
  k_times_c();
  active = have && safe;
  for (int it = 0; it < t.max_iter && lanes.warp_any(active); ++it) {
    float r_new[R];
#pragma unroll
    for (int k = 0; k < R; ++k) {
      r_new[k] = row_ok[k] ? fast_div(mu_of(k), rowv[k]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < NMAX; ++j) {
      if (j >= N) break;  // uniform over the launch: no divergence
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < R; ++k) s += X[k][j] * r_new[k];
      s = lanes.group_sum(s);
      if (active) v[j] = col_ok[j] ? fast_div(nu_of(j), s) : 1.f;
    }
    if (active) {
#pragma unroll
      for (int k = 0; k < R; ++k) u[k] = r_new[k];
      ++iters;
    }
    // A frozen pair's v did not change, so its K c stays what its r was solved against.
    k_times_c();
    float e = 0.f;
#pragma unroll
    for (int k = 0; k < R; ++k) e += row_ok[k] ? fabsf(u[k] * rowv[k] - mu_of(k)) : 0.f;
    stop_rule(e);
  }
  // Log domain, for the unsafe pairs.
  active = have && !safe;
  if (lanes.warp_any(active)) {
    const float log2_nu_uniform = ost_log2(nu);
    if (!safe) {
#pragma unroll
      for (int k = 0; k < R; ++k) u[k] = 0.f;
#pragma unroll
      for (int j = 0; j < NMAX; ++j) v[j] = 0.f;
    }
    auto row_lse = [&] {
#pragma unroll
      for (int k = 0; k < R; ++k) {
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < NMAX; ++j) m = fmaxf(m, X[k][j] + v[j]);
        const float m0 = m == -INFINITY ? 0.f : m;
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < NMAX; ++j) s += ost_exp2(X[k][j] + v[j] - m0);
        rowv[k] = lse2_finish(m, s);
      }
    };
    // z is shifted by hi: z = z_true - c0. u holds a + c0 (so f = u eps ln 2 + 1 - hi, and
    // P = exp2(z + u + v)); a damped row update shifts only tau of c0, hence the terms below.
    const float c0 = (hi - 1.f) * t.scale2;
    if (!safe) {
      row_lse();
#pragma unroll
      for (int k = 0; k < R; ++k) prev[k] = row_ok[k] ? ost_exp2(rowv[k] + c0) : 0.f;
    }
    for (int it = 0; it < t.max_iter && lanes.warp_any(active); ++it) {
      float a_new[R];
#pragma unroll
      for (int k = 0; k < R; ++k)
        a_new[k] = row_ok[k] ? (relax_f ? t.tau_f * (ost_log2(mu_of(k)) - rowv[k] - c0) + c0
                                        : ost_log2(mu_of(k)) - rowv[k])
                             : 0.f;
#pragma unroll
      for (int j = 0; j < NMAX; ++j) {
        if (j >= N) break;
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < R; ++k) m = fmaxf(m, X[k][j] + a_new[k]);
        m = lanes.group_max(m);
        const float m0 = m == -INFINITY ? 0.f : m;
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < R; ++k) s += ost_exp2(X[k][j] + a_new[k] - m0);
        s = lanes.group_sum(s);
        const float log2_nu = t.desc_w ? ost_log2(nu_of(j)) : log2_nu_uniform;
        if (active) v[j] = col_ok[j] ? t.tau_d * (log2_nu - lse2_finish(m, s)) : 0.f;
      }
      if (active) {
#pragma unroll
        for (int k = 0; k < R; ++k) u[k] = a_new[k];
        ++iters;
        row_lse();
      }
      float e = 0.f;
#pragma unroll
      for (int k = 0; k < R; ++k) {
        const float row = row_ok[k] ? ost_exp2(u[k] + rowv[k]) : 0.f;
        e += row_ok[k] ? fabsf(row - (relaxed ? prev[k] : mu_of(k))) : 0.f;
        prev[k] = row;
      }
      stop_rule(e);
    }
  }

  // Score: P = r K c (safe) or exp2(z + a + b), sim = hi + z / scale2 with z = log2 K or X.
  float score = 0.f;
#pragma unroll
  for (int k = 0; k < R; ++k)
#pragma unroll
    for (int j = 0; j < NMAX; ++j) {
      const float z = safe ? ost_log2(X[k][j]) : X[k][j];
      const float p = safe ? u[k] * X[k][j] * v[j] : ost_exp2(z + u[k] + v[j]);
      score += (row_ok[k] && col_ok[j]) ? p * (hi + z * t.eps_ln2) : 0.f;  // 1 / scale2 = eps ln 2
    }
  score = lanes.group_sum(score);
  // From here on u, v are base-2 log potentials for every pair (only where they are written).
  if (safe && out.f) {
#pragma unroll
    for (int k = 0; k < R; ++k) u[k] = ost_log2(u[k]);
#pragma unroll
    for (int j = 0; j < NMAX; ++j) v[j] = ost_log2(v[j]);
  }
  if (!have) return;
  const int64_t pair_index = vb * t.A + ca;
  if (out.f) {  // (null: scores only, the potentials are not written)
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const int i = l + k * G;
      if (i < T) out.f[pair_index * T + i] = row_ok[k] ? u[k] * t.eps_ln2 + (1.f - hi) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < NMAX; ++j)
      if (j < N && j % G == l) out.g[pair_index * N + j] = col_ok[j] ? v[j] * t.eps_ln2 : 0.f;
  }
  if (l == 0) {
    out.scores[pair_index] = score;
    out.iterations[pair_index] = iters;
    out.error[pair_index] = err;
  }
}

// The backward's weights for one row (video b, frame i) of a tile, columns col0, col0 + step,
// ...: W = grad_scores[b, a] * P_ij on valid entries, 0 elsewhere, from the dot products and
// the saved potentials, P = exp2((cos - 1 + f_i + g_j) * scale2). f (B, A, T), g (B, A, N) in
// natural units, grad_scores (B, A); W (nb * T, na * N) in the input dtype.
template <class Out>
OST_HD void plan_weights_row(const PairTile& t, const float* grad_scores, const float* f, const float* g,
                             int64_t row, int64_t col0, int64_t step, Out* weights) {
  const int T = t.T, N = t.N;
  const int64_t b = row / T, ld = t.na * N;
  const int i = int(row - b * T);
  const int64_t vb = t.b0 + b;
  const bool row_ok = !t.frame_mask || t.frame_mask[vb * T + i];
  const float iv = t.inv_v[vb * T + i];
  for (int64_t col = col0; col < ld; col += step) {
    const int64_t a = col / N;
    const int j = int(col - a * N);
    const int64_t ca = t.a0 + a, pair = vb * t.A + ca;
    const bool ok = row_ok && (!t.desc_mask || t.desc_mask[ca * N + j]);
    float w = 0.f;
    if (ok) {
      const float cosine = t.sim[row * ld + col] * iv * t.inv_d[ca * N + j];
      w = grad_scores[pair] * ost_exp2((cosine - 1.f + f[pair * T + i] + g[pair * N + j]) * t.scale2);
    }
    weights[row * ld + col] = Out(w);
  }
}

}  // namespace ost_kernels::cuda
