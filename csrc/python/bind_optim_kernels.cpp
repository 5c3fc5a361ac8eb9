// Bindings of the optimizer kernels (kernels/optim.h) beyond adam_update/sgd_update. Every array
// is checked for dtype, contiguity, writability and size against the variable before the GIL is
// released; fastckpt/ops.py checks shapes first and explains.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "kernels/optim.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

float* opt_buf(py::object& o, py::array& keep, int64_t n, const char* name) {
  if (o.is_none()) return nullptr;
  keep = o.cast<py::array>();
  return data_of<float>(keep, n, name, true);
}

}  // namespace

void bind_optim_kernels(py::module_& m) {
  m.def("rmsprop_update", [](py::array var, py::array grad, py::array vel, py::object mom,
                             py::object ag, float lr, float rho, float one_rho, float momentum,
                             float eps) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pvel = data_of<float>(vel, n, "velocity", true);
    py::array ka, kb;
    float* pm = opt_buf(mom, ka, n, "momentum");
    float* pa = opt_buf(ag, kb, n, "average_gradient");
    if (momentum > 0.f && !pm) throw py::value_error("rmsprop_update: momentum > 0 needs a momentum slot");
    py::gil_scoped_release nogil;
    fastckpt::rmsprop_update(pv, pg, pvel, pm, pa, n, lr, rho, one_rho, momentum, eps);
  });

  m.def("adagrad_update", [](py::array var, py::array grad, py::array acc, float lr, float eps) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pa = data_of<float>(acc, n, "accumulator", true);
    py::gil_scoped_release nogil;
    fastckpt::adagrad_update(pv, pg, pa, n, lr, eps);
  });

  m.def("adadelta_update", [](py::array var, py::array grad, py::array ag, py::array adv, float lr,
                              float rho, float one_rho, float eps) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pa = data_of<float>(ag, n, "accumulated_grad", true);
    float* pd = data_of<float>(adv, n, "accumulated_delta_var", true);
    py::gil_scoped_release nogil;
    fastckpt::adadelta_update(pv, pg, pa, pd, n, lr, rho, one_rho, eps);
  });

  m.def("adamax_update", [](py::array var, py::array grad, py::array mm, py::array uu, float lr,
                            float one_b1, float b2, float one_b1p, float eps) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pm = data_of<float>(mm, n, "m", true);
    float* pu = data_of<float>(uu, n, "u", true);
    py::gil_scoped_release nogil;
    fastckpt::adamax_update(pv, pg, pm, pu, n, lr, one_b1, b2, one_b1p, eps);
  });

  m.def("nadam_update", [](py::array var, py::array grad, py::array mm, py::array vv, float lr,
                           float one_b1, float one_b2, float u_next, float den_next, float one_u,
                           float den, float one_b2p, float eps) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pm = data_of<float>(mm, n, "m", true);
    float* pvv = data_of<float>(vv, n, "v", true);
    fastckpt::NadamParams p{lr, one_b1, one_b2, u_next, den_next, one_u, den, one_b2p, eps};
    py::gil_scoped_release nogil;
    fastckpt::nadam_update(pv, pg, pm, pvv, n, p);
  });

  m.def("ftrl_update", [](py::array var, py::array grad, py::array acc, py::array lin, float lr,
                          float power, float shrink2, float l1, float l2x2) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pa = data_of<float>(acc, n, "accumulator", true);
    float* pl = data_of<float>(lin, n, "linear", true);
    fastckpt::FtrlParams p{lr, power, shrink2, l1, l2x2};
    py::gil_scoped_release nogil;
    fastckpt::ftrl_update(pv, pg, pa, pl, n, p);
  });

  m.def("lion_update", [](py::array var, py::array grad, py::array mm, float lr, float b1,
                          float one_b1, float b2, float one_b2) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pm = data_of<float>(mm, n, "m", true);
    py::gil_scoped_release nogil;
    fastckpt::lion_update(pv, pg, pm, n, lr, b1, one_b1, b2, one_b2);
  });

  m.def("sum_squares", [](py::array x) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    py::gil_scoped_release nogil;
    return fastckpt::sum_squares(px, n);
  });

  m.def("scale_div", [](py::array x, py::array out, float mul, float div) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* po = data_of<float>(out, n, "out", true);
    py::gil_scoped_release nogil;
    fastckpt::scale_div(px, po, n, mul, div);
  });

  m.def("clip_values", [](py::array x, py::array out, float lo, float hi) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* po = data_of<float>(out, n, "out", true);
    py::gil_scoped_release nogil;
    fastckpt::clip_values(px, po, n, lo, hi);
  });

  m.def("decay_weights", [](py::array var, float wd, float lr) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    py::gil_scoped_release nogil;
    fastckpt::decay_weights(pv, n, wd, lr);
  });

  m.def("ema_update", [](py::array avg, py::array var, float momentum, float one_m, bool overwrite) {
    const int64_t n = var.size();
    float* pa = data_of<float>(avg, n, "average", true);
    float* pv = data_of<float>(var, n, "variable", true);
    py::gil_scoped_release nogil;
    fastckpt::ema_update(pa, pv, n, momentum, one_m, overwrite);
  });
}
