// CUDA helpers shared by the operators' GPU paths. Compiled by nvcc; never includes lib_api.h.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_utils.h"
#include "common/two_stage.h"

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

void CheckImInfoOnDevice(const float* im_info, int batch, void* stream) {
  if (batch <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  std::vector<float> host(3 * static_cast<size_t>(batch));
  cudaError_t err = cudaMemcpyAsync(host.data(), im_info, host.size() * sizeof(float), cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  if (err != cudaSuccess) throw std::runtime_error(std::string("im_info copy: ") + cudaGetErrorString(err));
  CheckImInfoValues(host.data(), batch);
}

}  // namespace cuda
}  // namespace ssdkit
