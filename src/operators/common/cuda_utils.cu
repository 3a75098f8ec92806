// CUDA helpers shared by the operators' GPU paths. Compiled by nvcc; never includes lib_api.h.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"

namespace ssdkit {
namespace cuda {

void ZeroFill(float* dst, size_t count, void* stream) {
  if (count == 0) return;
  cudaError_t err = cudaMemsetAsync(dst, 0, count * sizeof(float), static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) throw std::runtime_error(std::string("cudaMemsetAsync: ") + cudaGetErrorString(err));
}

void CheckLastError(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace cuda
}  // namespace ssdkit
