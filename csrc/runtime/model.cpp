#include "runtime/model.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "fastckpt/format.h"
#include "io/bundle_reader.h"
#include "kernels/threading.h"
#include "runtime/plan.h"

namespace fastckpt::runtime {
namespace {

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// The stored plan: a scalar DT_STRING, CRC-checked by the reader like every other tensor.
std::string stored_plan(io::BundleReader& reader, int threads) {
  const io::TensorInfo* t = reader.find(format::kPlanKey);
  if (!t)
    throw Error(FCKPT_ERR_PLAN,
                "checkpoint " + reader.prefix() + " has no inference plan (" + format::kPlanKey +
                    "): the model has a layer the C++ runtime cannot run (e.g. a custom Python layer), "
                    "or the checkpoint was written by TensorFlow or an older fastckpt; pass the plan to "
                    "fckpt_model_load_checkpoint");
  if (t->entry.dtype != format::DT_STRING || !t->entry.shape.empty())
    throw Error(FCKPT_ERR_CORRUPT, "checkpoint " + reader.prefix() + ": " + format::kPlanKey +
                                       " is not a scalar string (dtype " + std::to_string(t->entry.dtype) +
                                       ", shape " + shape_str(t->entry.shape) + ")");
  const io::TensorBytes bytes = reader.tensor_bytes(*t, threads);
  const std::vector<std::string_view> s = reader.decode_strings(*t, bytes);
  if (s.size() != 1) throw Error(FCKPT_ERR_CORRUPT, "checkpoint " + reader.prefix() + ": malformed plan tensor");
  if (s[0].size() > format::kMaxPlanBytes)
    throw Error(FCKPT_ERR_PLAN, "stored plan of " + std::to_string(s[0].size()) + " bytes exceeds the limit");
  return std::string(s[0]);
}

// Kernels take int sizes and are first called from predict; initialize their thread count once,
// here, so concurrent predict calls only ever read it.
void init_threads_once() {
  static std::once_flag once;
  std::call_once(once, [] { (void)fastckpt::num_threads(); });
}

}  // namespace

std::unique_ptr<InferenceModel> InferenceModel::load(const std::string& prefix, const char* plan_text,
                                                     const fckpt_model_params& params) {
  init_threads_once();
  if (params.batch_size < 0)
    throw Error(FCKPT_ERR_INVALID_ARGUMENT, "params.batch_size must be >= 0, got " + std::to_string(params.batch_size));
  const int threads = fastckpt::num_threads();
  io::BundleReader reader(prefix);
  if (params.verify_all) reader.verify(threads);

  Plan plan;
  try {
    plan = parse_plan(plan_text ? std::string_view(plan_text) : std::string_view(stored_plan(reader, threads)));
  } catch (const PlanError& e) {
    throw Error(FCKPT_ERR_PLAN, std::string(plan_text ? "plan argument: " : "stored plan of " + prefix + ": ") + e.what());
  }

  std::unique_ptr<InferenceModel> m(new InferenceModel());
  m->batch_size_ = params.batch_size;
  m->n_inputs_ = plan.input_width;
  const bool swap = reader.big_endian();
  std::vector<std::shared_ptr<const io::Mapping>> used;

  // One float32 tensor of the expected shape, in place when possible, else copied once.
  auto weights = [&](const PlanLayer& l, const std::string& key, const std::vector<int64_t>& want) -> const float* {
    const std::string where = "plan line " + std::to_string(l.line) + ": tensor '" + key + "'";
    const io::TensorInfo* t = reader.find(key);
    if (!t) throw Error(FCKPT_ERR_MISMATCH, where + " is not in checkpoint " + prefix);
    if (t->entry.dtype != format::DT_FLOAT)
      throw Error(FCKPT_ERR_MISMATCH, where + ": expected dtype float32 (1), got dtype " + std::to_string(t->entry.dtype));
    if (t->entry.has_slices) throw Error(FCKPT_ERR_MISMATCH, where + " is partitioned (slices), not supported");
    if (t->entry.shape != want)
      throw Error(FCKPT_ERR_MISMATCH, where + ": expected shape " + shape_str(want) + ", got " + shape_str(t->entry.shape));
    const io::TensorBytes b = reader.tensor_bytes(*t, threads);  // bounds- and CRC-checked
    const auto size = static_cast<int64_t>(b.size);
    const bool aligned = reinterpret_cast<uintptr_t>(b.data) % alignof(float) == 0;
    if (params.use_mmap && aligned && !swap) {
      if (std::find(used.begin(), used.end(), b.mapping) == used.end()) used.push_back(b.mapping);
      m->mapped_bytes_ += size;
      return reinterpret_cast<const float*>(b.data);
    }
    std::unique_ptr<float[]> copy(new float[static_cast<size_t>(t->numel)]);
    if (swap)
      io::byteswap_copy(copy.get(), b.data, t->numel, sizeof(float), sizeof(float));
    else
      std::memcpy(copy.get(), b.data, static_cast<size_t>(b.size));
    m->copied_bytes_ += size;
    m->owned_.push_back(std::move(copy));
    return m->owned_.back().get();
  };

  int64_t width = plan.input_width;
  for (const PlanLayer& l : plan.layers) {
    if (l.kind == PlanLayer::Kind::kDropout) continue;  // identity at inference
    DenseOp op;
    op.in = static_cast<int>(width);       // widths are <= kMaxPlanWidth (2^24): fit an int
    op.out = static_cast<int>(l.units);
    op.act = l.activation;
    op.W = weights(l, l.kernel_key, {width, l.units});
    if (!l.bias_key.empty()) op.b = weights(l, l.bias_key, {l.units});
    m->ops_.push_back(op);
    width = l.units;
  }
  m->n_outputs_ = width;
  for (size_t i = 0; i + 1 < m->ops_.size(); ++i) m->max_hidden_ = std::max<int64_t>(m->max_hidden_, m->ops_[i].out);
  m->mappings_ = std::move(used);
  reader.close();  // descriptors go; mappings of in-place weights stay with the model
  return m;
}

void InferenceModel::predict(const float* x, int64_t rows, float* out) const {
  if (rows == 0) return;
  if (ops_.empty()) {  // a plan with no dense layer is the identity
    std::memcpy(out, x, static_cast<size_t>(rows * n_inputs_) * sizeof(float));
    return;
  }
  // Rows per pass: as Python's model.predict groups them (the same products, so the same bits);
  // all at once for 0. Never more than the kernels' int sizes allow.
  const int64_t per_pass = batch_size_ > 0 ? inference_pass_rows(batch_size_) : rows;
  const int64_t chunk = std::min<int64_t>(per_pass, std::min<int64_t>(rows, INT_MAX));
  // Two ping-pong buffers for the intermediate activations of one pass; per call, so concurrent
  // calls share nothing mutable. The first layer reads x, the last writes straight into out.
  std::unique_ptr<float[]> scratch;
  if (ops_.size() > 1) scratch.reset(new float[static_cast<size_t>(2 * chunk * max_hidden_)]);
  float* buf[2] = {scratch.get(), scratch.get() + chunk * max_hidden_};
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int m = static_cast<int>(std::min(chunk, rows - r0));
    const float* in = x + r0 * n_inputs_;
    for (size_t i = 0; i < ops_.size(); ++i) {
      const DenseOp& op = ops_[i];
      float* dst = i + 1 == ops_.size() ? out + r0 * n_outputs_ : buf[i % 2];
      dense_forward(in, op.W, op.b, dst, m, op.in, op.out, op.act);
      in = dst;
    }
  }
}

}  // namespace fastckpt::runtime
