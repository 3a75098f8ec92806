/*!
 * \file cuda_utils.h
 * \brief Host-side declarations of CUDA helpers defined in common/cuda_utils.cu.
 *  The stream travels as void* so that files compiled by g++ need no CUDA headers.
 */
#ifndef SSDKIT_COMMON_CUDA_UTILS_H_
#define SSDKIT_COMMON_CUDA_UTILS_H_

#include <cstddef>

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

}  // namespace cuda
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_CUDA_UTILS_H_
