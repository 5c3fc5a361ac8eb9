// The inference model behind fckpt_model: a validated list of dense layers whose weights live in
// a read-only mapping of the checkpoint (or, when that is not possible, in memory it owns).
//
// Loading reads the plan and the tensors through io::BundleReader (the same bounds and CRC checks
// as Python), and checks the plan against the checkpoint. After loading nothing is mutable, so
// predict() may run on many threads at once; each call allocates its own scratch.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastckpt/fastckpt.h"
#include "io/file.h"
#include "kernels/dense.h"
#include "runtime/plan.h"

namespace fastckpt::runtime {

// A failure with its C status (the io layer's exceptions are mapped in capi.cpp).
class Error : public std::runtime_error {
 public:
  Error(fckpt_status status, const std::string& what) : std::runtime_error(what), status_(status) {}
  fckpt_status status() const { return status_; }

 private:
  fckpt_status status_;
};

class InferenceModel {
 public:
  // prefix: checkpoint prefix. plan_text: the caller's plan, or nullptr to use the stored one.
  static std::unique_ptr<InferenceModel> load(const std::string& prefix, const char* plan_text,
                                              const fckpt_model_params& params);

  // The first input's and output's widths (fckpt_model_n_inputs/n_outputs).
  int64_t n_inputs() const { return inputs_[0].width; }
  int64_t n_outputs() const { return out_width_[0]; }
  int64_t mapped_bytes() const { return mapped_bytes_; }
  int64_t copied_bytes() const { return copied_bytes_; }

  size_t n_named_inputs() const { return inputs_.size(); }
  size_t n_named_outputs() const { return outputs_.size(); }
  const std::string& input_name(size_t i) const { return inputs_[i].name; }
  int64_t input_width(size_t i) const { return inputs_[i].width; }
  bool input_is_int(size_t i) const { return inputs_[i].is_int; }
  const std::string& output_name(size_t i) const { return outputs_[i].first; }
  int64_t output_width(size_t i) const { return out_width_[i]; }

  // xs[i]: rows x input_width(i) (float, or int32 for an int input); outs[j]: rows x output_width(j).
  // Arguments already validated by the C API. Throws Error for an id out of range.
  void predict_multi(const void* const* xs, int64_t rows, float* const* outs) const;
  // One float input, one output.
  void predict(const float* x, int64_t rows, float* out) const;

 private:
  struct Node {
    PlanNode::Op op = PlanNode::Op::kIdentity;
    std::vector<int> inputs;
    int64_t width = 0, in_width = 0;  // output width; first input's width
    const float* W = nullptr;  // dense kernel (in, out) / embedding table (vocab, dim), row-major
    const float* b = nullptr;  // dense bias (out) or null
    Activation act = Activation::kLinear;
    int merge = 0;
    int64_t units = 0, vocab = 0;
    float scale = 1.f, offset = 0.f;   // see PlanNode
    bool has_max = false;
    float max_value = 0.f;
    const float* w[4] = {nullptr, nullptr, nullptr, nullptr};  // prelu alpha; gamma, beta, mean, var
    std::string name;          // for messages
    // Version 3: see PlanNode. rows_mult: kernel rows per model row (dense steps, norm/softmax
    // blocks); cols: the kernel's row width.
    int64_t axis_n = 0, axis_inner = 1, outer = 1, rows_mult = 1, cols = 0;
    const int64_t* idx = nullptr;  // prelu/rescaling: parameter index per element (iota_ or a broadcast)
    const float* values = nullptr;  // rescaling: count scales then count offsets
    int64_t n_values = 0;
    std::vector<const int64_t*> gather;  // merge: per input, its index per output element, or null
  };

  InferenceModel() = default;

  std::vector<PlanTensor> inputs_;
  std::vector<Node> nodes_;
  std::vector<std::pair<std::string, int>> outputs_;
  std::vector<int64_t> out_width_;
  int64_t row_floats_ = 0;
  std::vector<int64_t> iota_;  // 0 .. widest prelu input: PReLU's alpha index per element
  int32_t batch_size_ = 32;
  int64_t mapped_bytes_ = 0, copied_bytes_ = 0;
  // Keep the weights alive: mappings of the shards used in place, and copies.
  std::vector<std::shared_ptr<const io::Mapping>> mappings_;
  std::vector<std::unique_ptr<float[]>> owned_;
  std::vector<std::unique_ptr<int64_t[]>> owned_idx_;  // broadcast indices (prelu, merges)
  int64_t max_rows_mult_ = 1;  // chunks keep rows * rows_mult within the kernels' int sizes
};

}  // namespace fastckpt::runtime
