// Load time and predict latency of libfastckpt for one model directory; medians of repeats.
//   embed_latency MODEL_DIR  ->  "key value" lines (milliseconds), parsed by bench/embed_latency.py
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <fastckpt/fastckpt.hpp>

template <class F>
static double median_ms(int reps, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  try {
    std::printf("load_ms %.4f\n", median_ms(21, [&] { fastckpt::Model::load_dir(argv[1]); }));
    for (int batch_size : {32, 0}) {
      fckpt_model_params p = fckpt_model_default_params();
      p.batch_size = batch_size;
      const auto m = fastckpt::Model::load_dir(argv[1], p);
      for (int64_t rows : {1, 1000}) {
        std::vector<float> x(static_cast<size_t>(rows * m.n_inputs()));
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 255) / 255.f;
        std::vector<float> y(static_cast<size_t>(rows * m.n_outputs()));
        m.predict(x.data(), rows, y.data(), static_cast<int64_t>(y.size()));  // warm-up
        const double ms = median_ms(rows == 1 ? 501 : 31, [&] { m.predict(x.data(), rows, y.data(), static_cast<int64_t>(y.size())); });
        std::printf("predict_%lld_bs%d_ms %.4f\n", static_cast<long long>(rows), batch_size, ms);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
