// Bindings of the normalization, embedding and pooling layers kernels.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_norm_kernels(py::module_& m) {}
