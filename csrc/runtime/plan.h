// The inference plan: parsing and validating the text (grammar and limits in fastckpt/format.h and
// docs/format.md, "Inference plan"). Pure text handling: no file access, no weights.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/dense.h"

namespace fastckpt::runtime {

// A plan that breaks the grammar or a limit. The message names the line ("plan line 3: ...").
class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PlanLayer {
  enum class Kind { kDense, kDropout };
  Kind kind = Kind::kDense;
  int line = 0;              // 1-based line in the plan text, for messages
  int64_t units = 0;         // dense: output width
  Activation activation = Activation::kLinear;
  std::string kernel_key;    // dense: (in, units) float32
  std::string bias_key;      // dense: (units,) float32; empty when the plan says "-"
  double rate = 0.0;         // dropout
};

struct Plan {
  int64_t input_width = 0;
  std::vector<PlanLayer> layers;
};

// Parses `text`; every byte is bounds-checked, nothing is trusted. Throws PlanError.
Plan parse_plan(std::string_view text);

const char* activation_name(Activation a);

}  // namespace fastckpt::runtime
