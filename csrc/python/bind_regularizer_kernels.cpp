// Bindings of the weight-penalty kernels (keras.regularizers).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "kernels/regularize.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

void bind_regularizer_kernels(py::module_& m) {
  m.def("l1l2_penalty", [](py::array x, double l1, double l2) {
    const int64_t n = static_cast<int64_t>(x.size());
    const float* px = cdata_of<float>(x, n, "x");
    py::gil_scoped_release nogil;
    return fastckpt::l1l2_penalty(px, n, l1, l2);
  }, py::arg("x"), py::arg("l1"), py::arg("l2"));

  m.def("l1l2_add_gradient", [](py::array x, py::array grad, float l1, float l2) {
    const int64_t n = static_cast<int64_t>(x.size());
    if (static_cast<int64_t>(grad.size()) != n)
      throw py::value_error("l1l2_add_gradient: grad has " + std::to_string(grad.size()) +
                            " elements, x has " + std::to_string(n));
    const float* px = cdata_of<float>(x, n, "x");
    float* pg = data_of<float>(grad, n, "grad", true);
    if (n > 0 && static_cast<const void*>(px) == static_cast<void*>(pg))
      throw py::value_error("l1l2_add_gradient: grad must not be x itself");
    py::gil_scoped_release nogil;
    fastckpt::l1l2_add_gradient(px, pg, n, l1, l2);
  }, py::arg("x"), py::arg("grad"), py::arg("l1"), py::arg("l2"));
}
