/*! \file macros.h \brief Qualifiers for code shared by the CPU (g++) and CUDA (nvcc) builds. */
#ifndef SSDKIT_COMMON_MACROS_H_
#define SSDKIT_COMMON_MACROS_H_

#ifdef __CUDACC__
#define SSDKIT_HD __host__ __device__ __forceinline__
#else
#define SSDKIT_HD inline
#endif

#endif  // SSDKIT_COMMON_MACROS_H_
