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

  int64_t n_inputs() const { return n_inputs_; }
  int64_t n_outputs() const { return n_outputs_; }
  int64_t mapped_bytes() const { return mapped_bytes_; }
  int64_t copied_bytes() const { return copied_bytes_; }

  // x: rows x n_inputs, out: rows x n_outputs; arguments already validated by the C API.
  void predict(const float* x, int64_t rows, float* out) const;

 private:
  struct DenseOp {
    const float* W = nullptr;  // (in, out), row-major
    const float* b = nullptr;  // (out) or null
    int in = 0, out = 0;
    Activation act = Activation::kLinear;
  };

  InferenceModel() = default;

  std::vector<DenseOp> ops_;
  int64_t n_inputs_ = 0, n_outputs_ = 0;
  int64_t max_hidden_ = 0;  // widest intermediate activation (scratch per row)
  int32_t batch_size_ = 32;
  int64_t mapped_bytes_ = 0, copied_bytes_ = 0;
  // Keep the weights alive: mappings of the shards used in place, and copies.
  std::vector<std::shared_ptr<const io::Mapping>> mappings_;
  std::vector<std::unique_ptr<float[]>> owned_;
};

}  // namespace fastckpt::runtime
