/*!
 * \file cuda_utils.h
 * \brief Host-side CUDA helpers: declarations of those defined in common/cuda_utils.cu, and the
 *  workspace layout and launch-size arithmetic of the operators' .cu files. The stream travels as
 *  void* so that files compiled by g++ need no CUDA headers; Check (cudaError_t) exists in nvcc
 *  compilations only.
 */
#ifndef SSDKIT_COMMON_CUDA_UTILS_H_
#define SSDKIT_COMMON_CUDA_UTILS_H_

#include <cstddef>
#include <string>

#ifdef __CUDACC__
#include <cuda_runtime.h>

#include <stdexcept>
#endif

namespace ssdkit {
namespace cuda {

/*! \brief Fill `count` floats at device pointer `dst` with zero on `stream`. */
void ZeroFill(float* dst, size_t count, void* stream);

/*! \brief Throw std::runtime_error with the CUDA error text if the last launch failed. */
void CheckLastError(const char* what);

/*!
 * \brief Copy `im_info` (device pointer, (batch, 3)) to the host on `stream`, wait for it, and run
 *  the CPU's check on it (common/two_stage.h CheckImInfoValues): the GPU paths of the FPN ops raise
 *  the same error as their CPU paths.
 */
void CheckImInfoOnDevice(const float* im_info, int batch, void* stream);

/*! \brief `bytes` rounded up to a multiple of 256: every workspace piece starts on a 256-byte boundary. */
inline size_t AlignUp256(size_t bytes) { return (bytes + 255) & ~static_cast<size_t>(255); }

/*!
 * \brief Lays a device workspace out piece by piece, each AlignUp256'd, from `base`; with base
 *  nullptr it only measures (every piece is nullptr, used() is the size to allocate).
 */
class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}
  /*! \brief The next piece: `count` values of T. */
  template <typename T>
  T* Take(size_t count) {
    char* piece = base_ == nullptr ? nullptr : base_ + used_;
    used_ += AlignUp256(count * sizeof(T));
    return reinterpret_cast<T*>(piece);
  }
  /*! \brief Bytes laid out so far. */
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

/*! \brief Blocks of `threads` for a grid-stride loop over `count` items: at least 1, at most 65535. */
inline int GridFor(size_t count, int threads) {
  size_t blocks = (count + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<int>(blocks > 65535 ? 65535 : blocks);
}

#ifdef __CUDACC__
/*! \brief Throw std::runtime_error "`what`: <CUDA error text>" unless `err` is cudaSuccess. */
inline void Check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw std::runtime_error(what + ": " + cudaGetErrorString(err));
}
#endif

}  // namespace cuda
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_CUDA_UTILS_H_
