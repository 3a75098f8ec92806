// The self-test's CUDA runtime calls (see device.h). Compiled by nvcc.
#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/sample.h"
#include "device.h"

namespace selftest {
namespace {

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

int DeviceCount(std::string* why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why != nullptr) *why = cudaGetErrorString(err);
    return 0;
  }
  return n;
}

std::string DeviceDescription() {
  Check(cudaSetDevice(0), "cudaSetDevice");
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return std::string(prop.name) + ", compute capability " + std::to_string(prop.major) + "." +
         std::to_string(prop.minor) + ", " + std::to_string(prop.totalGlobalMem >> 20) + " MiB, driver API " +
         std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10) + ", runtime " +
         std::to_string(runtime / 1000) + "." + std::to_string((runtime % 1000) / 10);
}

void* NewStream() {
  cudaStream_t s;
  Check(cudaStreamCreate(&s), "cudaStreamCreate");
  return s;
}

void FreeStream(void* stream) { cudaStreamDestroy(static_cast<cudaStream_t>(stream)); }

void* DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  Check(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return p;
}

void DeviceFree(void* ptr) { cudaFree(ptr); }

void CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

void FillDevice(void* dst, int byte, size_t bytes) {
  if (bytes > 0) Check(cudaMemset(dst, byte, bytes), "cudaMemset");
}

void Synchronize(void* stream) {
  Check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "kernel execution");
  Check(cudaGetLastError(), "kernel launch");
}

void* NewPhiloxStates(int count, uint64_t seed) {
  std::vector<ssdkit::sample::PhiloxStateView> host(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    ssdkit::sample::PhiloxStateView& s = host[i];
    std::memset(&s, 0, sizeof(s));
    s.key[0] = static_cast<uint32_t>(seed);
    s.key[1] = static_cast<uint32_t>(seed >> 32);
    s.ctr[2] = static_cast<uint32_t>(i);  // subsequence i, as curand_init(seed, i, 0) places it
    s.state = 0;
  }
  void* d = DeviceAlloc(host.size() * sizeof(host[0]));
  CopyToDevice(d, host.data(), host.size() * sizeof(host[0]));
  return d;
}

}  // namespace selftest
