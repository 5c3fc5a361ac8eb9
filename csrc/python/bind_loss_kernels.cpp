// Bindings of the losses kernels (kernels/losses.h). fastckpt/ops.py checks shapes first; the
// checks here only guard the buffers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "kernels/losses.h"
#include "python/buffers.h"

namespace py = pybind11;
using fastckpt::py_detail::data_of;

namespace {

// Read-only inputs may be read-only arrays (broadcast views, memory maps): cdata_of goes through
// mutable_data(), which refuses them, so the type checks are repeated here around data().
template <typename T>
const T* input_of(py::array& a, int64_t min_elems, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(std::string(name) + ": expected a C-contiguous " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + " array, got " +
                         py::str(a.dtype()).cast<std::string>());
  if (a.size() < min_elems)
    throw py::value_error(std::string(name) + ": expected at least " + std::to_string(min_elems) +
                          " elements, got " + std::to_string(a.size()));
  return static_cast<const T*>(a.data());
}

float* optional_out(py::object obj, py::array& keep, int64_t n, const char* name) {
  if (obj.is_none()) return nullptr;
  keep = obj.cast<py::array>();
  return data_of<float>(keep, n, name, true);
}

const float* optional_in(py::object obj, py::array& keep, int64_t n, const char* name) {
  if (obj.is_none()) return nullptr;
  keep = obj.cast<py::array>();
  return input_of<float>(keep, n, name);
}

}  // namespace

void bind_loss_kernels(py::module_& m) {
  using fastckpt::DenseLoss;
  m.attr("loss_kinds") = std::vector<std::pair<std::string, int>>{
      {"mean_squared_error", int(DenseLoss::kMeanSquaredError)},
      {"mean_absolute_error", int(DenseLoss::kMeanAbsoluteError)},
      {"mean_absolute_percentage_error", int(DenseLoss::kMeanAbsolutePercentageError)},
      {"mean_squared_logarithmic_error", int(DenseLoss::kMeanSquaredLogarithmicError)},
      {"huber", int(DenseLoss::kHuber)},
      {"log_cosh", int(DenseLoss::kLogCosh)},
      {"poisson", int(DenseLoss::kPoisson)},
      {"hinge", int(DenseLoss::kHinge)},
      {"squared_hinge", int(DenseLoss::kSquaredHinge)},
      {"binary_crossentropy", int(DenseLoss::kBinaryCrossentropy)},
      {"binary_focal_crossentropy", int(DenseLoss::kBinaryFocalCrossentropy)},
      {"categorical_crossentropy", int(DenseLoss::kCategoricalCrossentropy)},
      {"kl_divergence", int(DenseLoss::kKLDivergence)},
      {"cosine_similarity", int(DenseLoss::kCosineSimilarity)},
      {"categorical_hinge", int(DenseLoss::kCategoricalHinge)},
  };

  m.def("dense_loss",
        [](int kind, py::array y_true, py::array y_pred, int64_t M, int64_t N, py::object weights,
           py::object losses, py::object grad, float grad_scale, bool from_logits,
           float label_smoothing, float epsilon, float delta, float alpha, float gamma,
           bool apply_class_balancing) {
          if (kind < 0 || kind > int(DenseLoss::kCategoricalHinge))
            throw py::value_error("dense_loss: unknown loss kind " + std::to_string(kind));
          if (M < 0 || N < 0) throw py::value_error("dense_loss: negative shape");
          const float* pt = input_of<float>(y_true, M * N, "y_true");
          const float* pp = input_of<float>(y_pred, M * N, "y_pred");
          py::array wa, la, ga;
          const float* pw = optional_in(weights, wa, M, "sample_weight");
          float* pl = optional_out(losses, la, M, "losses");
          float* pg = optional_out(grad, ga, M * N, "grad");
          fastckpt::LossParams p;
          p.kind = static_cast<DenseLoss>(kind);
          p.from_logits = from_logits;
          p.label_smoothing = label_smoothing;
          p.epsilon = epsilon;
          p.delta = delta;
          p.alpha = alpha;
          p.gamma = gamma;
          p.apply_class_balancing = apply_class_balancing;
          py::gil_scoped_release nogil;
          return fastckpt::dense_loss(p, pt, pp, M, N, pw, pl, pg, grad_scale);
        });

  m.def("sparse_ce_loss",
        [](py::array pred, py::array labels, int64_t M, int64_t N, bool from_logits, float epsilon,
           py::object weights, py::object losses, py::object grad, float grad_scale) {
          if (M < 0 || N < 0) throw py::value_error("sparse_ce_loss: negative shape");
          const float* pp = input_of<float>(pred, M * N, "pred");
          const int32_t* pl = input_of<int32_t>(labels, M, "labels");
          for (int64_t i = 0; i < M; ++i)
            if (pl[i] >= N || pl[i] < -1) throw py::value_error("sparse_ce_loss: label out of range");
          py::array wa, la, ga;
          const float* pw = optional_in(weights, wa, M, "sample_weight");
          float* plo = optional_out(losses, la, M, "losses");
          float* pg = optional_out(grad, ga, M * N, "grad");
          py::gil_scoped_release nogil;
          return fastckpt::sparse_ce_loss(pp, pl, M, N, from_logits, epsilon, pw, plo, pg,
                                          grad_scale);
        });
}
