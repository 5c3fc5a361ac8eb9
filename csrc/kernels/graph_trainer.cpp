#include "kernels/graph_trainer.h"

#include "kernels/broadcast.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/dropout.h"
#include "kernels/embed_pool.h"
#include "kernels/loss.h"
#include "kernels/losses.h"
#include "kernels/norm.h"

namespace fastckpt {

namespace {

// dst (n, q, p) = the per-block transpose of src (n, p, q): NumPy's contiguous copy of
// x.transpose(0, 2, 1) (or moveaxis of one axis to the end).
void transpose_blocks(const float* src, float* dst, int64_t n, int64_t p, int64_t q) {
  for (int64_t b = 0; b < n; ++b) {
    const float* s = src + b * p * q;
    float* d = dst + b * p * q;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j < q; ++j) d[j * p + i] = s[i * q + j];
  }
}

// The and of `ids != 0` over the mask slots (Embedding.compute_mask, merged as _Merge does).
void fill_mask(const std::vector<const int32_t*>& ival, const std::vector<int>& slots,
               int64_t n, uint8_t* mk) {
  const int32_t* first = ival[slots[0]];
  for (int64_t e = 0; e < n; ++e) mk[e] = first[e] != 0;
  for (size_t k = 1; k < slots.size(); ++k) {
    const int32_t* ids = ival[slots[k]];
    for (int64_t e = 0; e < n; ++e) mk[e] = mk[e] && ids[e] != 0;
  }
}

}  // namespace

GraphTrainer::GraphTrainer(std::vector<int64_t> slot_width, std::vector<uint8_t> slot_int,
                           std::vector<int> input_slots, std::vector<int> output_slots,
                           std::vector<uint8_t> need_grad, std::vector<GraphStep> steps,
                           int n_layers, std::vector<GraphRng> rngs,
                           std::vector<GraphVariable> vars, GraphOptimizer opt,
                           bool loss_from_logits, float epsilon, bool inference_only,
                           std::vector<GraphLoss> losses)
    : width_(std::move(slot_width)), is_int_(std::move(slot_int)),
      input_slots_(std::move(input_slots)), output_slots_(std::move(output_slots)),
      output_slot_(output_slots_.empty() ? -1 : output_slots_[0]),
      inference_only_(inference_only), need_(std::move(need_grad)), steps_(std::move(steps)),
      n_layers_(n_layers), rngs_(std::move(rngs)), vars_(std::move(vars)), opt_(opt),
      from_logits_(loss_from_logits), epsilon_(epsilon), losses_(std::move(losses)) {
  const int n_slots = static_cast<int>(width_.size());
  if (is_int_.size() != width_.size() || need_.size() != width_.size())
    throw std::invalid_argument("GraphTrainer: one width, dtype and need flag per slot");
  if (output_slots_.empty())
    throw std::invalid_argument("GraphTrainer: a model has at least one output");
  if (!inference_only_ && losses_.size() != output_slots_.size())
    throw std::invalid_argument("GraphTrainer: training takes one loss per output");
  for (int s : output_slots_)
    if (s < 0 || s >= n_slots || is_int_[s])
      throw std::invalid_argument("GraphTrainer: bad output slot");
  for (const auto& l : losses_)
    if (!inference_only_ && l.metric == GraphLoss::kSparseAccuracy && !l.sparse)
      throw std::invalid_argument("GraphTrainer: sparse accuracy goes with the sparse loss");
  const size_t n_out = losses_.size();
  loss_grad_.resize(n_out);
  ybuf_.resize(n_out);
  yfbuf_.resize(n_out);
  swbuf_.resize(n_out);
  actbuf_.resize(n_out);
  if (inference_only_) {
    if (!vars_.empty()) throw std::invalid_argument("GraphTrainer: inference takes no variables");
    for (uint8_t f : need_)
      if (f) throw std::invalid_argument("GraphTrainer: inference wants no gradients");
    for (const auto& st : steps_)
      if (st.has_weights || !st.grads.empty())
        throw std::invalid_argument("GraphTrainer: inference steps have no gradient buffers");
  }
  // Every slot is written by an input or by exactly one earlier step, and read after that.
  std::vector<uint8_t> ready(n_slots, 0);
  for (int s : input_slots_) ready[s] = 1;
  for (const auto& st : steps_) {
    if (st.in.empty()) throw std::invalid_argument("GraphTrainer: a step without inputs");
    for (int s : st.in)
      if (s < 0 || s >= n_slots || !ready[s])
        throw std::invalid_argument("GraphTrainer: a step reads a slot not computed before it");
    if (st.out < 0 || st.out >= n_slots || ready[st.out] || is_int_[st.out])
      throw std::invalid_argument("GraphTrainer: bad output slot of a step");
    if (st.layer < 0 || st.layer >= n_layers_)
      throw std::invalid_argument("GraphTrainer: bad layer index");
    const bool int_in = is_int_[st.in[0]] != 0;
    if (int_in != (st.kind == GraphStep::kEmbedding))
      throw std::invalid_argument("GraphTrainer: integer slots feed Embedding steps only");
    const int64_t w_in = width_[st.in[0]], w_out = width_[st.out];
    bool ok = true;
    // Mask slots: integer slots computed before, one id per kernel row.
    int64_t mask_width = -1;
    switch (st.kind) {
      case GraphStep::kDense:
        ok = st.in.size() == 1 && st.dense_mid > 0 && w_in == st.dense_mid * st.K &&
             w_out == st.dense_mid * st.N;
        break;
      case GraphStep::kEmbedding: ok = st.in.size() == 1 && w_out == w_in * st.dim; break;
      case GraphStep::kDropout:
        ok = st.in.size() == 1 && w_in == w_out && st.rng >= 0 &&
             st.rng < static_cast<int>(rngs_.size());
        break;
      case GraphStep::kActivation: case GraphStep::kBatchNorm: case GraphStep::kLayerNorm:
      case GraphStep::kNormalize:
        ok = st.in.size() == 1 && w_in == w_out && st.cols > 0 && w_in % st.cols == 0;
        if (st.kind == GraphStep::kBatchNorm) {
          ok = ok && st.bn_outer > 0 && st.bn_inner > 0 &&
               w_in == st.bn_outer * st.cols * st.bn_inner &&
               (st.mask_slots.empty() || st.bn_inner == 1);
          mask_width = ok ? w_in / st.cols : -1;
        }
        if (st.kind == GraphStep::kNormalize) {
          ok = ok && st.norm_mean && st.norm_var && st.stat_idx && st.stat_size > 0;
          for (int64_t j = 0; ok && j < st.cols; ++j)
            ok = st.stat_idx[j] >= 0 && st.stat_idx[j] < st.stat_size;
        }
        break;
      case GraphStep::kRescale:
        ok = st.in.size() == 1 && w_in == w_out &&
             (!st.rs_scale || (st.rs_offset && st.per == w_in));
        break;
      case GraphStep::kAlias: ok = st.in.size() == 1 && w_in == w_out; break;
      case GraphStep::kConcat: {
        int64_t sum = 0;
        ok = st.widths.size() == st.in.size() && st.mid > 0;
        for (size_t k = 0; ok && k < st.in.size(); ++k) {
          ok = !is_int_[st.in[k]] && st.widths[k] > 0 && width_[st.in[k]] == st.mid * st.widths[k];
          sum += st.widths[k];
        }
        ok = ok && w_out == st.mid * sum;
        break;
      }
      case GraphStep::kMerge:  // a broadcasting input's width is checked with its index below
        for (size_t j = 0; j < st.in.size(); ++j)
          ok = ok && !is_int_[st.in[j]] &&
               (width_[st.in[j]] == w_out || (!st.bidx.empty() && st.bidx[j]));
        break;
      case GraphStep::kGap1d: case GraphStep::kGmp1d:
        ok = st.in.size() == 1 && w_in == st.T * st.C && w_out == st.C;
        ok = ok && (st.mask_slots.empty() || (st.kind == GraphStep::kGap1d && !st.channels_first));
        mask_width = st.T;
        break;
      case GraphStep::kRelu: case GraphStep::kElu: ok = st.in.size() == 1 && w_in == w_out; break;
      case GraphStep::kNoise:
        ok = st.in.size() == 1 && w_in == w_out && st.noise >= 0 && st.noise <= 2 &&
             st.rng >= 0 && st.rng < static_cast<int>(rngs_.size());
        break;
      case GraphStep::kSoftmax:
        ok = st.in.size() == 1 && w_in == w_out && st.outer > 0 && st.n_axis > 0 &&
             st.inner > 0 && st.outer * st.n_axis * st.inner == w_in;
        break;
      case GraphStep::kPrelu:
        ok = st.in.size() == 1 && w_in == w_out && st.per == w_in && st.prelu_alpha &&
             st.prelu_idx && st.alpha_size > 0;
        for (int64_t j = 0; ok && j < st.per; ++j)
          ok = st.prelu_idx[j] >= 0 && st.prelu_idx[j] < st.alpha_size;
        break;
    }
    for (int s : st.mask_slots)
      ok = ok && s >= 0 && s < n_slots && ready[s] && is_int_[s] && width_[s] == mask_width;
    if (!ok) throw std::invalid_argument("GraphTrainer: step widths do not fit its slots");
    ready[st.out] = 1;
  }
  for (int s : output_slots_)
    if (!ready[s]) throw std::invalid_argument("GraphTrainer: output never computed");
  const size_t n = steps_.size();
  out_.resize(n);
  aux_.resize(n);
  aux2_.resize(n);
  dz_.resize(n);
  dx_.resize(n);
  mask_.resize(n);
  scratch_.resize(n);
  tp_.resize(n);
  tp2_.resize(n);
  bx_.resize(n);
  bdx_.resize(n);
  active_.assign(n, 0);
  written_.assign(n_layers_, 0);
  for (size_t i = 0; i < n; ++i) {
    auto& st = steps_[i];
    dx_[i].resize(st.in.size());
    if (st.kind == GraphStep::kMerge && !st.bidx.empty()) {
      if (st.bidx.size() != st.in.size() || st.b_in_n.size() != st.in.size())
        throw std::invalid_argument("GraphTrainer: one broadcast index per merged input");
      if (st.b_out_n != width_[st.out])
        throw std::invalid_argument("GraphTrainer: broadcast index size is not the output width");
      for (size_t j = 0; j < st.in.size(); ++j) {
        if (!st.bidx[j]) {
          if (width_[st.in[j]] != width_[st.out])
            throw std::invalid_argument("GraphTrainer: a merged input without a broadcast index "
                                        "must have the output's width");
          continue;
        }
        // Each index reads inside the input's sample (the expansion gathers with it).
        if (st.b_in_n[j] != width_[st.in[j]])
          throw std::invalid_argument("GraphTrainer: broadcast input size is not its width");
        for (int64_t e = 0; e < width_[st.out]; ++e)
          if (st.bidx[j][e] < 0 || st.bidx[j][e] >= st.b_in_n[j])
            throw std::out_of_range("GraphTrainer: broadcast index out of range");
      }
      bx_[i].resize(st.in.size());
      bdx_[i].resize(st.in.size());
    }
    if (inference_only_) continue;
    // Scratch weight gradients: a frozen Dense's (computed, never applied), a shared layer's
    // later calls (added into its gradient buffers).
    if (st.kind == GraphStep::kDense && !st.has_weights) {
      st.grad_sizes = {static_cast<int64_t>(st.K) * st.N};
      if (st.bias) st.grad_sizes.push_back(st.N);
      st.grads.assign(st.grad_sizes.size(), nullptr);
    }
    if (st.grads.size() != st.grad_sizes.size())
      throw std::invalid_argument("GraphTrainer: one size per gradient buffer");
    if (st.shared || (st.kind == GraphStep::kDense && !st.has_weights)) {
      scratch_[i].resize(st.grad_sizes.size());
      for (size_t j = 0; j < st.grad_sizes.size(); ++j)
        scratch_[i][j].reserve(static_cast<size_t>(st.grad_sizes[j]));
    }
  }
  val_.assign(n_slots, nullptr);
  ival_.assign(n_slots, nullptr);
  grad_.assign(n_slots, nullptr);
  owned_.assign(n_slots, 0);
  acc_.resize(n_slots);
  batch_f_.resize(input_slots_.size());
  batch_i_.resize(input_slots_.size());
}

void GraphTrainer::ensure_workspace(int m, bool backward) {
  const size_t rows = static_cast<size_t>(m);
  if (m > ws_rows_) {
    for (size_t k = 0; k < input_slots_.size(); ++k) {
      const size_t w = static_cast<size_t>(width_[input_slots_[k]]);
      if (is_int_[input_slots_[k]])
        batch_i_[k].reserve(rows * w);
      else
        batch_f_[k].reserve(rows * w);
    }
    for (size_t i = 0; i < steps_.size(); ++i) {
      const auto& st = steps_[i];
      const size_t w_out = rows * static_cast<size_t>(width_[st.out]);
      out_[i].reserve(w_out);
      if (st.kind == GraphStep::kDense || st.kind == GraphStep::kBatchNorm ||
          st.kind == GraphStep::kLayerNorm || st.kind == GraphStep::kNormalize) {
        aux_[i].reserve(w_out);   // Dense z; norms: mean (cols or rows, at most w_out)
        aux2_[i].reserve(w_out);  // norms: inv
      }
      // A Dropout may draw in inference too (called with training=True).
      if (st.kind == GraphStep::kDropout) mask_[i].reserve(w_out);
      if (st.kind == GraphStep::kNoise && st.noise == 1) aux_[i].reserve(w_out);   // multiplier
      if (st.kind == GraphStep::kNoise && st.noise == 2) mask_[i].reserve(w_out);
      if (!st.mask_slots.empty())
        mask_[i].reserve(rows * static_cast<size_t>(width_[st.mask_slots[0]]));
      // Transposed input and output (channels-first pooling: the input only).
      const size_t w_in = rows * static_cast<size_t>(width_[st.in[0]]);
      if ((st.kind == GraphStep::kBatchNorm && st.bn_inner > 1) ||
          ((st.kind == GraphStep::kGap1d || st.kind == GraphStep::kGmp1d) && st.channels_first)) {
        tp_[i].reserve(w_in);
        tp2_[i].reserve(w_in);
      }
      for (size_t j = 0; j < bx_[i].size(); ++j)
        if (st.bidx[j]) bx_[i][j].reserve(w_out);
    }
    for (size_t k = 0; k < losses_.size(); ++k) {
      const size_t w = static_cast<size_t>(width_[output_slots_[k]]);
      ybuf_[k].reserve(rows);
      swbuf_[k].reserve(rows);
      if (!losses_[k].sparse) yfbuf_[k].reserve(rows * w);
      if (losses_[k].fold != Activation::kLinear) actbuf_[k].reserve(rows * w);
    }
    ws_rows_ = m;
  }
  if (!backward || m <= bw_rows_) return;
  if (inference_only_) throw std::logic_error("GraphTrainer: built for inference only");
  for (size_t s = 0; s < width_.size(); ++s)
    if (!is_int_[s]) acc_[s].reserve(rows * static_cast<size_t>(width_[s]));
  for (size_t i = 0; i < steps_.size(); ++i) {
    const auto& st = steps_[i];
    if (st.kind == GraphStep::kDense || (st.kind == GraphStep::kBatchNorm && st.bn_inner > 1))
      dz_[i].reserve(rows * static_cast<size_t>(width_[st.out]));
    for (size_t k = 0; k < st.in.size(); ++k)
      if (!is_int_[st.in[k]]) dx_[i][k].reserve(rows * static_cast<size_t>(width_[st.in[k]]));
    for (size_t j = 0; j < bdx_[i].size(); ++j)
      if (st.bidx[j]) bdx_[i][j].reserve(rows * static_cast<size_t>(width_[st.out]));
  }
  for (size_t k = 0; k < losses_.size(); ++k)
    loss_grad_[k].reserve(rows * static_cast<size_t>(width_[output_slots_[k]]));
  bw_rows_ = m;
}

void GraphTrainer::bind_batch(const std::vector<const void*>& inputs, const int64_t* order,
                              int64_t lo, int m) {
  for (size_t k = 0; k < input_slots_.size(); ++k) {
    const int s = input_slots_[k];
    const int64_t w = width_[s];
    if (is_int_[s]) {
      const int32_t* src = static_cast<const int32_t*>(inputs[k]);
      if (order) {
        int32_t* dst = batch_i_[k].data();
        for (int r = 0; r < m; ++r)
          std::memcpy(dst + r * w, src + order[lo + r] * w, sizeof(int32_t) * w);
        ival_[s] = dst;
      } else {
        ival_[s] = src + lo * w;
      }
    } else {
      const float* src = static_cast<const float*>(inputs[k]);
      if (order) {
        float* dst = batch_f_[k].data();
        for (int r = 0; r < m; ++r)
          std::memcpy(dst + r * w, src + order[lo + r] * w, sizeof(float) * w);
        val_[s] = dst;
      } else {
        val_[s] = src + lo * w;
      }
    }
  }
}

void GraphTrainer::forward(int m, bool training) {
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto& st = steps_[i];
    const bool tr = training ? st.train_active : st.eval_active;
    const float* x = val_[st.in[0]];
    const int64_t count = static_cast<int64_t>(m) * width_[st.out];
    float* y = out_[i].data();
    const float* result = y;
    switch (st.kind) {
      case GraphStep::kDense: {
        // The pre-activation is kept where the derivative needs it, as the Python layer does
        // (in evaluation too: it runs the same forward_train).
        float* z = activation_needs_z(st.act) ? aux_[i].data() : nullptr;
        if (static_cast<int64_t>(m) * st.dense_mid > INT32_MAX)
          throw std::invalid_argument("GraphTrainer: too many Dense rows in one batch");
        dense_forward(x, st.kernel, st.bias, z, y, static_cast<int>(m * st.dense_mid), st.K,
                      st.N, st.act);
        break;
      }
      case GraphStep::kDropout: {
        active_[i] = tr && st.rate > 0.f;
        if (!active_[i]) {
          result = x;
          break;
        }
        GraphRng& r = rngs_[st.rng];
        dropout_forward(x, y, mask_[i].data(), count, st.rate, r.seed, r.offset);
        r.offset += static_cast<uint64_t>(count);
        break;
      }
      case GraphStep::kActivation:
        if (st.act == Activation::kLinear) {
          result = x;
          break;
        }
        activation_forward(st.act, x, y, count / st.cols, static_cast<int>(st.cols));
        break;
      case GraphStep::kBatchNorm: {
        const int64_t rows = count / st.cols;
        // A non-last axis: the kernels read the transpose and write one transposed back.
        const bool moved = st.bn_inner > 1;
        const int64_t blocks = static_cast<int64_t>(m) * st.bn_outer;
        const float* xk = x;
        float* yk = y;
        if (moved) {
          transpose_blocks(x, tp_[i].data(), blocks, st.cols, st.bn_inner);
          xk = tp_[i].data();
          yk = tp2_[i].data();
        }
        active_[i] = tr && st.trainable;
        if (active_[i]) {
          const uint8_t* rm = nullptr;
          if (!st.mask_slots.empty()) {
            fill_mask(ival_, st.mask_slots, rows, mask_[i].data());
            rm = mask_[i].data();
          }
          const float corr = st.bessel && rows > 1
                                 ? static_cast<float>(static_cast<double>(rows) / (rows - 1))
                                 : 1.0f;
          batchnorm_forward_train(xk, rm, rows, st.cols, st.gamma, st.beta, st.epsilon, yk,
                                  aux_[i].data(), aux2_[i].data(), st.moving_mean, st.moving_var,
                                  st.momentum, corr);
        } else {
          std::memcpy(aux_[i].data(), st.moving_mean, sizeof(float) * st.cols);
          batchnorm_forward_infer(xk, rows, st.cols, st.moving_mean, st.moving_var, st.gamma,
                                  st.beta, st.epsilon, yk, aux2_[i].data());
        }
        if (moved) transpose_blocks(yk, y, blocks, st.bn_inner, st.cols);
        break;
      }
      case GraphStep::kNormalize: {
        // Normalization._flat: the statistics broadcast to the columns, refreshed every call.
        float* mb = aux_[i].data();
        float* vb = aux2_[i].data();
        for (int64_t j = 0; j < st.cols; ++j) {
          mb[j] = st.norm_mean[st.stat_idx[j]];
          vb[j] = st.norm_var[st.stat_idx[j]];
        }
        normalize_forward(x, count / st.cols, st.cols, mb, vb, st.epsilon, st.invert, y);
        break;
      }
      case GraphStep::kRescale:
        if (!st.rs_scale) {
          scale_offset(x, y, count, st.scale, st.offset);
        } else {  // NumPy's x * scale + offset: a product, then a sum, each rounded
          for (int r = 0; r < m; ++r) {
            const float* xr = x + static_cast<int64_t>(r) * st.per;
            float* yr = y + static_cast<int64_t>(r) * st.per;
            for (int64_t j = 0; j < st.per; ++j) {
              const float p = xr[j] * st.rs_scale[j];
              yr[j] = p + st.rs_offset[j];
            }
          }
        }
        break;
      case GraphStep::kLayerNorm:
        layernorm_forward(x, count / st.cols, st.cols, st.gamma, st.beta, st.epsilon, y,
                          aux_[i].data(), aux2_[i].data());
        break;
      case GraphStep::kEmbedding: {
        const int32_t* ids = ival_[st.in[0]];
        const int64_t n_ids = static_cast<int64_t>(m) * width_[st.in[0]];
        const int64_t bad = embedding_gather(ids, n_ids, st.table, st.vocab, st.dim, y);
        if (bad >= 0)
          throw std::out_of_range("GraphTrainer: embedding id " + std::to_string(ids[bad]) +
                                  " out of range [0, " + std::to_string(st.vocab) + ")");
        break;
      }
      case GraphStep::kAlias:
        result = x;
        break;
      case GraphStep::kConcat: {
        const float* xs[64];
        const int k = static_cast<int>(st.in.size());
        if (k > 64) throw std::invalid_argument("GraphTrainer: too many concatenated inputs");
        for (int j = 0; j < k; ++j) xs[j] = val_[st.in[j]];
        concat_forward(xs, st.widths.data(), k, static_cast<int64_t>(m) * st.mid, y);
        break;
      }
      case GraphStep::kMerge: {
        const float* xs[64];
        const int k = static_cast<int>(st.in.size());
        if (k > 64) throw std::invalid_argument("GraphTrainer: too many merged inputs");
        for (int j = 0; j < k; ++j) {
          xs[j] = val_[st.in[j]];
          if (!st.bidx.empty() && st.bidx[j]) {  // as the layer: expand, then merge
            broadcast_expand(xs[j], st.b_in_n[j], st.bidx[j], width_[st.out], m, bx_[i][j].data());
            xs[j] = bx_[i][j].data();
          }
        }
        merge_forward(st.op, xs, k, y, count);
        break;
      }
      case GraphStep::kGap1d: {
        uint8_t* mk = nullptr;
        if (!st.mask_slots.empty()) {  // Embedding.compute_mask: ids != 0
          mk = mask_[i].data();
          fill_mask(ival_, st.mask_slots, static_cast<int64_t>(m) * st.T, mk);
        }
        const float* xt = x;
        if (st.channels_first) {  // the layer's (batch, steps, channels) copy
          transpose_blocks(x, tp_[i].data(), m, st.C, st.T);
          xt = tp_[i].data();
        }
        gap1d_forward(xt, mk, m, st.T, st.C, y);
        break;
      }
      case GraphStep::kGmp1d: {
        const float* xt = x;
        if (st.channels_first) {
          transpose_blocks(x, tp_[i].data(), m, st.C, st.T);
          xt = tp_[i].data();
        }
        gmp1d_forward(xt, m, st.T, st.C, y);
        break;
      }
      case GraphStep::kRelu:
        relu_forward(x, y, count, st.negative_slope, st.has_max, st.max_value, st.threshold);
        break;
      case GraphStep::kElu:
        elu_forward(x, y, count, st.alpha);
        break;
      case GraphStep::kNoise: {
        // The layers' _active: GaussianNoise whenever training, the dropouts for 0 < rate < 1.
        active_[i] = tr && (st.noise == 0 || (st.rate > 0.f && st.rate < 1.f));
        if (!active_[i]) {
          result = x;
          break;
        }
        GraphRng& r = rngs_[st.rng];
        if (st.noise == 0)
          gaussian_noise_forward(x, y, count, st.stddev, r.seed, r.offset);
        else if (st.noise == 1)
          gaussian_dropout_forward(x, y, aux_[i].data(), count, st.stddev, r.seed, r.offset);
        else
          alpha_dropout_forward(x, y, mask_[i].data(), count, st.rate, r.seed, r.offset);
        r.offset += static_cast<uint64_t>(count);
        break;
      }
      case GraphStep::kSoftmax:
        softmax_axis_forward(x, y, static_cast<int64_t>(m) * st.outer, st.n_axis, st.inner);
        break;
      case GraphStep::kPrelu:
        prelu_forward(x, st.prelu_alpha, st.prelu_idx, y, m, st.per);
        break;
    }
    val_[st.out] = result;
  }
}

void GraphTrainer::add_grad(int slot, const float* g, int m) {
  // Functional._add_grad: the first gradient as it is, then a + b into the slot's own buffer,
  // then += for the rest.
  const float* cur = grad_[slot];
  if (!cur) {
    grad_[slot] = g;
    return;
  }
  const int64_t n = static_cast<int64_t>(m) * width_[slot];
  float* acc = acc_[slot].data();
  if (owned_[slot]) {
    for (int64_t i = 0; i < n; ++i) acc[i] += g[i];
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] = cur[i] + g[i];
    grad_[slot] = acc;
    owned_[slot] = 1;
  }
}

void GraphTrainer::backward(int m) {
  std::fill(grad_.begin(), grad_.end(), nullptr);
  std::fill(owned_.begin(), owned_.end(), 0);
  std::fill(written_.begin(), written_.end(), 0);
  // Functional._backward: each output's loss gradient, in output order.
  for (size_t k = 0; k < output_slots_.size(); ++k) add_grad(output_slots_[k], loss_grad_[k].data(), m);
  for (size_t i = steps_.size(); i-- > 0;) {
    auto& st = steps_[i];
    const float* g = grad_[st.out];
    if (!g) continue;
    bool need_in = false;
    for (int s : st.in) need_in = need_in || need_[s];
    if (!need_in && !st.has_weights) continue;
    // Where this call's weight gradients go: the layer's buffers, or scratch (a frozen Dense;
    // a shared layer whose buffers already hold a later call's gradients).
    const bool to_scratch = (st.kind == GraphStep::kDense && !st.has_weights) ||
                            (st.shared && st.has_weights && written_[st.layer]);
    float* wg[2] = {nullptr, nullptr};
    for (size_t j = 0; j < st.grads.size() && j < 2; ++j)
      wg[j] = to_scratch ? scratch_[i][j].data() : st.grads[j];
    const float* x = val_[st.in[0]];
    const float* y = out_[i].data();
    const int64_t count = static_cast<int64_t>(m) * width_[st.out];
    const float* dxs[64] = {nullptr};
    float* dx0 = need_in && !is_int_[st.in[0]] ? dx_[i][0].data() : nullptr;
    switch (st.kind) {
      case GraphStep::kDense: {
        float* db = st.bias ? wg[1] : nullptr;
        dense_backward(x, st.kernel, activation_needs_z(st.act) ? aux_[i].data() : nullptr, y, g,
                       dz_[i].data(), wg[0], db, dx0, static_cast<int>(m * st.dense_mid), st.K,
                       st.N, st.act, false);
        dxs[0] = dx0;
        break;
      }
      case GraphStep::kDropout:
        if (!need_in) break;
        if (active_[i]) {
          dropout_backward(g, mask_[i].data(), dx0, count, st.rate);
          dxs[0] = dx0;
        } else {
          dxs[0] = g;
        }
        break;
      case GraphStep::kActivation:
        if (!need_in) break;
        if (st.act == Activation::kLinear) {
          dxs[0] = g;
        } else {
          activation_backward(st.act, activation_needs_z(st.act) ? x : nullptr, val_[st.out], g,
                              dx0, count / st.cols, static_cast<int>(st.cols));
          dxs[0] = dx0;
        }
        break;
      case GraphStep::kBatchNorm: {
        float* dgamma = st.has_weights && st.gamma ? wg[0] : nullptr;
        float* dbeta = st.has_weights && st.beta ? wg[st.gamma ? 1 : 0] : nullptr;
        const bool moved = st.bn_inner > 1;
        const int64_t blocks = static_cast<int64_t>(m) * st.bn_outer;
        const float* xk = x;
        const float* gk = g;
        float* dxk = dx0;
        if (moved) {  // the forward's transposed input is still in tp_
          transpose_blocks(g, tp2_[i].data(), blocks, st.cols, st.bn_inner);
          xk = tp_[i].data();
          gk = tp2_[i].data();
          dxk = dx0 ? dz_[i].data() : nullptr;
        }
        const uint8_t* rm = active_[i] && !st.mask_slots.empty() ? mask_[i].data() : nullptr;
        batchnorm_backward(xk, gk, rm, count / st.cols, st.cols, aux_[i].data(),
                           aux2_[i].data(), st.gamma, active_[i] != 0, dxk, dgamma, dbeta);
        if (moved && dx0) transpose_blocks(dxk, dx0, blocks, st.bn_inner, st.cols);
        dxs[0] = dx0;
        break;
      }
      case GraphStep::kNormalize:
        if (!need_in) break;
        // d/dx of either map is the map itself without the mean (the layer's backward).
        normalize_forward(g, count / st.cols, st.cols, nullptr, aux2_[i].data(), st.epsilon,
                          st.invert, dx0);
        dxs[0] = dx0;
        break;
      case GraphStep::kRescale:
        if (!need_in) break;
        if (!st.rs_scale) {
          scale_offset(g, dx0, count, st.scale, 0.f);
        } else {
          for (int r = 0; r < m; ++r) {
            const float* gr = g + static_cast<int64_t>(r) * st.per;
            float* dr = dx0 + static_cast<int64_t>(r) * st.per;
            for (int64_t j = 0; j < st.per; ++j) dr[j] = gr[j] * st.rs_scale[j];
          }
        }
        dxs[0] = dx0;
        break;
      case GraphStep::kLayerNorm: {
        float* dgamma = st.has_weights && st.gamma ? wg[0] : nullptr;
        float* dbeta = st.has_weights && st.beta ? wg[st.gamma ? 1 : 0] : nullptr;
        layernorm_backward(x, g, count / st.cols, st.cols, aux_[i].data(), aux2_[i].data(),
                           st.gamma, dx0, dgamma, dbeta);
        dxs[0] = dx0;
        break;
      }
      case GraphStep::kEmbedding:
        if (st.has_weights) {
          const int32_t* ids = ival_[st.in[0]];
          const int64_t bad = embedding_scatter_add(ids, static_cast<int64_t>(m) * width_[st.in[0]],
                                                    g, st.vocab, st.dim, wg[0]);
          if (bad >= 0) throw std::out_of_range("GraphTrainer: embedding id out of range");
        }
        break;  // ids have no gradient
      case GraphStep::kAlias:
        if (need_in) dxs[0] = g;
        break;
      case GraphStep::kConcat: case GraphStep::kMerge: {
        if (!need_in) break;
        const int k = static_cast<int>(st.in.size());
        float* outs[64];
        for (int j = 0; j < k; ++j) {
          outs[j] = dx_[i][j].data();
          dxs[j] = outs[j];
        }
        if (st.kind == GraphStep::kConcat) {
          concat_backward(g, st.widths.data(), k, static_cast<int64_t>(m) * st.mid, outs);
        } else {
          const bool bc = !st.bidx.empty();
          const float* xs[64];
          for (int j = 0; j < k; ++j) {
            const bool b = bc && st.bidx[j];
            xs[j] = b ? bx_[i][j].data() : val_[st.in[j]];
            if (b) outs[j] = bdx_[i][j].data();  // the expanded input's gradient, reduced below
          }
          merge_backward(st.op, xs, k, g, outs, count);
          for (int j = 0; bc && j < k; ++j)
            if (st.bidx[j])
              broadcast_reduce(outs[j], width_[st.out], st.bidx[j], st.b_in_n[j], m,
                               dx_[i][j].data());
        }
        break;
      }
      case GraphStep::kGap1d:
        if (!need_in) break;
        if (st.channels_first) {
          gap1d_backward(g, nullptr, m, st.T, st.C, tp2_[i].data());
          transpose_blocks(tp2_[i].data(), dx0, m, st.T, st.C);
        } else {
          gap1d_backward(g, st.mask_slots.empty() ? nullptr : mask_[i].data(), m, st.T, st.C,
                         dx0);
        }
        dxs[0] = dx0;
        break;
      case GraphStep::kGmp1d:
        if (!need_in) break;
        if (st.channels_first) {
          gmp1d_backward(tp_[i].data(), y, g, m, st.T, st.C, tp2_[i].data());
          transpose_blocks(tp2_[i].data(), dx0, m, st.T, st.C);
        } else {
          gmp1d_backward(x, y, g, m, st.T, st.C, dx0);
        }
        dxs[0] = dx0;
        break;
      case GraphStep::kRelu:
        if (!need_in) break;
        relu_backward(x, g, dx0, count, st.negative_slope, st.has_max, st.max_value,
                      st.threshold);
        dxs[0] = dx0;
        break;
      case GraphStep::kElu:
        if (!need_in) break;
        elu_backward(x, g, dx0, count, st.alpha);
        dxs[0] = dx0;
        break;
      case GraphStep::kNoise:
        if (!need_in) break;
        if (!active_[i] || st.noise == 0) {
          dxs[0] = g;
        } else {
          if (st.noise == 1)
            multiply(g, aux_[i].data(), dx0, count);
          else
            alpha_dropout_backward(g, mask_[i].data(), dx0, count, st.rate);
          dxs[0] = dx0;
        }
        break;
      case GraphStep::kSoftmax:
        if (!need_in) break;
        softmax_axis_backward(y, g, dx0, static_cast<int64_t>(m) * st.outer, st.n_axis, st.inner);
        dxs[0] = dx0;
        break;
      case GraphStep::kPrelu:
        prelu_backward(x, st.prelu_alpha, st.prelu_idx, g, dx0, st.has_weights ? wg[0] : nullptr,
                       st.alpha_size, m, st.per);
        dxs[0] = dx0;
        break;
    }
    if (st.shared && st.has_weights) {
      if (to_scratch) {
        for (size_t j = 0; j < st.grads.size(); ++j) {
          float* home = st.grads[j];
          const float* s = scratch_[i][j].data();
          for (int64_t e = 0; e < st.grad_sizes[j]; ++e) home[e] += s[e];
        }
      } else {
        written_[st.layer] = 1;
      }
    }
    if (!need_in) continue;
    for (size_t k = 0; k < st.in.size(); ++k)
      if (need_[st.in[k]] && dxs[k]) add_grad(st.in[k], dxs[k], m);
  }
}

namespace {

// np.argmax of one row: the first maximum, a NaN counting as the maximum (the first one wins).
int64_t row_argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (v[j] != v[j]) return j;
    if (v[j] > v[best]) best = j;
  }
  return best;
}

}  // namespace

double GraphTrainer::batch_loss(size_t k, const void* y, const float* sw, const int64_t* order,
                                int64_t lo, int m, float* grad, GraphTotals* totals) {
  const GraphLoss& L = losses_[k];
  const int out_w = static_cast<int>(width_[output_slots_[k]]);
  const float* pred = val_[output_slots_[k]];
  // Trainer._step: (loss weight) / rows (per-row reductions), in double, handed to the kernel
  // as a float.
  const float grad_scale =
      grad ? static_cast<float>(L.reduction == 0 ? L.weight / m : L.weight) : 0.f;
  const float* wb = nullptr;  // this batch's sample weights
  if (sw) {
    wb = sw + lo;
    if (order) {
      float* wd = swbuf_[k].data();
      for (int r = 0; r < m; ++r) wd[r] = sw[order[lo + r]];
      wb = wd;
    }
  }
  double value = 0.0;
  if (L.sparse) {
    const int32_t* yb = static_cast<const int32_t*>(y) + lo;
    if (order) {
      int32_t* yd = ybuf_[k].data();
      for (int r = 0; r < m; ++r) yd[r] = static_cast<const int32_t*>(y)[order[lo + r]];
      yb = yd;
    }
    // SparseCategoricalCrossentropy._fwd_bwd: sparse_ce without weights, else sparse_ce_loss.
    int64_t correct = 0;
    if (wb) {
      value = sparse_ce_loss(pred, yb, m, out_w, L.from_logits, epsilon_, wb, nullptr, grad,
                             grad_scale);
      if (L.metric == GraphLoss::kSparseAccuracy)
        correct = sparse_accuracy_count(pred, yb, m, out_w);
    } else {
      correct = sparse_ce(pred, yb, m, out_w, L.from_logits, epsilon_, nullptr, grad, grad_scale,
                          &value);
    }
    if (L.metric == GraphLoss::kSparseAccuracy) totals->out_correct[k] += correct;
    if (L.metric == GraphLoss::kSparseAccuracy || L.metric == GraphLoss::kNone) return value;
    // Other metrics need the targets as floats: not offered with the sparse loss.
    throw std::logic_error("GraphTrainer: this metric needs float targets");
  }
  const float* src = static_cast<const float*>(y);
  const float* yb = src + lo * out_w;
  if (order) {
    float* yd = yfbuf_[k].data();
    for (int r = 0; r < m; ++r)
      std::memcpy(yd + static_cast<int64_t>(r) * out_w, src + order[lo + r] * out_w,
                  sizeof(float) * out_w);
    yb = yd;
  }
  value = dense_loss(L.dense, yb, pred, m, out_w, wb, nullptr, grad, grad_scale);
  if (L.metric == GraphLoss::kNone) return value;
  // Trainer._update_metrics: the metric reads the activated output when the loss folded it.
  const float* p = pred;
  if (L.fold != Activation::kLinear) {
    activation_forward(L.fold, pred, actbuf_[k].data(), m, out_w);
    p = actbuf_[k].data();
  }
  int64_t correct = 0;
  if (L.metric == GraphLoss::kBinaryAccuracy) {
    const int64_t count = static_cast<int64_t>(m) * out_w;
    for (int64_t e = 0; e < count; ++e)
      correct += yb[e] == (p[e] > L.threshold ? 1.0f : 0.0f);
  } else if (L.metric == GraphLoss::kCategoricalAccuracy) {
    for (int r = 0; r < m; ++r) {
      const int64_t off = static_cast<int64_t>(r) * out_w;
      correct += row_argmax(yb + off, out_w) == row_argmax(p + off, out_w);
    }
  }
  totals->out_correct[k] += correct;
  return value;
}

void GraphTrainer::batch_losses(const std::vector<const void*>& ys,
                                const std::vector<const float*>& sws, const int64_t* order,
                                int64_t lo, int m, bool with_grad, GraphTotals* totals,
                                const std::vector<float*>& preds, int64_t at) {
  // Trainer._step: total = 0.0, plus each output's loss value (times its weight unless 1).
  double total = 0.0;
  for (size_t k = 0; k < losses_.size(); ++k) {
    if (preds[k]) {
      const size_t w = static_cast<size_t>(width_[output_slots_[k]]);
      std::memcpy(preds[k] + static_cast<size_t>(at) * w, val_[output_slots_[k]],
                  sizeof(float) * w * static_cast<size_t>(m));
    }
    double v = batch_loss(k, ys[k], sws[k], order, lo, m,
                          with_grad ? loss_grad_[k].data() : nullptr, totals);
    if (losses_[k].reduction == 1) v *= m;  // 'sum': the loss value times the batch rows
    totals->out_loss[k] += v;
    total += losses_[k].weight == 1.0 ? v : losses_[k].weight * v;
  }
  totals->loss_sum += total;
  totals->seen += m;
  totals->correct = totals->out_correct.empty() ? 0 : totals->out_correct[0];
}

void GraphTrainer::check_io(const std::vector<const void*>& inputs,
                            const std::vector<const void*>& ys,
                            const std::vector<const float*>& sws,
                            const std::vector<float*>& preds) const {
  if (inputs.size() != input_slots_.size())
    throw std::invalid_argument("GraphTrainer: one array per model input");
  if (inference_only_) throw std::logic_error("GraphTrainer: built for inference only");
  if (ys.size() != losses_.size() || sws.size() != losses_.size() ||
      preds.size() != losses_.size())
    throw std::invalid_argument("GraphTrainer: targets, weights, predictions: one per output");
}

void GraphTrainer::train_steps(const std::vector<const void*>& inputs,
                               const std::vector<const void*>& ys,
                               const std::vector<const float*>& sws, const int64_t* order,
                               int64_t n, int bs, int64_t step_begin, int64_t step_end,
                               int64_t* iterations, GraphTotals* totals,
                               const std::vector<float*>& preds) {
  check_io(inputs, ys, sws, preds);
  totals->out_loss.resize(losses_.size(), 0.0);
  totals->out_correct.resize(losses_.size(), 0);
  ensure_workspace(bs, true);
  std::vector<AdamSlice> adam;  // every variable's Adam update in one parallel region per step
  for (auto& v : vars_) adam.push_back({v.value, v.grad, v.slot0, v.slot1, v.slot2, v.size});
  for (int64_t s = step_begin; s < step_end; ++s) {
    const int64_t lo = s * bs;
    const int m = static_cast<int>(std::min<int64_t>(bs, n - lo));
    if (m <= 0) break;
    bind_batch(inputs, order, lo, m);
    forward(m, true);
    batch_losses(ys, sws, order, lo, m, true, totals, preds, lo - step_begin * bs);
    backward(m);
    const int64_t t = *iterations + 1;
    if (opt_.kind == GraphOptimizer::kAdam) {
      adam_update_many(adam.data(), static_cast<int>(adam.size()), opt_.adam, t);
    } else {
      for (auto& v : vars_)
        sgd_update(v.value, v.grad, v.slot0, v.size, opt_.learning_rate, opt_.momentum,
                   opt_.nesterov);
    }
    *iterations = t;
  }
}

void GraphTrainer::evaluate(const std::vector<const void*>& inputs,
                            const std::vector<const void*>& ys,
                            const std::vector<const float*>& sws, int64_t n, int bs,
                            GraphTotals* totals, const std::vector<float*>& preds) {
  check_io(inputs, ys, sws, preds);
  totals->out_loss.resize(losses_.size(), 0.0);
  totals->out_correct.resize(losses_.size(), 0);
  ensure_workspace(static_cast<int>(std::min<int64_t>(bs, std::max<int64_t>(n, 1))), false);
  for (int64_t lo = 0; lo < n; lo += bs) {
    const int m = static_cast<int>(std::min<int64_t>(bs, n - lo));
    bind_batch(inputs, nullptr, lo, m);
    forward(m, false);
    batch_losses(ys, sws, nullptr, lo, m, false, totals, preds, lo);
  }
}

void GraphTrainer::predict(const std::vector<const void*>& inputs, int64_t n, int rows,
                           const std::vector<float*>& outs) {
  if (inputs.size() != input_slots_.size())
    throw std::invalid_argument("GraphTrainer: one array per model input");
  if (outs.size() != output_slots_.size())
    throw std::invalid_argument("GraphTrainer: one output array per model output");
  if (rows <= 0) throw std::invalid_argument("GraphTrainer: pass rows must be positive");
  if (n <= 0) return;
  ensure_workspace(static_cast<int>(std::min<int64_t>(rows, n)), false);
  for (int64_t lo = 0; lo < n; lo += rows) {
    const int m = static_cast<int>(std::min<int64_t>(rows, n - lo));
    bind_batch(inputs, nullptr, lo, m);
    forward(m, false);
    for (size_t k = 0; k < outs.size(); ++k) {
      const int s = output_slots_[k];
      const size_t w = static_cast<size_t>(width_[s]);
      std::memcpy(outs[k] + static_cast<size_t>(lo) * w, val_[s], sizeof(float) * w * m);
    }
  }
}

}  // namespace fastckpt
