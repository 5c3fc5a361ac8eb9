// Bindings of the normalization, embedding and pooling layers kernels (kernels/norm.h,
// kernels/embed_pool.h). fastckpt/ops.py validates first; the sizes are re-checked here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "kernels/embed_pool.h"
#include "kernels/norm.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

// An optional float array (None -> nullptr) of at least n elements.
template <typename T>
T* opt(py::object o, int64_t n, const char* name, bool writable) {
  if (o.is_none()) return nullptr;
  py::array a = o.cast<py::array>();
  return data_of<T>(a, n, name, writable);
}

void check_dims(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) throw py::value_error("rows and cols must be >= 0");
}

void check_ids(int64_t bad, py::array& ids, int64_t vocab) {
  if (bad >= 0) {
    const int32_t v = static_cast<const int32_t*>(ids.data())[bad];
    throw py::value_error("embedding id " + std::to_string(v) + " at flat position " +
                          std::to_string(bad) + " is out of range [0, " + std::to_string(vocab) + ")");
  }
}

}  // namespace

void bind_norm_kernels(py::module_& m) {
  m.def("column_moments", [](py::array x, py::object row_mask, int64_t rows, int64_t cols,
                             py::array mean, py::array var) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const uint8_t* pm = opt<uint8_t>(row_mask, rows, "row_mask", false);
    float* pmean = data_of<float>(mean, cols, "mean", true);
    float* pvar = data_of<float>(var, cols, "var", true);
    py::gil_scoped_release nogil;
    return fastckpt::column_moments(px, pm, rows, cols, pmean, pvar);
  });

  m.def("batchnorm_forward_train", [](py::array x, py::object row_mask, int64_t rows, int64_t cols,
                                      py::object gamma, py::object beta, float eps, py::array y,
                                      py::array mean, py::array inv, py::object moving_mean,
                                      py::object moving_var, double momentum, float var_correction) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const uint8_t* pm = opt<uint8_t>(row_mask, rows, "row_mask", false);
    const float* pg = opt<float>(gamma, cols, "gamma", false);
    const float* pb = opt<float>(beta, cols, "beta", false);
    float* py_ = data_of<float>(y, rows * cols, "y", true);
    float* pmean = data_of<float>(mean, cols, "mean", true);
    float* pinv = data_of<float>(inv, cols, "inv", true);
    float* pmm = opt<float>(moving_mean, cols, "moving_mean", true);
    float* pmv = opt<float>(moving_var, cols, "moving_variance", true);
    if ((pmm == nullptr) != (pmv == nullptr))
      throw py::value_error("moving_mean and moving_variance must both be given or both be None");
    py::gil_scoped_release nogil;
    fastckpt::batchnorm_forward_train(px, pm, rows, cols, pg, pb, eps, py_, pmean, pinv, pmm, pmv,
                                      momentum, var_correction);
  });

  m.def("batchnorm_forward_infer", [](py::array x, int64_t rows, int64_t cols, py::array mean,
                                      py::array var, py::object gamma, py::object beta, float eps,
                                      py::array y, py::object inv) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const float* pmean = cdata_of<float>(mean, cols, "mean");
    const float* pvar = cdata_of<float>(var, cols, "var");
    const float* pg = opt<float>(gamma, cols, "gamma", false);
    const float* pb = opt<float>(beta, cols, "beta", false);
    float* py_ = data_of<float>(y, rows * cols, "y", true);
    float* pinv = opt<float>(inv, cols, "inv", true);
    py::gil_scoped_release nogil;
    fastckpt::batchnorm_forward_infer(px, rows, cols, pmean, pvar, pg, pb, eps, py_, pinv);
  });

  m.def("batchnorm_backward", [](py::array x, py::array dy, py::object row_mask, int64_t rows,
                                 int64_t cols, py::array mean, py::array inv, py::object gamma,
                                 bool batch_stats, py::object dx, py::object dgamma,
                                 py::object dbeta) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const float* pdy = cdata_of<float>(dy, rows * cols, "dy");
    const uint8_t* pm = opt<uint8_t>(row_mask, rows, "row_mask", false);
    const float* pmean = cdata_of<float>(mean, cols, "mean");
    const float* pinv = cdata_of<float>(inv, cols, "inv");
    const float* pg = opt<float>(gamma, cols, "gamma", false);
    float* pdx = opt<float>(dx, rows * cols, "dx", true);
    float* pdg = opt<float>(dgamma, cols, "dgamma", true);
    float* pdb = opt<float>(dbeta, cols, "dbeta", true);
    py::gil_scoped_release nogil;
    fastckpt::batchnorm_backward(px, pdy, pm, rows, cols, pmean, pinv, pg, batch_stats, pdx, pdg, pdb);
  });

  m.def("layernorm_forward", [](py::array x, int64_t rows, int64_t cols, py::object gamma,
                                py::object beta, float eps, py::array y, py::array mean,
                                py::array inv) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const float* pg = opt<float>(gamma, cols, "gamma", false);
    const float* pb = opt<float>(beta, cols, "beta", false);
    float* py_ = data_of<float>(y, rows * cols, "y", true);
    float* pmean = data_of<float>(mean, rows, "mean", true);
    float* pinv = data_of<float>(inv, rows, "inv", true);
    py::gil_scoped_release nogil;
    fastckpt::layernorm_forward(px, rows, cols, pg, pb, eps, py_, pmean, pinv);
  });

  m.def("layernorm_backward", [](py::array x, py::array dy, int64_t rows, int64_t cols,
                                 py::array mean, py::array inv, py::object gamma, py::object dx,
                                 py::object dgamma, py::object dbeta) {
    check_dims(rows, cols);
    if (cols < 1) throw py::value_error("layernorm_backward: cols must be >= 1");
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const float* pdy = cdata_of<float>(dy, rows * cols, "dy");
    const float* pmean = cdata_of<float>(mean, rows, "mean");
    const float* pinv = cdata_of<float>(inv, rows, "inv");
    const float* pg = opt<float>(gamma, cols, "gamma", false);
    float* pdx = opt<float>(dx, rows * cols, "dx", true);
    float* pdg = opt<float>(dgamma, cols, "dgamma", true);
    float* pdb = opt<float>(dbeta, cols, "dbeta", true);
    py::gil_scoped_release nogil;
    fastckpt::layernorm_backward(px, pdy, rows, cols, pmean, pinv, pg, pdx, pdg, pdb);
  });

  m.def("normalize_forward", [](py::array x, int64_t rows, int64_t cols, py::object mean,
                                py::array var, float eps, bool invert, py::array y) {
    check_dims(rows, cols);
    const float* px = cdata_of<float>(x, rows * cols, "x");
    const float* pmean = opt<float>(mean, cols, "mean", false);
    const float* pvar = cdata_of<float>(var, cols, "variance");
    float* py_ = data_of<float>(y, rows * cols, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::normalize_forward(px, rows, cols, pmean, pvar, eps, invert, py_);
  });

  m.def("embedding_gather", [](py::array ids, py::array table, int64_t vocab, int64_t dim,
                               py::array out) {
    check_dims(vocab, dim);
    const int64_t n = ids.size();
    const int32_t* pid = cdata_of<int32_t>(ids, n, "ids");
    const float* pt = cdata_of<float>(table, vocab * dim, "embeddings");
    float* po = data_of<float>(out, n * dim, "out", true);
    int64_t bad;
    {
      py::gil_scoped_release nogil;
      bad = fastckpt::embedding_gather(pid, n, pt, vocab, dim, po);
    }
    check_ids(bad, ids, vocab);
  });

  m.def("embedding_scatter_add", [](py::array ids, py::array dy, int64_t vocab, int64_t dim,
                                    py::array dtable) {
    check_dims(vocab, dim);
    const int64_t n = ids.size();
    const int32_t* pid = cdata_of<int32_t>(ids, n, "ids");
    const float* pdy = cdata_of<float>(dy, n * dim, "dy");
    float* pt = data_of<float>(dtable, vocab * dim, "d_embeddings", true);
    int64_t bad;
    {
      py::gil_scoped_release nogil;
      bad = fastckpt::embedding_scatter_add(pid, n, pdy, vocab, dim, pt);
    }
    check_ids(bad, ids, vocab);
  });

  m.def("gap1d_forward", [](py::array x, py::object mask, int64_t B, int64_t T, int64_t C,
                            py::array y) {
    if (B < 0 || T < 0 || C < 0) throw py::value_error("B, T, C must be >= 0");
    const float* px = cdata_of<float>(x, B * T * C, "x");
    const uint8_t* pm = opt<uint8_t>(mask, B * T, "mask", false);
    float* py_ = data_of<float>(y, B * C, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::gap1d_forward(px, pm, B, T, C, py_);
  });

  m.def("gap1d_backward", [](py::array dy, py::object mask, int64_t B, int64_t T, int64_t C,
                             py::array dx) {
    if (B < 0 || T < 0 || C < 0) throw py::value_error("B, T, C must be >= 0");
    const float* pdy = cdata_of<float>(dy, B * C, "dy");
    const uint8_t* pm = opt<uint8_t>(mask, B * T, "mask", false);
    float* pdx = data_of<float>(dx, B * T * C, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::gap1d_backward(pdy, pm, B, T, C, pdx);
  });

  m.def("gmp1d_forward", [](py::array x, int64_t B, int64_t T, int64_t C, py::array y) {
    if (B < 0 || T < 1 || C < 0) throw py::value_error("gmp1d: need B >= 0, T >= 1, C >= 0");
    const float* px = cdata_of<float>(x, B * T * C, "x");
    float* py_ = data_of<float>(y, B * C, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::gmp1d_forward(px, B, T, C, py_);
  });

  m.def("gmp1d_backward", [](py::array x, py::array y, py::array dy, int64_t B, int64_t T,
                             int64_t C, py::array dx) {
    if (B < 0 || T < 1 || C < 0) throw py::value_error("gmp1d: need B >= 0, T >= 1, C >= 0");
    const float* px = cdata_of<float>(x, B * T * C, "x");
    const float* py_ = cdata_of<float>(y, B * C, "y");
    const float* pdy = cdata_of<float>(dy, B * C, "dy");
    float* pdx = data_of<float>(dx, B * T * C, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::gmp1d_backward(px, py_, pdy, B, T, C, pdx);
  });
}
