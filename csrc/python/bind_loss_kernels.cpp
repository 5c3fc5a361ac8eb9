// Bindings of the losses kernels.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_loss_kernels(py::module_& m) {}
