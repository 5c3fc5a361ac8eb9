// _core.Trainer: the fused training loop. Python passes its own buffers; the object keeps them
// alive (refs_) and never allocates them, so checkpoints and Python see the same memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "io/bundle_writer.h"
#include "io/crc32c.h"
#include "kernels/trainer.h"
#include "python/buffers.h"
#include "python/trainer_config.h"

namespace py = pybind11;
using fastckpt::py_detail::cdata_of;
using fastckpt::py_detail::data_of;

namespace {

struct PyTrainer {
  std::unique_ptr<fastckpt::Trainer> impl;
  py::list refs;  // every array whose pointer the trainer holds
  int input_width = 0;
  std::vector<int64_t> var_sizes;  // floats per trainable variable, trainer order

  float* keep(py::object a, int64_t n, const char* what) {
    if (a.is_none()) return nullptr;
    py::array arr = a.cast<py::array>();
    refs.append(arr);
    return data_of<float>(arr, n, what, true);
  }
};

}  // namespace

void bind_trainer(py::module_& m) {
  py::class_<PyTrainer>(m, "Trainer")
      .def(py::init([](py::list layers, py::list variables, py::dict optimizer, bool from_logits,
                       float epsilon, int input_width) {
             auto t = std::make_unique<PyTrainer>();
             std::vector<fastckpt::TrainerLayer> ls;
             for (auto item : layers) {
               py::dict d = item.cast<py::dict>();
               fastckpt::TrainerLayer l;
               std::string kind = d["kind"].cast<std::string>();
               if (kind == "dense") {
                 l.kind = fastckpt::TrainerLayer::kDense;
                 l.in = d["in"].cast<int>();
                 l.out = d["out"].cast<int>();
                 int act = d["act"].cast<int>();
                 if (act < 0 || act >= fastckpt::kNumActivations)
                   throw py::value_error("activation code out of range");
                 l.act = static_cast<fastckpt::Activation>(act);
                 l.trainable = d["trainable"].cast<bool>();
                 const int64_t kn = static_cast<int64_t>(l.in) * l.out;
                 l.kernel = t->keep(d["kernel"], kn, "kernel");
                 l.bias = t->keep(d["bias"], l.out, "bias");
                 l.d_kernel = t->keep(d["d_kernel"], kn, "d_kernel");
                 l.d_bias = t->keep(d["d_bias"], l.out, "d_bias");
                 if (l.trainable && !l.d_kernel) throw py::value_error("trainable dense needs gradients");
               } else if (kind == "dropout") {
                 l.kind = fastckpt::TrainerLayer::kDropout;
                 l.rate = d["rate"].cast<float>();
                 if (!(l.rate >= 0.f && l.rate < 1.f)) throw py::value_error("rate must be in [0, 1)");
                 l.seed = d["seed"].cast<uint64_t>();
                 l.offset = d["offset"].cast<uint64_t>();
               } else {
                 throw py::value_error("unknown layer kind " + kind);
               }
               ls.push_back(l);
             }
             std::vector<fastckpt::TrainerVariable> vs =
                 fastckpt::py_detail::variables_config(variables, t->refs);
             fastckpt::TrainerOptimizer o = fastckpt::py_detail::optimizer_config(optimizer, vs);
             t->input_width = input_width;
             for (const auto& v : vs) t->var_sizes.push_back(v.size);
             t->impl = std::make_unique<fastckpt::Trainer>(std::move(ls), std::move(vs), o,
                                                           from_logits, epsilon, input_width);
             return t;
           }),
           py::arg("layers"), py::arg("variables"), py::arg("optimizer"), py::arg("from_logits"),
           py::arg("epsilon"), py::arg("input_width"))
      .def("train_steps",
           [](PyTrainer& self, py::array x, py::array y, py::object order, int bs, int64_t s0,
              int64_t s1, py::array iterations, py::object snapshot, py::object targets) -> py::tuple {
             const int64_t n = y.size();
             if (bs <= 0) throw py::value_error("batch size must be positive");
             if (s0 < 0 || s1 < s0 || (s1 > s0 && (s1 - 1) * static_cast<int64_t>(bs) >= n))
               throw py::value_error("step range outside the data");
             const float* px = cdata_of<float>(x, n * self.input_width, "x");
             const int32_t* py_ = cdata_of<int32_t>(y, n, "y");
             const int64_t* po = nullptr;
             py::array oa;
             if (!order.is_none()) {
               oa = order.cast<py::array>();
               po = cdata_of<int64_t>(oa, n, "order");
               for (int64_t i = 0; i < n; ++i)
                 if (po[i] < 0 || po[i] >= n) throw py::value_error("order index out of range");
             }
             int64_t* it = data_of<int64_t>(iterations, 1, "iterations", true);
             // snapshot: a StagedBundle laid out for the checkpoint; targets: (variable index,
             // array 0-3 = value/slot0/slot1/slot2, byte offset in the image) the last step fills.
             std::unique_ptr<fastckpt::TrainerSnapshot> snap;
             if (!snapshot.is_none()) {
               if (s1 <= s0) throw py::value_error("a snapshot needs at least one step");
               auto& staged = snapshot.cast<fastckpt::io::StagedBundle&>();
               const size_t nv = self.impl->num_variables();
               snap = std::make_unique<fastckpt::TrainerSnapshot>();
               snap->sink.copy_crc = &fastckpt::io::crc32c_copy;
               snap->sink.combine = &fastckpt::io::crc32c_combine;
               snap->dst.assign(nv, std::array<uint8_t*, 4>{nullptr, nullptr, nullptr, nullptr});
               for (auto item : targets.cast<py::list>()) {
                 auto tup = item.cast<std::tuple<int64_t, int, uint64_t>>();
                 const int64_t vi = std::get<0>(tup);
                 const int k = std::get<1>(tup);
                 if (vi < 0 || static_cast<size_t>(vi) >= nv || k < 0 || k > 3)
                   throw py::value_error("snapshot target (" + std::to_string(vi) + ", " + std::to_string(k) +
                                         ") outside the trainer's " + std::to_string(nv) + " variables x 4 arrays");
                 const uint64_t nbytes = static_cast<uint64_t>(self.var_sizes[static_cast<size_t>(vi)]) * sizeof(float);
                 try {
                   snap->dst[static_cast<size_t>(vi)][k] = staged.fill_target(std::get<2>(tup), nbytes);
                 } catch (const std::out_of_range& e) {
                   throw py::value_error(e.what());
                 }
               }
             }
             fastckpt::StepTotals totals;
             {
               py::gil_scoped_release nogil;
               self.impl->train_steps(px, py_, po, n, bs, s0, s1, it, &totals, snap.get());
             }
             if (!snap) return py::make_tuple(totals.loss_sum, totals.correct, totals.seen);
             py::list crcs;  // (variable index, array, crc) of every array the last step filled
             if (snap->taken)
               for (size_t i = 0; i < snap->crc.size(); ++i)
                 for (int k = 0; k < 4; ++k)
                   if (snap->filled[i][k]) crcs.append(py::make_tuple(i, k, snap->crc[i][k]));
             return py::make_tuple(totals.loss_sum, totals.correct, totals.seen, crcs);
           },
           py::arg("x"), py::arg("y"), py::arg("order"), py::arg("batch_size"), py::arg("step_begin"),
           py::arg("step_end"), py::arg("iterations"), py::arg("snapshot") = py::none(),
           py::arg("targets") = py::none())
      .def("evaluate",
           [](PyTrainer& self, py::array x, py::array y, int bs) {
             const int64_t n = y.size();
             if (bs <= 0) throw py::value_error("batch size must be positive");
             const float* px = cdata_of<float>(x, n * self.input_width, "x");
             const int32_t* py_ = cdata_of<int32_t>(y, n, "y");
             fastckpt::StepTotals totals;
             {
               py::gil_scoped_release nogil;
               self.impl->evaluate(px, py_, n, bs, &totals);
             }
             return py::make_tuple(totals.loss_sum, totals.correct, totals.seen);
           })
      // Frees the per-layer workspaces (peak RSS: validation sized them for a whole pass).
      .def("release_workspace", [](PyTrainer& self) { self.impl->release_workspace(); })
      .def("dropout_offsets", [](PyTrainer& self) {
        std::vector<uint64_t> out;
        for (auto& l : self.impl->layers())
          if (l.kind == fastckpt::TrainerLayer::kDropout) out.push_back(l.offset);
        return out;
      })
      .def("set_dropout_state", [](PyTrainer& self, std::vector<std::pair<uint64_t, uint64_t>> st) {
        size_t i = 0;
        for (auto& l : self.impl->layers())
          if (l.kind == fastckpt::TrainerLayer::kDropout) {
            if (i >= st.size()) throw py::value_error("dropout state list too short");
            l.seed = st[i].first;
            l.offset = st[i].second;
            ++i;
          }
      });
}
