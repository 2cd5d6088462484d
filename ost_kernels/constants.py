"""Numbers every Python-side path shares (the C++ side has its own copies in csrc/common.h).

NORM_EPS: cosine normalization divides by max(||x||, NORM_EPS), so a zero vector becomes zero
and has cosine 0 with everything. LOG2E / LN2: the kernels keep potentials in base 2
(exp2 / log2 with log2(e) / eps folded into one scale) and convert back with eps * ln 2.
"""
NORM_EPS = 1e-12
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
