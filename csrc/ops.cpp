// Defines the ost_kernels op library (its schema: op_schema.h). Each backend registers its
// implementation for its dispatch key in its own file (csrc/cpu/*.cpp for CPU, csrc/cuda/*.cu
// for CUDA).
#include <Python.h>
#include <torch/library.h>

#include "op_schema.h"

extern "C" {
// Importing ost_kernels._C loads this library, which runs the TORCH_LIBRARY initializers.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(ost_kernels, m) {
  m.def(ost_kernels::kForwardSchema);
  m.def(ost_kernels::kBackwardSchema);
}
