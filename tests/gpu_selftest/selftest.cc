/*!
 * \file selftest.cc
 * \brief Standalone check of ssdkit's operators: CPU kernels against MXNet's recorded CPU outputs and
 *        CUDA kernels against the CPU kernels, on the cases of tests/op_cases.py. Needs no MXNet
 *        library (only its lib_api headers at build time) and no GPU build of MXNet.
 *
 * The program links the operator sources themselves (every src/operators .cc, compiled with
 * SSDKIT_WITH_CUDA when CUDA is on, and every .cu) and lib_api.cc; the operators register into
 * lib_api's registry as in the shared library, and each case calls the registered parseAttrs,
 * inferShape and forward functions ("cpu", then "gpu") with tensors it allocates itself. So the
 * lib_api glue of the .cc files (the GPU forward functions that hand the stream, workspace and
 * random states to the launchers) runs too.
 *
 *   selftest CASES [--cpu-only] [--case NAME]...
 *
 * CPU half: every output of the CPU kernel must equal the output MXNet computed on the CPU when the
 * case file was written (bit for bit; NaN equals NaN), which checks this harness; backward cases
 * (MultiLevelROIAlign) also run the registered backward on the recorded output gradients and compare
 * every input gradient the same way. GPU half: every
 * output of the CUDA kernel against the CPU kernel's, by the rule of tests/op_cases.py (per-output
 * rtol/atol; "sampled" cases compare per-image sign counts of one output). A table is printed.
 * Exit status: 0 all agree; 1 a mismatch or a failed call; 2 bad arguments or case file; 3 the CPU
 * half agreed but there is no GPU half (no CUDA device, or a build without CUDA).
 */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/sample.h"
#include "mxnet/lib_api.h"
#ifdef SSDKIT_WITH_CUDA
#include "device.h"
#endif

namespace selftest {
namespace {

using mxnet::ext::CustomOp;
using mxnet::ext::MXContext;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using Attrs = std::unordered_map<std::string, std::string>;

constexpr float kSentinel = -7777.f;        // outputs start as this: a value the kernel never wrote shows up
constexpr double kCloseTolerance = 1e-5;  // tests/op_cases.py CLOSE, for gradients

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct Case {
  std::string name, op;
  int count_output = -1, count_groups = 1;
  Attrs attrs;
  std::vector<Tensor> inputs, outputs;
  std::vector<std::pair<double, double>> tolerances;  // (rtol, atol) per output
  std::vector<Tensor> output_grads, input_grads;      // backward cases only: seeded heads, MXNet's grads
};

// ------------------------------------------------------------------------------------------------
// Case file (format: tests/op_cases.py write_case_file)
// ------------------------------------------------------------------------------------------------

std::vector<float> FromHex(const std::string& hex) {
  std::vector<float> out;
  if (hex == "-") return out;
  if (hex.size() % 8 != 0) throw std::runtime_error("tensor data is not a whole number of float32");
  out.resize(hex.size() / 8);
  std::vector<unsigned char> bytes(hex.size() / 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<unsigned char>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  std::memcpy(out.data(), bytes.data(), bytes.size());  // little-endian float32, as written
  return out;
}

Tensor ReadTensor(std::istream& in) {
  std::string line, word;
  std::getline(in, line);
  std::istringstream head(line);
  int ndim = -1;
  head >> word >> ndim;
  if (word != "tensor" || ndim < 0) throw std::runtime_error("expected 'tensor NDIM ...', got '" + line + "'");
  Tensor t;
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    int64_t v;
    head >> v;
    t.shape.push_back(v);
    count *= static_cast<size_t>(v);
  }
  std::getline(in, line);
  t.data = FromHex(line);
  if (t.data.size() != count) throw std::runtime_error("tensor data size does not match its shape");
  return t;
}

int ReadCount(std::istream& in, const std::string& key) {
  std::string line, word;
  std::getline(in, line);
  std::istringstream s(line);
  int n = -1;
  s >> word >> n;
  if (word != key || n < 0) throw std::runtime_error("expected '" + key + " N', got '" + line + "'");
  return n;
}

std::vector<Case> ReadCases(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open case file " + path);
  std::string line;
  std::getline(in, line);
  if (line != "ssdkit-op-cases 1") throw std::runtime_error(path + " is not an ssdkit case file (tests/op_cases.py)");
  std::vector<Case> cases;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream head(line);
    std::string word;
    Case c;
    head >> word >> c.name >> c.op >> c.count_output >> c.count_groups;
    if (word != "case" || head.fail()) throw std::runtime_error("expected 'case ...', got '" + line + "'");
    const int num_attrs = ReadCount(in, "attrs");
    for (int i = 0; i < num_attrs; ++i) {
      std::getline(in, line);
      const size_t tab = line.find('\t');
      if (tab == std::string::npos) throw std::runtime_error("attribute line without a tab: '" + line + "'");
      c.attrs[line.substr(0, tab)] = line.substr(tab + 1);
    }
    const int num_inputs = ReadCount(in, "inputs");
    for (int i = 0; i < num_inputs; ++i) c.inputs.push_back(ReadTensor(in));
    const int num_outputs = ReadCount(in, "outputs");
    for (int i = 0; i < num_outputs; ++i) c.outputs.push_back(ReadTensor(in));
    const int num_tol = ReadCount(in, "tolerances");
    for (int i = 0; i < num_tol; ++i) {
      std::getline(in, line);
      std::istringstream s(line);
      double rtol, atol;
      s >> rtol >> atol;
      c.tolerances.emplace_back(rtol, atol);
    }
    const int num_heads = ReadCount(in, "backward");
    if (num_heads > 0) {
      for (int i = 0; i < num_heads; ++i) c.output_grads.push_back(ReadTensor(in));
      const int num_grads = ReadCount(in, "grads");
      for (int i = 0; i < num_grads; ++i) c.input_grads.push_back(ReadTensor(in));
    }
    std::getline(in, line);
    if (line != "end") throw std::runtime_error("case " + c.name + " does not end with 'end'");
    if (static_cast<int>(c.tolerances.size()) != num_outputs) {
      throw std::runtime_error("case " + c.name + ": one tolerance per output expected");
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// ------------------------------------------------------------------------------------------------
// Calling the registered operators
// ------------------------------------------------------------------------------------------------

CustomOp* FindOp(const std::string& name) {
  auto* reg = mxnet::ext::Registry<CustomOp>::get();
  for (int i = 0; i < reg->size(); ++i) {
    if (name == reg->get(i).name) return &reg->get(i);
  }
  return nullptr;
}

mxnet::ext::fcomp_t Lookup(const std::vector<const char*>& ctxs, const std::vector<mxnet::ext::fcomp_t>& fns,
                           const char* ctx) {
  for (size_t i = 0; i < fns.size(); ++i) {
    if (std::strcmp(ctxs[i], ctx) == 0) return fns[i];
  }
  return nullptr;
}

mxnet::ext::fcomp_t ForwardOf(CustomOp* op, const char* ctx) {
  if (op->forward_fp.empty()) op->mapToVector();  // what MXNet's loader does: the public (ctx, fn) lists
  return Lookup(op->forward_ctx_cstr, op->forward_fp, ctx);
}

mxnet::ext::fcomp_t BackwardOf(CustomOp* op, const char* ctx) {
  if (op->forward_fp.empty()) op->mapToVector();
  return Lookup(op->backward_ctx_cstr, op->backward_fp, ctx);
}

std::string LastLibError() {
  auto* msgs = mxnet::ext::MXerrorMsgs::get();
  const int n = msgs->size();
  return n > 0 ? *msgs->get(n - 1) : std::string("(no message)");
}

size_t Count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

/*! \brief Output shapes of `c` by the operator's parseAttrs / inferShape. */
std::vector<std::vector<int64_t>> OutputShapes(CustomOp* op, const Case& c) {
  int num_in = 0, num_out = 0;
  if (op->parse_attrs(c.attrs, &num_in, &num_out) != mxnet::ext::MX_SUCCESS) {
    throw std::runtime_error("parseAttrs: " + LastLibError());
  }
  if (num_in != static_cast<int>(c.inputs.size())) {
    throw std::runtime_error("the operator takes " + std::to_string(num_in) + " inputs, the case has " +
                             std::to_string(c.inputs.size()));
  }
  std::vector<std::vector<unsigned int>> in_shapes, out_shapes(num_out);
  for (const Tensor& t : c.inputs) in_shapes.emplace_back(t.shape.begin(), t.shape.end());
  if (op->infer_shape(c.attrs, &in_shapes, &out_shapes) != mxnet::ext::MX_SUCCESS) {
    throw std::runtime_error("inferShape: " + LastLibError());
  }
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& s : out_shapes) shapes.emplace_back(s.begin(), s.end());
  return shapes;
}

void* HostMalloc(void* pool, int bytes) {
  auto* blocks = static_cast<std::vector<std::vector<char>>*>(pool);
  blocks->emplace_back(static_cast<size_t>(bytes > 0 ? bytes : 1));
  return blocks->back().data();
}

/*! \brief What one run of a case gives: the outputs and, for a backward case, the input gradients. */
struct Result {
  std::vector<Tensor> outputs, grads;
};

/*! \brief Empty tensors (filled with kSentinel) of the given shapes. */
std::vector<Tensor> Blank(const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<Tensor> out(shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    out[i].shape = shapes[i];
    out[i].data.assign(Count(shapes[i]), kSentinel);
  }
  return out;
}

std::vector<std::vector<int64_t>> ShapesOf(const std::vector<Tensor>& ts) {
  std::vector<std::vector<int64_t>> shapes;
  for (const Tensor& t : ts) shapes.push_back(t.shape);
  return shapes;
}

/*! \brief The CPU kernel's outputs of `c` (and input gradients for a backward case). */
Result RunCpu(CustomOp* op, const Case& c, std::vector<std::mt19937>* cpu_states) {
  mxnet::ext::fcomp_t forward = ForwardOf(op, "cpu");
  if (forward == nullptr) throw std::runtime_error("no CPU forward registered");
  std::vector<Tensor> inputs = c.inputs;  // the kernel may not write them, but keep the case intact
  Result r;
  r.outputs = Blank(OutputShapes(op, c));
  auto view = [](std::vector<Tensor>* ts, std::vector<MXTensor>* into) {
    for (Tensor& t : *ts) into->emplace_back(t.data.data(), t.shape, mxnet::ext::kFloat32, 0, MXContext::CPU());
  };
  std::vector<MXTensor> ins, outs;
  view(&inputs, &ins);
  view(&r.outputs, &outs);
  std::vector<std::vector<char>> pool;
  OpResource res(HostMalloc, &pool, nullptr, nullptr, nullptr, nullptr, nullptr, cpu_states->data(), nullptr);
  if (forward(c.attrs, &ins, &outs, res) != mxnet::ext::MX_SUCCESS) throw std::runtime_error(LastLibError());
  if (c.output_grads.empty()) return r;
  mxnet::ext::fcomp_t backward = BackwardOf(op, "cpu");
  if (backward == nullptr) throw std::runtime_error("no CPU backward registered");
  std::vector<Tensor> heads = c.output_grads;
  r.grads = Blank(ShapesOf(c.inputs));
  std::vector<MXTensor> bins, bouts;  // inputs: (output grads..., inputs..., outputs...)
  view(&heads, &bins);
  view(&inputs, &bins);
  view(&r.outputs, &bins);
  view(&r.grads, &bouts);
  if (backward(c.attrs, &bins, &bouts, res) != mxnet::ext::MX_SUCCESS) throw std::runtime_error(LastLibError());
  return r;
}

#ifdef SSDKIT_WITH_CUDA
void* GpuMalloc(void* pool, int bytes) {
  void* p = DeviceAlloc(static_cast<size_t>(bytes > 0 ? bytes : 1));
  static_cast<std::vector<void*>*>(pool)->push_back(p);
  return p;
}

/*! \brief Device copies of host tensors (freed by the caller through `device`). */
std::vector<MXTensor> ToDevice(const std::vector<Tensor>& ts, std::vector<void*>* device, std::vector<void*>* ptrs) {
  std::vector<MXTensor> views;
  for (const Tensor& t : ts) {
    void* d = DeviceAlloc(t.data.size() * sizeof(float));
    device->push_back(d);
    if (ptrs != nullptr) ptrs->push_back(d);
    CopyToDevice(d, t.data.data(), t.data.size() * sizeof(float));
    views.emplace_back(d, t.shape, mxnet::ext::kFloat32, 0, MXContext::GPU());
  }
  return views;
}

void ToHost(std::vector<Tensor>* ts, const std::vector<void*>& ptrs) {
  for (size_t i = 0; i < ts->size(); ++i) {
    CopyToHost((*ts)[i].data.data(), ptrs[i], (*ts)[i].data.size() * sizeof(float));
  }
}

/*! \brief The CUDA kernel's outputs of `c` (and input gradients for a backward case): inputs copied to
 *  the device, outputs (first set to kSentinel there) copied back. */
Result RunGpu(CustomOp* op, const Case& c, void* stream, void* gpu_states) {
  mxnet::ext::fcomp_t forward = ForwardOf(op, "gpu");
  if (forward == nullptr) throw std::runtime_error("no GPU forward registered");
  std::vector<void*> device;  // every device buffer of this call, freed at the end
  struct Free {
    std::vector<void*>* d;
    ~Free() {
      for (void* p : *d) DeviceFree(p);
    }
  } free_all{&device};
  Result r;
  r.outputs = Blank(OutputShapes(op, c));
  std::vector<void*> out_ptrs;
  std::vector<MXTensor> ins = ToDevice(c.inputs, &device, nullptr);
  std::vector<MXTensor> outs = ToDevice(r.outputs, &device, &out_ptrs);
  OpResource res(nullptr, nullptr, GpuMalloc, &device, stream, nullptr, nullptr, nullptr, gpu_states);
  if (forward(c.attrs, &ins, &outs, res) != mxnet::ext::MX_SUCCESS) throw std::runtime_error(LastLibError());
  Synchronize(stream);
  ToHost(&r.outputs, out_ptrs);
  if (c.output_grads.empty()) return r;
  mxnet::ext::fcomp_t backward = BackwardOf(op, "gpu");
  if (backward == nullptr) throw std::runtime_error("no GPU backward registered");
  r.grads = Blank(ShapesOf(c.inputs));
  std::vector<void*> grad_ptrs;
  std::vector<MXTensor> bins = ToDevice(c.output_grads, &device, nullptr);
  bins.insert(bins.end(), ins.begin(), ins.end());
  bins.insert(bins.end(), outs.begin(), outs.end());
  std::vector<MXTensor> bouts = ToDevice(r.grads, &device, &grad_ptrs);
  if (backward(c.attrs, &bins, &bouts, res) != mxnet::ext::MX_SUCCESS) throw std::runtime_error(LastLibError());
  Synchronize(stream);
  ToHost(&r.grads, grad_ptrs);
  return r;
}
#endif

// ------------------------------------------------------------------------------------------------
// Comparison (the rule of tests/op_cases.py compare)
// ------------------------------------------------------------------------------------------------

struct Verdict {
  bool ok = true;
  double max_abs_diff = 0.0;  // over the compared values that are both finite
  std::string detail;         // first problem
  void Fail(const std::string& what) {
    if (ok) detail = what;
    ok = false;
  }
};

std::vector<int64_t> SignCounts(const Tensor& t, int groups) {
  std::vector<int64_t> counts(3 * static_cast<size_t>(groups), 0);
  const size_t per = t.data.size() / static_cast<size_t>(groups);
  for (size_t i = 0; i < t.data.size(); ++i) {
    const size_t g = i / per;
    const float v = t.data[i];
    counts[3 * g + (v > 0.f ? 0 : (v == 0.f ? 1 : 2))] += 1;
  }
  return counts;
}

/*! \brief `got` against `want` for case `c`; `exact` ignores the case's tolerances (bit-equal values). */
Verdict Compare(const Case& c, const std::vector<Tensor>& got, const std::vector<Tensor>& want, bool exact,
                bool grads = false) {
  Verdict v;
  if (got.size() != want.size()) {
    v.Fail(std::to_string(got.size()) + " outputs, expected " + std::to_string(want.size()));
    return v;
  }
  for (size_t o = 0; o < got.size(); ++o) {
    const Tensor& g = got[o];
    const Tensor& w = want[o];
    if (g.shape != w.shape) {
      v.Fail("output " + std::to_string(o) + ": shape differs");
      continue;
    }
    if (c.count_output >= 0 && !grads) {
      if (static_cast<int>(o) == c.count_output && SignCounts(g, c.count_groups) != SignCounts(w, c.count_groups)) {
        v.Fail("output " + std::to_string(o) + ": per-image counts of >0 / 0 / <0 values differ");
      }
      continue;
    }
    // gradients: kCloseTolerance (atomics add in another order on the GPU)
    const double rtol = exact ? 0.0 : (grads ? kCloseTolerance : c.tolerances[o].first);
    const double atol = exact ? 0.0 : (grads ? kCloseTolerance : c.tolerances[o].second);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < g.data.size(); ++i) {
      const double a = g.data[i], b = w.data[i];
      if (std::isnan(a) && std::isnan(b)) continue;
      const bool equal = exact ? std::memcmp(&g.data[i], &w.data[i], sizeof(float)) == 0 : a == b;
      if (std::isfinite(a) && std::isfinite(b) && std::fabs(a - b) > v.max_abs_diff) v.max_abs_diff = std::fabs(a - b);
      if (equal || (!exact && std::fabs(a - b) <= atol + rtol * std::fabs(b))) continue;
      if (bad++ == 0) first = i;
    }
    if (bad > 0) {
      char buf[200];
      const char* format = grads ? "gradient %zu: %zu of %zu values differ (first at %zu: %.9g vs %.9g)"
                                 : "output %zu: %zu of %zu values differ (first at %zu: %.9g vs %.9g)";
      std::snprintf(buf, sizeof(buf), format, o, bad,
                    g.data.size(), first, g.data[first], w.data[first]);
      v.Fail(buf);
    }
  }
  return v;
}

std::string Cell(const Verdict& v, bool ran) {
  if (!ran) return "-";
  if (!v.ok) return "MISMATCH";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "ok (max |d| %.1e)", v.max_abs_diff);
  return buf;
}

int Usage() {
  std::cerr << "usage: selftest CASES [--cpu-only] [--case NAME]...\n"
               "  CASES: written by `python tests/op_cases.py CASES`\n";
  return 2;
}

}  // namespace
}  // namespace selftest

int main(int argc, char** argv) {
  using namespace selftest;
  std::string path;
  bool cpu_only = false;
  std::vector<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cpu-only") {
      cpu_only = true;
    } else if (a == "--case" && i + 1 < argc) {
      only.push_back(argv[++i]);
    } else if (!a.empty() && a[0] != '-' && path.empty()) {
      path = a;
    } else {
      return Usage();
    }
  }
  if (path.empty()) return Usage();
  std::vector<Case> cases;
  try {
    cases = ReadCases(path);
  } catch (const std::exception& e) {
    std::cerr << "selftest: " << e.what() << "\n";
    return 2;
  }
  bool gpu = !cpu_only;
  std::string no_gpu_reason;
#ifdef SSDKIT_WITH_CUDA
  void* stream = nullptr;
  void* gpu_states = nullptr;
  if (gpu) {
    std::string why;
    if (DeviceCount(&why) == 0) {
      gpu = false;
      no_gpu_reason = "no CUDA device found" + (why.empty() ? std::string() : " (" + why + ")");
    } else {
      std::cout << "GPU: " << DeviceDescription() << "\n";
      stream = NewStream();
      gpu_states = NewPhiloxStates(ssdkit::sample::kGpuRandomStates, 20261202u);
    }
  }
#else
  if (gpu) {
    gpu = false;
    no_gpu_reason = "this build has no CUDA (built without nvcc)";
  }
#endif
  std::vector<std::mt19937> cpu_states;
  for (int i = 0; i < ssdkit::sample::kCpuRandomStates; ++i) cpu_states.emplace_back(1000u + i);

  std::printf("%-34s %-20s %-22s %-22s\n", "case", "operator", "CPU kernel vs MXNet", "GPU kernel vs CPU");
  int failures = 0, run = 0;
  for (const Case& c : cases) {
    if (!only.empty() && std::find(only.begin(), only.end(), c.name) == only.end()) continue;
    ++run;
    Verdict cpu_v, gpu_v;
    std::string error;
    bool gpu_ran = false;
    try {
      CustomOp* op = FindOp(c.op);
      if (op == nullptr) throw std::runtime_error("operator " + c.op + " is not registered");
      const Result cpu_out = RunCpu(op, c, &cpu_states);
      cpu_v = Compare(c, cpu_out.outputs, c.outputs, /*exact=*/true);
      if (!c.output_grads.empty()) {
        const Verdict g = Compare(c, cpu_out.grads, c.input_grads, /*exact=*/true, /*grads=*/true);
        if (!g.ok) cpu_v.Fail(g.detail);
      }
#ifdef SSDKIT_WITH_CUDA
      if (gpu) {
        const Result gpu_out = RunGpu(op, c, stream, gpu_states);
        gpu_ran = true;
        gpu_v = Compare(c, gpu_out.outputs, cpu_out.outputs, /*exact=*/false);
        if (!c.output_grads.empty()) {
          const Verdict g = Compare(c, gpu_out.grads, cpu_out.grads, /*exact=*/false, /*grads=*/true);
          if (!g.ok) gpu_v.Fail(g.detail);
          if (g.max_abs_diff > gpu_v.max_abs_diff) gpu_v.max_abs_diff = g.max_abs_diff;
        }
      }
#endif
    } catch (const std::exception& e) {
      error = e.what();
    }
    const bool ok = error.empty() && cpu_v.ok && gpu_v.ok;
    if (!ok) ++failures;
    const std::string label = c.name + (c.output_grads.empty() ? "" : " (+grad)");
    std::printf("%-34s %-20s %-22s %-22s\n", label.c_str(), c.op.c_str(),
                error.empty() ? Cell(cpu_v, true).c_str() : "ERROR", Cell(gpu_v, gpu_ran).c_str());
    if (!error.empty()) std::printf("    error: %s\n", error.c_str());
    if (!cpu_v.ok) std::printf("    CPU: %s\n", cpu_v.detail.c_str());
    if (!gpu_v.ok) std::printf("    GPU: %s\n", gpu_v.detail.c_str());
  }
  if (run == 0) {
    std::cerr << "selftest: no case selected\n";
    return 2;
  }
  std::printf("%d cases, %d failed; CPU half: %s; GPU half: %s\n", run, failures, "run",
              gpu ? "run" : (cpu_only ? "not requested (--cpu-only)" : ("NOT RUN: " + no_gpu_reason).c_str()));
#ifdef SSDKIT_WITH_CUDA
  if (stream != nullptr) FreeStream(stream);
  if (gpu_states != nullptr) DeviceFree(gpu_states);
#endif
  if (failures > 0) return 1;
  if (!gpu && !cpu_only) return 3;
  return 0;
}
