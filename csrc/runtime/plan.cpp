#include "runtime/plan.h"

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

Plan parse_plan(std::string_view text) {
  if (text.size() > kMaxPlanBytes)
    throw PlanError("plan of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                    std::to_string(kMaxPlanBytes));
  if (text.find('\0') != std::string_view::npos) throw PlanError("plan contains a NUL byte");
  Plan plan;
  bool have_magic = false, have_input = false;
  int lineno = 0;
  size_t pos = 0;
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
      have_magic = true;
      continue;
    }
    if (!have_input) {
      if (t[0] != "input" || t.size() != 2) fail(lineno, "expected 'input <width>', got " + quote(line));
      plan.input_width = parse_width(t[1], lineno, "the input width");
      have_input = true;
      continue;
    }
    if (plan.layers.size() >= kMaxPlanLayers) fail(lineno, "more than " + std::to_string(kMaxPlanLayers) + " layers");
    PlanLayer layer;
    layer.line = lineno;
    if (t[0] == "dense") {
      if (t.size() != 5)
        fail(lineno, "expected 'dense <units> <activation> <kernel key> <bias key or ->', got " +
                         std::to_string(t.size()) + " tokens");
      layer.kind = PlanLayer::Kind::kDense;
      layer.units = parse_width(t[1], lineno, "units");
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
      layer.kind = PlanLayer::Kind::kDropout;
      const char* end = t[1].data() + t[1].size();
      const auto r = std::from_chars(t[1].data(), end, layer.rate);
      if (r.ec != std::errc() || r.ptr != end || !(layer.rate >= 0.0 && layer.rate < 1.0))
        fail(lineno, "expected a dropout rate in [0, 1), got " + quote(t[1]));
    } else if (t[0] == "input") {
      fail(lineno, "a second 'input' line");
    } else {
      fail(lineno, "unknown layer " + quote(t[0]) +
                       " (this runtime runs: dense, dropout); the model needs a newer libfastckpt or cannot run in C++");
    }
    plan.layers.push_back(std::move(layer));
  }
  if (!have_magic) throw PlanError(std::string("empty plan (expected a first line '") + kPlanMagic + " 1')");
  if (!have_input) throw PlanError("plan has no 'input <width>' line");
  return plan;
}

}  // namespace fastckpt::runtime
