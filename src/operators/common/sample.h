/*!
 * \file sample.h
 * \brief Random subsampling shared by the target operators (RPNTarget, ProposalTarget): keep k of
 *        n candidates, chosen uniformly at random, reproducibly under mx.random.seed.
 *
 * The randomness is MXNet's: the per-device parallel random states that lib_api hands to every
 * forward call (OpResource::get_cpu_rand_states / get_gpu_rand_states). mx.random.seed(s)
 * reseeds them and every draw advances them, so the same seed gives the same samples and
 * successive calls give new ones.
 *
 * CPU: image b draws from state b % kCpuRandomStates (a std::mt19937). Images sharing a state are
 *   processed in image order by one thread, so the samples do not depend on the thread count.
 *   ChooseK is a partial Fisher-Yates shuffle (k draws of UniformBelow, Lemire's unbiased
 *   multiply-shift); no draw is made when all candidates are kept.
 * GPU: image b uses state b (a curand Philox4x32-10 state). Candidate j of a selection gets the
 *   random key Philox(counter + j, key) (word `stream` of the block), computed in parallel, and
 *   the k candidates with the smallest keys (ties: lower index) are kept by
 *   common/select.h BlockSelectSmallestK (the radix select MultiBoxTarget's mining also runs). The state's counter is then advanced past the blocks used, so neither we
 *   nor MXNet reuse them. This CUDA toolkit ships no curand headers, so the state is read through
 *   PhiloxStateView, a mirror of the documented curandStatePhilox4_32_10_t layout. The GPU path is
 *   compiled but has never run (no GPU on the development machines).
 * Standard library only, so CUDA sources may include it.
 */
#ifndef SSDKIT_COMMON_SAMPLE_H_
#define SSDKIT_COMMON_SAMPLE_H_

#include <cstdint>
#include <utility>

#include "common/macros.h"

namespace ssdkit {
namespace sample {

/*! \brief Number of CPU random states lib_api provides (MX_NUM_CPU_RANDOM_STATES). */
constexpr int kCpuRandomStates = 1024;
/*! \brief Number of GPU random states lib_api provides (MX_NUM_GPU_RANDOM_STATES). */
constexpr int kGpuRandomStates = 32768;

/*! \brief Uniform integer in [0, bound) from a generator of uniform 32-bit words (bound >= 1). */
template <class Rng>
inline uint32_t UniformBelow(uint32_t bound, Rng* rng) {
  uint64_t m = static_cast<uint64_t>(static_cast<uint32_t>((*rng)())) * bound;
  uint32_t low = static_cast<uint32_t>(m);
  if (low < bound) {
    const uint32_t threshold = static_cast<uint32_t>(-bound) % bound;
    while (low < threshold) {
      m = static_cast<uint64_t>(static_cast<uint32_t>((*rng)())) * bound;
      low = static_cast<uint32_t>(m);
    }
  }
  return static_cast<uint32_t>(m >> 32);
}

/*!
 * \brief Keep min(k, n) of the n items, a uniformly random subset.
 * \param items  (n,) in: candidates; out: the kept ones first (items[0..return)), in random order
 *               when k < n, unchanged when k >= n
 * \param k      how many to keep; k <= 0 keeps none
 * \return the number kept
 */
template <class Rng>
inline int ChooseK(int* items, int n, int k, Rng* rng) {
  if (k <= 0 || n <= 0) return 0;
  if (k >= n) return n;
  for (int i = 0; i < k; ++i) {
    const int j = i + static_cast<int>(UniformBelow(static_cast<uint32_t>(n - i), rng));
    std::swap(items[i], items[j]);
  }
  return k;
}

/*! \brief Mirror of curandStatePhilox4_32_10_t (curand_philox4x32_x.h): 64 bytes. */
struct alignas(16) PhiloxStateView {
  uint32_t ctr[4];     // 128-bit block counter, low word first
  uint32_t output[4];  // curand's cached block
  uint32_t key[2];
  uint32_t state;      // curand's index into `output`
  int boxmuller_flag;
  int boxmuller_flag_double;
  float boxmuller_extra;
  double boxmuller_extra_double;
};
static_assert(sizeof(PhiloxStateView) == 64, "PhiloxStateView must mirror curandStatePhilox4_32_10_t");

/*! \brief One block of Philox4x32-10 (Salmon et al. 2011): 4 random words from (counter, key). */
SSDKIT_HD void Philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/*! \brief `ctr` += n as a 128-bit integer (low word first). */
SSDKIT_HD void AddToCounter(uint32_t ctr[4], uint64_t n) {
  uint64_t sum = static_cast<uint64_t>(ctr[0]) + static_cast<uint32_t>(n);
  ctr[0] = static_cast<uint32_t>(sum);
  sum = static_cast<uint64_t>(ctr[1]) + static_cast<uint32_t>(n >> 32) + (sum >> 32);
  ctr[1] = static_cast<uint32_t>(sum);
  sum = static_cast<uint64_t>(ctr[2]) + (sum >> 32);
  ctr[2] = static_cast<uint32_t>(sum);
  ctr[3] += static_cast<uint32_t>(sum >> 32);
}

/*! \brief Random key of candidate j: word `stream` (0..3) of Philox(base_counter + j, key). */
SSDKIT_HD uint32_t CandidateKey(const PhiloxStateView& s, int j, int stream) {
  uint32_t ctr[4] = {s.ctr[0], s.ctr[1], s.ctr[2], s.ctr[3]};
  AddToCounter(ctr, static_cast<uint64_t>(j));
  uint32_t out[4];
  Philox4x32(ctr, s.key, out);
  return out[stream & 3];
}


}  // namespace sample
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_SAMPLE_H_
