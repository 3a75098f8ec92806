/*!
 * \file topk.h
 * \brief Top-k selection by descending score with a deterministic tie-break (CPU, std only).
 *
 * The order is that of a stable sort by descending score: equal scores keep ascending index
 * order, and NaN ranks below every number (-inf included). Because (score, index) is a total
 * order, a partial sort (nth_element, then sorting the first k) returns exactly the first k
 * entries of the full stable sort, in O(n + k log k).
 * Shared by MultiBoxDetection, FPNProposal and RCNNDetection; ScoreRankKey is the integer form
 * of this order (for finite scores) that FPNProposal's CPU ranking and the radix sorts of the FPN
 * CUDA kernels use.
 */
#ifndef SSDKIT_COMMON_TOPK_H_
#define SSDKIT_COMMON_TOPK_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "common/macros.h"

namespace ssdkit {

/*!
 * \brief The whole TopKDescending order of one score as an integer (host and device): a higher
 *  score has a larger key, -0 and +0 share one, NaN has key 0, below every number (-inf included).
 *  MultiBoxDetection's CPU ranking (TopKDescending) and its CUDA radix sort both rank by it.
 */
SSDKIT_HD uint32_t TotalRankKey(float score) {
  if (score != score) return 0u;
  const float s = score + 0.f;  // -0 -> +0
#ifdef __CUDA_ARCH__
  const uint32_t u = __float_as_uint(s);
#else
  uint32_t u;
  std::memcpy(&u, &s, sizeof(u));
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // never 0: that is a NaN's complement
}

/*!
 * \brief The indices 0..n-1 of the `k` best `scores` in rank order (see file comment).
 *  Each entry is ranked as one 64-bit integer, (TotalRankKey(score) << 32) | ~index, so descending
 *  integers are descending scores, then ascending indices: plain integer comparisons instead of
 *  a comparator that loads two scores through their indices.
 * \param scores  (n,) scores
 * \param k       how many to return; k < 0 or k >= n returns all n, fully ranked
 * \param order   output, resized to min(k, n) (or n)
 */
inline void TopKDescending(const float* scores, int n, int k, std::vector<int>* order,
                           std::vector<uint64_t>* keys) {
  keys->resize(static_cast<size_t>(n));
  uint64_t* key = keys->data();
  for (int i = 0; i < n; ++i) {
    key[i] = (static_cast<uint64_t>(TotalRankKey(scores[i])) << 32) | (~static_cast<uint32_t>(i));
  }
  const int m = (k < 0 || k >= n) ? n : k;
  const std::greater<uint64_t> descending;
  if (m < n) std::nth_element(key, key + m, key + n, descending);
  std::sort(key, key + m, descending);
  order->resize(static_cast<size_t>(m));
  for (int r = 0; r < m; ++r) (*order)[r] = static_cast<int>(~static_cast<uint32_t>(key[r]));
}

/*!
 * \brief TopKDescending for a small k (k * 8 <= n suits it): one pass appending to a buffer only the
 *  keys above the k-th best key known so far; when the buffer holds 4k keys, nth_element cuts it
 *  back to the best k and raises that bar. For scores in no particular order few keys pass the bar
 *  after the first few k, so this is one cheap compare per score; in the worst order (rising scores)
 *  it is a partial sort of every 3k new keys, O(n) in all. Same result as TopKDescending (the keys
 *  are a total order). Returns false, leaving `order` unspecified, when fewer than k scores are
 *  numbers (NaN never passes the bar); the caller then uses TopKDescending.
 * \param buffer  reusable scratch
 */
inline bool TopKDescendingByBar(const float* scores, int n, int k, std::vector<int>* order,
                                std::vector<uint64_t>* buffer) {
  if (k <= 0 || k >= n) return false;
  const int cap = 4 * k;
  buffer->resize(static_cast<size_t>(cap));
  uint64_t* buf = buffer->data();
  const std::greater<uint64_t> descending;
  uint64_t bar = 0;  // keys must be above it; 0 is NaN's key
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const uint64_t key = (static_cast<uint64_t>(TotalRankKey(scores[i])) << 32) | (~static_cast<uint32_t>(i));
    if (key <= bar) continue;
    buf[m++] = key;
    if (m == cap) {
      std::nth_element(buf, buf + (k - 1), buf + m, descending);
      bar = buf[k - 1];
      m = k;
    }
  }
  if (m < k) return false;
  std::nth_element(buf, buf + (k - 1), buf + m, descending);
  std::sort(buf, buf + k, descending);
  order->resize(static_cast<size_t>(k));
  for (int r = 0; r < k; ++r) (*order)[r] = static_cast<int>(~static_cast<uint32_t>(buf[r]));
  return true;
}

/*! \brief TopKDescending with its own key buffer (`keys`: reusable scratch in the overload above). */
inline void TopKDescending(const float* scores, int n, int k, std::vector<int>* order) {
  std::vector<uint64_t> keys;
  TopKDescending(scores, n, k, order, &keys);
}

/*!
 * \brief An order-preserving integer key of a score (host and device): a larger finite score has a
 *  larger key (-0 ranks as +0) and every finite score a key > 0; a non-finite score (NaN, +-inf)
 *  has key 0, below all of them (FPNProposal and RCNNDetection take no candidate with such a
 *  score). Descending keys, ties by ascending index, are the TopKDescending order of finite scores.
 */
SSDKIT_HD uint32_t ScoreRankKey(float score) {
  if (!(score - score == 0.f)) return 0u;  // NaN or inf
  const float s = score + 0.f;               // -0 -> +0
#ifdef __CUDA_ARCH__
  const uint32_t u = __float_as_uint(s);
#else
  uint32_t u;
  std::memcpy(&u, &s, sizeof(u));
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_TOPK_H_
