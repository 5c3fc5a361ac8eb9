// Bindings of the checkpoint format codec (csrc/io). Thin: argument plumbing, GIL release, and the
// translation of io exceptions into fastckpt.errors types. Validation is done in Python first
// (fastckpt/checkpoint/bundle.py); what is re-checked here only guards against undefined behaviour.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "fastckpt/format.h"
#include "io/bundle_reader.h"
#include "io/bundle_writer.h"
#include "io/commit.h"
#include "io/crc32c.h"
#include "io/error.h"
#include "io/file.h"
#include "io/table.h"
#include "kernels/threading.h"

namespace py = pybind11;
namespace io = fastckpt::io;
namespace fmt = fastckpt::format;

namespace {

py::object text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(o);
}

py::object text_or_none(const std::string& s) { return s.empty() ? py::none() : text(s); }

void set_error(const char* cls_name, py::object exc) {
  py::object cls = py::module_::import("fastckpt.errors").attr(cls_name);
  PyErr_SetObject(cls.ptr(), exc.ptr());
}

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const io::FormatError& e) {
    py::object cls = py::module_::import("fastckpt.errors").attr("CorruptCheckpointError");
    py::object key = e.has_key() ? text(e.key()) : py::none();
    py::object off = e.offset() >= 0 ? py::object(py::int_(e.offset())) : py::none();
    set_error("CorruptCheckpointError", cls(text(e.what()), text_or_none(e.path()), key, off));
  } catch (const io::NotFoundError& e) {
    py::object cls = py::module_::import("fastckpt.errors").attr("CheckpointNotFoundError");
    py::object exc = cls(text(e.what()));
    exc.attr("path") = text(e.path());
    set_error("CheckpointNotFoundError", exc);
  } catch (const io::SystemError& e) {
    py::object exc = py::reinterpret_borrow<py::object>(PyExc_OSError)(e.err(), text(e.what()), text(e.path()));
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  }
}

// A path handed to the OS must not hold a NUL (open(2) would silently use the part before it).
// Python (fastckpt.checkpoint.bundle) refuses such paths first with InvalidPathError.
const std::string& no_nul(const std::string& path) {
  if (path.find('\0') != std::string::npos)
    throw io::SystemError("path contains a NUL byte: " + path.substr(0, path.find('\0')) + "\\0...", path, EINVAL);
  return path;
}

// A C-contiguous buffer export held for the duration of a write (the exporter cannot resize it).
struct Buffer {
  Py_buffer view{};
  bool held = false;
  explicit Buffer(py::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
    held = true;
  }
  Buffer(Buffer&& o) noexcept : view(o.view), held(o.held) { o.held = false; }
  Buffer(const Buffer&) = delete;
  ~Buffer() { if (held) PyBuffer_Release(&view); }
};

std::string bytes_arg(py::handle h, const char* what) {
  if (!PyBytes_Check(h.ptr())) throw py::type_error(std::string(what) + ": expected bytes");
  return std::string(PyBytes_AS_STRING(h.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(h.ptr())));
}

// Storage dtype NumPy uses for each TF dtype (bfloat16 is re-viewed in Python when ml_dtypes exists).
const char* numpy_format(int64_t dtype) {
  switch (dtype) {
    case fmt::DT_FLOAT: return "<f4";
    case fmt::DT_DOUBLE: return "<f8";
    case fmt::DT_HALF: return "<f2";
    case fmt::DT_BFLOAT16: return "<u2";
    case fmt::DT_INT8: return "i1";
    case fmt::DT_INT16: return "<i2";
    case fmt::DT_INT32: return "<i4";
    case fmt::DT_INT64: return "<i8";
    case fmt::DT_UINT8: return "u1";
    case fmt::DT_UINT16: return "<u2";
    case fmt::DT_UINT32: return "<u4";
    case fmt::DT_UINT64: return "<u8";
    case fmt::DT_BOOL: return "?";
    case fmt::DT_COMPLEX64: return "<c8";
    case fmt::DT_COMPLEX128: return "<c16";
    default: return nullptr;
  }
}

// (key bytes, dtype, shape, buffer | list of bytes) tuples as io::TensorSource, with the buffers
// and string elements held so the GIL can be released while the writer reads them.
struct Sources {
  std::vector<io::TensorSource> tensors;
  std::vector<Buffer> buffers;
  std::vector<py::object> keep;

  explicit Sources(py::list items) {
    tensors.reserve(items.size());
    buffers.reserve(items.size());
    for (py::handle item : items) {
      py::tuple tup = py::reinterpret_borrow<py::tuple>(item);
      if (tup.size() != 4) throw py::value_error("bundle_write: expected (key, dtype, shape, data) tuples");
      io::TensorSource s;
      s.key = bytes_arg(tup[0], "key");
      s.dtype = tup[1].cast<int>();
      s.shape = tup[2].cast<std::vector<int64_t>>();
      if (s.dtype == fmt::DT_STRING) {
        py::list elems = tup[3].cast<py::list>();
        s.strings.reserve(elems.size());
        for (py::handle e : elems) {
          if (!PyBytes_Check(e.ptr())) throw py::type_error("string tensor elements must be bytes");
          s.strings.emplace_back(PyBytes_AS_STRING(e.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(e.ptr())));
          keep.push_back(py::reinterpret_borrow<py::object>(e));
        }
      } else {
        buffers.emplace_back(tup[3]);
        s.data = buffers.back().view.buf;
        s.nbytes = static_cast<uint64_t>(buffers.back().view.len);
      }
      tensors.push_back(std::move(s));
    }
  }
};

using ReaderPtr = std::shared_ptr<io::BundleReader>;

const io::TensorInfo& lookup(io::BundleReader& r, const std::string& key) {
  if (r.closed()) throw py::value_error("I/O operation on a closed BundleReader");
  const io::TensorInfo* t = r.find(key);
  if (!t) {
    PyErr_SetObject(PyExc_KeyError, text(key).ptr());
    throw py::error_already_set();
  }
  return *t;
}

py::object get_tensor(io::BundleReader& r, const std::string& key, int threads) {
  const io::TensorInfo& t = lookup(r, key);
  io::TensorBytes b;
  std::vector<std::string_view> strings;
  {
    py::gil_scoped_release nogil;
    b = r.tensor_bytes(t, threads);
    if (t.entry.dtype == fmt::DT_STRING) strings = r.decode_strings(t, b);
  }
  const std::vector<py::ssize_t> shape(t.entry.shape.begin(), t.entry.shape.end());
  if (t.entry.dtype == fmt::DT_STRING) {
    py::list out(strings.size());
    for (size_t i = 0; i < strings.size(); ++i) out[i] = py::bytes(strings[i].data(), strings[i].size());
    return out;
  }
  py::dtype dt(numpy_format(t.entry.dtype));
  if (b.size == 0 || r.big_endian()) {
    py::array out(dt, shape);
    if (b.size) {
      const size_t item = fmt::dtype_size(static_cast<int>(t.entry.dtype));
      const bool complex = t.entry.dtype == fmt::DT_COMPLEX64 || t.entry.dtype == fmt::DT_COMPLEX128;
      void* dst = out.mutable_data();
      py::gil_scoped_release nogil;
      io::byteswap_copy(dst, b.data, t.numel, item, complex ? item / 2 : item);
    }
    out.attr("setflags")(py::arg("write") = false);  // same contract as the zero-copy views
    return std::move(out);
  }
  // Zero-copy: the capsule owns a reference to the mapping, so the view outlives the reader.
  auto* keep = new std::shared_ptr<const io::Mapping>(b.mapping);
  py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<const io::Mapping>*>(p); });
  py::array out(dt, shape, {}, b.data, base);
  out.attr("setflags")(py::arg("write") = false);
  return std::move(out);
}

}  // namespace

void bind_io(py::module_& m) {
  py::register_local_exception_translator(translate);

  m.def("crc32c", [](py::buffer data, uint32_t crc, const std::string& impl) {
    Buffer b(data);
    const io::CrcImpl which = impl == "hardware" ? io::CrcImpl::kHardware
                              : impl == "portable" ? io::CrcImpl::kPortable : io::CrcImpl::kAuto;
    py::gil_scoped_release nogil;
    return io::crc32c_extend_impl(which, crc, b.view.buf, static_cast<size_t>(b.view.len));
  }, py::arg("data"), py::arg("crc") = 0, py::arg("impl") = "auto");
  m.def("crc32c_parallel", [](py::buffer data, uint32_t crc, int threads) {
    Buffer b(data);
    py::gil_scoped_release nogil;
    return io::crc32c_parallel(crc, b.view.buf, static_cast<size_t>(b.view.len), threads);
  }, py::arg("data"), py::arg("crc") = 0, py::arg("threads") = 2);
  m.def("crc32c_combine", &io::crc32c_combine);
  m.def("crc32c_hardware_available", &io::crc32c_hardware_available);
  m.def("crc_mask", &io::crc_mask);
  m.def("crc_unmask", &io::crc_unmask);

  m.def("table_build", [](const std::vector<std::pair<py::bytes, py::bytes>>& entries) {
    io::TableBuilder tb;
    for (const auto& kv : entries) tb.add(std::string(kv.first), std::string(kv.second));
    return py::bytes(tb.finish());
  });
  m.def("table_read", [](py::bytes data, const std::string& path) {
    std::string s = data;
    std::vector<std::pair<std::string, std::string>> out;
    io::read_table(reinterpret_cast<const uint8_t*>(s.data()), s.size(), path,
                   [&](std::string_view k, std::string_view v, uint64_t) { out.emplace_back(k, v); });
    py::list l;
    for (auto& kv : out) l.append(py::make_tuple(py::bytes(kv.first), py::bytes(kv.second)));
    return l;
  });

  m.def("bundle_write", [](const std::string& prefix, py::list tensors, int num_shards, bool durable,
                           int num_threads, bool use_mmap) {
    no_nul(prefix);
    Sources src(tensors);
    io::WriteOptions o;
    o.num_shards = num_shards;
    o.durable = durable;
    o.num_threads = num_threads;
    o.use_mmap = use_mmap;
    py::gil_scoped_release nogil;
    io::write_bundle(prefix, src.tensors, o);
  }, py::arg("prefix"), py::arg("tensors"), py::arg("num_shards") = 1, py::arg("durable") = true,
     py::arg("num_threads") = 1, py::arg("use_mmap") = true);

  // Collective writes (io/bundle_writer.h): the caller (fastckpt.checkpoint.bundle) does the
  // messaging between processes.
  m.def("bundle_collective_layout", [](py::list tensors, int num_shards) {
    Sources src(tensors);
    return io::collective_layout(src.tensors, num_shards);
  });
  m.def("bundle_collective_prepare", [](const std::string& prefix, int num_shards) {
    no_nul(prefix);
    py::gil_scoped_release nogil;
    return io::prepare_collective(prefix, num_shards);
  });
  m.def("bundle_collective_write", [](const std::string& prefix, py::list tensors, int num_shards, int shard,
                                      const std::string& token, bool durable, int num_threads) {
    no_nul(prefix);
    Sources src(tensors);
    py::gil_scoped_release nogil;
    return io::write_collective_shard(prefix, src.tensors, num_shards, shard, token, durable, num_threads);
  });
  m.def("bundle_collective_commit", [](const std::string& prefix, py::list tensors, int num_shards,
                                       const std::string& token, std::vector<uint32_t> crcs, bool durable) {
    no_nul(prefix);
    Sources src(tensors);
    py::gil_scoped_release nogil;
    io::commit_collective(prefix, src.tensors, num_shards, token, crcs, durable);
  });
  m.def("bundle_collective_abort", [](const std::string& prefix, int num_shards, const std::string& token) {
    no_nul(prefix);
    io::abort_collective(prefix, num_shards, token);
  });

  py::class_<io::StagedBundle>(m, "StagedBundle")
      .def(py::init<>())
      .def("stage", [](io::StagedBundle& b, py::list tensors, int num_threads, py::object prefilled) {
        Sources src(tensors);
        // prefilled: {key bytes: crc} of tensors already in the image (see layout / fill_target).
        std::vector<int64_t> pre;
        if (!prefilled.is_none()) {
          py::dict d = prefilled.cast<py::dict>();
          pre.assign(src.tensors.size(), -1);
          for (size_t i = 0; i < src.tensors.size(); ++i) {
            py::bytes k(src.tensors[i].key);
            if (d.contains(k)) pre[i] = static_cast<int64_t>(d[k].cast<uint32_t>());
          }
        }
        py::gil_scoped_release nogil;
        // On the kernels' OpenMP team: at the end of an epoch its threads are still spinning.
        b.stage(src.tensors, num_threads, [](size_t n, const std::function<void(size_t)>& fn) {
          fastckpt::parallel_tasks(n, fn);
        }, pre);
      }, py::arg("tensors"), py::arg("num_threads") = 1, py::arg("prefilled") = py::none())
      .def("layout", [](io::StagedBundle& b, py::list tensors) {
        Sources src(tensors);
        return b.layout(src.tensors);
      }, py::arg("tensors"))
      .def("write", [](io::StagedBundle& b, const std::string& prefix, bool durable) {
        no_nul(prefix);
        py::gil_scoped_release nogil;
        b.write(prefix, durable);
      }, py::arg("prefix"), py::arg("durable") = true)
      .def("release_replaced", [](io::StagedBundle& b) {
        py::gil_scoped_release nogil;
        b.release_replaced();
      })
      .def_property_readonly("nbytes", &io::StagedBundle::nbytes)
      .def_property_readonly("staged", &io::StagedBundle::staged);

  m.def("atomic_write_file", [](const std::string& path, py::bytes data, bool durable) {
    no_nul(path);
    std::string s = data;
    py::gil_scoped_release nogil;
    io::atomic_write_file(path, s, durable);
  }, py::arg("path"), py::arg("data"), py::arg("durable") = true);
  m.def("bundle_delete", [](const std::string& prefix, bool durable) {
    no_nul(prefix);
    py::gil_scoped_release nogil;
    io::delete_prefix(prefix, durable);
  }, py::arg("prefix"), py::arg("durable") = true);
  m.def("bundle_recover", [](const std::string& prefix, bool durable) {
    no_nul(prefix);
    py::gil_scoped_release nogil;
    return io::recover_prefix(prefix, durable);
  }, py::arg("prefix"), py::arg("durable") = true);

  py::class_<io::BundleReader, ReaderPtr>(m, "BundleReader")
      .def(py::init([](const std::string& prefix) {
             no_nul(prefix);
             py::gil_scoped_release nogil;
             return std::make_shared<io::BundleReader>(prefix);
           }), py::arg("prefix"))
      .def("keys", [](io::BundleReader& r) {
        py::list out;
        for (const auto& t : r.tensors()) out.append(py::bytes(t.key));
        return out;
      })
      .def("entry", [](io::BundleReader& r, const std::string& key) -> py::object {
        const io::TensorInfo* t = r.find(key);
        if (!t) return py::none();
        const auto& e = t->entry;
        return py::make_tuple(e.dtype, py::cast(e.shape), e.shard_id, e.offset, e.size, e.has_slices);
      })
      .def("get_tensor", &get_tensor, py::arg("key"), py::arg("threads") = 1)
      .def("verify", [](io::BundleReader& r, int threads) {
        if (r.closed()) throw py::value_error("I/O operation on a closed BundleReader");
        py::gil_scoped_release nogil;
        r.verify(threads);
      }, py::arg("threads") = 1)
      .def("close", &io::BundleReader::close)
      .def_property_readonly("closed", &io::BundleReader::closed)
      .def_property_readonly("num_shards", [](const io::BundleReader& r) { return r.header().num_shards; })
      .def_property_readonly("big_endian", &io::BundleReader::big_endian)
      .def_property_readonly("data_paths", [](const io::BundleReader& r) {
        py::list p;  // bytes: file names need not be UTF-8 (Python applies os.fsdecode)
        for (int64_t s = 0; s < r.header().num_shards; ++s) p.append(py::bytes(r.data_path(s)));
        return p;
      });

  py::dict limits;
  limits["max_index_bytes"] = fmt::kMaxIndexBytes;
  limits["max_key_bytes"] = fmt::kMaxKeyBytes;
  limits["max_entries"] = fmt::kMaxEntries;
  limits["max_rank"] = fmt::kMaxRank;
  limits["max_shards"] = fmt::kMaxShards;
  m.attr("bundle_limits") = limits;

  // The inference plan's key, header and limits (format.h), the one source for
  // fastckpt/saving/inference_plan.py.
  py::dict plan;
  plan["key"] = fmt::kPlanKey;
  plan["magic"] = fmt::kPlanMagic;
  plan["version"] = fmt::kPlanVersion;
  plan["max_plan_bytes"] = fmt::kMaxPlanBytes;
  plan["max_line_bytes"] = fmt::kMaxPlanLineBytes;
  plan["max_layers"] = fmt::kMaxPlanLayers;
  plan["max_width"] = fmt::kMaxPlanWidth;
  plan["max_inputs"] = fmt::kMaxPlanInputs;
  plan["max_node_inputs"] = fmt::kMaxPlanNodeInputs;
  plan["max_row_floats"] = fmt::kMaxPlanRowFloats;
  m.attr("plan_format") = plan;
}
