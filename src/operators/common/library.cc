/*!
 * \file library.cc
 * \brief Library entry points: MXNet's initialize(), build identity, thread control, zero backward.
 */
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

// Standard headers come first so that only lib_api.h's own classes see the define below.
// lib_api's error registry has no way to forget reported messages; this file alone opens it up
// (same layout, only access changes) so each error reaches the user without the earlier ones.
#define private public
#include "mxnet/lib_api.h"
#undef private

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "common/lib_glue.h"
#include "common/parallel.h"
#ifdef SSDKIT_WITH_CUDA
#include "common/cuda_utils.h"
#endif

#ifndef SSDKIT_MXNET_VERSION
#error "SSDKIT_MXNET_VERSION must be defined by the build (setup.py)"
#endif
#ifndef SSDKIT_SOURCE_HASH
#error "SSDKIT_SOURCE_HASH must be defined by the build (setup.py)"
#endif

namespace ssdkit {
namespace {

int PositiveEnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  // OMP_NUM_THREADS may be a list ("4,2"); its first entry is the outer level.
  if (end == v || n <= 0) return 0;
  return static_cast<int>(std::min<long>(n, 4096));
}

int DefaultThreads() {
  int omp = PositiveEnvInt("OMP_NUM_THREADS");
  int mx = PositiveEnvInt("MXNET_OMP_MAX_THREADS");
  if (omp > 0 && mx > 0) return std::min(omp, mx);
  if (omp > 0) return omp;
  if (mx > 0) return mx;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

std::atomic<int> g_num_threads{DefaultThreads()};
std::atomic<int> g_threads_used{0};

}  // namespace

MXReturnValue ReportError(const std::string& message) {
  auto* registry = mxnet::ext::MXerrorMsgs::get();
  for (auto* old : registry->messages) delete old;
  registry->messages.clear();
  MX_ERROR_MSG << message;
  return mxnet::ext::MX_FAIL;
}

int NumThreads() { return g_num_threads.load(std::memory_order_relaxed); }

void RecordThreadsUsed(int n) { g_threads_used.store(n, std::memory_order_relaxed); }

MXReturnValue ZeroBackwardCPU(const std::unordered_map<std::string, std::string>&,
                              std::vector<MXTensor>*, std::vector<MXTensor>* outputs,
                              const OpResource&) {
  for (auto& t : *outputs) {
    if (t.dtype != mxnet::ext::kFloat32) continue;
    std::memset(t.data_ptr, 0, sizeof(float) * static_cast<size_t>(t.size()));
  }
  return mxnet::ext::MX_SUCCESS;
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue ZeroBackwardGPU(const std::unordered_map<std::string, std::string>& attrs,
                              std::vector<MXTensor>*, std::vector<MXTensor>* outputs,
                              const OpResource& res) {
  return Guard("backward", [&]() {
    for (auto& t : *outputs) {
      if (t.dtype != mxnet::ext::kFloat32) continue;
      cuda::ZeroFill(t.data<float>(), static_cast<size_t>(t.size()), res.get_cuda_stream());
    }
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace ssdkit

extern "C" {

/*! \brief MXNet calls this when loading the library; refuse an MXNet whose lib_api differs. */
mxnet::ext::MXReturnValue initialize(int version) {
  if (version >= 10900) return mxnet::ext::MX_SUCCESS;
  return ssdkit::ReportError("ssdkit operators need MXNet >= 1.9.0 (this MXNet reports " +
                             std::to_string(version) + ")");
}

/*! \brief The MXNet version the library was compiled against, e.g. "1.9.1". */
const char* ssdkit_mxnet_version() { return SSDKIT_MXNET_VERSION; }

/*! \brief Hash of src/operators at build time (see ssdkit/_buildinfo.py). */
const char* ssdkit_source_hash() { return SSDKIT_SOURCE_HASH; }

/*! \brief 1 if this library carries CUDA kernels. */
int ssdkit_with_cuda() {
#ifdef SSDKIT_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

int ssdkit_get_num_threads() { return ssdkit::NumThreads(); }

void ssdkit_set_num_threads(int n) {
  ssdkit::g_num_threads.store(n > 0 ? n : 1, std::memory_order_relaxed);
}

/*! \brief Threads the most recent parallel region of any ssdkit CPU kernel ran with. */
int ssdkit_threads_used() {
  return ssdkit::g_threads_used.load(std::memory_order_relaxed);
}

}  // extern "C"
