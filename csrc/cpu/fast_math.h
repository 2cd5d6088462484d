// Branch-free float32 exp and log that the compiler can vectorize inside loops.
//
// Cody-Waite range reduction with Cephes' minimax polynomials: about 1-2 ulp over the
// ranges used here (exp on [-87, 88], log on positive normal floats), which is what the
// float32 Sinkhorn needs; libm's expf/logf are scalar calls and would dominate the kernel.
#pragma once

#include <cstdint>
#include <cstring>

namespace ost_kernels::cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// exp(x) for x in [-87, 88], where the result is a normal float; outside that range the
// result is garbage (NaN stays NaN). For callers that guarantee the range: the two clamps
// of fast_exp are a measurable part of the CPU solver's setup
// (benchmarks/history/2026-12-02-cpu-forward-goal-reached.md).
inline float exp_in_range(float x) {
  // Round x * log2(e) to the nearest integer with the 1.5 * 2^23 trick (no libm call).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // The exponent field, built in unsigned arithmetic (defined for any n).
  const uint32_t field = (static_cast<uint32_t>(static_cast<int32_t>(n)) + 127u) << 23;
  return p * bits_to_float(static_cast<int32_t>(field));
}

// exp(x), clamped to [exp(-87), exp(88)]; NaN stays NaN.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  return exp_in_range(x);
}

// log(x) for positive normal x.
inline float fast_log(float x) {
  const int32_t bits = float_to_bits(x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // in [1, 2)
  // Centre the mantissa on 1: [sqrt(1/2), sqrt(2)).
  const bool big = m > 1.41421356237f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float z = m - 1.0f;
  const float zz = z * z;
  float y = 7.0376836292e-2f;
  y = y * z - 1.1514610310e-1f;
  y = y * z + 1.1676998740e-1f;
  y = y * z - 1.2420140846e-1f;
  y = y * z + 1.4249322787e-1f;
  y = y * z - 1.6668057665e-1f;
  y = y * z + 2.0000714765e-1f;
  y = y * z - 2.4999993993e-1f;
  y = y * z + 3.3333331174e-1f;
  y = y * z * zz;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * zz;
  return z + y + 0.693359375f * fe;
}

// Double precision goes through libm: float64 is the accuracy path, not the fast one.
inline double fast_exp(double x) { return __builtin_exp(x); }
inline double exp_in_range(double x) { return __builtin_exp(x); }
inline double fast_log(double x) { return __builtin_log(x); }

}  // namespace ost_kernels::cpu
