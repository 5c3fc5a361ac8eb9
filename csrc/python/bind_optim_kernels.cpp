// Bindings of the optimizers kernels.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_optim_kernels(py::module_& m) {}
