#include <pybind11/pybind11.h>

#include "kernels/blas.h"
#include "kernels/threading.h"

#ifndef FASTCKPT_COMPILER
#define FASTCKPT_COMPILER "unknown"
#endif

namespace py = pybind11;

void bind_config(py::module_& m) {
  m.def("num_threads", &fastckpt::configured_num_threads);
  // While a background job runs (ModelCheckpoint's writer), kernels use one thread fewer.
  m.def("background_begin", &fastckpt::background_begin);
  m.def("background_end", &fastckpt::background_end);
  m.def("background_jobs", &fastckpt::background_jobs);
  m.def("set_num_threads", &fastckpt::set_num_threads, py::arg("n"));
  // Packed weights in predict passes (blas.h, PackedB): off unless FASTCKPT_PACKED_GEMM=1 or this.
  m.def("set_blas_packed_b", &fastckpt::blas_set_packed_b, py::arg("on"));
  m.def("build_info", []() {
    py::dict d;
    d["blas"] = fastckpt::blas_vendor();
    d["blas_config"] = fastckpt::blas_config();
    d["blas_packed_b_available"] = fastckpt::blas_packed_b_available();
    d["blas_packed_b"] = fastckpt::blas_packed_b_enabled();
    d["openmp"] = fastckpt::openmp_enabled();
    d["compiler"] = FASTCKPT_COMPILER;
#ifdef NDEBUG
    d["debug"] = false;
#else
    d["debug"] = true;
#endif
    return d;
  });
}
