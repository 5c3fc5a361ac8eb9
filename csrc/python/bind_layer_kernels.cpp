// Bindings of the elementwise, shape, merge and noise layers kernels.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_layer_kernels(py::module_& m) {}
