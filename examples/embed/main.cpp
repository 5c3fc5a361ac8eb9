// Loads a model directory saved from Python (model.save("my_model")) and prints its predictions
// for the rows of a text file (one row of whitespace-separated numbers per line).
//   embed_predict my_model inputs.txt
// A model with several inputs (or int ids) reads each line as its inputs one after the other, in
// the order of fckpt_model_input_name(0, 1, ...), and prints its outputs one after the other.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
#include <cstdint>
#include <stdexcept>

#include <fastckpt/fastckpt.hpp>

// Several inputs and outputs: one predict_multi call for the whole file.
static int predict_multi(const fastckpt::Model& model, std::istream& in) {
  const int64_t n_in = model.n_named_inputs(), n_out = model.n_named_outputs();
  int64_t row_width = 0;
  for (int64_t i = 0; i < n_in; ++i) row_width += model.input_width(i);
  std::vector<std::vector<float>> xf(static_cast<size_t>(n_in));
  std::vector<std::vector<int32_t>> xi(static_cast<size_t>(n_in));
  int64_t rows = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::vector<double> v;
    for (double d; fields >> d;) v.push_back(d);
    if (v.empty()) continue;
    if (static_cast<int64_t>(v.size()) != row_width)
      throw std::runtime_error("line with " + std::to_string(v.size()) + " values; the inputs take " +
                               std::to_string(row_width));
    size_t at = 0;
    for (int64_t i = 0; i < n_in; ++i)
      for (int64_t k = 0; k < model.input_width(i); ++k, ++at) {
        if (!model.input_is_int(i)) {
          xf[i].push_back(static_cast<float>(v[at]));
        } else {
          if (!(v[at] >= -2147483648.0 && v[at] <= 2147483647.0) || v[at] != static_cast<int32_t>(v[at]))
            throw std::runtime_error("input '" + model.input_name(i) + "': " + std::to_string(v[at]) + " is not an int32 id");
          xi[i].push_back(static_cast<int32_t>(v[at]));
        }
      }
    ++rows;
  }
  std::vector<const void*> ptrs;
  for (int64_t i = 0; i < n_in; ++i)
    ptrs.push_back(model.input_is_int(i) ? static_cast<const void*>(xi[i].data()) : xf[i].data());
  const std::vector<std::vector<float>> ys = model.predict_multi(ptrs, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n_out; ++j) {
      const int64_t w = model.output_width(j);
      for (int64_t k = 0; k < w; ++k)
        std::printf("%.9g%c", ys[j][r * w + k], j + 1 == n_out && k + 1 == w ? '\n' : ' ');
    }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR INPUTS.txt\n";
    return 2;
  }
  try {
    const fastckpt::Model model = fastckpt::Model::load_dir(argv[1]);
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[2]);
    if (model.n_named_inputs() != 1 || model.n_named_outputs() != 1 || model.input_is_int(0))
      return predict_multi(model, in);
    std::vector<float> x;
    int64_t rows = 0;
    for (std::string line; std::getline(in, line);) {
      const size_t before = x.size();
      std::istringstream fields(line);
      for (float v; fields >> v;) x.push_back(v);
      rows += x.size() > before;  // blank lines are not rows
    }
    // The whole file is one predict call: Keras' batch size of 32 applies inside it.
    const std::vector<float> y = model.predict(x, rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < model.n_outputs(); ++j)
        std::printf("%.9g%c", y[r * model.n_outputs() + j], j + 1 == model.n_outputs() ? '\n' : ' ');
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
