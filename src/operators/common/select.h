/*!
 * \file select.h
 * \brief Selection of the k smallest of n keyed candidates, ties by lower index: one rule, one
 *        radix-select step logic, run serially on the CPU and by one CUDA block on the GPU.
 *
 * Rule: of the candidates j in [0, n) (cand(j) true), keep the k whose uint32 key(j) is smallest;
 * among equal keys the lower j is kept. Keys come from a key function, e.g. AscendingKey(score)
 * (hardest negatives: lowest background probability) or a random word per candidate (uniform
 * subsampling on the GPU, common/sample.h).
 *
 * Algorithm (both sides): a most-significant-digit radix select over 4 digits of 8 bits. For each
 * digit, the histogram of that digit among the candidates whose higher digits equal the prefix
 * found so far is counted; RadixSelectStep picks the bucket holding the rank-th smallest key and
 * extends the prefix. After the 4 digits the prefix is the pivot (the k-th smallest key) and
 * `rank` is how many pivot-equal keys are kept (the lowest indices); KeptBySelection is the final
 * per-candidate test. The CPU (SelectSmallestK: MultiBoxTarget's hard-negative mining) counts the
 * histograms in one loop; the GPU (BlockSelectSmallestK, nvcc only: MultiBoxTarget's mining,
 * RPNTarget's and ProposalTarget's random subsampling) counts them with shared-memory atomics
 * and orders pivot-equal keys by a block-wide scan. DigitOf, InPrefix, RadixSelectStep and
 * KeptBySelection are the same host/device functions on both sides.
 * Standard library only (cub inside __CUDACC__), so CUDA sources may include it.
 */
#ifndef SSDKIT_COMMON_SELECT_H_
#define SSDKIT_COMMON_SELECT_H_

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/macros.h"

#ifdef __CUDACC__
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#endif

namespace ssdkit {
namespace select {

constexpr int kDigitBits = 8;
constexpr int kBins = 1 << kDigitBits;  // 256 buckets per digit
constexpr int kTopShift = 32 - kDigitBits;

/*!
 * \brief Key of a score for "smallest first": a smaller score has a smaller key, -0 and +0 share
 *  one, NaN ranks with +inf (last; among them by index), every key is a strict total order on the
 *  other floats. (The integer form of comparing scores with NaN replaced by +inf.)
 */
SSDKIT_HD uint32_t AscendingKey(float score) {
  uint32_t u;
  if (score != score) {
    u = 0x7F800000u;  // NaN -> +inf
  } else {
    const float s = score + 0.f;  // -0 -> +0
#ifdef __CUDA_ARCH__
    u = __float_as_uint(s);
#else
    std::memcpy(&u, &s, sizeof(u));
#endif
  }
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/*! \brief Digit of `key` at bit `shift` (0, 8, 16, 24). */
SSDKIT_HD int DigitOf(uint32_t key, int shift) { return static_cast<int>((key >> shift) & (kBins - 1)); }

/*! \brief True if the digits of `key` above bit `shift + 8` equal those of `prefix`. */
SSDKIT_HD bool InPrefix(uint32_t key, uint32_t prefix, int shift) {
  const int high = shift + kDigitBits;
  return high >= 32 || (key >> high) == (prefix >> high);
}

/*!
 * \brief One digit of the radix select: `hist` (kBins,) counts the digit at `shift` among the
 *  candidates in the prefix; the bucket holding the `*rank`-th smallest (1-based) becomes that
 *  digit of `*prefix`, and `*rank` becomes the rank within the bucket.
 */
SSDKIT_HD void RadixSelectStep(const int* hist, int shift, uint32_t* prefix, int* rank) {
  int d = 0;
  while (d < kBins - 1 && *rank > hist[d]) {
    *rank -= hist[d];
    ++d;
  }
  *prefix |= static_cast<uint32_t>(d) << shift;
}

/*! \brief Final test: keys below the pivot are kept; of the keys equal to it, the first `rank`
 *  (by index: `equal_before` pivot-equal candidates precede this one). */
SSDKIT_HD bool KeptBySelection(uint32_t key, uint32_t pivot, int equal_before, int rank) {
  return key < pivot || (key == pivot && equal_before < rank);
}

/*!
 * \brief CPU: of `n` keys (candidates in index order), keep the k smallest (ties: lower position).
 *  Calls keep(i) for every kept position i, in ascending order; returns the number kept
 *  (min(max(k, 0), n)). `hist` is scratch.
 */
template <typename Keep>
inline int SelectSmallestK(const uint32_t* keys, int n, int k, Keep keep) {
  if (k <= 0 || n <= 0) return 0;
  if (k >= n) {
    for (int i = 0; i < n; ++i) keep(i);
    return n;
  }
  int hist[kBins];
  uint32_t prefix = 0;
  int rank = k;
  for (int shift = kTopShift; shift >= 0; shift -= kDigitBits) {
    for (int d = 0; d < kBins; ++d) hist[d] = 0;
    for (int i = 0; i < n; ++i) {
      if (InPrefix(keys[i], prefix, shift)) ++hist[DigitOf(keys[i], shift)];
    }
    RadixSelectStep(hist, shift, &prefix, &rank);
  }
  int equal_before = 0;
  for (int i = 0; i < n; ++i) {
    const uint32_t key = keys[i];
    if (KeptBySelection(key, prefix, equal_before, rank)) keep(i);
    equal_before += key == prefix ? 1 : 0;
  }
  return k;
}

#ifdef __CUDACC__
/*!
 * \brief GPU, block-wide (all kThreads threads call it): of the candidates j in [0, n) (cand(j)
 *  true), keep the k with the smallest key(j) (ties: lower j) and call drop(j) on every other
 *  candidate. cand(j) must not change before drop(j) is called on j; the caller's writes that
 *  cand reads must be visible to the block (a barrier) before the call. Returns the number kept,
 *  uniform across the block.
 */
template <int kThreads, class Key, class Cand, class Drop>
__device__ int BlockSelectSmallestK(int n, int k, Key key, Cand cand, Drop drop) {
  using Reduce = cub::BlockReduce<int, kThreads>;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } storage;
  __shared__ int shared_total;
  __shared__ int hist[kBins];
  int local = 0;
  for (int j = threadIdx.x; j < n; j += kThreads) local += cand(j) ? 1 : 0;
  __syncthreads();
  const int total = Reduce(storage.reduce).Sum(local);
  if (threadIdx.x == 0) shared_total = total;
  __syncthreads();
  const int count = shared_total;
  if (k >= count) return count;
  if (k <= 0) {
    for (int j = threadIdx.x; j < n; j += kThreads) {
      if (cand(j)) drop(j);
    }
    __syncthreads();
    return 0;
  }
  uint32_t prefix = 0;
  int rank = k;
  for (int shift = kTopShift; shift >= 0; shift -= kDigitBits) {
    for (int d = threadIdx.x; d < kBins; d += kThreads) hist[d] = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += kThreads) {
      if (!cand(j)) continue;
      const uint32_t kj = key(j);
      if (InPrefix(kj, prefix, shift)) atomicAdd(&hist[DigitOf(kj, shift)], 1);
    }
    __syncthreads();
    RadixSelectStep(hist, shift, &prefix, &rank);  // every thread, same inputs: uniform result
    __syncthreads();                               // hist is cleared for the next digit
  }
  const uint32_t pivot = prefix;
  int taken = 0;  // pivot-equal candidates before this chunk, uniform across the block
  for (int base = 0; base < n; base += kThreads) {
    const int j = base + threadIdx.x;
    const bool c = j < n && cand(j);
    const uint32_t kj = c ? key(j) : 0u;
    const int equal = (c && kj == pivot) ? 1 : 0;
    int before = 0, chunk = 0;
    __syncthreads();
    Scan(storage.scan).ExclusiveSum(equal, before, chunk);
    if (c && !KeptBySelection(kj, pivot, taken + before, rank)) drop(j);
    taken += chunk;
  }
  __syncthreads();
  return k;
}
#endif  // __CUDACC__

}  // namespace select
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_SELECT_H_
