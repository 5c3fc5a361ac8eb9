// Whole training steps (and evaluation passes) of a graph of built-in layers in C++.
//
// The graph is the Functional model's execution plan: tensors are "slots" (each a row-major block
// of `rows x width` elements; int32 for integer model inputs), steps run in topological order.
// Python describes every step once, with pointers into its own weight, gradient, optimizer and
// moving-statistic buffers; each call then runs many steps without returning to Python.
//
// Every operation is the same kernel, in the same order, with the same gradient accumulation as
// the layer-by-layer path (fastckpt/models/functional.py): the gradient of a slot read by several
// steps is the first gradient to arrive, then `a + b` into a new buffer, then `+=` for the rest,
// in reverse step order; a layer called by several steps has its first backward (in reverse
// order) write its gradient buffers and every later call write scratch buffers added into them.
// So both paths produce bit-identical weights.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/aligned.h"
#include "kernels/dense.h"
#include "kernels/elementwise.h"
#include "kernels/losses.h"
#include "kernels/optim.h"
#include "kernels/trainer.h"

namespace fastckpt {

struct GraphStep {
  enum Kind {
    kDense = 0, kDropout = 1, kActivation = 2, kBatchNorm = 3, kLayerNorm = 4, kEmbedding = 5,
    kAlias = 6, kConcat = 7, kMerge = 8, kGap1d = 9, kGmp1d = 10, kRelu = 11, kElu = 12,
    kNoise = 13, kSoftmax = 14, kPrelu = 15, kNormalize = 16, kRescale = 17
  } kind = kAlias;
  std::vector<int> in;  // input slots, in call order
  int out = 0;          // output slot
  bool train_active = true;   // the layer's `training` argument in fit (Dropout, BatchNorm)
  bool eval_active = false;   // ... in evaluate
  bool has_weights = false;   // the layer has trainable weights (runs backward for them)
  int layer = -1;             // index of the layer (shared layers: one index for all calls)
  bool shared = false;        // the layer runs in more than one step
  // Weight-gradient buffers the layer writes (its `_grad_buffers()`), with sizes.
  std::vector<float*> grads;
  std::vector<int64_t> grad_sizes;

  // Dense (in K, out N)
  float* kernel = nullptr;
  float* bias = nullptr;
  int K = 0, N = 0;
  int64_t dense_mid = 1;  // Dense on rank > 2: positions per sample (rows x mid GEMM rows)
  Activation act = Activation::kLinear;  // Dense (after the loss folding) and Activation
  // Dropout: index into the trainer's random-layer states
  float rate = 0.f;
  int rng = -1;
  // Activation / LayerNorm / BatchNorm: columns of the kernel's (rows x cols) view
  int64_t cols = 1;
  // BatchNorm / LayerNorm
  float* gamma = nullptr;
  float* beta = nullptr;
  float* moving_mean = nullptr;
  float* moving_var = nullptr;
  float epsilon = 1e-3f;
  double momentum = 0.99;
  bool bessel = false;         // BatchNorm of a rank-4/5 input: n/(n-1) on the moving variance
  bool trainable = true;       // BatchNorm: batch statistics in training only when trainable
  // BatchNorm over a non-last axis: each sample is (bn_outer, cols, bn_inner) and the kernels run
  // on its transpose (bn_outer, bn_inner, cols), as the layer's moveaxis copy; bn_inner 1: last.
  int64_t bn_outer = 1, bn_inner = 1;
  // Embedding
  float* table = nullptr;
  int64_t vocab = 0, dim = 0;
  // Concatenate (last axis): per-row outer count and each input's last-axis width
  int64_t mid = 1;
  std::vector<int64_t> widths;
  // Merge
  MergeOp op = MergeOp::kAdd;
  // Merge of inputs that broadcast (dims of 1): per input, the index into its sample of each
  // output element (broadcast_index), or null for an input of the output's shape; and its
  // per-sample size.
  std::vector<const int64_t*> bidx;
  std::vector<int64_t> b_in_n;
  int64_t b_out_n = 0;  // the size of each index (the output's width, checked)
  // GlobalAveragePooling1D, GlobalMaxPooling1D
  int64_t T = 1, C = 1;
  // Under Embedding(mask_zero=True) masks: the integer slots of the ids whose `!= 0` are and-ed
  // (merges combine masks so), one id per row of the kernel (GlobalAveragePooling1D: T per
  // sample; BatchNorm on the last axis: its rows per sample); empty without a mask.
  std::vector<int> mask_slots;
  // GlobalAveragePooling1D / GlobalMaxPooling1D with data_format='channels_first' (C, T samples)
  bool channels_first = false;
  // ReLU / LeakyReLU (relu_forward's parameters); ELU: alpha
  float negative_slope = 0.f, max_value = 0.f, threshold = 0.f, alpha = 1.f;
  bool has_max = false;
  // GaussianNoise (0: stddev), GaussianDropout (1: stddev of the multiplier), AlphaDropout
  // (2: rate), drawing from rngs[rng] when active (fit, or a call with training=True).
  int noise = 0;
  float stddev = 0.f;
  // Softmax over the middle axis of (outer, n, inner) per sample
  int64_t outer = 1, n_axis = 1, inner = 1;
  // PReLU: alpha (alpha_size values) and per-element alpha index (per elements per sample)
  float* prelu_alpha = nullptr;
  const int64_t* prelu_idx = nullptr;
  int64_t alpha_size = 0, per = 0;
  // Normalization: y = normalize_forward(x) with per-column statistics gathered from the layer's
  // mean / variance (stat_size values each) through stat_idx (cols entries) at every forward,
  // as the layer refreshes its broadcast copies (adapt may change them in place); norm_eps
  // floors sqrt(variance).
  const float* norm_mean = nullptr;
  const float* norm_var = nullptr;
  const int64_t* stat_idx = nullptr;
  int64_t stat_size = 0;
  bool invert = false;
  // Rescaling: y = x * scale + offset, scalars (rs_scale null) or per element of a sample (`per`
  // values each).
  const float* rs_scale = nullptr;
  const float* rs_offset = nullptr;
  float scale = 1.f, offset = 0.f;
};

// Variables, optimizer and totals are the chain trainer's (trainer.h).
using GraphVariable = TrainerVariable;  // in `_grads_and_vars()` order
using GraphOptimizer = TrainerOptimizer;

struct GraphRng {  // one random layer's counter-based RNG state (read back by Python)
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// Totals of a run of batches: the total loss (per batch, 0.0 plus each output's loss value
// times its loss weight, in output order, as Trainer._step sums it), rows seen, and per output
// its loss values' sum and its native metric's matches.
struct GraphTotals {
  double loss_sum = 0.0;
  int64_t correct = 0;  // output 0's matches (the single-output callers)
  int64_t seen = 0;
  std::vector<double> out_loss;
  std::vector<int64_t> out_correct;
};

// The loss of one output and the one metric counted with it, as the layer-by-layer
// path computes them (fastckpt/training/trainer.py, Trainer._step): sparse categorical
// cross-entropy on int32 labels (sparse_ce, which also counts arg-max matches), or a dense_loss
// kernel on float targets of the output's width. `correct` counts, per batch, the metric's
// matches over its values (one per row: the callers keep binary accuracy to one-unit outputs).
struct GraphLoss {
  bool sparse = true;   // sparse_ce / sparse_ce_loss (weighted) or dense_loss
  bool from_logits = false;  // sparse: the output holds logits (from_logits or a folded softmax)
  double weight = 1.0;       // the output's loss weight (total loss and gradient scale)
  // Trainer._step's reduction: 0 sum_over_batch_size (value / rows), 1 'sum' (the value counts
  // rows times, the gradient is not divided), 2 'none' (the sum, not divided).
  int reduction = 0;
  LossParams dense;     // !sparse: the dense_loss parameters (from_logits when folded)
  enum Metric { kNone = 0, kSparseAccuracy = 1, kBinaryAccuracy = 2, kCategoricalAccuracy = 3 };
  Metric metric = kSparseAccuracy;
  float threshold = 0.5f;                 // binary accuracy: y_pred > threshold
  Activation fold = Activation::kLinear;  // applied to the output before a metric reads it
};

class GraphTrainer {
 public:
  // slot_width: elements per row of every slot; slot_int: the slot holds int32 (integer model
  // inputs); input_slots / output_slots: where the model's inputs go, and its outputs (training:
  // one loss per output, `losses`); need_grad: per slot, whether its gradient is
  // wanted (Functional._needs_grad). inference_only: no gradients, no optimizer (predict's
  // trainer: every step's `has_weights` false, no variables); train_steps and evaluate refuse.
  GraphTrainer(std::vector<int64_t> slot_width, std::vector<uint8_t> slot_int,
               std::vector<int> input_slots, std::vector<int> output_slots,
               std::vector<uint8_t> need_grad, std::vector<GraphStep> steps, int n_layers,
               std::vector<GraphRng> rngs, std::vector<GraphVariable> vars, GraphOptimizer opt,
               bool loss_from_logits, float epsilon, bool inference_only = false,
               std::vector<GraphLoss> losses = {});

  // Training steps [step_begin, step_end) of an epoch; batch s covers rows order[s*bs ..) (or
  // s*bs.. without order). inputs[i] points at n rows of input i (float or int32 as its slot);
  // ys[k] at n int32 labels (sparse loss) or n rows of float targets, output k's width each;
  // sws[k] at n float sample weights of output k, or null. preds[k], when not null, receives
  // output k's forward value of every batch (the rows from step_begin * bs on, in batch order):
  // what Python's metrics read.
  void train_steps(const std::vector<const void*>& inputs, const std::vector<const void*>& ys,
                   const std::vector<const float*>& sws, const int64_t* order, int64_t n, int bs,
                   int64_t step_begin, int64_t step_end, int64_t* iterations, GraphTotals* totals,
                   const std::vector<float*>& preds);

  // Inference-mode losses and correct counts, batch by batch of bs rows as the layer-by-layer
  // path (ys, sws, preds as for train_steps, preds from row 0).
  void evaluate(const std::vector<const void*>& inputs, const std::vector<const void*>& ys,
                const std::vector<const float*>& sws, int64_t n, int bs, GraphTotals* totals,
                const std::vector<float*>& preds);

  const std::vector<GraphLoss>& losses() const { return losses_; }

  // Inference-mode outputs of n rows, in passes of `rows` rows (the last one partial), each pass
  // the same kernels on the same rows as the layer-by-layer predict: outs[k] receives n rows of
  // output k (its slot's width each).
  void predict(const std::vector<const void*>& inputs, int64_t n, int rows,
               const std::vector<float*>& outs);

  std::vector<GraphRng>& rngs() { return rngs_; }
  const std::vector<int>& output_slots() const { return output_slots_; }

 private:
  // Buffers for passes of m rows: the forward's, and with `backward` the gradients' too.
  void ensure_workspace(int m, bool backward);
  void forward(int m, bool training);
  void backward(int m);
  void add_grad(int slot, const float* g, int m);
  void bind_batch(const std::vector<const void*>& inputs, const int64_t* order, int64_t lo, int m);
  // Output k's loss of batch rows [lo, lo + m) (through order if given) on the forward's output
  // (the sum of weight * per-row loss), its metric's matches added to totals; with grad,
  // loss weight * d(mean loss)/d output into it.
  double batch_loss(size_t k, const void* y, const float* sw, const int64_t* order, int64_t lo,
                    int m, float* grad, GraphTotals* totals);
  // All outputs' losses of one batch (and their predictions into preds at row `at`).
  void batch_losses(const std::vector<const void*>& ys, const std::vector<const float*>& sws,
                    const int64_t* order, int64_t lo, int m, bool with_grad, GraphTotals* totals,
                    const std::vector<float*>& preds, int64_t at);
  void check_io(const std::vector<const void*>& inputs, const std::vector<const void*>& ys,
                const std::vector<const float*>& sws, const std::vector<float*>& preds) const;

  std::vector<int64_t> width_;
  std::vector<uint8_t> is_int_;
  std::vector<int> input_slots_;
  std::vector<int> output_slots_;
  int output_slot_;
  bool inference_only_;
  std::vector<uint8_t> need_;
  std::vector<GraphStep> steps_;
  int n_layers_;
  std::vector<GraphRng> rngs_;
  std::vector<GraphVariable> vars_;
  GraphOptimizer opt_;
  bool from_logits_;
  float epsilon_;
  std::vector<GraphLoss> losses_;
  int ws_rows_ = 0;  // rows the forward buffers hold
  int bw_rows_ = 0;  // rows the gradient buffers hold

  // Per slot: the current value and gradient (pointers into step buffers, batch buffers, or
  // views of another slot's memory), whether the gradient buffer is the slot's own sum, and
  // that sum buffer.
  std::vector<const float*> val_;
  std::vector<const int32_t*> ival_;
  std::vector<const float*> grad_;
  std::vector<uint8_t> owned_;
  std::vector<AlignedBuffer<float>> acc_;
  std::vector<AlignedBuffer<float>> batch_f_;    // per input: gathered float rows
  std::vector<AlignedBuffer<int32_t>> batch_i_;  // per input: gathered int rows
  // Per step: output, saved pre-activation / statistics, dz, per-input dx, dropout mask,
  // scratch weight gradients (frozen Dense, later calls of a shared layer).
  std::vector<AlignedBuffer<float>> out_, aux_, aux2_, dz_;
  std::vector<std::vector<AlignedBuffer<float>>> dx_;
  std::vector<AlignedBuffer<uint8_t>> mask_;
  // Per step: transposed copies (BatchNorm on a non-last axis, channels-first pooling).
  std::vector<AlignedBuffer<float>> tp_, tp2_;
  // Broadcasting merges: per step and input, the input expanded to the output's shape and its
  // gradient before the reduction back to the input's shape.
  std::vector<std::vector<AlignedBuffer<float>>> bx_, bdx_;
  std::vector<std::vector<AlignedBuffer<float>>> scratch_;
  std::vector<uint8_t> active_;   // per step: the dropout / batch statistics of this forward
  std::vector<uint8_t> written_;  // per layer: its gradient buffers hold this step's first call
  // Per output: the loss gradient, gathered labels / float targets / sample weights, and the
  // activated output a native metric reads (a folded loss).
  std::vector<AlignedBuffer<float>> loss_grad_;
  std::vector<AlignedBuffer<int32_t>> ybuf_;
  std::vector<AlignedBuffer<float>> yfbuf_;
  std::vector<AlignedBuffer<float>> swbuf_;
  std::vector<AlignedBuffer<float>> actbuf_;
};

}  // namespace fastckpt
