// Argument checks shared by the bindings. Python (fastckpt/ops.py) validates and explains first;
// these are the last line against undefined behaviour if a caller bypasses it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace fastckpt::py_detail {

namespace py = pybind11;

template <typename T>
T* data_of(py::array& a, int64_t min_elems, const char* name, bool writable) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
    throw py::type_error(std::string(name) + ": expected a C-contiguous " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + " array, got " +
                         py::str(a.dtype()).cast<std::string>());
  if (a.size() < min_elems)
    throw py::value_error(std::string(name) + ": expected at least " + std::to_string(min_elems) +
                          " elements, got " + std::to_string(a.size()));
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": array is read-only");
  return static_cast<T*>(a.mutable_data());
}

template <typename T>
const T* cdata_of(py::array& a, int64_t min_elems, const char* name) {
  return data_of<T>(a, min_elems, name, false);
}

}  // namespace fastckpt::py_detail
