#include "kernels/trainer.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/dropout.h"
#include "kernels/loss.h"

namespace fastckpt {

namespace {
int width_after(const TrainerLayer& l, int w) { return l.kind == TrainerLayer::kDense ? l.out : w; }
bool keeps_z(const TrainerLayer& l) {
  return l.kind == TrainerLayer::kDense && activation_needs_z(l.act);
}
}  // namespace

Trainer::Trainer(std::vector<TrainerLayer> layers, std::vector<TrainerVariable> vars,
                 TrainerOptimizer opt, bool loss_from_logits, float epsilon, int input_width)
    : layers_(std::move(layers)), vars_(std::move(vars)), opt_(opt), from_logits_(loss_from_logits),
      epsilon_(epsilon), input_width_(input_width) {
  if (layers_.empty()) throw std::invalid_argument("Trainer: no layers");
  int w = input_width_;
  for (const auto& l : layers_) {
    if (l.kind == TrainerLayer::kDense && l.in != w)
      throw std::invalid_argument("Trainer: dense input width does not match the previous layer");
    w = width_after(l, w);
  }
  const size_t n = layers_.size();
  out_.resize(n);
  pre_.resize(n);
  dz_.resize(n);
  dx_.resize(n);
  mask_.resize(n);
  frozen_dw_.resize(n);
  frozen_db_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& l = layers_[i];
    if (l.kind == TrainerLayer::kDense && !l.trainable) {
      frozen_dw_[i].reserve(static_cast<size_t>(l.in) * l.out);
      frozen_db_[i].reserve(l.out);
    }
  }
}

void Trainer::ensure_workspace(int m) {
  if (m <= ws_rows_) return;
  int w = input_width_;
  xbuf_.reserve(static_cast<size_t>(m) * w);
  ybuf_.reserve(m);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int in_w = w;
    w = width_after(layers_[i], w);
    out_[i].reserve(static_cast<size_t>(m) * w);
    if (keeps_z(layers_[i])) pre_[i].reserve(static_cast<size_t>(m) * w);
    dz_[i].reserve(static_cast<size_t>(m) * w);
    dx_[i].reserve(static_cast<size_t>(m) * in_w);
    if (layers_[i].kind == TrainerLayer::kDropout) mask_[i].reserve(static_cast<size_t>(m) * w);
  }
  grad_.reserve(static_cast<size_t>(m) * w);
  ws_rows_ = m;
}

void Trainer::release_workspace() {
  const size_t n = layers_.size();
  for (auto* v : {&out_, &pre_, &dz_, &dx_}) {
    v->clear();
    v->resize(n);
  }
  mask_.clear();
  mask_.resize(n);
  // xbuf_, ybuf_ and grad_ keep their size: only their first batch's rows are ever touched.
  ws_rows_ = 0;
}

const float* Trainer::forward(const float* x, int m, bool training) {
  const float* h = x;
  int w = input_width_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& l = layers_[i];
    if (l.kind == TrainerLayer::kDense) {
      // Training keeps the pre-activation where the derivative needs it (the Python layer does
      // the same, so both paths run the same kernels); inference never needs it.
      float* z = training && keeps_z(l) ? pre_[i].data() : nullptr;
      dense_forward(h, l.kernel, l.bias, z, out_[i].data(), m, l.in, l.out, l.act);
      h = out_[i].data();
      w = l.out;
    } else if (training && l.rate > 0.f) {
      const int64_t count = static_cast<int64_t>(m) * w;
      dropout_forward(h, out_[i].data(), mask_[i].data(), count, l.rate, l.seed, l.offset);
      l.offset += static_cast<uint64_t>(count);
      h = out_[i].data();
    }
  }
  return h;
}

void Trainer::train_steps(const float* x, const int32_t* y, const int64_t* order, int64_t n, int bs,
                          int64_t step_begin, int64_t step_end, int64_t* iterations,
                          StepTotals* totals, TrainerSnapshot* snapshot) {
  ensure_workspace(bs);
  int out_w = input_width_;
  for (const auto& l : layers_) out_w = width_after(l, out_w);
  for (int64_t s = step_begin; s < step_end; ++s) {
    const int64_t lo = s * bs;
    const int m = static_cast<int>(std::min<int64_t>(bs, n - lo));
    if (m <= 0) break;
    const float* xb;
    const int32_t* yb;
    if (order) {
      float* xd = xbuf_.data();
      int32_t* yd = ybuf_.data();
      for (int r = 0; r < m; ++r) {
        const int64_t src = order[lo + r];
        std::memcpy(xd + static_cast<int64_t>(r) * input_width_, x + src * input_width_,
                    sizeof(float) * input_width_);
        yd[r] = y[src];
      }
      xb = xd;
      yb = yd;
    } else {
      xb = x + lo * input_width_;
      yb = y + lo;
    }
    const float* logits = forward(xb, m, true);
    totals->correct += sparse_ce(logits, yb, m, out_w, from_logits_, epsilon_, nullptr, grad_.data(),
                                 static_cast<float>(1.0 / m), &totals->loss_sum);
    totals->seen += m;

    // Backward, last layer first; the first layer needs no input gradient.
    const float* g = grad_.data();
    for (size_t k = layers_.size(); k-- > 0;) {
      auto& l = layers_[k];
      const float* in = k == 0 ? xb : out_[k - 1].data();
      // A dropout that was inactive passed its input through: its "output" is its input.
      for (size_t j = k; j-- > 0;) {
        if (layers_[j].kind == TrainerLayer::kDropout && layers_[j].rate <= 0.f)
          in = j == 0 ? xb : out_[j - 1].data();
        else
          break;
      }
      const bool need_dx = k > 0;
      if (l.kind == TrainerLayer::kDense) {
        float* dW = l.trainable ? l.d_kernel : frozen_dw_[k].data();
        float* db = l.bias ? (l.trainable ? l.d_bias : frozen_db_[k].data()) : nullptr;
        float* dx = need_dx ? dx_[k].data() : nullptr;
        dense_backward(in, l.kernel, keeps_z(l) ? pre_[k].data() : nullptr, out_[k].data(), g,
                       dz_[k].data(), dW, db, dx, m, l.in, l.out, l.act, false);
        g = dx;
      } else if (l.rate > 0.f) {
        if (!need_dx) break;
        int w_in = input_width_;
        for (size_t j = 0; j < k; ++j) w_in = width_after(layers_[j], w_in);
        dropout_backward(g, mask_[k].data(), dx_[k].data(), static_cast<int64_t>(m) * w_in, l.rate);
        g = dx_[k].data();
      }
    }

    const int64_t t = *iterations + 1;
    if (snapshot && s == step_end - 1) {
      snapshot->crc.assign(vars_.size(), std::array<uint32_t, 4>{0, 0, 0, 0});
      snapshot->filled.assign(vars_.size(), std::array<bool, 4>{false, false, false, false});
      for (size_t i = 0; i < vars_.size(); ++i) {
        auto& v = vars_[i];
        uint8_t* dst[4] = {snapshot->dst[i][0], snapshot->dst[i][1], snapshot->dst[i][2], snapshot->dst[i][3]};
        if (opt_.kind == TrainerOptimizer::kAdam) {
          if (!opt_.adam.amsgrad) dst[3] = nullptr;
          adam_update_snapshot(v.value, v.grad, v.slot0, v.slot1, v.slot2, v.size, opt_.adam, t,
                               snapshot->sink, dst, snapshot->crc[i].data());
        } else {
          if (opt_.momentum == 0.f) dst[1] = nullptr;
          dst[2] = dst[3] = nullptr;
          sgd_update_snapshot(v.value, v.grad, v.slot0, v.size, opt_.learning_rate, opt_.momentum,
                              opt_.nesterov, snapshot->sink, dst, snapshot->crc[i].data());
        }
        for (int k = 0; k < 4; ++k) snapshot->filled[i][k] = dst[k] != nullptr;
      }
      snapshot->taken = true;
      *iterations = t;
      continue;
    }
    for (auto& v : vars_) {
      if (opt_.kind == TrainerOptimizer::kAdam)
        adam_update(v.value, v.grad, v.slot0, v.slot1, v.slot2, v.size, opt_.adam, t);
      else
        sgd_update(v.value, v.grad, v.slot0, v.size, opt_.learning_rate, opt_.momentum,
                   opt_.nesterov);
    }
    *iterations = t;
  }
}

void Trainer::evaluate(const float* x, const int32_t* y, int64_t n, int bs, StepTotals* totals) {
  // The forward pass runs on inference passes of whole batches (inference_pass_rows, dense.h); the
  // loss is still summed batch by batch, as the layer-by-layer path does.
  const int chunk = static_cast<int>(std::min<int64_t>(inference_pass_rows(bs), std::max<int64_t>(n, 1)));
  ensure_workspace(chunk);
  int out_w = input_width_;
  for (const auto& l : layers_) out_w = width_after(l, out_w);
  for (int64_t lo = 0; lo < n; lo += chunk) {
    const int m = static_cast<int>(std::min<int64_t>(chunk, n - lo));
    const float* logits = forward(x + lo * input_width_, m, false);
    for (int b = 0; b < m; b += bs) {
      const int mb = std::min(bs, m - b);
      totals->correct += sparse_ce(logits + static_cast<int64_t>(b) * out_w, y + lo + b, mb, out_w,
                                   from_logits_, epsilon_, nullptr, nullptr, 0.f, &totals->loss_sum);
      totals->seen += mb;
    }
  }
}

}  // namespace fastckpt
