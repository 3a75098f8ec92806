/*! \file macros.h \brief Qualifiers for code shared by the CPU (g++) and CUDA (nvcc) builds. */
#ifndef SSDKIT_COMMON_MACROS_H_
#define SSDKIT_COMMON_MACROS_H_

#ifdef __CUDACC__
#define SSDKIT_HD __host__ __device__ __forceinline__
#else
#define SSDKIT_HD inline
#endif

/*! \brief SSDKIT_HD that g++ must inline: the vectorised loops called from a function compiled for
 *  several instruction sets (target_clones) only get the AVX2 code when inlined into its AVX2 copy. */
#if defined(__CUDACC__)
#define SSDKIT_HD_ALWAYS_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SSDKIT_HD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SSDKIT_HD_ALWAYS_INLINE inline
#endif

/*! \brief `#pragma omp simd` before a loop in a host/device function (g++ with OpenMP only). */
#if defined(_OPENMP) && !defined(__CUDACC__)
#define SSDKIT_SIMD _Pragma("omp simd")
#else
#define SSDKIT_SIMD
#endif

#endif  // SSDKIT_COMMON_MACROS_H_
