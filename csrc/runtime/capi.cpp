// The C surface of fastckpt.h: argument checks, and the one place where C++ exceptions become
// status codes and messages. Nothing may escape an extern "C" function (it would be UB for a C
// caller), so every entry point runs its body through guarded().
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "fastckpt/fastckpt.h"
#include "io/error.h"
#include "io/file.h"
#include "runtime/model.h"

#ifndef FASTCKPT_VERSION
#define FASTCKPT_VERSION "unknown"
#endif

struct fckpt_model {
  std::unique_ptr<fastckpt::runtime::InferenceModel> impl;
};

namespace {

using fastckpt::runtime::Error;

// Per thread, so concurrent callers never see each other's messages.
thread_local std::string t_error;

fckpt_status fail(fckpt_status s, const std::string& msg) {
  try {
    t_error = msg;
  } catch (...) {
    t_error.clear();  // out of memory for the message itself: keep the code
  }
  return s;
}

template <class F>
fckpt_status guarded(F&& body) {
  t_error.clear();
  try {
    return body();
  } catch (const Error& e) {
    return fail(e.status(), e.what());
  } catch (const fastckpt::io::FormatError& e) {
    return fail(FCKPT_ERR_CORRUPT, e.what());
  } catch (const fastckpt::io::NotFoundError& e) {
    return fail(FCKPT_ERR_NOT_FOUND, e.what());
  } catch (const fastckpt::io::SystemError& e) {
    return fail(FCKPT_ERR_IO, e.what());
  } catch (const std::bad_alloc&) {
    return fail(FCKPT_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(FCKPT_ERR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(FCKPT_ERR_INTERNAL, "internal error: unknown exception");
  }
}

fckpt_status load(const std::string& prefix, const char* plan, const fckpt_model_params& params,
                  fckpt_model** out_model) {
  auto m = fastckpt::runtime::InferenceModel::load(prefix, plan, params);
  *out_model = new fckpt_model{std::move(m)};
  return FCKPT_OK;
}

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + nb && pb < pa + na;
}

}  // namespace

extern "C" {

fckpt_model_params fckpt_model_default_params(void) {
  fckpt_model_params p;
  p.use_mmap = true;
  p.verify_all = false;
  p.batch_size = 32;
  return p;
}

fckpt_status fckpt_model_load_dir(const char* dir, fckpt_model_params params, fckpt_model** out_model) {
  return guarded([&] {
    if (!out_model) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_load_dir: out_model is NULL");
    *out_model = nullptr;
    if (!dir) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_load_dir: dir is NULL");
    const std::string d(dir);
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return fail(FCKPT_ERR_NOT_FOUND, "no model directory at '" + d + "'");
    // The marker file tells a model directory from any other; its JSON is for Python only.
    const std::string meta = fastckpt::io::join_path(d, "fastckpt_model.json");
    if (::stat(meta.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      return fail(FCKPT_ERR_NOT_FOUND, "'" + d + "' is not a fastckpt model directory (no fastckpt_model.json; "
                                       "save one with model.save(path))");
    return load(fastckpt::io::join_path(fastckpt::io::join_path(d, "variables"), "variables"), nullptr, params,
                out_model);
  });
}

fckpt_status fckpt_model_load_checkpoint(const char* prefix, const char* plan, fckpt_model_params params,
                                         fckpt_model** out_model) {
  return guarded([&] {
    if (!out_model) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_load_checkpoint: out_model is NULL");
    *out_model = nullptr;
    if (!prefix || !*prefix)
      return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_load_checkpoint: prefix is NULL or empty");
    return load(prefix, plan, params, out_model);
  });
}

void fckpt_model_free(fckpt_model* model) { delete model; }

int64_t fckpt_model_n_inputs(const fckpt_model* model) { return model ? model->impl->n_inputs() : -1; }

int64_t fckpt_model_n_outputs(const fckpt_model* model) { return model ? model->impl->n_outputs() : -1; }

fckpt_status fckpt_model_weight_bytes(const fckpt_model* model, int64_t* mapped, int64_t* copied) {
  return guarded([&] {
    if (!model) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_weight_bytes: model is NULL");
    if (mapped) *mapped = model->impl->mapped_bytes();
    if (copied) *copied = model->impl->copied_bytes();
    return FCKPT_OK;
  });
}

fckpt_status fckpt_model_predict(const fckpt_model* model, const float* x, int64_t rows, int64_t cols, float* out,
                                 int64_t out_cap) {
  return guarded([&] {
    if (!model) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: model is NULL");
    const auto& m = *model->impl;
    if (m.n_named_inputs() != 1 || m.n_named_outputs() != 1 || m.input_is_int(0))
      return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: the model has " + std::to_string(m.n_named_inputs()) +
                                                  " inputs and " + std::to_string(m.n_named_outputs()) +
                                                  " outputs (or int ids); use fckpt_model_predict_multi");
    if (rows < 0) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: expected rows >= 0, got " + std::to_string(rows));
    if (cols != m.n_inputs())
      return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: expected " + std::to_string(m.n_inputs()) +
                                                  " columns (the model's input width), got " + std::to_string(cols));
    if (rows == 0) return FCKPT_OK;
    if (!x) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: x is NULL");
    if (!out) return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: out is NULL");
    constexpr int64_t kMaxFloats = std::numeric_limits<int64_t>::max() / 4;  // byte counts stay in range
    if (rows > kMaxFloats / cols || rows > kMaxFloats / m.n_outputs())
      return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: rows = " + std::to_string(rows) + " is too large");
    const int64_t need = rows * m.n_outputs();
    if (out_cap < need)
      return fail(FCKPT_ERR_BUFFER_TOO_SMALL, "fckpt_model_predict: out holds " + std::to_string(out_cap) +
                                                  " floats, " + std::to_string(need) + " needed (" + std::to_string(rows) +
                                                  " rows x " + std::to_string(m.n_outputs()) + " outputs)");
    if (overlaps(x, static_cast<size_t>(rows * cols) * sizeof(float), out, static_cast<size_t>(need) * sizeof(float)))
      return fail(FCKPT_ERR_INVALID_ARGUMENT, "fckpt_model_predict: x and out overlap");
    m.predict(x, rows, out);
    return FCKPT_OK;
  });
}

int64_t fckpt_model_n_named_inputs(const fckpt_model* model) {
  return model ? static_cast<int64_t>(model->impl->n_named_inputs()) : -1;
}

int64_t fckpt_model_n_named_outputs(const fckpt_model* model) {
  return model ? static_cast<int64_t>(model->impl->n_named_outputs()) : -1;
}

namespace {
bool in_range(const fckpt_model* model, int64_t i, bool outputs) {
  return model && i >= 0 &&
         static_cast<uint64_t>(i) < (outputs ? model->impl->n_named_outputs() : model->impl->n_named_inputs());
}
}  // namespace

const char* fckpt_model_input_name(const fckpt_model* model, int64_t i) {
  return in_range(model, i, false) ? model->impl->input_name(static_cast<size_t>(i)).c_str() : nullptr;
}

int64_t fckpt_model_input_width(const fckpt_model* model, int64_t i) {
  return in_range(model, i, false) ? model->impl->input_width(static_cast<size_t>(i)) : -1;
}

int fckpt_model_input_is_int(const fckpt_model* model, int64_t i) {
  return in_range(model, i, false) ? (model->impl->input_is_int(static_cast<size_t>(i)) ? 1 : 0) : -1;
}

const char* fckpt_model_output_name(const fckpt_model* model, int64_t i) {
  return in_range(model, i, true) ? model->impl->output_name(static_cast<size_t>(i)).c_str() : nullptr;
}

int64_t fckpt_model_output_width(const fckpt_model* model, int64_t i) {
  return in_range(model, i, true) ? model->impl->output_width(static_cast<size_t>(i)) : -1;
}

fckpt_status fckpt_model_predict_multi(const fckpt_model* model, const void* const* inputs, int64_t rows,
                                       float* const* outputs, const int64_t* out_caps) {
  return guarded([&] {
    const char* fn = "fckpt_model_predict_multi: ";
    if (!model) return fail(FCKPT_ERR_INVALID_ARGUMENT, std::string(fn) + "model is NULL");
    const auto& m = *model->impl;
    if (rows < 0) return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + ("expected rows >= 0, got " + std::to_string(rows)));
    if (rows == 0) return FCKPT_OK;
    if (!inputs || !outputs || !out_caps)
      return fail(FCKPT_ERR_INVALID_ARGUMENT, std::string(fn) + "inputs, outputs or out_caps is NULL");
    constexpr int64_t kMaxElems = std::numeric_limits<int64_t>::max() / 8;  // byte counts stay in range
    struct Span { const void* p; size_t bytes; };
    std::vector<Span> spans;
    for (size_t i = 0; i < m.n_named_inputs(); ++i) {
      if (!inputs[i]) return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + ("input " + std::to_string(i) + " ('" + m.input_name(i) + "') is NULL"));
      if (rows > kMaxElems / m.input_width(i))
        return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + ("rows = " + std::to_string(rows) + " is too large"));
      if (reinterpret_cast<uintptr_t>(inputs[i]) % 4 != 0)
        return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + ("input " + std::to_string(i) + " is not 4-byte aligned"));
      spans.push_back({inputs[i], static_cast<size_t>(rows * m.input_width(i)) * 4});
    }
    for (size_t j = 0; j < m.n_named_outputs(); ++j) {
      const std::string what = "output " + std::to_string(j) + " ('" + m.output_name(j) + "')";
      if (!outputs[j]) return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + what + " is NULL");
      if (rows > kMaxElems / m.output_width(j))
        return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + ("rows = " + std::to_string(rows) + " is too large"));
      const int64_t need = rows * m.output_width(j);
      if (out_caps[j] < need)
        return fail(FCKPT_ERR_BUFFER_TOO_SMALL, fn + what + " holds " + std::to_string(out_caps[j]) + " floats, " +
                                                    std::to_string(need) + " needed (" + std::to_string(rows) +
                                                    " rows x " + std::to_string(m.output_width(j)) + ")");
      const size_t bytes = static_cast<size_t>(need) * sizeof(float);
      for (size_t k = 0; k < spans.size(); ++k)
        if (overlaps(spans[k].p, spans[k].bytes, outputs[j], bytes))
          return fail(FCKPT_ERR_INVALID_ARGUMENT, fn + what + " overlaps " +
                                                      (k < m.n_named_inputs() ? "input " + std::to_string(k)
                                                                              : "output " + std::to_string(k - m.n_named_inputs())));
      spans.push_back({outputs[j], bytes});
    }
    m.predict_multi(inputs, rows, outputs);
    return FCKPT_OK;
  });
}

const char* fckpt_last_error(void) { return t_error.c_str(); }

const char* fckpt_status_string(fckpt_status status) {
  switch (status) {
    case FCKPT_OK: return "ok";
    case FCKPT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case FCKPT_ERR_NOT_FOUND: return "not found";
    case FCKPT_ERR_CORRUPT: return "corrupt checkpoint";
    case FCKPT_ERR_PLAN: return "bad or missing inference plan";
    case FCKPT_ERR_MISMATCH: return "plan and checkpoint do not match";
    case FCKPT_ERR_IO: return "I/O error";
    case FCKPT_ERR_BUFFER_TOO_SMALL: return "output buffer too small";
    case FCKPT_ERR_NO_MEMORY: return "out of memory";
    case FCKPT_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* fckpt_version(void) { return FASTCKPT_VERSION; }

}  // extern "C"
