// fastckpt._core: one bind_<topic>() per topic, nothing else.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_config(py::module_& m);
void bind_kernels(py::module_& m);
void bind_trainer(py::module_& m);
void bind_graph_trainer(py::module_& m);  // the fused loop over a graph of layers
void bind_io(py::module_& m);
void bind_layer_kernels(py::module_& m);   // elementwise, shape, merge, noise layers
void bind_norm_kernels(py::module_& m);    // normalization, embedding, pooling layers
void bind_loss_kernels(py::module_& m);    // losses
void bind_optim_kernels(py::module_& m);   // optimizers
void bind_regularizer_kernels(py::module_& m);  // weight penalties

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastckpt native core (private; use fastckpt.ops)";
  bind_config(m);
  bind_kernels(m);
  bind_trainer(m);
  bind_graph_trainer(m);
  bind_io(m);
  bind_layer_kernels(m);
  bind_norm_kernels(m);
  bind_loss_kernels(m);
  bind_optim_kernels(m);
  bind_regularizer_kernels(m);
}
