#include "runtime/plan.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "fastckpt/format.h"

namespace fastckpt::runtime {
namespace {

using namespace format;

// Quotes a token for an error message: bounded and with non-printable bytes escaped, so a hostile
// plan cannot flood a log or inject control characters.
std::string quote(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > 64) out += "...";
  return out + "'";
}

[[noreturn]] void fail(int line, const std::string& what) {
  throw PlanError("plan line " + std::to_string(line) + ": " + what);
}

// Splits on single spaces; an empty token means two spaces in a row or a leading/trailing space.
std::vector<std::string_view> split(std::string_view line, int lineno) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t sp = line.find(' ', start);
    const std::string_view tok = line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start);
    if (tok.empty()) fail(lineno, "expected tokens separated by single spaces, got " + quote(line));
    out.push_back(tok);
    if (sp == std::string_view::npos) return out;
    start = sp + 1;
  }
}

// A width: decimal digits only, no sign, no leading zero, 1..kMaxPlanWidth.
int64_t parse_width(std::string_view tok, int lineno, const char* what) {
  const bool digits_only = !tok.empty() && tok.size() <= 9 &&
                           tok.find_first_not_of("0123456789") == std::string_view::npos && tok[0] != '0';
  int64_t v = 0;
  if (digits_only) std::from_chars(tok.data(), tok.data() + tok.size(), v);  // <= 9 digits: no overflow
  if (!digits_only || v < 1 || v > kMaxPlanWidth)
    fail(lineno, std::string("expected ") + what + " as an integer in [1, " + std::to_string(kMaxPlanWidth) +
                     "], got " + quote(tok));
  return v;
}

void check_key(std::string_view tok, int lineno, const char* what) {
  for (char ch : tok) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x21 || c > 0x7e) fail(lineno, std::string(what) + " key " + quote(tok) + " has a byte outside 0x21..0x7E");
  }
}

bool parse_activation(std::string_view tok, Activation* out) {
  for (int i = 0; i < kNumActivations; ++i)
    if (tok == kActivationNames[i]) {
      *out = static_cast<Activation>(i);
      return true;
    }
  return false;
}

std::string activation_list() {  // "linear, relu, sigmoid, tanh or softmax"
  std::string s;
  for (int i = 0; i < kNumActivations; ++i)
    s += std::string(i == 0 ? "" : i + 1 == kNumActivations ? " or " : ", ") + kActivationNames[i];
  return s;
}

}  // namespace

const char* activation_name(Activation a) {
  const int i = static_cast<int>(a);
  return i >= 0 && i < kNumActivations ? kActivationNames[i] : "?";
}


namespace {

// A finite decimal number ("0.5", "-1e-05"); nothing else (no "nan", "inf", hex or trailing bytes).
double parse_number(std::string_view tok, int lineno, const char* what) {
  double v = 0.0;
  const bool chars = !tok.empty() && tok.size() <= 64 &&
                     tok.find_first_not_of("0123456789+-.eE") == std::string_view::npos;
  const char* end = tok.data() + tok.size();
  const auto r = chars ? std::from_chars(tok.data(), end, v) : std::from_chars_result{tok.data(), std::errc::invalid_argument};
  if (!chars || r.ec != std::errc() || r.ptr != end || !std::isfinite(v))
    fail(lineno, std::string("expected ") + what + " as a finite decimal number, got " + quote(tok));
  return v;
}

struct OpName {
  const char* name;
  PlanNode::Op op;
  int merge;
};
constexpr OpName kOps[] = {
    {"dense", PlanNode::Op::kDense, 0},         {"identity", PlanNode::Op::kIdentity, 0},
    {"activation", PlanNode::Op::kActivation, 0}, {"rescaling", PlanNode::Op::kRescaling, 0},
    {"concat", PlanNode::Op::kConcat, 0},       {"add", PlanNode::Op::kMerge, 0},
    {"subtract", PlanNode::Op::kMerge, 1},      {"multiply", PlanNode::Op::kMerge, 2},
    {"average", PlanNode::Op::kMerge, 3},       {"maximum", PlanNode::Op::kMerge, 4},
    {"minimum", PlanNode::Op::kMerge, 5},       {"embedding", PlanNode::Op::kEmbedding, 0},
    {"gap1d", PlanNode::Op::kGap1d, 0},         {"gmp1d", PlanNode::Op::kGmp1d, 0},
    {"relu", PlanNode::Op::kRelu, 0},           {"elu", PlanNode::Op::kElu, 0},
    {"softmax", PlanNode::Op::kSoftmax, 0},     {"prelu", PlanNode::Op::kPrelu, 0},
    {"batchnorm", PlanNode::Op::kBatchNorm, 0}, {"layernorm", PlanNode::Op::kLayerNorm, 0},
    {"normalize", PlanNode::Op::kNormalize, 0}, {"transpose", PlanNode::Op::kTranspose, 0},
    // Version 4: Normalization with mean/variance given to the constructor (no checkpoint keys).
    {"normalize_values", PlanNode::Op::kNormalize, 1},
};

// Version 3 dims: "3x4x5", each a width, at most kMaxDims of them, product <= kMaxPlanWidth.
constexpr size_t kMaxDims = 8;
std::vector<int64_t> parse_dims(std::string_view tok, int lineno, const char* what) {
  std::vector<int64_t> dims;
  int64_t prod = 1;
  while (true) {
    if (dims.size() >= kMaxDims) fail(lineno, std::string(what) + " has more than " + std::to_string(kMaxDims) + " dims");
    const size_t x = tok.find('x');
    const int64_t d = parse_width(tok.substr(0, x), lineno, what);
    if (d > kMaxPlanWidth / prod) fail(lineno, std::string(what) + " holds more than " + std::to_string(kMaxPlanWidth) + " values");
    prod *= d;
    dims.push_back(d);
    if (x == std::string_view::npos) return dims;
    tok.remove_prefix(x + 1);
  }
}

int64_t dims_product(const std::vector<int64_t>& d) {
  int64_t p = 1;
  for (int64_t v : d) p *= v;  // bounded by parse_dims
  return p;
}

std::string op_list() {
  std::string s;
  for (const OpName& o : kOps) s += std::string(s.empty() ? "" : ", ") + o.name;
  return s;
}

// A tensor name: like a key, at most 256 bytes, no comma (commas separate a node's inputs).
void check_name(std::string_view tok, int lineno, const char* what) {
  check_key(tok, lineno, what);
  if (tok.size() > 256 || tok.find(',') != std::string_view::npos)
    fail(lineno, std::string(what) + " " + quote(tok) + " is longer than 256 bytes or holds a comma");
}

int find_tensor(const Plan& p, std::string_view name) {
  const int n_in = static_cast<int>(p.inputs.size());
  for (int i = 0; i < n_in; ++i)
    if (p.inputs[i].name == name) return i;
  for (size_t i = 0; i < p.nodes.size(); ++i)
    if (p.nodes[i].name == name) return n_in + static_cast<int>(i);
  return -1;
}

const PlanTensor tensor_info(const Plan& p, int t) {
  const int n_in = static_cast<int>(p.inputs.size());
  if (t < n_in) return p.inputs[t];
  return PlanTensor{p.nodes[t - n_in].name, p.nodes[t - n_in].width, false};
}

// "node <name> <op> <in>[,<in>...] <args...>"
PlanNode parse_node(const Plan& p, const std::vector<std::string_view>& t, int lineno) {
  if (t.size() < 4) fail(lineno, "expected 'node <name> <op> <inputs> [arguments]', got " + std::to_string(t.size()) + " tokens");
  PlanNode n;
  n.line = lineno;
  check_name(t[1], lineno, "tensor name");
  if (find_tensor(p, t[1]) >= 0) fail(lineno, "tensor " + quote(t[1]) + " is defined twice");
  n.name.assign(t[1]);
  const OpName* op = nullptr;
  for (const OpName& o : kOps)
    if (t[2] == o.name) op = &o;
  if (!op)
    fail(lineno, "unknown op " + quote(t[2]) + " (this runtime runs: " + op_list() +
                     "); the model needs a newer libfastckpt or cannot run in C++");
  n.op = op->op;
  n.merge = op->merge;
  // Inputs: names defined on earlier lines (so the nodes are in topological order).
  std::string_view ins = t[3];
  while (true) {
    if (n.inputs.size() >= format::kMaxPlanNodeInputs)
      fail(lineno, "more than " + std::to_string(format::kMaxPlanNodeInputs) + " inputs to one node");
    const size_t comma = ins.find(',');
    const std::string_view name = ins.substr(0, comma);
    if (name.empty()) fail(lineno, "empty input name in " + quote(t[3]));
    const int idx = find_tensor(p, name);
    if (idx < 0) fail(lineno, "input " + quote(name) + " is not defined on an earlier line");
    n.inputs.push_back(idx);
    if (comma == std::string_view::npos) break;
    ins.remove_prefix(comma + 1);
  }
  const size_t n_args = t.size() - 4;
  auto want_args = [&](size_t k, const char* form) {
    if (n_args != k) fail(lineno, std::string("expected 'node <name> ") + form + "', got " + std::to_string(t.size()) + " tokens");
  };
  // Version 3 adds optional trailing arguments to some ops: k or k + extra arguments.
  auto want_args_v3 = [&](size_t k, size_t extra, const char* form) {
    if (n_args == k + extra && extra > 0) {
      if (p.version < 3) fail(lineno, std::string("op '") + op->name + "' with " + std::to_string(extra) +
                                          " more argument(s) needs plan version 3");
      return true;
    }
    want_args(k, form);
    return false;
  };
  // Version 4 forms (new optional arguments, or ops an older runtime does not know).
  auto need_v4 = [&](const char* what) {
    if (p.version < 4) fail(lineno, std::string(what) + " needs plan version 4");
  };
  auto want_inputs = [&](size_t lo, size_t hi) {
    if (n.inputs.size() < lo || n.inputs.size() > hi)
      fail(lineno, std::string("op '") + op->name + "' takes " + std::to_string(lo) +
                       (hi == lo ? "" : hi > 1000 ? " or more" : " to " + std::to_string(hi)) + " inputs, got " +
                       std::to_string(n.inputs.size()));
  };
  std::vector<PlanTensor> in;
  for (int i : n.inputs) in.push_back(tensor_info(p, i));
  // Only embedding reads ids, and gap1d its mask (ids != 0; version 4: several ids, all != 0) as
  // its second and later inputs.
  for (size_t i = 0; i < in.size(); ++i)
    if (!(n.op == PlanNode::Op::kEmbedding && i == 0) && !(n.op == PlanNode::Op::kGap1d && i >= 1))
      if (in[i].is_int) fail(lineno, "input " + quote(in[i].name) + " holds int ids; only 'embedding' reads those");
  const int64_t w0 = in[0].width;
  // Version 3 feature axis (n, inner) inside a row of w0: both widths, n * inner dividing w0.
  auto axis_args = [&](std::string_view tn, std::string_view ti) {
    n.axis_n = parse_width(tn, lineno, "the axis size");
    n.axis_inner = parse_width(ti, lineno, "the inner size");
    if (n.axis_inner > w0 / n.axis_n || w0 % (n.axis_n * n.axis_inner) != 0)
      fail(lineno, "axis " + std::to_string(n.axis_n) + " x inner " + std::to_string(n.axis_inner) +
                       " does not divide the input width " + std::to_string(w0));
  };
  auto block_arg = [&](std::string_view tok, const char* what) {  // a trailing block of the row
    n.axis_n = parse_width(tok, lineno, what);
    if (w0 % n.axis_n != 0)
      fail(lineno, std::string(what) + " " + std::to_string(n.axis_n) + " does not divide the input width " +
                       std::to_string(w0));
  };
  // n.dims = {input dims, parameter dims}: the input dims make the input width, and the parameter
  // dims (same rank) broadcast to them. `param` names the parameter in messages.
  auto broadcast_dims = [&](std::string_view tin, std::string_view tpar, const char* param) {
    const std::string p(param);
    n.dims = {parse_dims(tin, lineno, "the input dims"), parse_dims(tpar, lineno, ("the " + p + " dims").c_str())};
    if (dims_product(n.dims[0]) != w0)
      fail(lineno, "input dims " + quote(tin) + " do not make the input width " + std::to_string(w0));
    if (n.dims[1].size() != n.dims[0].size())
      fail(lineno, p + " dims " + quote(tpar) + " and input dims " + quote(tin) + " differ in rank");
    for (size_t i = 0; i < n.dims[0].size(); ++i)
      if (n.dims[1][i] != 1 && n.dims[1][i] != n.dims[0][i])
        fail(lineno, p + " dims " + quote(tpar) + " do not broadcast to " + quote(tin));
  };
  auto number32 = [&](std::string_view tok, const char* what) {
    const double v = parse_number(tok, lineno, what);
    if (std::fabs(v) > 3.4e38) fail(lineno, std::string(what) + " must fit a float32, got " + quote(tok));
    return v;
  };
  auto key_or_none = [&](std::string_view tok, const char* what) {
    if (tok == "-") return std::string();
    check_key(tok, lineno, what);
    return std::string(tok);
  };
  auto key = [&](std::string_view tok, const char* what) {
    if (tok == "-") fail(lineno, std::string(what) + " key is required, got '-'");
    return key_or_none(tok, what);
  };
  switch (n.op) {
    case PlanNode::Op::kRelu:
      want_args(3, "relu <input> <negative slope> <max value or -> <threshold>");
      want_inputs(1, 1);
      n.scale = number32(t[4], "the negative slope");
      n.has_max = t[5] != "-";
      if (n.has_max) n.max_value = number32(t[5], "the max value");
      n.offset = number32(t[6], "the threshold");
      n.width = w0;
      break;
    case PlanNode::Op::kElu:
      want_args(1, "elu <input> <alpha>");
      want_inputs(1, 1);
      n.scale = number32(t[4], "alpha");
      n.width = w0;
      break;
    case PlanNode::Op::kSoftmax:
      if (want_args_v3(0, 2, "softmax <input> [<axis size> <inner size>]")) axis_args(t[4], t[5]);
      want_inputs(1, 1);
      n.width = w0;
      break;
    case PlanNode::Op::kPrelu:
      want_inputs(1, 1);
      if (want_args_v3(1, 2, "prelu <input> <alpha key> [<input dims> <alpha dims>]")) {
        broadcast_dims(t[5], t[6], "alpha");
      }
      n.keys.push_back(key(t[4], "alpha"));
      n.width = w0;
      break;
    case PlanNode::Op::kBatchNorm:
      want_inputs(1, 1);
      if (want_args_v3(5, 2, "batchnorm <input> <epsilon> <gamma key or -> <beta key or -> <mean key> <variance key> "
                             "[<axis size> <inner size>]"))
        axis_args(t[9], t[10]);
      n.scale = number32(t[4], "epsilon");
      n.keys = {key_or_none(t[5], "gamma"), key_or_none(t[6], "beta"), key(t[7], "mean"), key(t[8], "variance")};
      n.width = w0;
      break;
    case PlanNode::Op::kNormalize:
      want_inputs(1, 1);
      if (op->merge == 1) {  // normalize_values: the statistics as comma lists of <axis size> values
        need_v4("op 'normalize_values'");
        want_args(6, "normalize_values <input> <epsilon> <invert 0|1> <means> <variances> <axis size> <inner size>");
        axis_args(t[8], t[9]);
        n.scale = number32(t[4], "epsilon");
        if (t[5] != "0" && t[5] != "1") fail(lineno, "expected invert as 0 or 1, got " + quote(t[5]));
        n.has_max = t[5] == "1";
        for (int which = 0; which < 2; ++which) {
          std::string_view list = t[6 + which];
          const char* what = which ? "a variance" : "a mean";
          for (int64_t i = 0; i < n.axis_n; ++i) {
            const size_t comma = list.find(',');
            if ((comma == std::string_view::npos) != (i + 1 == n.axis_n))
              fail(lineno, std::string("expected ") + std::to_string(n.axis_n) + " comma-separated " +
                               (which ? "variances" : "means") + " (the axis size)");
            const double v = number32(list.substr(0, comma), what);
            if (which == 1 && v < 0) fail(lineno, "variance " + quote(list.substr(0, comma)) + " is negative");
            n.values.push_back(static_cast<float>(v));
            if (comma != std::string_view::npos) list.remove_prefix(comma + 1);
          }
        }
        n.width = w0;
        break;
      }
      if (want_args_v3(4, 2, "normalize <input> <epsilon> <invert 0|1> <mean key> <variance key> "
                             "[<axis size> <inner size>]"))
        axis_args(t[8], t[9]);
      n.scale = number32(t[4], "epsilon");
      if (t[5] != "0" && t[5] != "1") fail(lineno, "expected invert as 0 or 1, got " + quote(t[5]));
      n.has_max = t[5] == "1";
      n.keys = {key(t[6], "mean"), key(t[7], "variance")};
      n.width = w0;
      break;
    case PlanNode::Op::kLayerNorm:
      want_inputs(1, 1);
      if (n_args == 5) {  // version 4: normalized over the middle of (outer, size, inner) blocks
        need_v4("op 'layernorm' over non-trailing axes (<normalized size> <inner size>)");
        axis_args(t[7], t[8]);
      } else if (want_args_v3(3, 1, "layernorm <input> <epsilon> <gamma key or -> <beta key or -> "
                                    "[<normalized size> [<inner size>]]")) {
        block_arg(t[7], "the normalized size");
      }
      n.scale = number32(t[4], "epsilon");
      n.keys = {key_or_none(t[5], "gamma"), key_or_none(t[6], "beta")};
      n.width = w0;
      break;
    case PlanNode::Op::kDense:
      want_inputs(1, 1);
      if (n_args != 4 && n_args != 5) want_args(4, "dense <input> <units> <activation> <kernel key> <bias key or -> [<features>]");
      n.units = n.width = parse_width(t[4], lineno, "units");
      if (want_args_v3(4, 1, "dense <input> <units> <activation> <kernel key> <bias key or -> [<features>]")) {
        block_arg(t[8], "the features");  // applied to each of w0 / features steps
        if (w0 / n.axis_n > kMaxPlanWidth / n.units)
          fail(lineno, "output width " + std::to_string(w0 / n.axis_n) + " x " + std::to_string(n.units) +
                           " exceeds " + std::to_string(kMaxPlanWidth));
        n.width = w0 / n.axis_n * n.units;
      }
      if (!parse_activation(t[5], &n.activation))
        fail(lineno, "unknown activation " + quote(t[5]) + " (expected " + activation_list() + ")");
      check_key(t[6], lineno, "kernel");
      n.kernel_key.assign(t[6]);
      if (t[7] != "-") {
        check_key(t[7], lineno, "bias");
        n.bias_key.assign(t[7]);
      }
      break;
    case PlanNode::Op::kIdentity:
      want_args(0, "identity <input>");
      want_inputs(1, 1);
      n.width = w0;
      break;
    case PlanNode::Op::kActivation:
      want_inputs(1, 1);
      if (want_args_v3(1, 1, "activation <input> <activation> [<softmax size>]")) block_arg(t[5], "the softmax size");
      if (!parse_activation(t[4], &n.activation))
        fail(lineno, "unknown activation " + quote(t[4]) + " (expected " + activation_list() + ")");
      n.width = w0;
      break;
    case PlanNode::Op::kRescaling:
      want_inputs(1, 1);
      if (want_args_v3(2, 2, "rescaling <input> <scale> <offset> [<input dims> <parameter dims>]")) {
        // Per-element scale and offset: comma lists of the parameter dims' count, broadcast.
        broadcast_dims(t[6], t[7], "parameter");
        const int64_t count = dims_product(n.dims[1]);
        for (int which = 0; which < 2; ++which) {
          std::string_view list = t[4 + which];
          const char* what = which ? "an offset" : "a scale";
          for (int64_t i = 0; i < count; ++i) {
            const size_t comma = list.find(',');
            if ((comma == std::string_view::npos) != (i + 1 == count))
              fail(lineno, std::string("expected ") + std::to_string(count) + " comma-separated values of " +
                               (which ? "offsets" : "scales"));
            const double v = number32(list.substr(0, comma), what);
            n.values.push_back(static_cast<float>(v));
            if (comma != std::string_view::npos) list.remove_prefix(comma + 1);
          }
        }
        n.width = w0;
        break;
      }
      n.scale = parse_number(t[4], lineno, "the scale");
      n.offset = parse_number(t[5], lineno, "the offset");
      if (std::fabs(n.scale) > 3.4e38 || std::fabs(n.offset) > 3.4e38)
        fail(lineno, "scale and offset must fit a float32");
      n.width = w0;
      break;
    case PlanNode::Op::kConcat: {
      want_inputs(1, format::kMaxPlanNodeInputs);
      if (want_args_v3(0, 1, "concat <input>,<input>... [<outer>]")) n.outer = parse_width(t[4], lineno, "outer");
      int64_t w = 0;
      for (const PlanTensor& x : in) {
        if (x.width % n.outer != 0)
          fail(lineno, "input " + quote(x.name) + " width " + std::to_string(x.width) + " is not a multiple of outer " +
                           std::to_string(n.outer));
        w += x.width;
        if (w > format::kMaxPlanWidth) fail(lineno, "concatenated width exceeds " + std::to_string(format::kMaxPlanWidth));
      }
      n.width = w;
      break;
    }
    case PlanNode::Op::kMerge:
      if (n.merge == 1) want_inputs(2, 2); else want_inputs(2, format::kMaxPlanNodeInputs);
      if (want_args_v3(0, 1, "<merge op> <input>,<input>... [<dims>,<dims>...]")) {
        // Broadcasting: one dims per input, the same rank; the output takes the largest of each.
        std::string_view ds = t[4];
        std::vector<int64_t> out;
        for (size_t i = 0; i < in.size(); ++i) {
          const size_t comma = ds.find(',');
          if ((comma == std::string_view::npos) != (i + 1 == in.size()))
            fail(lineno, "expected one dims per input (" + std::to_string(in.size()) + ") in " + quote(t[4]));
          n.dims.push_back(parse_dims(ds.substr(0, comma), lineno, "the input dims"));
          if (comma != std::string_view::npos) ds.remove_prefix(comma + 1);
          const std::vector<int64_t>& d = n.dims.back();
          if (dims_product(d) != in[i].width)
            fail(lineno, "dims of input " + quote(in[i].name) + " do not make its width " + std::to_string(in[i].width));
          if (i == 0) out = d;
          if (d.size() != out.size()) fail(lineno, "merge dims differ in rank in " + quote(t[4]));
          for (size_t j = 0; j < d.size(); ++j) {
            if (d[j] != out[j] && d[j] != 1 && out[j] != 1)
              fail(lineno, "merge dims " + quote(t[4]) + " do not broadcast");
            out[j] = std::max(out[j], d[j]);
          }
        }
        int64_t w = 1;
        for (int64_t d : out) {
          if (d > kMaxPlanWidth / w) fail(lineno, "merged width exceeds " + std::to_string(kMaxPlanWidth));
          w *= d;
        }
        n.width = w;
        break;
      }
      for (const PlanTensor& x : in)
        if (x.width != w0)
          fail(lineno, "merge inputs differ in width: " + quote(in[0].name) + " has " + std::to_string(w0) + ", " +
                           quote(x.name) + " has " + std::to_string(x.width));
      n.width = w0;
      break;
    case PlanNode::Op::kTranspose:
      if (p.version < 3) fail(lineno, "op 'transpose' needs plan version 3");
      want_args(2, "transpose <input> <rows> <cols>");
      want_inputs(1, 1);
      n.axis_n = parse_width(t[4], lineno, "rows");
      n.units = parse_width(t[5], lineno, "cols");
      if (n.units > w0 / n.axis_n || w0 % (n.axis_n * n.units) != 0)
        fail(lineno, "rows " + std::to_string(n.axis_n) + " x cols " + std::to_string(n.units) +
                         " does not divide the input width " + std::to_string(w0));
      n.axis_inner = w0 / (n.axis_n * n.units);
      n.width = w0;
      break;
    case PlanNode::Op::kEmbedding:
      want_args(3, "embedding <int input> <vocab> <dim> <table key>");
      want_inputs(1, 1);
      if (!in[0].is_int) fail(lineno, "embedding reads int ids; input " + quote(in[0].name) + " is float");
      n.vocab = parse_width(t[4], lineno, "the vocabulary size");
      n.units = parse_width(t[5], lineno, "the embedding dim");
      if (n.units > format::kMaxPlanWidth / w0)
        fail(lineno, "output width " + std::to_string(w0) + " x " + std::to_string(n.units) + " exceeds " +
                         std::to_string(format::kMaxPlanWidth));
      n.width = w0 * n.units;
      check_key(t[6], lineno, "table");
      n.kernel_key.assign(t[6]);
      break;
    case PlanNode::Op::kGap1d:
    case PlanNode::Op::kGmp1d:
      want_args(1, "gap1d <input>[,<int ids of the mask>...] <steps>' or 'gmp1d <input> <steps>");
      want_inputs(1, n.op == PlanNode::Op::kGap1d ? format::kMaxPlanNodeInputs : 1);
      if (in.size() > 2) need_v4("a mask of several ids (a merged mask)");
      n.units = parse_width(t[4], lineno, "steps");
      for (size_t i = 1; i < in.size(); ++i)
        if (!in[i].is_int || in[i].width != n.units)
          fail(lineno, "the mask input " + quote(in[i].name) + " must be int ids of width " + std::to_string(n.units));
      if (w0 % n.units != 0)
        fail(lineno, "input width " + std::to_string(w0) + " is not a multiple of " + std::to_string(n.units) + " steps");
      n.width = w0 / n.units;
      break;
  }
  return n;
}

}  // namespace

Plan parse_plan(std::string_view text) {
  if (text.size() > kMaxPlanBytes)
    throw PlanError("plan of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                    std::to_string(kMaxPlanBytes));
  if (text.find('\0') != std::string_view::npos) throw PlanError("plan contains a NUL byte");
  Plan plan;
  bool have_magic = false, have_input = false;
  int lineno = 0;
  size_t pos = 0;
  int64_t row_floats = 0;  // version 2: floats per row over all node outputs (the scratch)
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++lineno;
    if (line.size() > kMaxPlanLineBytes)
      fail(lineno, "longer than " + std::to_string(kMaxPlanLineBytes) + " bytes");
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string_view> t = split(line, lineno);
    if (!have_magic) {
      if (t[0] != kPlanMagic || t.size() != 2)
        fail(lineno, std::string("expected '") + kPlanMagic + " <version>' first, got " + quote(line));
      const bool digits = t[1].size() <= 9 && t[1].find_first_not_of("0123456789") == std::string_view::npos;
      int version = 0;
      if (digits) std::from_chars(t[1].data(), t[1].data() + t[1].size(), version);
      if (!digits || version < 1) fail(lineno, "expected a positive plan version, got " + quote(t[1]));
      if (version > kPlanVersion)
        fail(lineno, "plan version " + std::to_string(version) + " is newer than this runtime reads (" +
                         std::to_string(kPlanVersion) + "); update libfastckpt");
      plan.version = version;
      have_magic = true;
      continue;
    }
    if (plan.version >= 2) {
      if (t[0] == "input") {
        if (!plan.nodes.empty() || !plan.outputs.empty()) fail(lineno, "'input' lines must come before every 'node' and 'output' line");
        if (t.size() != 4) fail(lineno, "expected 'input <name> <width> float|int', got " + quote(line));
        if (plan.inputs.size() >= kMaxPlanInputs) fail(lineno, "more than " + std::to_string(kMaxPlanInputs) + " inputs");
        check_name(t[1], lineno, "input name");
        if (find_tensor(plan, t[1]) >= 0) fail(lineno, "tensor " + quote(t[1]) + " is defined twice");
        PlanTensor in;
        in.name.assign(t[1]);
        in.width = parse_width(t[2], lineno, "the input width");
        if (t[3] != "float" && t[3] != "int") fail(lineno, "expected input type 'float' or 'int', got " + quote(t[3]));
        in.is_int = t[3] == "int";
        plan.inputs.push_back(std::move(in));
      } else if (t[0] == "node") {
        if (plan.inputs.empty()) fail(lineno, "a 'node' line before any 'input' line");
        if (!plan.outputs.empty()) fail(lineno, "a 'node' line after an 'output' line");
        if (plan.nodes.size() >= kMaxPlanLayers) fail(lineno, "more than " + std::to_string(kMaxPlanLayers) + " nodes");
        plan.nodes.push_back(parse_node(plan, t, lineno));
        row_floats += plan.nodes.back().width;
        if (row_floats > kMaxPlanRowFloats)
          fail(lineno, "the nodes' outputs exceed " + std::to_string(kMaxPlanRowFloats) + " floats per row");
      } else if (t[0] == "output") {
        if (t.size() != 3) fail(lineno, "expected 'output <name> <tensor>', got " + quote(line));
        if (plan.outputs.size() >= kMaxPlanInputs) fail(lineno, "more than " + std::to_string(kMaxPlanInputs) + " outputs");
        check_name(t[1], lineno, "output name");
        for (const auto& o : plan.outputs)
          if (o.first == t[1]) fail(lineno, "output " + quote(t[1]) + " is named twice");
        const int idx = find_tensor(plan, t[2]);
        if (idx < 0) fail(lineno, "output tensor " + quote(t[2]) + " is not defined on an earlier line");
        if (tensor_info(plan, idx).is_int) fail(lineno, "output " + quote(t[1]) + " would be int ids; outputs are float");
        plan.outputs.emplace_back(std::string(t[1]), idx);
      } else {
        fail(lineno, "expected an 'input', 'node' or 'output' line, got " + quote(t[0]));
      }
      continue;
    }
    // Version 1: "input <width>" then a chain of dense/dropout layers, read as nodes.
    if (!have_input) {
      if (t[0] != "input" || t.size() != 2) fail(lineno, "expected 'input <width>', got " + quote(line));
      plan.input_width = parse_width(t[1], lineno, "the input width");
      plan.inputs.push_back(PlanTensor{"input", plan.input_width, false});
      have_input = true;
      continue;
    }
    if (plan.nodes.size() >= kMaxPlanLayers) fail(lineno, "more than " + std::to_string(kMaxPlanLayers) + " layers");
    PlanNode layer;
    layer.line = lineno;
    layer.name = "t" + std::to_string(plan.nodes.size());
    layer.inputs.push_back(static_cast<int>(plan.nodes.size()));  // the previous tensor
    const int64_t prev = plan.nodes.empty() ? plan.input_width : plan.nodes.back().width;
    if (t[0] == "dense") {
      if (t.size() != 5)
        fail(lineno, "expected 'dense <units> <activation> <kernel key> <bias key or ->', got " +
                         std::to_string(t.size()) + " tokens");
      layer.op = PlanNode::Op::kDense;
      layer.units = layer.width = parse_width(t[1], lineno, "units");
      if (!parse_activation(t[2], &layer.activation))
        fail(lineno, "unknown activation " + quote(t[2]) + " (expected " + activation_list() + ")");
      check_key(t[3], lineno, "kernel");
      layer.kernel_key.assign(t[3]);
      if (t[4] != "-") {
        check_key(t[4], lineno, "bias");
        layer.bias_key.assign(t[4]);
      }
    } else if (t[0] == "dropout") {
      if (t.size() != 2) fail(lineno, "expected 'dropout <rate>', got " + quote(line));
      layer.op = PlanNode::Op::kIdentity;
      layer.width = prev;
      double rate = 0.0;
      const char* end = t[1].data() + t[1].size();
      const auto r = std::from_chars(t[1].data(), end, rate);
      if (r.ec != std::errc() || r.ptr != end || !(rate >= 0.0 && rate < 1.0))
        fail(lineno, "expected a dropout rate in [0, 1), got " + quote(t[1]));
    } else if (t[0] == "input") {
      fail(lineno, "a second 'input' line");
    } else {
      fail(lineno, "unknown layer " + quote(t[0]) +
                       " (this runtime runs: dense, dropout); the model needs a newer libfastckpt or cannot run in C++");
    }
    plan.nodes.push_back(std::move(layer));
  }
  if (!have_magic) throw PlanError(std::string("empty plan (expected a first line '") + kPlanMagic + " 1')");
  if (plan.version == 1) {
    if (!have_input) throw PlanError("plan has no 'input <width>' line");
    plan.outputs.emplace_back("output", static_cast<int>(plan.nodes.size()));
  } else {
    if (plan.inputs.empty()) throw PlanError("plan has no 'input <name> <width> float|int' line");
    if (plan.outputs.empty()) throw PlanError("plan has no 'output <name> <tensor>' line");
  }
  return plan;
}

}  // namespace fastckpt::runtime
