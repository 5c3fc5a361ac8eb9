#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <string>
#include <vector>

#include "kernels/blas.h"
#include "kernels/dense.h"
#include "kernels/dropout.h"
#include "kernels/loss.h"
#include "kernels/optim.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

fastckpt::Activation to_act(int a) {
  if (a < 0 || a >= fastckpt::kNumActivations)
    throw py::value_error("activation code must be in [0, " + std::to_string(fastckpt::kNumActivations - 1) +
                          "], got " + std::to_string(a));
  return static_cast<fastckpt::Activation>(a);
}

}  // namespace

void bind_kernels(py::module_& m) {
  // The activation codes the kernels take (kernels/dense.h), the one source for fastckpt.ops.
  py::dict acts;
  for (int i = 0; i < fastckpt::kNumActivations; ++i) acts[fastckpt::kActivationNames[i]] = i;
  m.attr("activations") = acts;

  m.def("gemm", [](bool ta, bool tb, int M, int N, int K, float alpha, py::array A, py::array B,
                   float beta, py::array C) {
    const float* a = cdata_of<float>(A, int64_t(M) * K, "A");
    const float* b = cdata_of<float>(B, int64_t(K) * N, "B");
    float* c = data_of<float>(C, int64_t(M) * N, "C", true);
    py::gil_scoped_release nogil;
    fastckpt::gemm(ta, tb, M, N, K, alpha, a, ta ? M : K, b, tb ? K : N, beta, c, N);
  });

  m.def("inference_pass_rows", [](int64_t batch_size) {
    if (batch_size < 1) throw py::value_error("inference_pass_rows: batch_size must be >= 1, got " + std::to_string(batch_size));
    return fastckpt::inference_pass_rows(batch_size);
  }, py::arg("batch_size"));

  m.def("predict_pass_rows", [](int64_t batch_size) {
    if (batch_size < 1) throw py::value_error("predict_pass_rows: batch_size must be >= 1, got " + std::to_string(batch_size));
    return fastckpt::predict_pass_rows(batch_size);
  }, py::arg("batch_size"));

  // layers: a list of (kernel (K, N), bias (N,) or None, out (M, N), activation code); x is (M, K0).
  m.def("dense_chain_forward", [](py::array x, py::list layers) {
    if (x.ndim() != 2) throw py::value_error("dense_chain_forward: x must be 2-D");
    const int64_t M = x.shape(0);
    int64_t width = x.shape(1);
    if (M > INT32_MAX || width > INT32_MAX) throw py::value_error("dense_chain_forward: x too large");
    std::vector<py::array> keep;  // holds every array the pointers below point into
    keep.reserve(3 * layers.size() + 1);
    keep.push_back(x);
    const float* px = cdata_of<float>(keep.back(), M * width, "x");
    std::vector<fastckpt::DenseChainLayer> chain;
    for (size_t l = 0; l < layers.size(); ++l) {
      py::tuple t = layers[l].cast<py::tuple>();
      if (t.size() != 4) throw py::value_error("dense_chain_forward: each layer is (kernel, bias, out, activation)");
      const std::string at = "layer " + std::to_string(l) + " ";
      keep.push_back(t[0].cast<py::array>());
      py::array& W = keep.back();
      if (W.ndim() != 2 || W.shape(0) != width || W.shape(1) > INT32_MAX)
        throw py::value_error("dense_chain_forward: " + at + "kernel must be (" + std::to_string(width) + ", units)");
      const int64_t N = W.shape(1);
      fastckpt::DenseChainLayer L{};
      L.W = cdata_of<float>(W, width * N, (at + "kernel").c_str());
      if (!t[1].is_none()) {
        keep.push_back(t[1].cast<py::array>());
        if (keep.back().size() != N) throw py::value_error("dense_chain_forward: " + at + "bias must have " + std::to_string(N) + " elements");
        L.b = cdata_of<float>(keep.back(), N, (at + "bias").c_str());
      }
      keep.push_back(t[2].cast<py::array>());
      if (keep.back().size() != M * N) throw py::value_error("dense_chain_forward: " + at + "out must have " + std::to_string(M * N) + " elements");
      L.y = data_of<float>(keep.back(), M * N, (at + "out").c_str(), true);
      L.K = static_cast<int>(width);
      L.N = static_cast<int>(N);
      L.act = to_act(t[3].cast<int>());
      chain.push_back(L);
      width = N;
    }
    py::gil_scoped_release nogil;
    fastckpt::dense_chain_forward(px, static_cast<int>(M), chain.data(), static_cast<int>(chain.size()));
  }, py::arg("x"), py::arg("layers"));

  m.def("dense_forward", [](py::array x, py::array W, py::object b, py::array y, int M, int K, int N,
                            int act) {
    const float* px = cdata_of<float>(x, int64_t(M) * K, "x");
    const float* pw = cdata_of<float>(W, int64_t(K) * N, "kernel");
    const float* pb = nullptr;
    if (!b.is_none()) {
      py::array ba = b.cast<py::array>();
      pb = cdata_of<float>(ba, N, "bias");
    }
    float* py_ = data_of<float>(y, int64_t(M) * N, "y", true);
    auto a = to_act(act);
    py::gil_scoped_release nogil;
    fastckpt::dense_forward(px, pw, pb, py_, M, K, N, a);
  });

  m.def("dense_backward", [](py::array x, py::array W, py::array y, py::array dy, py::array dz,
                             py::array dW, py::object db, py::object dx, int M, int K, int N,
                             int act, bool accumulate) {
    const float* px = cdata_of<float>(x, int64_t(M) * K, "x");
    const float* pw = cdata_of<float>(W, int64_t(K) * N, "kernel");
    const float* pyv = cdata_of<float>(y, int64_t(M) * N, "y");
    const float* pdy = cdata_of<float>(dy, int64_t(M) * N, "dy");
    float* pdz = data_of<float>(dz, int64_t(M) * N, "dz", true);
    float* pdW = data_of<float>(dW, int64_t(K) * N, "dW", true);
    float* pdb = nullptr;
    float* pdx = nullptr;
    py::array dba, dxa;
    if (!db.is_none()) { dba = db.cast<py::array>(); pdb = data_of<float>(dba, N, "db", true); }
    if (!dx.is_none()) { dxa = dx.cast<py::array>(); pdx = data_of<float>(dxa, int64_t(M) * K, "dx", true); }
    auto a = to_act(act);
    py::gil_scoped_release nogil;
    fastckpt::dense_backward(px, pw, pyv, pdy, pdz, pdW, pdb, pdx, M, K, N, a, accumulate);
  });

  m.def("activation_forward", [](int act, py::array z, int64_t rows, int cols) {
    float* p = data_of<float>(z, rows * cols, "z", true);
    auto a = to_act(act);
    py::gil_scoped_release nogil;
    fastckpt::activation_forward(a, p, rows, cols);
  });

  m.def("activation_backward", [](int act, py::array y, py::array dy, py::array dz, int64_t rows, int cols) {
    const float* py_ = cdata_of<float>(y, rows * cols, "y");
    const float* pdy = cdata_of<float>(dy, rows * cols, "dy");
    float* pdz = data_of<float>(dz, rows * cols, "dz", true);
    auto a = to_act(act);
    py::gil_scoped_release nogil;
    fastckpt::activation_backward(a, py_, pdy, pdz, rows, cols);
  });

  m.def("dropout_forward", [](py::array x, py::array y, py::array mask, float rate, uint64_t seed,
                              uint64_t offset) {
    const int64_t n = x.size();
    const float* px = cdata_of<float>(x, n, "x");
    float* py_ = data_of<float>(y, n, "y", true);
    uint8_t* pm = data_of<uint8_t>(mask, n, "mask", true);
    if (!(rate >= 0.f && rate < 1.f)) throw py::value_error("rate must be in [0, 1)");
    py::gil_scoped_release nogil;
    fastckpt::dropout_forward(px, py_, pm, n, rate, seed, offset);
  });

  m.def("dropout_backward", [](py::array dy, py::array mask, py::array dx, float rate) {
    const int64_t n = dy.size();
    const float* pdy = cdata_of<float>(dy, n, "dy");
    const uint8_t* pm = cdata_of<uint8_t>(mask, n, "mask");
    float* pdx = data_of<float>(dx, n, "dx", true);
    if (!(rate >= 0.f && rate < 1.f)) throw py::value_error("rate must be in [0, 1)");
    py::gil_scoped_release nogil;
    fastckpt::dropout_backward(pdy, pm, pdx, n, rate);
  });

  m.def("philox4x32", [](uint64_t lo, uint64_t hi, uint64_t key) {
    uint32_t out[4];
    fastckpt::philox4x32(lo, hi, key, out);
    return py::make_tuple(out[0], out[1], out[2], out[3]);
  });

  m.def("sparse_ce", [](py::array pred, py::array labels, int M, int N, bool from_logits,
                        float epsilon, py::object losses, py::object grad, float grad_scale) {
    const float* pp = cdata_of<float>(pred, int64_t(M) * N, "pred");
    const int32_t* pl = cdata_of<int32_t>(labels, M, "labels");
    float* plo = nullptr;
    float* pg = nullptr;
    py::array la, ga;
    if (!losses.is_none()) { la = losses.cast<py::array>(); plo = data_of<float>(la, M, "losses", true); }
    if (!grad.is_none()) { ga = grad.cast<py::array>(); pg = data_of<float>(ga, int64_t(M) * N, "grad", true); }
    for (int i = 0; i < M; ++i)
      if (pl[i] < 0 || pl[i] >= N) throw py::value_error("label out of range");
    double loss_sum = 0.0;
    int64_t correct;
    {
      py::gil_scoped_release nogil;
      correct = fastckpt::sparse_ce(pp, pl, M, N, from_logits, epsilon, plo, pg, grad_scale, &loss_sum);
    }
    return py::make_tuple(correct, loss_sum);
  });

  m.def("sparse_accuracy_count", [](py::array pred, py::array labels, int M, int N) {
    const float* pp = cdata_of<float>(pred, int64_t(M) * N, "pred");
    const int32_t* pl = cdata_of<int32_t>(labels, M, "labels");
    py::gil_scoped_release nogil;
    return fastckpt::sparse_accuracy_count(pp, pl, M, N);
  });

  m.def("adam_update", [](py::array var, py::array grad, py::array mm, py::array vv, py::object vhat,
                          float lr, float b1, float b2, float eps, bool amsgrad, int64_t t) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pm = data_of<float>(mm, n, "m", true);
    float* pvv = data_of<float>(vv, n, "v", true);
    float* ph = nullptr;
    py::array ha;
    if (!vhat.is_none()) { ha = vhat.cast<py::array>(); ph = data_of<float>(ha, n, "vhat", true); }
    fastckpt::AdamParams p{lr, b1, b2, eps, amsgrad};
    py::gil_scoped_release nogil;
    fastckpt::adam_update(pv, pg, pm, pvv, ph, n, p, t);
  });

  m.def("sgd_update", [](py::array var, py::array grad, py::object mom, float lr, float momentum,
                         bool nesterov) {
    const int64_t n = var.size();
    float* pv = data_of<float>(var, n, "variable", true);
    const float* pg = cdata_of<float>(grad, n, "gradient");
    float* pm = nullptr;
    py::array ma;
    if (!mom.is_none()) { ma = mom.cast<py::array>(); pm = data_of<float>(ma, n, "momentum", true); }
    py::gil_scoped_release nogil;
    fastckpt::sgd_update(pv, pg, pm, n, lr, momentum, nesterov);
  });
}
