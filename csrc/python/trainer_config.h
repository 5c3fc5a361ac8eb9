// The optimizer of a native trainer (chain or graph) from the dict Optimizer._fused_config()
// returns, checked against the variables' slots.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "kernels/trainer.h"

namespace fastckpt::py_detail {

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
