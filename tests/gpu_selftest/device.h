/*!
 * \file device.h
 * \brief The self-test's few CUDA runtime calls (device.cu, nvcc), behind plain C++ so that
 *        selftest.cc compiles with g++ alone and without CUDA headers.
 */
#ifndef SSDKIT_GPU_SELFTEST_DEVICE_H_
#define SSDKIT_GPU_SELFTEST_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace selftest {

/*! \brief Number of CUDA devices (0 when there is none or no driver); `why` gets the runtime's text. */
int DeviceCount(std::string* why);
/*! \brief "name, compute capability, driver and runtime versions" of device 0 (made current). */
std::string DeviceDescription();
/*! \brief A new CUDA stream (as void*). */
void* NewStream();
void FreeStream(void* stream);
/*! \brief Device memory of `bytes` (at least 1); throws on failure. */
void* DeviceAlloc(size_t bytes);
void DeviceFree(void* ptr);
void CopyToDevice(void* dst, const void* src, size_t bytes);
void CopyToHost(void* dst, const void* src, size_t bytes);
void FillDevice(void* dst, int byte, size_t bytes);
/*! \brief Wait for `stream`; throws with the CUDA error text (e.g. a kernel fault) if one occurred. */
void Synchronize(void* stream);
/*!
 * \brief `count` Philox random states (the curandStatePhilox4_32_10_t layout, 64 bytes each, as
 *  common/sample.h PhiloxStateView mirrors) in device memory: key = seed, state i on subsequence i.
 */
void* NewPhiloxStates(int count, uint64_t seed);

}  // namespace selftest

#endif  // SSDKIT_GPU_SELFTEST_DEVICE_H_
