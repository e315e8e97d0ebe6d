// The gnnaccel._C module: operator schemas live beside each op (csrc/ops/*.cpp) and are registered with
// TORCH_LIBRARY_FRAGMENT at load time. Python only needs the shared object to be importable.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(gnnaccel, m) {}

extern "C" {
// No pybind module: loading the .so through `import gnnaccel._C` must still find an init function.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
