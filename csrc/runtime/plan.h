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

// One node of the plan's graph. Tensors are numbered: the inputs first (0 .. n_inputs-1), then
// node i's output is tensor n_inputs + i. A version 1 plan is read as a chain of nodes.
struct PlanNode {
  enum class Op { kDense, kIdentity, kActivation, kRescaling, kConcat, kMerge, kEmbedding, kGap1d,
                  kGmp1d, kRelu, kElu, kSoftmax, kPrelu, kBatchNorm, kLayerNorm, kNormalize, kTranspose };
  Op op = Op::kIdentity;
  int line = 0;                 // 1-based line in the plan text, for messages
  std::string name;             // output tensor name
  std::vector<int> inputs;      // tensor numbers, each < this node's own number
  int64_t width = 0;            // output width (floats per row)
  int64_t units = 0;            // dense: output width; embedding: dim; pooling: steps
  int64_t vocab = 0;            // embedding
  Activation activation = Activation::kLinear;
  int merge = 0;                // kMerge: a MergeOp code (kernels/elementwise.h)
  double scale = 1.0, offset = 0.0;  // rescaling; relu: negative slope, threshold; elu: alpha
                                     // (scale); norms: epsilon (scale)
  bool has_max = false;         // relu; normalize: invert
  double max_value = 0.0;
  std::vector<std::string> keys;  // prelu: alpha; norms: gamma, beta (empty = "-"), [mean, var]
  std::string kernel_key;       // dense kernel (in, units) / embedding table (vocab, dim), float32
  std::string bias_key;         // dense: (units,) float32; empty when the plan says "-"
  // Version 3: the op's feature axis inside a row, for inputs of rank 3 and more. The row is
  // (outer, axis_n, axis_inner) row-major; axis_n == 0 means the whole row (version 2).
  //   dense: axis_n = the kernel's rows (applied per step); activation/layernorm: the trailing
  //   block the softmax / normalisation covers; softmax, batchnorm, normalize: the axis and what
  //   follows it; transpose: (axis_n, units, rest) -> (units, axis_n, rest).
  int64_t axis_n = 0, axis_inner = 1;
  int64_t outer = 1;            // concat: the inputs are concatenated inside `outer` blocks
  // Version 3 broadcasting: merge: each input's dims (same rank; each dim equal to the output's
  // or 1); prelu: {input dims, alpha dims}. Empty: no broadcasting.
  std::vector<std::vector<int64_t>> dims;
  std::vector<float> values;    // rescaling (v3): the scales, then the offsets, of dims[1]'s count
};

struct PlanTensor {
  std::string name;
  int64_t width = 0;
  bool is_int = false;  // only plan inputs may be int (ids, int32 in the C API)
};

struct Plan {
  int version = 1;
  std::vector<PlanTensor> inputs;
  std::vector<PlanNode> nodes;
  std::vector<std::pair<std::string, int>> outputs;  // name, tensor number
  int64_t input_width = 0;  // version 1: the one input's width
};

// Parses `text`; every byte is bounds-checked, nothing is trusted. Throws PlanError.
Plan parse_plan(std::string_view text);

const char* activation_name(Activation a);

}  // namespace fastckpt::runtime
