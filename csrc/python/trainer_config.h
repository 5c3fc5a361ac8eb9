// The variables and optimizer of a native trainer (chain or graph): the variable dicts
// (fastckpt/training/fused.py, graph_fused.py) and the dict Optimizer._fused_config() returns,
// checked against the variables' slots.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "kernels/trainer.h"
#include "python/buffers.h"

namespace fastckpt::py_detail {

// One TrainerVariable per dict {"size", "value", "grad", "slot0", "slot1", "slot2"} (slots may
// be None): float32 C-contiguous writable arrays of at least `size` elements, each appended to
// `refs` (the trainer keeps them alive; it never owns their memory).
inline std::vector<TrainerVariable> variables_config(pybind11::list variables,
                                                     pybind11::list& refs) {
  namespace py = pybind11;
  auto keep = [&refs](py::object a, int64_t n, const char* what, bool required) -> float* {
    if (a.is_none()) {
      if (required) throw py::value_error(std::string("trainer variable: missing ") + what);
      return nullptr;
    }
    py::array arr = a.cast<py::array>();
    refs.append(arr);
    return data_of<float>(arr, n, what, true);
  };
  std::vector<TrainerVariable> vs;
  for (auto item : variables) {
    py::dict d = item.cast<py::dict>();
    TrainerVariable v;
    v.size = d["size"].cast<int64_t>();
    if (v.size < 0) throw py::value_error("trainer variable: negative size");
    v.value = keep(d["value"], v.size, "variable", true);
    v.grad = keep(d["grad"], v.size, "gradient", true);
    v.slot0 = keep(d["slot0"], v.size, "slot0", false);
    v.slot1 = keep(d["slot1"], v.size, "slot1", false);
    v.slot2 = keep(d["slot2"], v.size, "slot2", false);
    vs.push_back(v);
  }
  return vs;
}

inline TrainerOptimizer optimizer_config(pybind11::dict o, const std::vector<TrainerVariable>& vs) {
  namespace py = pybind11;
  TrainerOptimizer opt;
  const std::string kind = o["kind"].cast<std::string>();
  if (kind == "adam") {
    opt.kind = TrainerOptimizer::kAdam;
    opt.adam.learning_rate = o["learning_rate"].cast<float>();
    opt.adam.beta_1 = o["beta_1"].cast<float>();
    opt.adam.beta_2 = o["beta_2"].cast<float>();
    opt.adam.epsilon = o["epsilon"].cast<float>();
    opt.adam.amsgrad = o["amsgrad"].cast<bool>();
    for (const auto& v : vs)
      if (!v.slot0 || !v.slot1 || (opt.adam.amsgrad && !v.slot2))
        throw py::value_error("Adam needs m and v (and vhat) slots for every variable");
  } else if (kind == "sgd") {
    opt.kind = TrainerOptimizer::kSgd;
    opt.learning_rate = o["learning_rate"].cast<float>();
    opt.momentum = o["momentum"].cast<float>();
    opt.nesterov = o["nesterov"].cast<bool>();
    if (opt.momentum != 0.f)
      for (const auto& v : vs)
        if (!v.slot0) throw py::value_error("SGD with momentum needs a momentum slot");
  } else {
    throw py::value_error("unknown optimizer kind " + kind);
  }
  return opt;
}

}  // namespace fastckpt::py_detail
