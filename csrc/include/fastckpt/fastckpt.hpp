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
  fckpt_model* get() const { return m_.get(); }

 private:
  explicit Model(fckpt_model* m) : m_(m) {}
  struct Free { void operator()(fckpt_model* m) const { fckpt_model_free(m); } };
  std::unique_ptr<fckpt_model, Free> m_;
};

}  // namespace fastckpt
