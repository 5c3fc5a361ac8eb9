#include "runtime/model.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "fastckpt/format.h"
#include "io/bundle_reader.h"
#include "kernels/broadcast.h"
#include "kernels/elementwise.h"
#include "kernels/embed_pool.h"
#include "kernels/norm.h"
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
  const bool swap = reader.big_endian();
  std::vector<std::shared_ptr<const io::Mapping>> used;

  // One float32 tensor of the expected shape, in place when possible, else copied once.
  auto weights = [&](const PlanNode& l, const std::string& key, const std::vector<int64_t>& want) -> const float* {
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

  // A tensor of any shape holding exactly `count` float32 values (statistics of kept axes, a
  // LayerNormalization over several axes): the shape is the model's business, the size is ours.
  auto weights_n = [&](const PlanNode& l, const std::string& key, int64_t count) -> const float* {
    const io::TensorInfo* t = reader.find(key);
    if (t && t->entry.dtype == format::DT_FLOAT && !t->entry.has_slices && t->numel == static_cast<uint64_t>(count) && t->entry.shape.size() <= 8)
      return weights(l, key, t->entry.shape);
    return weights(l, key, {count});  // the typed error for a missing / wrong tensor
  };
  // Indices and expanded statistics a version 3 plan needs, bounded over the whole plan.
  int64_t budget = format::kMaxPlanRowFloats;
  auto take = [&](const PlanNode& l, int64_t n) {
    if (n > budget)
      throw Error(FCKPT_ERR_PLAN, "plan line " + std::to_string(l.line) + ": broadcast tables exceed " +
                                      std::to_string(format::kMaxPlanRowFloats) + " values over the plan");
    budget -= n;
  };
  // Repeats each of n values `inner` times: statistics of an axis that is not last, laid out as
  // the row's (axis, inner) block so the last-axis kernels run on it unchanged.
  auto expand = [&](const PlanNode& l, const float* v, int64_t n, int64_t inner) -> const float* {
    if (!v || inner == 1) return v;
    take(l, n * inner);
    std::unique_ptr<float[]> e(new float[static_cast<size_t>(n * inner)]);
    for (int64_t c = 0; c < n; ++c) std::fill(e.get() + c * inner, e.get() + (c + 1) * inner, v[c]);
    m->owned_.push_back(std::move(e));
    return m->owned_.back().get();
  };
  // For each element of `out` dims, its index in `in` dims (same rank, each 1 or equal).
  auto bcast = [&](const PlanNode& l, const std::vector<int64_t>& out, const std::vector<int64_t>& in) -> const int64_t* {
    int64_t total = 1;
    for (int64_t d : out) total *= d;  // <= kMaxPlanWidth (checked by the parser)
    take(l, total);
    const std::vector<int64_t> index = broadcast_index(in, out);
    std::unique_ptr<int64_t[]> idx(new int64_t[static_cast<size_t>(total)]);
    std::copy(index.begin(), index.end(), idx.get());
    m->owned_idx_.push_back(std::move(idx));
    return m->owned_idx_.back().get();
  };

  m->inputs_ = plan.inputs;
  m->outputs_ = plan.outputs;
  const int n_in = static_cast<int>(plan.inputs.size());
  auto width_of = [&](int t) { return t < n_in ? plan.inputs[t].width : plan.nodes[t - n_in].width; };
  for (const PlanNode& l : plan.nodes) {
    Node op;
    op.op = l.op;
    op.inputs = l.inputs;
    op.width = l.width;  // widths are <= kMaxPlanWidth (2^24): fit an int
    op.in_width = width_of(l.inputs[0]);
    op.act = l.activation;
    op.merge = l.merge;
    op.units = l.units;
    op.vocab = l.vocab;
    op.scale = static_cast<float>(l.scale);
    op.offset = static_cast<float>(l.offset);
    op.name = l.name;
    op.axis_n = l.axis_n;
    op.axis_inner = l.axis_inner;
    op.outer = l.outer;
    op.cols = op.in_width;
    if (l.op == PlanNode::Op::kDense) {
      const int64_t k = l.axis_n > 0 ? l.axis_n : op.in_width;
      op.W = weights(l, l.kernel_key, {k, l.units});
      if (!l.bias_key.empty()) op.b = weights(l, l.bias_key, {l.units});
      op.cols = k;
      op.rows_mult = op.in_width / k;
    } else if (l.op == PlanNode::Op::kEmbedding) {
      op.W = weights(l, l.kernel_key, {l.vocab, l.units});
    }
    op.has_max = l.has_max;
    op.max_value = static_cast<float>(l.max_value);
    if (l.axis_n > 0 && (l.op == PlanNode::Op::kActivation || l.op == PlanNode::Op::kLayerNorm)) {
      op.cols = l.axis_n;  // per trailing block of axis_n
      op.rows_mult = op.in_width / op.cols;
    }
    const bool axis_stats = l.axis_n > 0 && (l.op == PlanNode::Op::kBatchNorm || l.op == PlanNode::Op::kNormalize);
    if (axis_stats) {
      op.cols = l.axis_n * l.axis_inner;  // the block the (expanded) statistics cover
      op.rows_mult = op.in_width / op.cols;
    }
    if (l.op == PlanNode::Op::kNormalize && !l.values.empty()) {  // normalize_values: n means, n variances
      take(l, 2 * l.axis_n);
      std::unique_ptr<float[]> v(new float[static_cast<size_t>(2 * l.axis_n)]);
      std::copy(l.values.begin(), l.values.begin() + 2 * l.axis_n, v.get());
      m->owned_.push_back(std::move(v));
      const float* stats = m->owned_.back().get();
      op.w[0] = expand(l, stats, l.axis_n, l.axis_inner);
      op.w[1] = expand(l, stats + l.axis_n, l.axis_n, l.axis_inner);
    }
    for (size_t i = 0; i < l.keys.size() && i < 4; ++i) {
      if (l.keys[i].empty()) continue;
      if (l.op == PlanNode::Op::kPrelu && !l.dims.empty())
        op.w[i] = weights_n(l, l.keys[i], [&] { int64_t c = 1; for (int64_t d : l.dims[1]) c *= d; return c; }());
      else if (axis_stats)
        op.w[i] = expand(l, weights_n(l, l.keys[i], l.axis_n), l.axis_n, l.axis_inner);
      else if (l.op == PlanNode::Op::kLayerNorm && l.axis_n > 0)
        op.w[i] = weights_n(l, l.keys[i], l.axis_n);
      else
        op.w[i] = weights(l, l.keys[i], {op.in_width});
    }
    if (l.op == PlanNode::Op::kPrelu) {
      if (!l.dims.empty())
        op.idx = bcast(l, l.dims[0], l.dims[1]);
      else
        while (static_cast<int64_t>(m->iota_.size()) < op.in_width) m->iota_.push_back(static_cast<int64_t>(m->iota_.size()));
    }
    if (l.op == PlanNode::Op::kMerge && !l.dims.empty()) {
      std::vector<int64_t> out = l.dims[0];
      for (const auto& d : l.dims)
        for (size_t a = 0; a < out.size(); ++a) out[a] = std::max(out[a], d[a]);
      for (const auto& d : l.dims) op.gather.push_back(d == out ? nullptr : bcast(l, out, d));
    }
    if (l.op == PlanNode::Op::kRescaling && !l.dims.empty()) {
      op.idx = bcast(l, l.dims[0], l.dims[1]);
      std::unique_ptr<float[]> v(new float[l.values.size()]);
      std::copy(l.values.begin(), l.values.end(), v.get());
      op.n_values = static_cast<int64_t>(l.values.size()) / 2;
      m->owned_.push_back(std::move(v));
      op.values = m->owned_.back().get();
    }
    if (l.op == PlanNode::Op::kConcat) op.rows_mult = l.outer;
    if (l.op == PlanNode::Op::kSoftmax && l.axis_n > 0) op.rows_mult = op.in_width / (l.axis_n * l.axis_inner);
    m->max_rows_mult_ = std::max(m->max_rows_mult_, op.rows_mult);
    if (l.op != PlanNode::Op::kIdentity) m->row_floats_ += l.width;
    m->nodes_.push_back(std::move(op));
  }
  for (Node& op : m->nodes_)
    if (op.op == PlanNode::Op::kPrelu && !op.idx) op.idx = m->iota_.data();  // iota_ is final now
  for (const auto& o : plan.outputs) m->out_width_.push_back(width_of(o.second));
  m->mappings_ = std::move(used);
  reader.close();  // descriptors go; mappings of in-place weights stay with the model
  return m;
}

void InferenceModel::predict(const float* x, int64_t rows, float* out) const {
  const void* xs[1] = {x};
  float* outs[1] = {out};
  predict_multi(xs, rows, outs);
}

void InferenceModel::predict_multi(const void* const* xs, int64_t rows, float* const* outs) const {
  if (rows == 0) return;
  // Rows per pass: as Python's model.predict groups them (the same products, so the same bits);
  // all at once for 0. Never more than the kernels' int sizes allow.
  const int64_t per_pass = batch_size_ > 0 ? predict_pass_rows(batch_size_) : rows;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(per_pass, std::min<int64_t>(rows, INT_MAX / max_rows_mult_)));
  const size_t n_in = inputs_.size();
  // Scratch for one pass, per call (concurrent calls share nothing mutable): every node output
  // but identities, which alias their input.
  std::unique_ptr<float[]> scratch(new float[static_cast<size_t>(std::max<int64_t>(1, chunk * row_floats_))]);
  std::vector<const float*> val(n_in + nodes_.size(), nullptr);
  std::vector<const int32_t*> ids(n_in, nullptr);
  std::vector<const float*> merge_in;
  std::vector<int64_t> widths;
  std::vector<float> norm_tmp, trans_tmp;
  std::vector<uint8_t> mask_tmp;
  std::vector<std::vector<float>> bcast_tmp;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t m = std::min(chunk, rows - r0);
    for (size_t i = 0; i < n_in; ++i) {
      if (inputs_[i].is_int)
        ids[i] = static_cast<const int32_t*>(xs[i]) + r0 * inputs_[i].width;
      else
        val[i] = static_cast<const float*>(xs[i]) + r0 * inputs_[i].width;
    }
    float* next = scratch.get();
    for (size_t k = 0; k < nodes_.size(); ++k) {
      const Node& op = nodes_[k];
      const float* in = val[op.inputs[0]];
      if (op.op == PlanNode::Op::kIdentity) {
        val[n_in + k] = in;
        continue;
      }
      float* dst = next;
      next += m * op.width;
      switch (op.op) {
        case PlanNode::Op::kDense:
          dense_forward(in, op.W, op.b, dst, static_cast<int>(m * op.rows_mult), static_cast<int>(op.cols),
                        static_cast<int>(op.units), op.act);
          break;
        case PlanNode::Op::kActivation:
          std::memcpy(dst, in, static_cast<size_t>(m * op.width) * sizeof(float));
          activation_forward(op.act, dst, m * op.rows_mult, static_cast<int>(op.cols));
          break;
        case PlanNode::Op::kTranspose: {  // per row: (axis_n, units, inner) -> (units, axis_n, inner)
          const int64_t a = op.axis_n, b = op.units, c = op.axis_inner;
          for (int64_t r = 0; r < m; ++r) {
            const float* src = in + r * op.width;
            float* out = dst + r * op.width;
            for (int64_t i = 0; i < a; ++i)
              for (int64_t j = 0; j < b; ++j)
                std::memcpy(out + (j * a + i) * c, src + (i * b + j) * c, static_cast<size_t>(c) * sizeof(float));
          }
          break;
        }
        case PlanNode::Op::kRescaling:
          if (op.values) {  // x * scale + offset per element, as NumPy computes it in float32
            const float* sc = op.values;
            const float* of = op.values + op.n_values;
            for (int64_t r = 0; r < m; ++r)
              for (int64_t j = 0; j < op.width; ++j) {
                const float p = in[r * op.width + j] * sc[op.idx[j]];
                dst[r * op.width + j] = p + of[op.idx[j]];
              }
          } else {
            scale_offset(in, dst, m * op.width, op.scale, op.offset);
          }
          break;
        case PlanNode::Op::kConcat:
          merge_in.clear();
          widths.clear();
          for (int t : op.inputs) {
            merge_in.push_back(val[t]);
            widths.push_back((static_cast<size_t>(t) < n_in ? inputs_[t].width : nodes_[t - n_in].width) / op.outer);
          }
          concat_forward(merge_in.data(), widths.data(), static_cast<int>(merge_in.size()), m * op.outer, dst);
          break;
        case PlanNode::Op::kMerge:
          merge_in.clear();
          for (int t : op.inputs) merge_in.push_back(val[t]);
          if (!op.gather.empty()) {  // broadcast inputs expanded to the output's dims first
            bcast_tmp.resize(op.inputs.size());
            for (size_t i = 0; i < op.inputs.size(); ++i) {
              const int64_t* g = op.gather[i];
              if (!g) continue;
              const int t = op.inputs[i];
              const int64_t w = static_cast<size_t>(t) < n_in ? inputs_[t].width : nodes_[t - n_in].width;
              bcast_tmp[i].resize(static_cast<size_t>(m * op.width));
              float* e = bcast_tmp[i].data();
              for (int64_t r = 0; r < m; ++r)
                for (int64_t j = 0; j < op.width; ++j) e[r * op.width + j] = merge_in[i][r * w + g[j]];
              merge_in[i] = e;
            }
          }
          merge_forward(static_cast<MergeOp>(op.merge), merge_in.data(), static_cast<int>(merge_in.size()), dst,
                        m * op.width);
          break;
        case PlanNode::Op::kEmbedding: {
          const int32_t* x = ids[op.inputs[0]];
          const int64_t bad = embedding_gather(x, m * op.in_width, op.W, op.vocab, op.units, dst);
          if (bad >= 0) {
            const size_t inp = static_cast<size_t>(op.inputs[0]);
            throw Error(FCKPT_ERR_INVALID_ARGUMENT,
                        "input '" + inputs_[inp].name + "' row " + std::to_string(r0 + bad / op.in_width) +
                            " column " + std::to_string(bad % op.in_width) + ": id " + std::to_string(x[bad]) +
                            " is out of range [0, " + std::to_string(op.vocab) + ") of embedding node '" +
                            op.name + "'");
          }
          break;
        }
        case PlanNode::Op::kGap1d: {
          const uint8_t* mask = nullptr;
          if (op.inputs.size() >= 2) {  // Embedding(mask_zero=True): steps whose id is 0 are left out;
            mask_tmp.assign(static_cast<size_t>(m * op.units), 1);  // a merged mask: every id non-zero
            for (size_t j = 1; j < op.inputs.size(); ++j) {
              const int32_t* x = ids[op.inputs[j]];
              for (int64_t i = 0; i < m * op.units; ++i) mask_tmp[static_cast<size_t>(i)] &= x[i] != 0;
            }
            mask = mask_tmp.data();
          }
          gap1d_forward(in, mask, m, op.units, op.width, dst);
          break;
        }
        case PlanNode::Op::kNormalize:
          normalize_forward(in, m * op.rows_mult, op.cols, op.w[0], op.w[1], op.scale, op.has_max, dst);
          break;
        case PlanNode::Op::kGmp1d:
          gmp1d_forward(in, m, op.units, op.width, dst);
          break;
        case PlanNode::Op::kRelu:
          relu_forward(in, dst, m * op.width, op.scale, op.has_max, op.max_value, op.offset);
          break;
        case PlanNode::Op::kElu:
          elu_forward(in, dst, m * op.width, op.scale);
          break;
        case PlanNode::Op::kSoftmax:
          if (op.axis_n > 0)
            softmax_axis_forward(in, dst, m * op.rows_mult, op.axis_n, op.axis_inner);
          else
            softmax_axis_forward(in, dst, m, op.width, 1);
          break;
        case PlanNode::Op::kPrelu:
          prelu_forward(in, op.w[0], op.idx, dst, m, op.width);
          break;
        case PlanNode::Op::kBatchNorm:
          norm_tmp.resize(static_cast<size_t>(op.cols));
          batchnorm_forward_infer(in, m * op.rows_mult, op.cols, op.w[2], op.w[3], op.w[0], op.w[1], op.scale, dst,
                                  norm_tmp.data());
          break;
        case PlanNode::Op::kLayerNorm:
          norm_tmp.resize(static_cast<size_t>(2 * m * op.rows_mult));
          if (op.axis_inner > 1) {  // (outer, n, inner) blocks: normalise each (outer, inner) column
            const int64_t n = op.axis_n, c = op.axis_inner, blocks = m * op.width / (n * c);
            trans_tmp.resize(static_cast<size_t>(2 * m * op.width));
            float* a = trans_tmp.data();
            float* b = a + m * op.width;
            for (int64_t k2 = 0; k2 < blocks; ++k2)
              for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < c; ++j) a[(k2 * c + j) * n + i] = in[(k2 * n + i) * c + j];
            layernorm_forward(a, m * op.rows_mult, n, op.w[0], op.w[1], op.scale, b, norm_tmp.data(),
                              norm_tmp.data() + m * op.rows_mult);
            for (int64_t k2 = 0; k2 < blocks; ++k2)
              for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < c; ++j) dst[(k2 * n + i) * c + j] = b[(k2 * c + j) * n + i];
            break;
          }
          layernorm_forward(in, m * op.rows_mult, op.cols, op.w[0], op.w[1], op.scale, dst, norm_tmp.data(),
                            norm_tmp.data() + m * op.rows_mult);
          break;
        case PlanNode::Op::kIdentity:
          break;
      }
      val[n_in + k] = dst;
    }
    for (size_t j = 0; j < outputs_.size(); ++j) {
      const int t = outputs_[j].second;
      const int64_t w = out_width_[j];
      const float* src = val[static_cast<size_t>(t)];
      std::memcpy(outs[j] + r0 * w, src, static_cast<size_t>(m * w) * sizeof(float));
    }
  }
}

}  // namespace fastckpt::runtime
