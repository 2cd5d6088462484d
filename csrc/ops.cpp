// The op schema of ost_kernels, defined once. Each backend registers its implementation for
// its dispatch key in its own file (csrc/cpu/*.cpp for CPU, csrc/cuda/*.cu for CUDA).
//
// Shapes: video (B, T, d), desc (A, N, d), frame_mask (B, T) bool, desc_mask (A, N) bool.
// od_forward returns scores (B, A), the Sinkhorn potentials f (B, A, T) and g (B, A, N) with
// P_ij = exp((f_i + g_j - C_ij) / eps), the iterations used (B, A) int32, the final
// row-marginal error (B, A), and a cache for the backward: with keep_cache, what the backend's
// backward can reuse instead of recomputing it (the CPU kernel: the sims, (B * T, A * N)),
// zero-size otherwise. Scores, potentials, errors and cache are float64 for float64 inputs
// and float32 otherwise. od_backward turns grad_scores (B, A) into gradients of video and desc
// with the plan held constant, computing only those asked for (video_grad, desc_grad); a
// gradient not asked for is returned as a zero-size tensor.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing ost_kernels._C loads this library, which runs the TORCH_LIBRARY initializers.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(ost_kernels, m) {
  m.def(
      "od_forward(Tensor video, Tensor desc, Tensor? frame_mask, Tensor? desc_mask, "
      "float eps, int max_iter, float tol, bool normalize, bool keep_cache=False) "
      "-> (Tensor scores, Tensor f, Tensor g, Tensor iterations, Tensor error, Tensor cache)");
  m.def(
      "od_backward(Tensor grad_scores, Tensor video, Tensor desc, Tensor? frame_mask, "
      "Tensor? desc_mask, Tensor f, Tensor g, Tensor cache, float eps, bool normalize, bool video_grad, "
      "bool desc_grad) "
      "-> (Tensor grad_video, Tensor grad_desc)");
}
