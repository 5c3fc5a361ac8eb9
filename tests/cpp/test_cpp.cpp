// The C++ wrapper, and what needs files or threads: corrupt and missing files, misaligned weights,
// copies instead of mappings, a TensorFlow-written checkpoint, concurrent predict, plan fuzzing.
// Usage: test_cpp FIXTURES_DIR (written by make_fixtures.py).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fastckpt/fastckpt.hpp"

namespace fs = std::filesystem;

static int failures = 0;
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n";     \
      ++failures;                                                                    \
    }                                                                                \
  } while (0)

static fs::path fixtures, scratch;

static std::vector<float> read_f32(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<float> v(fs::file_size(p) / sizeof(float));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

static std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

static double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// The status of a call through the wrapper (FCKPT_OK when it does not throw); keeps the message.
template <class F>
static fckpt_status status_of(F&& f, std::string* msg = nullptr) {
  try {
    f();
    return FCKPT_OK;
  } catch (const fastckpt::Error& e) {
    if (msg) *msg = e.what();
    return e.status;
  }
}

// A fresh copy of a fixture checkpoint (prefix `name` under fixtures/weights) to damage.
static std::string copy_ckpt(const std::string& tag) {
  const fs::path d = scratch / tag;
  fs::remove_all(d);
  fs::create_directories(d);
  for (const char* suffix : {".index", ".data-00000-of-00001"})
    fs::copy_file(fixtures / "weights" / (std::string("cp.ckpt") + suffix), d / (std::string("cp.ckpt") + suffix));
  return (d / "cp.ckpt").string();
}

static void flip_byte(const std::string& file, uint64_t at) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(at));
  f.put(static_cast<char>(c ^ 0x5a));
}

static const std::vector<float>& inputs() { static auto x = read_f32(fixtures / "x.f32"); return x; }
static const std::vector<float>& expected() { static auto y = read_f32(fixtures / "y32.f32"); return y; }

static void test_wrapper_and_threads() {
  const auto m = fastckpt::Model::load_dir((fixtures / "model").string());
  const int64_t rows = static_cast<int64_t>(inputs().size()) / m.n_inputs();
  CHECK(max_diff(m.predict(inputs(), rows), expected()) <= 1e-6);
  std::string msg;
  CHECK(status_of([&] { m.predict(std::vector<float>(10), 1); }, &msg) == FCKPT_ERR_INVALID_ARGUMENT);
  // One model, several threads, each predicting different slices many times.
  std::vector<std::thread> pool;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      for (int it = 0; it < 20; ++it) {
        const int64_t r0 = (t * 7 + it) % rows, n = std::min<int64_t>(rows - r0, 1 + (it * 13) % 40);
        std::vector<float> out(static_cast<size_t>(n * 10));
        if (fckpt_model_predict(m.get(), inputs().data() + r0 * 784, n, 784, out.data(), n * 10) != FCKPT_OK) ++bad[t];
        // Row results depend only on the pass they were computed in; compare rows of a fresh pass.
        const std::vector<float> again = m.predict(std::vector<float>(inputs().begin() + r0 * 784, inputs().begin() + (r0 + n) * 784), n);
        if (again != out) ++bad[t];
        if (max_diff(out, std::vector<float>(expected().begin() + r0 * 10, expected().begin() + (r0 + n) * 10)) > 1e-5) ++bad[t];
      }
    });
  for (auto& th : pool) th.join();
  for (int b : bad) CHECK(b == 0);
}

static void test_copy_paths() {
  fckpt_model_params p = fckpt_model_default_params();
  p.use_mmap = false;
  const auto copied = fastckpt::Model::load_dir((fixtures / "model").string(), p);
  int64_t mapped = -1, bytes = -1;
  CHECK(fckpt_model_weight_bytes(copied.get(), &mapped, &bytes) == FCKPT_OK && mapped == 0 && bytes > 0);
  CHECK(max_diff(copied.predict(inputs(), 100), expected()) <= 1e-6);
  // Every float is one byte off a 4-byte boundary: copied once, same results.
  const auto unaligned = fastckpt::Model::load_checkpoint((fixtures / "unaligned" / "ckpt").string());
  CHECK(fckpt_model_weight_bytes(unaligned.get(), &mapped, &bytes) == FCKPT_OK && mapped == 0 && bytes > 0);
  CHECK(max_diff(unaligned.predict(inputs(), 100), expected()) <= 1e-6);
}

// The TensorFlow checkpoint prefix the fixture generator recorded in info.txt.
static std::string fixture_tf_ckpt() {
  std::ifstream info(fixtures / "info.txt");
  for (std::string k, v; info >> k >> v;)
    if (k == "tf_ckpt") return v;
  return {};
}

// 1 to 4 random edits (replace, erase up to 8, insert) of `base`, with characters from `alphabet`.
static std::string mutate(const std::string& base, const std::string& alphabet, std::mt19937& rng) {
  std::string p = base;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !p.empty(); ++e) {
    const size_t at = rng() % p.size();
    switch (rng() % 3) {
      case 0: p[at] = alphabet[rng() % alphabet.size()]; break;
      case 1: p.erase(at, 1 + rng() % 8); break;
      default: p.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
    }
  }
  return p;
}

static void test_tensorflow_checkpoint() {
  const std::string tf_ckpt = fixture_tf_ckpt();
  const std::string plan = read_text(fixtures / "tf.plan");
  std::string msg;
  CHECK(status_of([&] { fastckpt::Model::load_checkpoint(tf_ckpt); }, &msg) == FCKPT_ERR_PLAN);
  CHECK(msg.find("no inference plan") != std::string::npos);
  const auto m = fastckpt::Model::load_checkpoint(tf_ckpt, plan);
  CHECK(m.n_inputs() == 4 && m.n_outputs() == 2);
  const double d = max_diff(m.predict(read_f32(fixtures / "tf_x.f32"), 16), read_f32(fixtures / "tf_y.f32"));
  std::cout << "TensorFlow-written checkpoint + plan vs fastckpt Python: max |diff| = " << d << "\n";
  CHECK(d <= 1e-6);
}

static void test_damaged_files() {
  std::string msg;
  auto load = [&](const std::string& prefix, bool verify_all = false) {
    fckpt_model_params p = fckpt_model_default_params();
    p.verify_all = verify_all;
    return status_of([&] { fastckpt::Model::load_checkpoint(prefix, {}, p); }, &msg);
  };
  // A flipped byte in the first kernel (written first, at offset 0 of the shard).
  std::string c = copy_ckpt("kernel_flip");
  flip_byte(c + ".data-00000-of-00001", 1000);
  CHECK(load(c) == FCKPT_ERR_CORRUPT && msg.find("checksum mismatch") != std::string::npos);
  std::cout << "corrupt shard: " << msg << "\n";
  // The plan is CRC-checked like the weights.
  c = copy_ckpt("plan_flip");
  const std::string shard = read_text(c + ".data-00000-of-00001");
  const size_t plan_at = shard.find("fastckpt-plan 1\ninput");
  CHECK(plan_at != std::string::npos);
  flip_byte(c + ".data-00000-of-00001", plan_at + 20);
  CHECK(load(c) == FCKPT_ERR_CORRUPT && msg.find("_fastckpt/inference_plan") != std::string::npos);
  // Optimizer state is not read for inference: its damage shows only with verify_all.
  c = copy_ckpt("optimizer_flip");
  const size_t slot_at = shard.size() / 2 + 7;  // inside Adam's m/v of the first kernel
  CHECK(slot_at < plan_at);
  flip_byte(c + ".data-00000-of-00001", slot_at);
  CHECK(load(c) == FCKPT_OK);
  CHECK(load(c, true) == FCKPT_ERR_CORRUPT && msg.find("optimizer") != std::string::npos);
  // Damaged index bytes: either an error, or (the footer's zero padding, which TensorFlow ignores
  // too) a model that still predicts exactly the same: never a silently different model.
  c = copy_ckpt("index_flip");
  for (uint64_t at = 0; at < fs::file_size(c + ".index"); at += 7) {
    const std::string d = copy_ckpt("index_flip_at");
    flip_byte(d + ".index", at);
    const fckpt_status s = load(d);
    if (s == FCKPT_OK) {
      CHECK(max_diff(fastckpt::Model::load_checkpoint(d).predict(inputs(), 100), expected()) == 0);
    } else {
      CHECK(s == FCKPT_ERR_CORRUPT || s == FCKPT_ERR_NOT_FOUND);  // num_shards changed -> missing shard
    }
  }
  // A truncated shard: entries point past its end.
  c = copy_ckpt("truncated");
  fs::resize_file(c + ".data-00000-of-00001", shard.size() / 3);
  CHECK(load(c) == FCKPT_ERR_CORRUPT && msg.find("outside") != std::string::npos);
  // Missing files.
  c = copy_ckpt("no_shard");
  fs::remove(c + ".data-00000-of-00001");
  CHECK(load(c) == FCKPT_ERR_NOT_FOUND && msg.find("missing data shard") != std::string::npos);
  c = copy_ckpt("no_index");
  fs::remove(c + ".index");
  CHECK(load(c) == FCKPT_ERR_NOT_FOUND);
  // A model directory without its variables.
  fs::remove_all(scratch / "dir_novars");
  fs::copy(fixtures / "model", scratch / "dir_novars", fs::copy_options::recursive);
  fs::remove_all(scratch / "dir_novars" / "variables");
  CHECK(status_of([&] { fastckpt::Model::load_dir((scratch / "dir_novars").string()); }, &msg) == FCKPT_ERR_NOT_FOUND);
}

// Loads plan `p` over checkpoint `ckpt`; a plan that loads runs predict on 2 rows of zeros of its
// own declared widths (0 is 0.0f and id 0), through fckpt_model_predict too when it has one float
// input and one output. Every result must be a clean status (ASan/UBSan watch the parser and the
// kernels). Returns whether the plan loaded.
static bool load_and_check_plan(const std::string& ckpt, const std::string& p) {
  fckpt_model* m = nullptr;
  const fckpt_status s = fckpt_model_load_checkpoint(ckpt.c_str(), p.c_str(), fckpt_model_default_params(), &m);
  CHECK(s == FCKPT_OK || s == FCKPT_ERR_PLAN || s == FCKPT_ERR_MISMATCH);
  CHECK((s == FCKPT_OK) == (m != nullptr));
  if (!m) return false;
  std::vector<std::vector<int32_t>> xs;
  std::vector<const void*> in;
  for (int64_t k = 0; k < fckpt_model_n_named_inputs(m); ++k) {
    xs.emplace_back(static_cast<size_t>(2 * fckpt_model_input_width(m, k)), 0);
    in.push_back(xs.back().data());
  }
  std::vector<std::vector<float>> ys;
  std::vector<float*> out;
  std::vector<int64_t> caps;
  for (int64_t k = 0; k < fckpt_model_n_named_outputs(m); ++k) {
    ys.emplace_back(static_cast<size_t>(2 * fckpt_model_output_width(m, k)));
    out.push_back(ys.back().data());
    caps.push_back(static_cast<int64_t>(ys.back().size()));
  }
  const fckpt_status ps = fckpt_model_predict_multi(m, in.data(), 2, out.data(), caps.data());
  CHECK(ps == FCKPT_OK || ps == FCKPT_ERR_INVALID_ARGUMENT);  // an id out of a tiny vocabulary
  if (fckpt_model_n_named_inputs(m) == 1 && fckpt_model_n_named_outputs(m) == 1 && !fckpt_model_input_is_int(m, 0)) {
    const int64_t ni = fckpt_model_n_inputs(m), no = fckpt_model_n_outputs(m);
    std::vector<float> x(static_cast<size_t>(ni), 0.5f), y(static_cast<size_t>(no));
    CHECK(fckpt_model_predict(m, x.data(), 1, ni, y.data(), no) == FCKPT_OK);
  }
  fckpt_model_free(m);
  return true;
}

// `n` random edits of `base`; returns how many still loaded.
static int fuzz_plans(const std::string& ckpt, const std::string& base, const std::string& alphabet, unsigned seed, int n) {
  std::mt19937 rng(seed);
  int ok = 0;
  for (int i = 0; i < n; ++i) ok += load_and_check_plan(ckpt, mutate(base, alphabet, rng));
  return ok;
}

// Random edits of a valid plan: every result is a clean status.
static void test_plan_fuzz() {
  const std::string base = read_text(fixtures / "tf.plan");
  const int ok = fuzz_plans(fixture_tf_ckpt(), base, " \n\r\t#-.0123456789aeinprtdlx\x01\xff", 12345, 3000);
  std::cout << "plan fuzz: 3000 mutated plans, " << ok << " still valid, no crash\n";
}

static const std::string K = "layer_with_weights-", T = "/.ATTRIBUTES/VARIABLE_VALUE";

// The same for a version 2 plan over the TensorFlow checkpoint: several ops, three outputs. Every
// model that still loads runs predict_multi on inputs of its own declared widths.
static void test_plan_v2_fuzz() {
  const std::string tf_ckpt = fixture_tf_ckpt();
  const std::string base = "fastckpt-plan 2\ninput x 4 float\nnode h dense x 3 relu " + K + "0/kernel" + T + " " + K +
                           "0/bias" + T + "\nnode r relu h 0.1 0.5 0.0\nnode s softmax h\nnode c concat h,r,s\n"
                           "node a add h,r\nnode e elu a 1.0\nnode d identity e\nnode y dense d 2 linear " + K +
                           "1/kernel" + T + " " + K + "1/bias" + T + "\nnode q rescaling c 2.0 -1.0\n"
                           "node g gap1d c 3\nnode m maximum g,s\noutput y y\noutput c q\noutput g m\n";
  {
    const auto model = fastckpt::Model::load_checkpoint(tf_ckpt, base);
    CHECK(model.n_named_inputs() == 1 && model.n_named_outputs() == 3);
    CHECK(model.output_name(1) == "c" && model.output_width(1) == 9 && model.output_width(2) == 3);
    const std::vector<float> x(8, 0.25f);
    const auto ys = model.predict_multi({x.data()}, 2);
    CHECK(ys.size() == 3 && ys[0].size() == 4 && ys[1].size() == 18 && ys[2].size() == 6);
  }
  const int ok = fuzz_plans(tf_ckpt, base, " \n\r\t#-.,0123456789aceghimnoprstuxydfl\x01\xff", 54321, 3000);
  std::cout << "plan v2 fuzz: 3000 mutated plans, " << ok << " still valid, no crash\n";
}

// Version 3: ops on steps (rank-3 tensors), axes, broadcasting, transpose. The kernel of layer 0
// is (4, 3), its bias (3,); layer 1's kernel (3, 2) doubles as an embedding table (vocab 3, dim 2).
static std::string v3_plan() {
  const std::string k0 = K + "0/kernel" + T, b0 = K + "0/bias" + T, k1 = K + "1/kernel" + T, b1 = K + "1/bias" + T;
  return "fastckpt-plan 3\ninput x 12 float\ninput ids 6 int\n"
         "node h dense x 3 relu " + k0 + " " + b0 + " 4\n"                  // (3 steps, 4) -> (3, 3)
         "node l layernorm h 0.001 " + b0 + " - 3\n"
         "node b batchnorm l 0.001 " + b0 + " " + b0 + " " + b0 + " " + k0 + " 3 1\n"  // k0: 12 values, not 3
         "node n normalize h 0.001 1 " + b0 + " " + b0 + " 3 3\n"           // over the steps axis
         "node s softmax h 3 3\nnode a activation h log_softmax 3\n"
         "node p prelu h " + b0 + " 3x3 1x3\nnode t transpose p 3 3\n"
         "node c concat h,t 3\nnode g gmp1d h 3\nnode m multiply h,g 3x3,1x3\n"
         "node y dense c 2 linear " + k1 + " " + b1 + " 3\n"                  // (6 steps, 3) -> (6, 2)
         "node e embedding ids 3 2 " + k1 + "\nnode v gap1d e,ids 6\n"
         "node r rescaling h 0.5,2,-1 0.25,0,1 3x3 1x3\n"
         "output y y\noutput s s\noutput a a\noutput m m\noutput n n\noutput v v\noutput r r\n";
}

// Loading `plan` over `ckpt` gives a plan (or mismatch) error whose message contains `want`.
static void expect_plan_error(const std::string& ckpt, const std::string& plan, const char* want) {
  std::string m;
  const fckpt_status st = status_of([&] { fastckpt::Model::load_checkpoint(ckpt, plan); }, &m);
  const bool ok = (st == FCKPT_ERR_PLAN || st == FCKPT_ERR_MISMATCH) && m.find(want) != std::string::npos;
  if (!ok) std::cerr << "expected '" << want << "', got: " << m << "\n";
  CHECK(ok);
}

static void test_plan_v3() {
  const std::string tf_ckpt = fixture_tf_ckpt();
  std::string plan = v3_plan(), msg;
  // batchnorm's variance of the wrong size: a typed mismatch, nothing read out of bounds.
  CHECK(status_of([&] { fastckpt::Model::load_checkpoint(tf_ckpt, plan); }, &msg) == FCKPT_ERR_MISMATCH);
  CHECK(msg.find("plan line 6") != std::string::npos && msg.find("expected shape (3,)") != std::string::npos);
  const std::string k0 = K + "0/kernel" + T, b0 = K + "0/bias" + T;
  plan.replace(plan.find(" " + k0 + " 3 1\n"), k0.size() + 6, " " + b0 + " 3 1\n");
  const auto model = fastckpt::Model::load_checkpoint(tf_ckpt, plan);
  CHECK(model.n_named_inputs() == 2 && model.n_named_outputs() == 7);
  CHECK(model.output_width(0) == 12 && model.output_width(3) == 9 && model.output_width(5) == 2);
  // The broadcast product and the per-step softmaxes, against a direct computation.
  std::vector<float> x(24);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7f * static_cast<float>(i));
  const std::vector<int32_t> ids = {1, 0, 2, 2, 0, 1, 0, 0, 0, 0, 0, 0};
  const auto ys = model.predict_multi({x.data(), ids.data()}, 2);
  const auto h = fastckpt::Model::load_checkpoint(tf_ckpt, "fastckpt-plan 3\ninput x 12 float\nnode h dense x 3 relu " +
                                                                 k0 + " " + b0 + " 4\noutput h h\n")
                     .predict(x, 2);
  double bad = 0;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) {
      float g = -INFINITY, se = 0, mx = -INFINITY;
      for (int st = 0; st < 3; ++st) g = std::fmax(g, h[r * 9 + st * 3 + c]);
      for (int st = 0; st < 3; ++st) {
        const int i = r * 9 + st * 3 + c;
        bad = std::fmax(bad, std::fabs(ys[3][i] - h[i] * g));
      }
      for (int k = 0; k < 3; ++k) mx = std::fmax(mx, h[r * 9 + c * 3 + k]);  // step c, last axis
      for (int k = 0; k < 3; ++k) se += std::exp(h[r * 9 + c * 3 + k] - mx);
      for (int k = 0; k < 3; ++k) {
        const int i = r * 9 + c * 3 + k;
        bad = std::fmax(bad, std::fabs(ys[2][i] - (h[i] - mx - std::log(se))));
      }
    }
  const float sc[3] = {0.5f, 2.f, -1.f}, of[3] = {0.25f, 0.f, 1.f};
  for (int i = 0; i < 18; ++i) bad = std::fmax(bad, std::fabs(ys[6][i] - (h[i] * sc[i % 3] + of[i % 3])));
  CHECK(bad <= 1e-5);
  // Row 1's ids are all 0: the masked average is 0 / 0.
  CHECK(std::isnan(ys[5][2]) && std::isnan(ys[5][3]) && !std::isnan(ys[5][0]));
  // Hostile version 3 arguments: typed errors.
  auto plan_error = [&](const std::string& p, const char* want) { expect_plan_error(tf_ckpt, p, want); };
  const std::string head = "fastckpt-plan 3\ninput x 12 float\n";
  plan_error("fastckpt-plan 2\ninput x 12 float\nnode h dense x 3 relu " + k0 + " - 4\noutput h h\n", "needs plan version 3");
  plan_error("fastckpt-plan 2\ninput x 12 float\nnode t transpose x 3 4\noutput t t\n", "needs plan version 3");
  plan_error(head + "node h dense x 3 relu " + k0 + " - 5\noutput h h\n", "does not divide");
  plan_error(head + "node h dense x 3 relu " + k0 + " - 6\noutput h h\n", "expected shape (6, 3)");
  plan_error(head + "node t transpose x 5 2\noutput t t\n", "does not divide");
  plan_error(head + "node s softmax x 4 4\noutput s s\n", "does not divide");
  plan_error(head + "node s softmax x 0 4\noutput s s\n", "axis size");
  plan_error(head + "node c concat x,x 5\noutput c c\n", "not a multiple");
  plan_error(head + "node m add x,x 3x4,2x6\noutput m m\n", "do not broadcast");
  plan_error(head + "node m add x,x 3x4,3x4x1x1x1x1x1x1x1\noutput m m\n", "more than 8 dims");
  plan_error(head + "node m add x,x 3x4\noutput m m\n", "one dims per input");
  plan_error(head + "node m add x,x 3x5,3x4\noutput m m\n", "do not make its width");
  plan_error(head + "node m add x,x 16777216x16777216,3x4\noutput m m\n", "holds more than");
  plan_error(head + "node p prelu x " + b0 + " 3x4 1x3\noutput p p\n", "do not broadcast");
  plan_error(head + "node p prelu x " + b0 + " 3x4 3\noutput p p\n", "differ in rank");
  plan_error(head + "node p prelu x " + b0 + " 3x4 1x4\noutput p p\n", "expected shape (4,)");
  plan_error(head + "node l layernorm x 0.001 " + b0 + " - 5\noutput l l\n", "does not divide");
  plan_error(head + "node l layernorm x 0.001 " + b0 + " - 4\noutput l l\n", "expected shape (4,)");
  plan_error(head + "node n normalize x 0.001 0 " + b0 + " " + b0 + " 4 1\noutput n n\n", "expected shape (4,)");
  plan_error(head + "node a activation x softmax 7\noutput a a\n", "does not divide");
  plan_error(head + "node r rescaling x 1,2 0,0,0 3x4 3x1\noutput r r\n", "expected 3 comma-separated values of scales");
  plan_error(head + "node r rescaling x 1,2,3 0,0 3x4 3x1\noutput r r\n", "values of offsets");
  plan_error(head + "node r rescaling x 1,2,nan 0,0,0 3x4 3x1\noutput r r\n", "finite decimal");
  plan_error(head + "node r rescaling x 1,2,1e39 0,0,0 3x4 3x1\noutput r r\n", "fit a float32");
  plan_error(head + "node r rescaling x 1,2,3 0,0,0 3x4 1x3\noutput r r\n", "do not broadcast");
  plan_error("fastckpt-plan 2\ninput x 12 float\nnode r rescaling x 1,2,3 0,0,0 3x4 3x1\noutput r r\n",
             "needs plan version 3");
}

static void test_plan_v3_fuzz() {
  std::string plan = v3_plan();
  const std::string k0 = K + "0/kernel" + T, b0 = K + "0/bias" + T;
  plan.replace(plan.find(" " + k0 + " 3 1\n"), k0.size() + 6, " " + b0 + " 3 1\n");
  const int ok = fuzz_plans(fixture_tf_ckpt(), plan, " \n\r\t#-.,x0123456789aceghimnoprstuvxydfl\x01\xff", 777, 3000);
  std::cout << "plan v3 fuzz: 3000 mutated plans, " << ok << " still valid, no crash\n";
}

// Version 4: Normalization constants carried by the plan, LayerNormalization over non-trailing
// axes, masks merged from several ids.
static std::string v4_plan() {
  const std::string k1 = K + "1/kernel" + T, b0 = K + "0/bias" + T;
  return "fastckpt-plan 4\ninput x 12 float\ninput ids 6 int\ninput ids2 6 int\n"
         "node n normalize_values x 1e-07 0 1,-2,0.5 4,0.25,1e-16 3 4\n"      // per axis-1 entry of (3, 4)
         "node i normalize_values x 1e-07 1 0.5 2.0 1 12\n"                    // axis=None, inverted
         "node l layernorm x 0.001 " + b0 + " " + b0 + " 3 4\n"               // over axis 1 of (3, 4)
         "node e embedding ids 3 2 " + k1 + "\nnode v gap1d e,ids,ids2 6\n"
         "output n n\noutput i i\noutput l l\noutput v v\n";
}

static void test_plan_v4() {
  const std::string tf_ckpt = fixture_tf_ckpt();
  const std::string k1 = K + "1/kernel" + T, b0 = K + "0/bias" + T;
  const auto model = fastckpt::Model::load_checkpoint(tf_ckpt, v4_plan());
  CHECK(model.n_named_inputs() == 3 && model.n_named_outputs() == 4);
  std::vector<float> x(24);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 2.f * std::sin(0.9f * static_cast<float>(i)) + 0.3f;
  const std::vector<int32_t> ids = {1, 0, 2, 2, 0, 1, 0, 0, 0, 0, 0, 0};
  const std::vector<int32_t> ids2 = {3, 3, 0, 3, 3, 0, 1, 1, 1, 1, 1, 1};
  const auto ys = model.predict_multi({x.data(), ids.data(), ids2.data()}, 2);
  double bad = 0;
  const float mean[3] = {1.f, -2.f, 0.5f}, var[3] = {4.f, 0.25f, 1e-16f};
  for (int i = 0; i < 24; ++i) {
    const int c = (i % 12) / 4;
    const float sd = std::fmax(std::sqrt(var[c]), 1e-7f);
    bad = std::fmax(bad, std::fabs(ys[0][i] - (x[i] - mean[c]) / sd) / std::fmax(1.f, std::fabs(ys[0][i])));
    bad = std::fmax(bad, std::fabs(ys[1][i] - (0.5f + x[i] * std::sqrt(2.f))));
  }
  // The non-trailing layernorm equals transpose -> trailing layernorm -> transpose back.
  const auto ref = fastckpt::Model::load_checkpoint(
      tf_ckpt, "fastckpt-plan 3\ninput x 12 float\nnode t transpose x 3 4\nnode l layernorm t 0.001 " + b0 + " " + b0 +
                   " 3\nnode u transpose l 4 3\noutput u u\n").predict(x, 2);
  for (int i = 0; i < 24; ++i) bad = std::fmax(bad, std::fabs(ys[2][i] - ref[i]));
  // The merged mask: steps where both ids are non-zero.
  std::vector<int32_t> both(12);
  for (int i = 0; i < 12; ++i) both[i] = ids2[i] != 0 ? ids[i] : 0;
  const auto one = fastckpt::Model::load_checkpoint(
      tf_ckpt, "fastckpt-plan 2\ninput ids 6 int\ninput m 6 int\nnode e embedding ids 3 2 " + k1 +
                   "\nnode v gap1d e,m 6\noutput v v\n").predict_multi({ids.data(), both.data()}, 2);
  CHECK(!std::isnan(ys[3][0]) && std::isnan(ys[3][2]));  // row 1: no step is left
  bad = std::fmax(bad, std::fabs(ys[3][0] - one[0][0]) + std::fabs(ys[3][1] - one[0][1]));
  CHECK(bad <= 1e-5);
  if (bad > 1e-5) std::cerr << "v4 max error " << bad << "\n";
  auto plan_error = [&](const std::string& p, const char* want) { expect_plan_error(tf_ckpt, p, want); };
  const std::string head = "fastckpt-plan 4\ninput x 12 float\n", v3 = "fastckpt-plan 3\ninput x 12 float\n";
  plan_error("fastckpt-plan 5\ninput x 12 float\n", "newer than this runtime reads (4)");
  plan_error(v3 + "node n normalize_values x 1e-07 0 1,2,3 1,1,1 3 4\noutput n n\n", "needs plan version 4");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2 1,1,1 3 4\noutput n n\n", "expected 3 comma-separated means");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,1 3 4\noutput n n\n", "comma-separated variances");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3,4 1,1,1 3 4\noutput n n\n", "comma-separated means");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,1,1, 3 4\noutput n n\n", "comma-separated variances");
  plan_error(head + "node n normalize_values x 1e-07 0 1,inf,3 1,1,1 3 4\noutput n n\n", "finite decimal");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,-1,1 3 4\noutput n n\n", "is negative");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,1e39,1 3 4\noutput n n\n", "fit a float32");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,1,1 3 5\noutput n n\n", "does not divide");
  plan_error(head + "node n normalize_values x 1e-07 2 1,2,3 1,1,1 3 4\noutput n n\n", "invert as 0 or 1");
  plan_error(head + "node n normalize_values x 1e-07 0 1,2,3 1,1,1 3\noutput n n\n", "expected 'node <name> normalize_values");
  plan_error(v3 + "node l layernorm x 0.001 - - 3 4\noutput l l\n", "needs plan version 4");
  plan_error(head + "node l layernorm x 0.001 - - 5 4\noutput l l\n", "does not divide");
  plan_error(head + "node l layernorm x 0.001 " + b0 + " - 2 6\noutput l l\n", "expected shape (2,)");
  plan_error(head + "node l layernorm x 0.001 - - 0 4\noutput l l\n", "axis size");
  const std::string ids3 = "input ids 6 int\ninput ids2 6 int\ninput f 6 float\nnode e embedding ids 3 2 " + k1 + "\n";
  plan_error("fastckpt-plan 3\n" + ids3 + "node v gap1d e,ids,ids2 6\noutput v v\n", "needs plan version 4");
  plan_error("fastckpt-plan 4\n" + ids3 + "node v gap1d e,ids,f 6\noutput v v\n", "must be int ids");
  plan_error("fastckpt-plan 4\ninput ids 6 int\ninput j 5 int\nnode e embedding ids 3 2 " + k1 +
                 "\nnode v gap1d e,ids,j 6\noutput v v\n", "must be int ids of width 6");
  plan_error("fastckpt-plan 4\n" + ids3 + "node v gmp1d e,ids,ids2 6\noutput v v\n", "holds int ids");
  // Random edits of the version 4 plan: clean statuses only (ASan/UBSan run this too).
  const int ok = fuzz_plans(tf_ckpt, v4_plan(), " \n\r\t#-.,x0123456789abdeilmnorstuvyz_\x01\xff", 4444, 3000);
  std::cout << "plan v4 fuzz: 3000 mutated plans, " << ok << " still valid, no crash\n";
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " FIXTURES_DIR\n";
    return 2;
  }
  fixtures = argv[1];
  scratch = fs::temp_directory_path() / ("fastckpt_test_cpp_" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  test_wrapper_and_threads();
  test_copy_paths();
  test_tensorflow_checkpoint();
  test_damaged_files();
  test_plan_fuzz();
  test_plan_v2_fuzz();
  test_plan_v3();
  test_plan_v3_fuzz();
  test_plan_v4();
  fs::remove_all(scratch);
  if (failures) std::cerr << failures << " check(s) failed\n";
  else std::cout << "all C++ checks passed\n";
  return failures ? 1 : 0;
}
