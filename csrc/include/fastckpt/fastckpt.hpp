// C++ RAII wrapper over the C API in fastckpt.h: a movable Model that frees itself, and failures as
// fastckpt::Error exceptions (status + message). Header-only; the C functions stay the ABI.
//
//   fastckpt::Model m = fastckpt::Model::load_dir("my_model");
//   std::vector<float> y = m.predict(x, rows);   // rows * m.n_outputs() floats
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastckpt/fastckpt.h"

namespace fastckpt {

class Error : public std::runtime_error {
 public:
  Error(fckpt_status s, const char* msg) : std::runtime_error(msg), status(s) {}
  fckpt_status status;
};

inline void check(fckpt_status s) {
  if (s != FCKPT_OK) throw Error(s, fckpt_last_error());
}

class Model {
 public:
  static Model load_dir(const std::string& dir, fckpt_model_params p = fckpt_model_default_params()) {
    fckpt_model* m = nullptr;
    check(fckpt_model_load_dir(dir.c_str(), p, &m));
    return Model(m);
  }
  // plan: plan text for a checkpoint that carries none (TensorFlow); empty = the stored plan.
  static Model load_checkpoint(const std::string& prefix, const std::string& plan = {},
                               fckpt_model_params p = fckpt_model_default_params()) {
    fckpt_model* m = nullptr;
    check(fckpt_model_load_checkpoint(prefix.c_str(), plan.empty() ? nullptr : plan.c_str(), p, &m));
    return Model(m);
  }
  int64_t n_inputs() const { return fckpt_model_n_inputs(m_.get()); }
  int64_t n_outputs() const { return fckpt_model_n_outputs(m_.get()); }
  void predict(const float* x, int64_t rows, float* out, int64_t out_cap) const {
    check(fckpt_model_predict(m_.get(), x, rows, n_inputs(), out, out_cap));
  }
  // x holds rows * n_inputs() floats; returns rows * n_outputs() floats.
  std::vector<float> predict(const std::vector<float>& x, int64_t rows) const {
    if (rows < 0 || x.size() != static_cast<size_t>(rows) * static_cast<size_t>(n_inputs()))
      throw Error(FCKPT_ERR_INVALID_ARGUMENT, "fastckpt::Model::predict: x.size() != rows * n_inputs()");
    std::vector<float> out(static_cast<size_t>(rows * n_outputs()));
    predict(x.data(), rows, out.data(), static_cast<int64_t>(out.size()));
    return out;
  }
  // Named inputs and outputs (plan version 2).
  int64_t n_named_inputs() const { return fckpt_model_n_named_inputs(m_.get()); }
  int64_t n_named_outputs() const { return fckpt_model_n_named_outputs(m_.get()); }
  std::string input_name(int64_t i) const { return name(fckpt_model_input_name(m_.get(), i)); }
  int64_t input_width(int64_t i) const { return fckpt_model_input_width(m_.get(), i); }
  bool input_is_int(int64_t i) const { return fckpt_model_input_is_int(m_.get(), i) == 1; }
  std::string output_name(int64_t i) const { return name(fckpt_model_output_name(m_.get(), i)); }
  int64_t output_width(int64_t i) const { return fckpt_model_output_width(m_.get(), i); }
  // inputs[i]: rows * input_width(i) floats or int32 ids; returns one vector per output.
  std::vector<std::vector<float>> predict_multi(const std::vector<const void*>& inputs, int64_t rows) const {
    if (rows < 0 || inputs.size() != static_cast<size_t>(n_named_inputs()))
      throw Error(FCKPT_ERR_INVALID_ARGUMENT, "fastckpt::Model::predict_multi: expected one pointer per input");
    std::vector<std::vector<float>> outs(static_cast<size_t>(n_named_outputs()));
    std::vector<float*> ptrs;
    std::vector<int64_t> caps;
    for (size_t j = 0; j < outs.size(); ++j) {
      outs[j].resize(static_cast<size_t>(rows * output_width(static_cast<int64_t>(j))));
      ptrs.push_back(outs[j].data());
      caps.push_back(static_cast<int64_t>(outs[j].size()));
    }
    check(fckpt_model_predict_multi(m_.get(), inputs.data(), rows, ptrs.data(), caps.data()));
    return outs;
  }
  fckpt_model* get() const { return m_.get(); }

 private:
  static std::string name(const char* s) {
    if (!s) throw Error(FCKPT_ERR_INVALID_ARGUMENT, "fastckpt::Model: index out of range");
    return s;
  }
  explicit Model(fckpt_model* m) : m_(m) {}
  struct Free { void operator()(fckpt_model* m) const { fckpt_model_free(m); } };
  std::unique_ptr<fckpt_model, Free> m_;
};

}  // namespace fastckpt
