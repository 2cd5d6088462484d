"""Numbers every Python-side path shares (the C++ side has its own copies in csrc/common.h).

NORM_EPS: cosine normalization divides by max(||x||, NORM_EPS), so a zero vector becomes zero
and has cosine 0 with everything. SCALING_MAX_EPS: see below. LOG2E / LN2: the kernels keep potentials in base 2
(exp2 / log2 with log2(e) / eps folded into one scale) and convert back with eps * ln 2.
"""
NORM_EPS = 1e-12
# The scaling form recovers a pair's sims from K = exp2((sim - hi) log2(e) / eps) as
# hi + log2(K) eps ln 2, which loses ~eps * 2^-23 (0.4 at eps = 1e8): kernels that keep no sims
# solve pairs in the log domain above this eps (there z = (sim - hi) / eps keeps every bit).
SCALING_MAX_EPS = 16.0
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
