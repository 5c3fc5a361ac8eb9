// Bindings of the elementwise, shape, merge and noise layers kernels, and of the Dense / activation
// kernels that keep the pre-activation (kernels/dense.h). fastckpt/ops.py ("layer kernels") checks
// shapes first; these checks are the last line against a wrong buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "kernels/broadcast.h"
#include "kernels/dense.h"
#include "kernels/elementwise.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

fastckpt::Activation act_of(int a) {
  if (a < 0 || a >= fastckpt::kNumActivations)
    throw py::value_error("activation code must be in [0, " +
                          std::to_string(fastckpt::kNumActivations - 1) + "], got " + std::to_string(a));
  return static_cast<fastckpt::Activation>(a);
}

float* opt_data(py::object o, int64_t n, const char* what, std::vector<py::array>& keep) {
  if (o.is_none()) return nullptr;
  keep.push_back(o.cast<py::array>());
  return data_of<float>(keep.back(), n, what, true);
}

// k float32 arrays of at least n_i elements each (n_i from `sizes`, or n for all).
std::vector<const float*> inputs_of(py::list xs, const std::vector<int64_t>& sizes,
                                    std::vector<py::array>& keep) {
  std::vector<const float*> out;
  for (size_t i = 0; i < xs.size(); ++i) {
    keep.push_back(xs[i].cast<py::array>());
    out.push_back(cdata_of<float>(keep.back(), sizes[i], "input"));
  }
  return out;
}

std::vector<float*> outputs_of(py::list xs, const std::vector<int64_t>& sizes,
                               std::vector<py::array>& keep) {
  std::vector<float*> out;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].is_none()) {
      out.push_back(nullptr);
      continue;
    }
    keep.push_back(xs[i].cast<py::array>());
    out.push_back(data_of<float>(keep.back(), sizes[i], "gradient", true));
  }
  return out;
}

}  // namespace

void bind_layer_kernels(py::module_& m) {
  py::list needs_z;
  for (int i = 0; i < fastckpt::kNumActivations; ++i)
    if (fastckpt::activation_needs_z(static_cast<fastckpt::Activation>(i)))
      needs_z.append(fastckpt::kActivationNames[i]);
  m.attr("activations_needing_z") = needs_z;

  // --- Dense / activations with the pre-activation kept ---------------------------------------
  m.def("dense_forward_z", [](py::array x, py::array W, py::object b, py::object z, py::array y,
                              int M, int K, int N, int act) {
    std::vector<py::array> keep;
    const float* px = cdata_of<float>(x, int64_t(M) * K, "x");
    const float* pw = cdata_of<float>(W, int64_t(K) * N, "kernel");
    const float* pb = nullptr;
    if (!b.is_none()) {
      keep.push_back(b.cast<py::array>());
      pb = cdata_of<float>(keep.back(), N, "bias");
    }
    float* pz = opt_data(z, int64_t(M) * N, "z", keep);
    float* py_ = data_of<float>(y, int64_t(M) * N, "y", true);
    auto a = act_of(act);
    py::gil_scoped_release nogil;
    fastckpt::dense_forward(px, pw, pb, pz, py_, M, K, N, a);
  });

  m.def("dense_backward_z", [](py::array x, py::array W, py::object z, py::array y, py::array dy,
                               py::array dz, py::array dW, py::object db, py::object dx, int M,
                               int K, int N, int act, bool accumulate) {
    std::vector<py::array> keep;
    const float* px = cdata_of<float>(x, int64_t(M) * K, "x");
    const float* pw = cdata_of<float>(W, int64_t(K) * N, "kernel");
    const float* pz = opt_data(z, int64_t(M) * N, "z", keep);
    const float* pyv = cdata_of<float>(y, int64_t(M) * N, "y");
    const float* pdy = cdata_of<float>(dy, int64_t(M) * N, "dy");
    float* pdz = data_of<float>(dz, int64_t(M) * N, "dz", true);
    float* pdW = data_of<float>(dW, int64_t(K) * N, "dW", true);
    float* pdb = opt_data(db, N, "db", keep);
    float* pdx = opt_data(dx, int64_t(M) * K, "dx", keep);
    auto a = act_of(act);
    if (fastckpt::activation_needs_z(a) && !pz)
      throw py::value_error("dense_backward: this activation needs the pre-activation z");
    py::gil_scoped_release nogil;
    fastckpt::dense_backward(px, pw, pz, pyv, pdy, pdz, pdW, pdb, pdx, M, K, N, a, accumulate);
  });

  m.def("activation_forward_out", [](int act, py::array z, py::array y, int64_t rows, int cols) {
    const float* pz = cdata_of<float>(z, rows * cols, "z");
    float* py_ = data_of<float>(y, rows * cols, "y", true);
    auto a = act_of(act);
    py::gil_scoped_release nogil;
    fastckpt::activation_forward(a, pz, py_, rows, cols);
  });

  m.def("activation_backward_z", [](int act, py::object z, py::array y, py::array dy, py::array dz,
                                    int64_t rows, int cols) {
    std::vector<py::array> keep;
    const float* pz = opt_data(z, rows * cols, "z", keep);
    const float* pyv = cdata_of<float>(y, rows * cols, "y");
    const float* pdy = cdata_of<float>(dy, rows * cols, "dy");
    float* pdz = data_of<float>(dz, rows * cols, "dz", true);
    auto a = act_of(act);
    if (fastckpt::activation_needs_z(a) && !pz)
      throw py::value_error("activation_backward: this activation needs the pre-activation z");
    py::gil_scoped_release nogil;
    fastckpt::activation_backward(a, pz, pyv, pdy, pdz, rows, cols);
  });

  // --- parameterized activations -------------------------------------------------------------
  m.def("relu_forward", [](py::array x, py::array y, float slope, bool has_max, float max_value,
                           float threshold) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::relu_forward(px, py_, n, slope, has_max, max_value, threshold);
  });
  m.def("relu_backward", [](py::array x, py::array dy, py::array dx, float slope, bool has_max,
                            float max_value, float threshold) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    const float* pdy = cdata_of<float>(dy, n, "dy");
    float* pdx = data_of<float>(dx, n, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::relu_backward(px, pdy, pdx, n, slope, has_max, max_value, threshold);
  });
  m.def("elu_forward", [](py::array x, py::array y, float alpha) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::elu_forward(px, py_, n, alpha);
  });
  m.def("elu_backward", [](py::array x, py::array dy, py::array dx, float alpha) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    const float* pdy = cdata_of<float>(dy, n, "dy");
    float* pdx = data_of<float>(dx, n, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::elu_backward(px, pdy, pdx, n, alpha);
  });

  auto check_idx = [](py::array& idx, int64_t per, int64_t alpha_size) {
    const int64_t* p = cdata_of<int64_t>(idx, per, "alpha index");
    for (int64_t j = 0; j < per; ++j)
      if (p[j] < 0 || p[j] >= alpha_size) throw py::value_error("PReLU: alpha index out of range");
    return p;
  };
  m.def("prelu_forward", [check_idx](py::array x, py::array alpha, py::array idx, py::array y,
                                     int64_t batch, int64_t per) {
    if (batch < 0 || per < 0) throw py::value_error("prelu_forward: negative size");
    const int64_t asz = alpha.size();
    const float* px = cdata_of<float>(x, batch * per, "x");
    const float* pa = cdata_of<float>(alpha, asz, "alpha");
    const int64_t* pi = check_idx(idx, per, asz);
    float* py_ = data_of<float>(y, batch * per, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::prelu_forward(px, pa, pi, py_, batch, per);
  });
  m.def("prelu_backward", [check_idx](py::array x, py::array alpha, py::array idx, py::array dy,
                                      py::object dx, py::object d_alpha, int64_t batch, int64_t per) {
    if (batch < 0 || per < 0) throw py::value_error("prelu_backward: negative size");
    std::vector<py::array> keep;
    const int64_t asz = alpha.size();
    const float* px = cdata_of<float>(x, batch * per, "x");
    const float* pa = cdata_of<float>(alpha, asz, "alpha");
    const int64_t* pi = check_idx(idx, per, asz);
    const float* pdy = cdata_of<float>(dy, batch * per, "dy");
    float* pdx = opt_data(dx, batch * per, "dx", keep);
    float* pda = opt_data(d_alpha, asz, "d_alpha", keep);
    py::gil_scoped_release nogil;
    fastckpt::prelu_backward(px, pa, pi, pdy, pdx, pda, asz, batch, per);
  });

  m.def("softmax_axis_forward", [](py::array x, py::array y, int64_t outer, int64_t n, int64_t inner) {
    if (outer < 0 || n < 1 || inner < 1) throw py::value_error("softmax_axis_forward: bad sizes");
    const float* px = cdata_of<float>(x, outer * n * inner, "x");
    float* py_ = data_of<float>(y, outer * n * inner, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::softmax_axis_forward(px, py_, outer, n, inner);
  });
  m.def("softmax_axis_backward", [](py::array y, py::array dy, py::array dx, int64_t outer, int64_t n,
                                    int64_t inner) {
    if (outer < 0 || n < 1 || inner < 1) throw py::value_error("softmax_axis_backward: bad sizes");
    const float* py_ = cdata_of<float>(y, outer * n * inner, "y");
    const float* pdy = cdata_of<float>(dy, outer * n * inner, "dy");
    float* pdx = data_of<float>(dx, outer * n * inner, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::softmax_axis_backward(py_, pdy, pdx, outer, n, inner);
  });

  m.def("scale_offset", [](py::array x, py::array y, float scale, float offset) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::scale_offset(px, py_, n, scale, offset);
  });
  m.def("multiply", [](py::array a, py::array b, py::array y) {
    const int64_t n = a.size();
    const float* pa = cdata_of<float>(a, n, "a");
    const float* pb = cdata_of<float>(b, n, "b");
    float* py_ = data_of<float>(y, n, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::multiply(pa, pb, py_, n);
  });

  // --- merges ----------------------------------------------------------------------------------
  auto merge_op = [](int op) {
    if (op < 0 || op > 5) throw py::value_error("merge op out of range");
    return static_cast<fastckpt::MergeOp>(op);
  };
  m.def("merge_forward", [merge_op](int op, py::list xs, py::array y) {
    const int64_t n = y.size();
    const int k = static_cast<int>(xs.size());
    if (k < 1) throw py::value_error("merge_forward: no inputs");
    std::vector<py::array> keep;
    auto in = inputs_of(xs, std::vector<int64_t>(k, n), keep);
    float* py_ = data_of<float>(y, n, "y", true);
    auto o = merge_op(op);
    py::gil_scoped_release nogil;
    fastckpt::merge_forward(o, in.data(), k, py_, n);
  });
  m.def("merge_backward", [merge_op](int op, py::list xs, py::array dy, py::list dxs) {
    const int64_t n = dy.size();
    const int k = static_cast<int>(xs.size());
    if (k < 1 || static_cast<int>(dxs.size()) != k) throw py::value_error("merge_backward: bad input count");
    std::vector<py::array> keep;
    auto in = inputs_of(xs, std::vector<int64_t>(k, n), keep);
    const float* pdy = cdata_of<float>(dy, n, "dy");
    std::vector<float*> out;
    for (int i = 0; i < k; ++i) {
      keep.push_back(dxs[i].cast<py::array>());
      out.push_back(data_of<float>(keep.back(), n, "dx", true));
    }
    auto o = merge_op(op);
    py::gil_scoped_release nogil;
    fastckpt::merge_backward(o, in.data(), k, pdy, out.data(), n);
  });
  // Broadcasting merges: dims of one sample (same rank; each in dim 1 or the out dim).
  auto bcast_dims = [](const std::vector<int64_t>& in, const std::vector<int64_t>& out, int64_t rows,
                       int64_t* in_n, int64_t* out_n) {
    if (in.size() != out.size() || in.size() > 32 || rows < 0) throw py::value_error("broadcast: bad dims");
    *in_n = *out_n = 1;
    for (size_t a = 0; a < in.size(); ++a) {
      if (out[a] < 1 || (in[a] != 1 && in[a] != out[a])) throw py::value_error("broadcast: dims do not broadcast");
      *in_n *= in[a];
      *out_n *= out[a];
      if (*out_n > (int64_t(1) << 40)) throw py::value_error("broadcast: too many elements");
    }
  };
  m.def("broadcast_expand", [bcast_dims](py::array x, std::vector<int64_t> in, std::vector<int64_t> out, int64_t rows,
                                         py::array y) {
    int64_t in_n = 0, out_n = 0;
    bcast_dims(in, out, rows, &in_n, &out_n);
    const float* px = cdata_of<float>(x, rows * in_n, "x");
    float* pyy = data_of<float>(y, rows * out_n, "y", true);
    const std::vector<int64_t> idx = fastckpt::broadcast_index(in, out);
    py::gil_scoped_release nogil;
    fastckpt::broadcast_expand(px, in_n, idx.data(), out_n, rows, pyy);
  });
  m.def("broadcast_reduce", [bcast_dims](py::array g, std::vector<int64_t> out, std::vector<int64_t> in, int64_t rows,
                                         py::array dx) {
    int64_t in_n = 0, out_n = 0;
    bcast_dims(in, out, rows, &in_n, &out_n);
    const float* pg = cdata_of<float>(g, rows * out_n, "g");
    float* pdx = data_of<float>(dx, rows * in_n, "dx", true);
    const std::vector<int64_t> idx = fastckpt::broadcast_index(in, out);
    py::gil_scoped_release nogil;
    fastckpt::broadcast_reduce(pg, out_n, idx.data(), in_n, rows, pdx);
  });
  m.def("concat_forward", [](py::list xs, std::vector<int64_t> widths, int64_t outer, py::array y) {
    const int k = static_cast<int>(xs.size());
    if (k < 1 || static_cast<int>(widths.size()) != k || outer < 0)
      throw py::value_error("concat_forward: bad input count");
    std::vector<int64_t> sizes;
    int64_t total = 0;
    for (auto w : widths) {
      if (w < 0) throw py::value_error("concat_forward: negative width");
      sizes.push_back(w * outer);
      total += w;
    }
    std::vector<py::array> keep;
    auto in = inputs_of(xs, sizes, keep);
    float* py_ = data_of<float>(y, total * outer, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::concat_forward(in.data(), widths.data(), k, outer, py_);
  });
  m.def("concat_backward", [](py::array dy, std::vector<int64_t> widths, int64_t outer, py::list dxs) {
    const int k = static_cast<int>(dxs.size());
    if (k < 1 || static_cast<int>(widths.size()) != k || outer < 0)
      throw py::value_error("concat_backward: bad input count");
    std::vector<int64_t> sizes;
    int64_t total = 0;
    for (auto w : widths) {
      if (w < 0) throw py::value_error("concat_backward: negative width");
      sizes.push_back(w * outer);
      total += w;
    }
    std::vector<py::array> keep;
    const float* pdy = cdata_of<float>(dy, total * outer, "dy");
    auto out = outputs_of(dxs, sizes, keep);
    py::gil_scoped_release nogil;
    fastckpt::concat_backward(pdy, widths.data(), k, outer, out.data());
  });

  // --- noise -----------------------------------------------------------------------------------
  m.def("normal_fill", [](py::array out, uint64_t seed, uint64_t offset) {
    const int64_t n = out.size();
    float* p = data_of<float>(out, n, "out", true);
    py::gil_scoped_release nogil;
    fastckpt::normal_fill(p, n, seed, offset);
  });
  m.def("gaussian_noise_forward", [](py::array x, py::array y, float stddev, uint64_t seed,
                                     uint64_t offset) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    py::gil_scoped_release nogil;
    fastckpt::gaussian_noise_forward(px, py_, n, stddev, seed, offset);
  });
  m.def("gaussian_dropout_forward", [](py::array x, py::array y, py::array noise, float stddev,
                                       uint64_t seed, uint64_t offset) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    float* pn = data_of<float>(noise, n, "noise", true);
    py::gil_scoped_release nogil;
    fastckpt::gaussian_dropout_forward(px, py_, pn, n, stddev, seed, offset);
  });
  m.def("alpha_dropout_forward", [](py::array x, py::array y, py::array mask, float rate,
                                    uint64_t seed, uint64_t offset) {
    if (!(rate > 0.f && rate < 1.f)) throw py::value_error("rate must be in (0, 1)");
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    uint8_t* pm = data_of<uint8_t>(mask, n, "mask", true);
    py::gil_scoped_release nogil;
    fastckpt::alpha_dropout_forward(px, py_, pm, n, rate, seed, offset);
  });
  m.def("alpha_dropout_backward", [](py::array dy, py::array mask, py::array dx, float rate) {
    if (!(rate > 0.f && rate < 1.f)) throw py::value_error("rate must be in (0, 1)");
    const int64_t n = dy.size();
    const float* pdy = cdata_of<float>(dy, n, "dy");
    const uint8_t* pm = cdata_of<uint8_t>(mask, n, "mask");
    float* pdx = data_of<float>(dx, n, "dx", true);
    py::gil_scoped_release nogil;
    fastckpt::alpha_dropout_backward(pdy, pm, pdx, n, rate);
  });
}
