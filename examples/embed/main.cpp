// Loads a model directory saved from Python (model.save("my_model")) and prints its predictions
// for the rows of a text file (one row of whitespace-separated numbers per line).
//   embed_predict my_model inputs.txt
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <fastckpt/fastckpt.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR INPUTS.txt\n";
    return 2;
  }
  try {
    const fastckpt::Model model = fastckpt::Model::load_dir(argv[1]);
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[2]);
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
