// A whole training step (and whole epochs) of a stack of Dense / Dropout layers in C++.
//
// Python builds a Trainer once per (model, optimizer) from pointers into its own buffers
// (weights, gradients, optimizer slots); each call then runs many steps without returning to
// Python. Every operation is the same kernel, in the same order, as the layer-by-layer Python
// path, so both produce bit-identical weights.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "kernels/aligned.h"
#include "kernels/dense.h"
#include "kernels/optim.h"

namespace fastckpt {

struct TrainerLayer {
  enum Kind { kDense = 0, kDropout = 1 } kind = kDense;
  // Dense
  float* kernel = nullptr;
  float* bias = nullptr;      // null without bias
  float* d_kernel = nullptr;  // gradient buffers (null when the layer is frozen)
  float* d_bias = nullptr;
  int in = 0, out = 0;
  Activation act = Activation::kLinear;
  bool trainable = true;
  // Dropout
  float rate = 0.f;
  uint64_t seed = 0;
  uint64_t offset = 0;  // advanced by every training forward; read back by Python
};

struct TrainerVariable {  // one trainable variable, in model order, with its optimizer slots
  float* value = nullptr;
  const float* grad = nullptr;
  float* slot0 = nullptr;  // Adam m / SGD momentum
  float* slot1 = nullptr;  // Adam v
  float* slot2 = nullptr;  // Adam vhat (amsgrad)
  int64_t size = 0;
};

struct TrainerOptimizer {
  enum Kind { kAdam = 0, kSgd = 1 } kind = kAdam;
  AdamParams adam;
  float learning_rate = 0.01f, momentum = 0.f;
  bool nesterov = false;
};

struct StepTotals {
  double loss_sum = 0.0;  // sum of per-sample losses, in row order
  int64_t correct = 0;
  int64_t seen = 0;
};

// A checkpoint snapshot taken by the last step of train_steps (ModelCheckpoint's fused
// snapshot): that step's update also copies each variable and slot into its place in a staged
// checkpoint image, CRC in the same pass (optim.h, *_update_snapshot).
struct TrainerSnapshot {
  SnapshotSink sink;
  // Per variable (trainer order): where its value, slot0, slot1, slot2 go (null: not taken).
  std::vector<std::array<uint8_t*, 4>> dst;  // bytes, any alignment
  // Out: the CRC-32C of each taken array, and whether it was taken (a slot the optimizer does
  // not update, e.g. SGD's momentum at momentum 0, is not).
  std::vector<std::array<uint32_t, 4>> crc;
  std::vector<std::array<bool, 4>> filled;
  bool taken = false;  // out: the last step ran (and filled what it could)
};

class Trainer {
 public:
  Trainer(std::vector<TrainerLayer> layers, std::vector<TrainerVariable> vars, TrainerOptimizer opt,
          bool loss_from_logits, float epsilon, int input_width);

  // Runs training steps [step_begin, step_end) of an epoch over x (n x input_width) and labels y.
  // Batch s covers rows order[s*bs .. ) (or s*bs.. when order is null). `iterations` is the
  // optimizer's step counter, incremented per step.
  // With `snapshot` (dst sized like the variables), step step_end - 1 fills it.
  void train_steps(const float* x, const int32_t* y, const int64_t* order, int64_t n, int bs,
                   int64_t step_begin, int64_t step_end, int64_t* iterations, StepTotals* totals,
                   TrainerSnapshot* snapshot = nullptr);

  size_t num_variables() const { return vars_.size(); }

  // Inference-mode loss / correct count over all rows; the loss is summed per batch of bs rows.
  void evaluate(const float* x, const int32_t* y, int64_t n, int bs, StepTotals* totals);

  std::vector<TrainerLayer>& layers() { return layers_; }

  // Frees the per-layer workspaces; the next call sizes them again. fit calls it at its end:
  // evaluate sized them for a whole inference pass (1000+ rows), which otherwise stays resident
  // next to what runs after fit (predict's own pass buffers).
  void release_workspace();

 private:
  const float* forward(const float* x, int m, bool training);
  void ensure_workspace(int m);

  std::vector<TrainerLayer> layers_;
  std::vector<TrainerVariable> vars_;
  TrainerOptimizer opt_;
  bool from_logits_;
  float epsilon_;
  int input_width_;
  int ws_rows_ = 0;
  // Per layer: output (m x width), pre-activation (Dense whose activation_needs_z), dz / dx
  // scratch, dropout mask; all sized for ws_rows_ rows.
  std::vector<AlignedBuffer<float>> out_, pre_, dz_, dx_;
  std::vector<AlignedBuffer<uint8_t>> mask_;
  std::vector<AlignedBuffer<float>> frozen_dw_, frozen_db_;
  AlignedBuffer<float> xbuf_, grad_;
  AlignedBuffer<int32_t> ybuf_;
};

}  // namespace fastckpt
