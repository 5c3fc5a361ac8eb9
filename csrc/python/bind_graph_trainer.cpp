// _core.GraphTrainer: the fused training loop over a graph of built-in layers. Python passes its
// own buffers (fastckpt/training/graph_fused.py checks them first); the object keeps them alive
// (refs) and never allocates them, so checkpoints and Python see the same memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/graph_trainer.h"
#include "python/buffers.h"
#include "python/trainer_config.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

struct PyGraphTrainer {
  std::unique_ptr<fastckpt::GraphTrainer> impl;
  py::list refs;  // every array whose pointer the trainer holds
  std::vector<int64_t> input_width;
  std::vector<bool> input_int;
  std::vector<int64_t> widths;  // every slot's
  // Per output: floats per target row (dense loss); 0: int32 labels.
  std::vector<int64_t> y_width;
  std::vector<int64_t> out_width;

  // An array the caller holds (no converted temporary whose memory would go away).
  static py::array held(py::handle h, const char* what) {
    if (!py::isinstance<py::array>(h))
      throw py::type_error(std::string("GraphTrainer: ") + what + " must be a NumPy array");
    return py::reinterpret_borrow<py::array>(h);
  }

  // One output's targets of n rows: int32 labels, or float rows of the output's width.
  const void* target(size_t k, py::array y, int64_t* n) {
    const std::string what = "y[" + std::to_string(k) + "]";
    if (y_width[k] == 0) {
      *n = y.size();
      return cdata_of<int32_t>(y, *n, what.c_str());
    }
    if (y.size() % y_width[k] != 0)
      throw py::value_error(what + ": " + std::to_string(y.size()) + " values are not rows of " +
                            std::to_string(y_width[k]));
    *n = y.size() / y_width[k];
    return cdata_of<float>(y, y.size(), what.c_str());
  }

  // Every output's targets (one list item each, the same row count n), sample weights (None or
  // n float32 values) and prediction buffers (None or `rows` rows of the output's width).
  std::vector<const void*> targets(py::list ys, int64_t* n) {
    if (y_width.empty()) throw std::logic_error("GraphTrainer: built for inference only");
    if (ys.size() != y_width.size())
      throw py::value_error("GraphTrainer: expected " + std::to_string(y_width.size()) +
                            " target arrays, got " + std::to_string(ys.size()));
    std::vector<const void*> out;
    for (size_t k = 0; k < y_width.size(); ++k) {
      int64_t nk = 0;
      out.push_back(target(k, held(ys[k], "y"), &nk));
      if (k == 0) *n = nk;
      else if (nk != *n)
        throw py::value_error("GraphTrainer: every output's targets have the same rows");
    }
    return out;
  }
  std::vector<const float*> weights(py::list sws, int64_t n) {
    if (sws.size() != y_width.size())
      throw py::value_error("GraphTrainer: one sample-weight entry per output");
    std::vector<const float*> out;
    for (size_t k = 0; k < y_width.size(); ++k) {
      if (sws[k].is_none()) {
        out.push_back(nullptr);
        continue;
      }
      py::array a = held(sws[k], "sample_weight");
      out.push_back(cdata_of<float>(a, n, "sample_weight"));
    }
    return out;
  }
  std::vector<float*> predictions(py::list preds, int64_t rows, std::vector<py::array>& keep) {
    if (preds.size() != y_width.size())
      throw py::value_error("GraphTrainer: one prediction entry per output");
    std::vector<float*> out;
    for (size_t k = 0; k < y_width.size(); ++k) {
      if (preds[k].is_none()) {
        out.push_back(nullptr);
        continue;
      }
      keep.push_back(held(preds[k], "predictions"));
      out.push_back(data_of<float>(keep.back(), rows * out_width[k], "predictions", true));
    }
    return out;
  }
  static py::tuple result(const fastckpt::GraphTotals& t) {
    return py::make_tuple(t.loss_sum, t.correct, t.seen, py::cast(t.out_loss),
                          py::cast(t.out_correct));
  }

  float* keep(py::object a, int64_t n, const char* what) {
    if (a.is_none()) return nullptr;
    py::array arr = a.cast<py::array>();
    refs.append(arr);
    return data_of<float>(arr, n, what, true);
  }
  float* need(py::object a, int64_t n, const char* what) {
    float* p = keep(a, n, what);
    if (!p) throw py::value_error(std::string("GraphTrainer: missing ") + what);
    return p;
  }

  // The model's input arrays, checked: one per input, n rows of its width, its dtype.
  std::vector<const void*> inputs(py::list xs, int64_t n) {
    if (xs.size() != input_width.size())
      throw py::value_error("GraphTrainer: expected " + std::to_string(input_width.size()) +
                            " input arrays, got " + std::to_string(xs.size()));
    std::vector<const void*> out;
    for (size_t k = 0; k < input_width.size(); ++k) {
      py::array a = xs[k].cast<py::array>();
      const int64_t want = n * input_width[k];
      if (a.size() != want)
        throw py::value_error("GraphTrainer: input " + std::to_string(k) + " has " +
                              std::to_string(a.size()) + " elements, expected " +
                              std::to_string(want));
      if (input_int[k])
        out.push_back(cdata_of<int32_t>(a, want, "integer input"));
      else
        out.push_back(cdata_of<float>(a, want, "input"));
    }
    return out;
  }
};

const char* const kKinds[] = {"dense", "dropout", "activation", "batchnorm", "layernorm",
                              "embedding", "alias", "concat", "merge", "gap1d", "gmp1d",
                              "relu",  "elu",     "noise",      "softmax",   "prelu",
                              "normalize", "rescale"};

}  // namespace

void bind_graph_trainer(py::module_& m) {
  py::class_<PyGraphTrainer>(m, "GraphTrainer")
      .def(py::init([](std::vector<int64_t> widths, std::vector<uint8_t> is_int,
                       std::vector<int> input_slots, std::vector<int> output_slots,
                       std::vector<uint8_t> need, py::list steps, int n_layers,
                       std::vector<std::pair<uint64_t, uint64_t>> rngs, py::list variables,
                       py::object optimizer, bool from_logits, float epsilon, py::object loss) {
             auto t = std::make_unique<PyGraphTrainer>();
             t->widths = widths;
             for (int s : input_slots) {
               if (s < 0 || s >= static_cast<int>(widths.size()) || widths.size() != is_int.size())
                 throw py::value_error("GraphTrainer: bad input slot");
               t->input_width.push_back(widths[s]);
               t->input_int.push_back(is_int[s] != 0);
             }
             std::vector<fastckpt::GraphStep> ss;
             for (auto item : steps) {
               py::dict d = item.cast<py::dict>();
               fastckpt::GraphStep st;
               const std::string kind = d["kind"].cast<std::string>();
               int code = -1;
               for (int i = 0; i < static_cast<int>(sizeof kKinds / sizeof *kKinds); ++i)
                 if (kind == kKinds[i]) code = i;
               if (code < 0) throw py::value_error("GraphTrainer: unknown step kind " + kind);
               st.kind = static_cast<fastckpt::GraphStep::Kind>(code);
               st.in = d["in"].cast<std::vector<int>>();
               st.out = d["out"].cast<int>();
               st.train_active = d["train_active"].cast<bool>();
               st.eval_active = d["eval_active"].cast<bool>();
               st.has_weights = d["has_weights"].cast<bool>();
               st.layer = d["layer"].cast<int>();
               st.shared = d["shared"].cast<bool>();
               st.grad_sizes = d["grad_sizes"].cast<std::vector<int64_t>>();
               py::list grads = d["grads"].cast<py::list>();
               if (grads.size() != st.grad_sizes.size() || grads.size() > 2)
                 throw py::value_error("GraphTrainer: one size per gradient buffer (at most 2)");
               for (size_t j = 0; j < grads.size(); ++j)
                 st.grads.push_back(t->need(grads[j], st.grad_sizes[j], "gradient"));
               if (st.has_weights != !st.grads.empty())
                 throw py::value_error("GraphTrainer: a layer with weights has gradient buffers");
               if (d.contains("act")) {
                 const int act = d["act"].cast<int>();
                 if (act < 0 || act >= fastckpt::kNumActivations)
                   throw py::value_error("activation code out of range");
                 st.act = static_cast<fastckpt::Activation>(act);
               }
               switch (st.kind) {
                 case fastckpt::GraphStep::kDense:
                   st.K = d["K"].cast<int>();
                   st.N = d["N"].cast<int>();
                   if (st.K <= 0 || st.N <= 0) throw py::value_error("GraphTrainer: dense shape");
                   if (d.contains("mid")) st.dense_mid = d["mid"].cast<int64_t>();
                   if (st.dense_mid <= 0) throw py::value_error("GraphTrainer: dense positions");
                   st.kernel = t->need(d["kernel"], int64_t(st.K) * st.N, "kernel");
                   st.bias = t->keep(d["bias"], st.N, "bias");
                   if (st.has_weights &&
                       (st.grad_sizes[0] != int64_t(st.K) * st.N ||
                        (st.bias ? st.grad_sizes.size() != 2 || st.grad_sizes[1] != st.N
                                 : st.grad_sizes.size() != 1)))
                     throw py::value_error("GraphTrainer: dense gradient sizes");
                   break;
                 case fastckpt::GraphStep::kDropout:
                   st.rate = d["rate"].cast<float>();
                   if (!(st.rate >= 0.f && st.rate < 1.f))
                     throw py::value_error("rate must be in [0, 1)");
                   st.rng = d["rng"].cast<int>();
                   if (st.rng < 0 || st.rng >= static_cast<int>(rngs.size()))
                     throw py::value_error("GraphTrainer: bad dropout state index");
                   break;
                 case fastckpt::GraphStep::kActivation:
                   st.cols = d["cols"].cast<int64_t>();
                   break;
                 case fastckpt::GraphStep::kBatchNorm:
                 case fastckpt::GraphStep::kLayerNorm: {
                   st.cols = d["cols"].cast<int64_t>();
                   if (st.cols <= 0) throw py::value_error("GraphTrainer: norm width");
                   st.gamma = t->keep(d["gamma"], st.cols, "gamma");
                   st.beta = t->keep(d["beta"], st.cols, "beta");
                   st.epsilon = d["epsilon"].cast<float>();
                   const size_t ng = (st.gamma ? 1 : 0) + (st.beta ? 1 : 0);
                   if (st.has_weights && st.grad_sizes.size() != ng)
                     throw py::value_error("GraphTrainer: norm gradient count");
                   for (int64_t gs : st.grad_sizes)
                     if (gs != st.cols) throw py::value_error("GraphTrainer: norm gradient size");
                   if (st.kind == fastckpt::GraphStep::kBatchNorm) {
                     st.moving_mean = t->need(d["moving_mean"], st.cols, "moving_mean");
                     st.moving_var = t->need(d["moving_variance"], st.cols, "moving_variance");
                     st.momentum = d["momentum"].cast<double>();
                     st.bessel = d["bessel"].cast<bool>();
                     st.trainable = d["trainable"].cast<bool>();
                     if (d.contains("outer")) st.bn_outer = d["outer"].cast<int64_t>();
                     if (d.contains("inner")) st.bn_inner = d["inner"].cast<int64_t>();
                   }
                   break;
                 }
                 case fastckpt::GraphStep::kEmbedding:
                   st.vocab = d["vocab"].cast<int64_t>();
                   st.dim = d["dim"].cast<int64_t>();
                   if (st.vocab <= 0 || st.dim <= 0) throw py::value_error("GraphTrainer: table");
                   st.table = t->need(d["table"], st.vocab * st.dim, "embeddings");
                   if (st.has_weights &&
                       (st.grad_sizes.size() != 1 || st.grad_sizes[0] != st.vocab * st.dim))
                     throw py::value_error("GraphTrainer: embedding gradient size");
                   break;
                 case fastckpt::GraphStep::kConcat:
                   st.mid = d["mid"].cast<int64_t>();
                   st.widths = d["widths"].cast<std::vector<int64_t>>();
                   break;
                 case fastckpt::GraphStep::kMerge: {
                   const int op = d["op"].cast<int>();
                   if (op < 0 || op > static_cast<int>(fastckpt::MergeOp::kMinimum))
                     throw py::value_error("GraphTrainer: merge op out of range");
                   st.op = static_cast<fastckpt::MergeOp>(op);
                   if (d.contains("bidx")) {  // broadcasting inputs (checked by the trainer)
                     const py::list bl = d["bidx"].cast<py::list>();
                     st.b_out_n = d["b_out_n"].cast<int64_t>();
                     for (const auto& b : bl) {
                       if (b.is_none()) {
                         st.bidx.push_back(nullptr);
                         st.b_in_n.push_back(0);
                         continue;
                       }
                       py::array a = b.cast<py::array>();
                       t->refs.append(a);
                       if (a.size() != st.b_out_n)
                         throw py::value_error("GraphTrainer: broadcast index size");
                       st.bidx.push_back(cdata_of<int64_t>(a, st.b_out_n, "broadcast index"));
                       st.b_in_n.push_back(a.size());  // replaced by the input width below
                     }
                     const auto ns = d["b_in_n"].cast<std::vector<int64_t>>();
                     if (ns.size() != st.bidx.size())
                       throw py::value_error("GraphTrainer: one input size per broadcast index");
                     for (size_t j = 0; j < ns.size(); ++j) {
                       if (st.bidx[j] && st.b_in_n[j] < 1)
                         throw py::value_error("GraphTrainer: empty broadcast index");
                       st.b_in_n[j] = st.bidx[j] ? ns[j] : 0;
                     }
                   }
                   break;
                 }
                 case fastckpt::GraphStep::kGap1d:
                 case fastckpt::GraphStep::kGmp1d:
                   st.T = d["T"].cast<int64_t>();
                   st.C = d["C"].cast<int64_t>();
                   if (d.contains("channels_first"))
                     st.channels_first = d["channels_first"].cast<bool>();
                   break;
                 case fastckpt::GraphStep::kNormalize: {
                   st.cols = d["cols"].cast<int64_t>();
                   st.stat_size = d["stat_size"].cast<int64_t>();
                   if (st.cols <= 0 || st.stat_size <= 0)
                     throw py::value_error("GraphTrainer: normalization sizes");
                   py::array mean = d["mean"].cast<py::array>();
                   py::array var = d["variance"].cast<py::array>();
                   py::array idx = d["idx"].cast<py::array>();
                   t->refs.append(mean);
                   t->refs.append(var);
                   t->refs.append(idx);
                   st.norm_mean = cdata_of<float>(mean, st.stat_size, "mean");
                   st.norm_var = cdata_of<float>(var, st.stat_size, "variance");
                   st.stat_idx = cdata_of<int64_t>(idx, st.cols, "statistics index");
                   st.epsilon = d["epsilon"].cast<float>();
                   st.invert = d["invert"].cast<bool>();
                   break;
                 }
                 case fastckpt::GraphStep::kRescale:
                   if (d["scale"].is_none() != d["offset"].is_none())
                     throw py::value_error("GraphTrainer: rescale takes both arrays or scalars");
                   if (d["scale"].is_none()) {
                     st.scale = d["scalar_scale"].cast<float>();
                     st.offset = d["scalar_offset"].cast<float>();
                   } else {
                     st.per = d["per"].cast<int64_t>();
                     if (st.per <= 0) throw py::value_error("GraphTrainer: rescale width");
                     py::array sc = d["scale"].cast<py::array>();
                     py::array of = d["offset"].cast<py::array>();
                     t->refs.append(sc);
                     t->refs.append(of);
                     st.rs_scale = cdata_of<float>(sc, st.per, "scale");
                     st.rs_offset = cdata_of<float>(of, st.per, "offset");
                   }
                   break;
                 case fastckpt::GraphStep::kRelu:
                   st.negative_slope = d["negative_slope"].cast<float>();
                   st.has_max = !d["max_value"].is_none();
                   st.max_value = st.has_max ? d["max_value"].cast<float>() : 0.f;
                   st.threshold = d["threshold"].cast<float>();
                   break;
                 case fastckpt::GraphStep::kElu:
                   st.alpha = d["alpha"].cast<float>();
                   break;
                 case fastckpt::GraphStep::kNoise:
                   st.noise = d["noise"].cast<int>();
                   st.rate = d["rate"].cast<float>();
                   st.stddev = d["stddev"].cast<float>();
                   st.rng = d["rng"].cast<int>();
                   if (st.noise < 0 || st.noise > 2) throw py::value_error("GraphTrainer: noise kind");
                   if (st.rng < 0 || st.rng >= static_cast<int>(rngs.size()))
                     throw py::value_error("GraphTrainer: bad random layer state index");
                   break;
                 case fastckpt::GraphStep::kSoftmax:
                   st.outer = d["outer"].cast<int64_t>();
                   st.n_axis = d["n"].cast<int64_t>();
                   st.inner = d["inner"].cast<int64_t>();
                   break;
                 case fastckpt::GraphStep::kPrelu: {
                   st.alpha_size = d["alpha_size"].cast<int64_t>();
                   st.per = d["per"].cast<int64_t>();
                   if (st.alpha_size <= 0 || st.per <= 0)
                     throw py::value_error("GraphTrainer: prelu sizes");
                   st.prelu_alpha = t->need(d["alpha"], st.alpha_size, "alpha");
                   py::array idx = d["idx"].cast<py::array>();
                   t->refs.append(idx);
                   st.prelu_idx = cdata_of<int64_t>(idx, st.per, "prelu index");
                   if (st.has_weights &&
                       (st.grad_sizes.size() != 1 || st.grad_sizes[0] != st.alpha_size))
                     throw py::value_error("GraphTrainer: prelu gradient size");
                   break;
                 }
                 case fastckpt::GraphStep::kAlias:
                   break;
               }
               if (st.in.size() > 64) throw py::value_error("GraphTrainer: at most 64 inputs");
               // Embedding masks (GlobalAveragePooling1D, BatchNormalization); an old single
               // "mask_slot" is still read.
               if (d.contains("mask_slots"))
                 st.mask_slots = d["mask_slots"].cast<std::vector<int>>();
               else if (d.contains("mask_slot") && d["mask_slot"].cast<int>() >= 0)
                 st.mask_slots = {d["mask_slot"].cast<int>()};
               ss.push_back(std::move(st));
             }
             std::vector<fastckpt::GraphRng> rs;
             for (auto& r : rngs) rs.push_back({r.first, r.second});
             std::vector<fastckpt::GraphVariable> vs =
                 fastckpt::py_detail::variables_config(variables, t->refs);
             // No optimizer: predict's trainer (no variables, no gradients).
             const bool inference_only = optimizer.is_none();
             fastckpt::GraphOptimizer opt;
             if (!inference_only)
               opt = fastckpt::py_detail::optimizer_config(optimizer.cast<py::dict>(), vs);
             // Per output: the loss and its metric (None: sparse cross-entropy and sparse
             // accuracy; a dict: the one output's; a list: one dict per output).
             py::list loss_list;
             if (py::isinstance<py::dict>(loss)) loss_list.append(loss);
             else if (!loss.is_none()) loss_list = loss.cast<py::list>();
             std::vector<fastckpt::GraphLoss> gls;
             if (!inference_only && loss.is_none()) {
               fastckpt::GraphLoss gl;
               gl.from_logits = from_logits;
               gls.assign(output_slots.size(), gl);
             }
             for (auto item : loss_list) {
               py::dict d = item.cast<py::dict>();
               fastckpt::GraphLoss gl;
               gl.from_logits = d.contains("from_logits") ? d["from_logits"].cast<bool>()
                                                          : from_logits;
               gl.weight = d.contains("weight") ? d["weight"].cast<double>() : 1.0;
               gl.reduction = d.contains("reduction") ? d["reduction"].cast<int>() : 0;
               if (gl.reduction < 0 || gl.reduction > 2)
                 throw py::value_error("GraphTrainer: reduction code out of range");
               gl.sparse = d["sparse"].cast<bool>();
               if (!gl.sparse) {
                 const int kind = d["kind"].cast<int>();
                 if (kind < 0 || kind > static_cast<int>(fastckpt::DenseLoss::kCategoricalHinge))
                   throw py::value_error("GraphTrainer: loss kind out of range");
                 gl.dense.kind = static_cast<fastckpt::DenseLoss>(kind);
                 gl.dense.from_logits = gl.from_logits;
                 gl.dense.label_smoothing = d["label_smoothing"].cast<float>();
                 gl.dense.epsilon = epsilon;
               }
               const int metric = d["metric"].cast<int>();
               if (metric < 0 || metric > fastckpt::GraphLoss::kCategoricalAccuracy)
                 throw py::value_error("GraphTrainer: metric code out of range");
               gl.metric = static_cast<fastckpt::GraphLoss::Metric>(metric);
               gl.threshold = d["threshold"].cast<float>();
               const int fold = d["fold"].cast<int>();
               if (fold < 0 || fold >= fastckpt::kNumActivations)
                 throw py::value_error("activation code out of range");
               gl.fold = static_cast<fastckpt::Activation>(fold);
               gls.push_back(gl);
             }
             if (!inference_only && gls.size() != output_slots.size())
               throw py::value_error("GraphTrainer: one loss per output");
             for (size_t k = 0; k < gls.size(); ++k) {
               const int s = output_slots.at(k);
               if (s < 0 || s >= static_cast<int>(widths.size()))
                 throw py::value_error("GraphTrainer: bad output slot");
               t->out_width.push_back(widths[s]);
               t->y_width.push_back(gls[k].sparse ? 0 : widths[s]);
             }
             try {
               t->impl = std::make_unique<fastckpt::GraphTrainer>(
                   std::move(widths), std::move(is_int), std::move(input_slots),
                   std::move(output_slots), std::move(need), std::move(ss), n_layers,
                   std::move(rs), std::move(vs), opt, from_logits, epsilon, inference_only, std::move(gls));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
             return t;
           }),
           py::arg("widths"), py::arg("is_int"), py::arg("input_slots"), py::arg("output_slots"),
           py::arg("need"), py::arg("steps"), py::arg("n_layers"), py::arg("rngs"),
           py::arg("variables"), py::arg("optimizer"), py::arg("from_logits"), py::arg("epsilon"),
           py::arg("loss") = py::none())
      .def("train_steps",
           [](PyGraphTrainer& self, py::list xs, py::list ys, py::list sws, py::object order,
              int bs, int64_t s0, int64_t s1, py::array iterations, py::list preds) {
             int64_t n = 0;
             const std::vector<const void*> py_ = self.targets(ys, &n);
             const std::vector<const float*> pw = self.weights(sws, n);
             if (bs <= 0) throw py::value_error("batch size must be positive");
             if (s0 < 0 || s1 < s0 || (s1 > s0 && (s1 - 1) * static_cast<int64_t>(bs) >= n))
               throw py::value_error("step range outside the data");
             std::vector<const void*> px = self.inputs(xs, n);
             const int64_t* po = nullptr;
             py::array oa;
             if (!order.is_none()) {
               oa = order.cast<py::array>();
               if (oa.size() != n) throw py::value_error("order: one index per row expected");
               po = cdata_of<int64_t>(oa, n, "order");
               for (int64_t i = 0; i < n; ++i)
                 if (po[i] < 0 || po[i] >= n) throw py::value_error("order index out of range");
             }
             int64_t* it = data_of<int64_t>(iterations, 1, "iterations", true);
             // Rows of the steps [s0, s1) (the last batch may be partial).
             const int64_t rows = std::max<int64_t>(
                 0, std::min<int64_t>(n, s1 * static_cast<int64_t>(bs)) - s0 * bs);
             std::vector<py::array> keep;
             const std::vector<float*> pp = self.predictions(preds, rows, keep);
             fastckpt::GraphTotals totals;
             {
               py::gil_scoped_release nogil;
               self.impl->train_steps(px, py_, pw, po, n, bs, s0, s1, it, &totals, pp);
             }
             return PyGraphTrainer::result(totals);
           },
           py::arg("xs"), py::arg("ys"), py::arg("sws"), py::arg("order"), py::arg("bs"),
           py::arg("s0"), py::arg("s1"), py::arg("iterations"), py::arg("preds"))
      .def("evaluate",
           [](PyGraphTrainer& self, py::list xs, py::list ys, py::list sws, int bs,
              py::list preds) {
             int64_t n = 0;
             const std::vector<const void*> py_ = self.targets(ys, &n);
             const std::vector<const float*> pw = self.weights(sws, n);
             if (bs <= 0) throw py::value_error("batch size must be positive");
             std::vector<const void*> px = self.inputs(xs, n);
             std::vector<py::array> keep;
             const std::vector<float*> pp = self.predictions(preds, n, keep);
             fastckpt::GraphTotals totals;
             {
               py::gil_scoped_release nogil;
               self.impl->evaluate(px, py_, pw, n, bs, &totals, pp);
             }
             return PyGraphTrainer::result(totals);
           },
           py::arg("xs"), py::arg("ys"), py::arg("sws"), py::arg("bs"), py::arg("preds"))
      .def("predict",
           [](PyGraphTrainer& self, py::list xs, int64_t n, int rows, py::list outs) {
             if (n < 0) throw py::value_error("predict: negative row count");
             if (rows <= 0) throw py::value_error("predict: pass rows must be positive");
             std::vector<const void*> px = self.inputs(xs, n);
             const auto& slots = self.impl->output_slots();
             if (outs.size() != slots.size())
               throw py::value_error("predict: expected " + std::to_string(slots.size()) +
                                     " output arrays, got " + std::to_string(outs.size()));
             std::vector<float*> po;
             std::vector<py::array> keep;  // alive until the call returns
             for (size_t k = 0; k < slots.size(); ++k) {
               keep.push_back(outs[k].cast<py::array>());
               const int64_t want = n * self.widths[slots[k]];
               if (keep.back().size() != want)
                 throw py::value_error("predict: output " + std::to_string(k) + " has " +
                                       std::to_string(keep.back().size()) +
                                       " elements, expected " + std::to_string(want));
               po.push_back(data_of<float>(keep.back(), want, "output", true));
             }
             {
               py::gil_scoped_release nogil;
               self.impl->predict(px, n, rows, po);
             }
           },
           py::arg("xs"), py::arg("n"), py::arg("rows"), py::arg("outs"))
      .def("rng_state",
           [](PyGraphTrainer& self) {
             std::vector<std::pair<uint64_t, uint64_t>> out;
             for (auto& r : self.impl->rngs()) out.emplace_back(r.seed, r.offset);
             return out;
           })
      .def("set_rng_state", [](PyGraphTrainer& self,
                               std::vector<std::pair<uint64_t, uint64_t>> st) {
        auto& rs = self.impl->rngs();
        if (st.size() != rs.size()) throw py::value_error("GraphTrainer: one state per dropout");
        for (size_t i = 0; i < rs.size(); ++i) rs[i] = {st[i].first, st[i].second};
      });
}
