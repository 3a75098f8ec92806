/*!
 * \file multibox_detection.cc
 * \brief MultiBoxDetection registration and CPU kernel (OpenMP), semantics in multibox_detection-inl.h.
 *
 * CPU plan, for B images of N anchors and C+1 channels:
 *  1. candidates (anchor, best class, score) per block of anchors: one streaming pass over
 *     cls_prob, channel-outer / anchor-inner so the (B, C+1, N) layout is read contiguously;
 *     parallel over (image, block of anchors) when there are fewer images than threads, else each
 *     image's task runs it right before step 2.
 *  2. per image, in parallel over images: the candidates in anchor order, ranked (partial sort
 *     when nms_topk cuts, common/topk.h); the ranked ones decoded, greedy NMS against the kept
 *     boxes of the same class (common/nms.h, stopping early at max_detections), rows written; the
 *     candidates past the nms_topk cut decoded straight into their anchor-order rows.
 */
#include <omp.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/bbox.h"
#include "common/expf_simd.h"
#include "common/lib_glue.h"
#include "common/nms.h"
#include "common/parallel.h"
#include "common/topk.h"
#include "multibox_detection/multibox_detection-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

constexpr int kAnchorBlock = 512;  // anchors per task of the best-class pass (C=81: 166 kB)

/*! \brief Per-thread buffers of the per-image pass, reused across images. */
struct ImageScratch {
  std::vector<int> anchors;    // (V,) anchor index of each candidate, ascending
  std::vector<int> classes;    // (V,) object class id
  std::vector<float> scores;   // (V,)
  std::vector<int> order;      // (T,) ranked candidate positions
  std::vector<uint64_t> keys;  // (V,) TopKDescending's rank keys
  std::vector<float> boxes;    // (T, 4) decoded corners of the ranked candidates, by rank
  std::vector<int> ranked_classes;  // (T,) their class ids
  std::vector<int> identity;   // 0..T-1: NMS visits the ranks in order
  std::vector<int> rank_of;    // (V,) rank of each candidate, -1 if not ranked
  std::vector<int> keep;       // kept ranks, best first
  std::vector<char> kept;      // (T,) 1 if kept
  NmsScratch nms;

  /*! \brief Start the next image's candidate list (anchors, classes, scores). */
  void ClearCandidates() {
    anchors.clear();
    classes.clear();
    scores.clear();
  }
};

/*! \brief Shapes (B, C+1, N), (B, N*4), (1, N, 4), checked; returns (B, C+1, N). */
void CheckShapes(const Shape& cls, const Shape& loc, const Shape& anchor, int background_id,
                 unsigned int* batch, unsigned int* channels, unsigned int* num_anchors) {
  if (cls.size() != 3) {
    throw std::invalid_argument("cls_prob must be 3-d (batch, num_classes + 1, num_anchors), got " +
                                ShapeString(cls));
  }
  if (loc.size() != 2) {
    throw std::invalid_argument("loc_pred must be 2-d (batch, num_anchors * 4), got " +
                                ShapeString(loc));
  }
  if (anchor.size() != 3 || anchor[0] != 1 || anchor[2] != 4) {
    throw std::invalid_argument("anchor must be (1, num_anchors, 4), got " + ShapeString(anchor));
  }
  if (anchor[1] == 0) throw std::invalid_argument("anchor holds no anchors: " + ShapeString(anchor));
  if (cls[0] == 0 || cls[1] == 0) {
    throw std::invalid_argument("cls_prob has an empty batch or class axis: " + ShapeString(cls));
  }
  if (cls[2] != anchor[1]) {
    throw std::invalid_argument("cls_prob " + ShapeString(cls) + " and anchor " + ShapeString(anchor) +
                                " disagree on the number of anchors");
  }
  if (loc[0] != cls[0] || static_cast<size_t>(loc[1]) != 4 * static_cast<size_t>(anchor[1])) {
    throw std::invalid_argument("loc_pred " + ShapeString(loc) + " must be (batch, num_anchors * 4) = (" +
                                std::to_string(cls[0]) + ", " + std::to_string(4 * anchor[1]) + ")");
  }
  if (background_id >= static_cast<int>(cls[1])) {
    throw std::invalid_argument("background_id " + std::to_string(background_id) +
                                " is not a channel of cls_prob " + ShapeString(cls));
  }
  *batch = cls[0];
  *channels = cls[1];
  *num_anchors = anchor[1];
}

struct InputDims {
  int batch, channels, n;
};

/*! \brief Forward-time shape check of (cls_prob, loc_pred, anchor); returns (B, C+1, N). */
InputDims CheckInputs(const MultiBoxDetectionParam& p, const std::vector<MXTensor>& inputs) {
  unsigned int ub, uc, un;
  CheckShapes(ShapeOf(inputs[0]), ShapeOf(inputs[1]), ShapeOf(inputs[2]), p.background_id, &ub, &uc, &un);
  return {static_cast<int>(ub), static_cast<int>(uc), static_cast<int>(un)};
}

MXReturnValue DetParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("MultiBoxDetection", [&]() {
    MultiBoxDetectionParam::Parse(attrs);
    *num_in = 3;
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue DetInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("MultiBoxDetection", in_types, out_types);
}

MXReturnValue DetInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes,
                            std::vector<Shape>* out_shapes) {
  return Guard("MultiBoxDetection", [&]() {
    MultiBoxDetectionParam p = MultiBoxDetectionParam::Parse(attrs);
    unsigned int batch, channels, n;
    CheckShapes((*in_shapes)[0], (*in_shapes)[1], (*in_shapes)[2], p.background_id, &batch, &channels, &n);
    unsigned int rows = p.max_detections > 0 ? static_cast<unsigned int>(p.max_detections) : n;
    (*out_shapes)[0] = {batch, rows, 6u};
    return mxnet::ext::MX_SUCCESS;
  });
}

// x86-64: also compile an AVX2 copy of the hot loop, chosen at load time (same results: only
// comparisons, no arithmetic that could round differently).
#if defined(__x86_64__) && defined(__GNUC__)
#define SSDKIT_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define SSDKIT_AVX2_CLONE
#endif

/*! \brief The candidates of one block of anchors, in anchor order (pass 1's output). */
struct BlockCandidates {
  int count = 0;
  int anchor[kAnchorBlock];
  int cls[kAnchorBlock];
  float score[kAnchorBlock];
};

/*!
 * \brief Pass 1 for anchors [begin, end) of one image: its candidates (anchor, object class, score).
 *  First the best score of every anchor (BestObjectScoreLanes: a vectorised max over channels,
 *  memory-bound on this streaming read), then, for the candidates only and while the block is still
 *  in cache, the channel holding that score (FirstChannelWithScore, or its all-lanes form when most
 *  anchors are candidates). The CUDA kernel calls the same three functions per anchor.
 */
SSDKIT_AVX2_CLONE
void BestClassBlock(const MultiBoxDetectionParam& p, const float* prob, int channels, int n, int begin,
                    int end, BlockCandidates* out) {
  float score[kAnchorBlock];
  const int len = end - begin;
  BestObjectScoreLanes<kAnchorBlock>(prob + begin, static_cast<size_t>(n), channels, p.background_id, len, score);
  // candidate flags without a branch per anchor, then visit only the 8-anchor groups holding one
  alignas(8) unsigned char flag[kAnchorBlock + 8];
  for (int i = 0; i < len; ++i) flag[i] = static_cast<unsigned char>(IsCandidateScore(score[i], p.threshold));
  std::memset(flag + len, 0, 8);  // the last group may run past `len`
  int flagged = 0;
  for (int i = 0; i < len; ++i) flagged += flag[i];
  // Many candidates (an untrained model's scores): one more pass over the block, still in cache,
  // gives every anchor its channel at once instead of a strided search per candidate.
  int first[kAnchorBlock];
  const bool dense = flagged * 8 > len;
  if (dense) {
    FirstChannelWithScoreLanes<kAnchorBlock>(prob + begin, static_cast<size_t>(n), channels, p.background_id, len,
                                             score, first);
  }
  int count = 0;
  for (int g = 0; g < len; g += 8) {
    uint64_t word;
    std::memcpy(&word, flag + g, sizeof(word));
    if (word == 0) continue;
    for (int i = g; i < g + 8; ++i) {
      if (!flag[i]) continue;
      const int best = dense ? first[i]
                             : FirstChannelWithScore(prob + begin + i, static_cast<size_t>(n), channels,
                                                     p.background_id, score[i]);
      if (best == channels) continue;  // unreachable: score[i] > -1 was read from an object channel
      out->anchor[count] = begin + i;
      out->cls[count] = ChannelToClass(best, p.background_id);
      out->score[count] = score[i];
      ++count;
    }
  }
  out->count = count;
}

/*!
 * \brief Fill [begin, end) with -1. Large fills (the empty rows of an N-row output) use
 *  non-temporal stores on x86: the rows are only written here, so loading their cache lines
 *  first and evicting the inputs for them would be wasted memory traffic.
 */
void FillMinusOne(float* begin, float* end) {
#if defined(__SSE__)
  constexpr ptrdiff_t kStreamFrom = 4096;  // floats; below this plain stores stay in cache
  if (end - begin >= kStreamFrom) {
    while (reinterpret_cast<uintptr_t>(begin) % 16 != 0) *begin++ = -1.f;
    const __m128 v = _mm_set1_ps(-1.f);
    for (; end - begin >= 4; begin += 4) _mm_stream_ps(begin, v);
    _mm_sfence();
  }
#endif
  std::fill(begin, end, -1.f);
}

/*! \brief Append a block's candidates to the image's list in `s` (anchors, classes, scores). */
void AppendCandidates(const BlockCandidates& block, ImageScratch* s) {
  s->anchors.insert(s->anchors.end(), block.anchor, block.anchor + block.count);
  s->classes.insert(s->classes.end(), block.cls, block.cls + block.count);
  s->scores.insert(s->scores.end(), block.score, block.score + block.count);
}

#ifdef SSDKIT_HAVE_EXPF_SIMD
// Compiled for AVX2 and FMA (so that Expf4 inlines) with contraction off: no float multiply-add
// below is fused, so every float operation rounds as BoxDecode's do; Expf4's FMAs are explicit.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
__attribute__((target("avx2,fma"))) inline __m256 RowPair(const float* base, const int* id, int j) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(base + 4 * static_cast<size_t>(id[j]))),
                              _mm_loadu_ps(base + 4 * static_cast<size_t>(id[j + 4])), 1);
}

/*! \brief Rows id[0..7] of the (n, 4) array `base` as 4 vectors of 8 lanes (lane j = row id[j]). */
__attribute__((target("avx2,fma"))) inline void Columns8(const float* base, const int* id, __m256* c0, __m256* c1,
                                                     __m256* c2, __m256* c3) {
  const __m256 r0 = RowPair(base, id, 0), r1 = RowPair(base, id, 1), r2 = RowPair(base, id, 2),
               r3 = RowPair(base, id, 3);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  *c0 = _mm256_shuffle_ps(t0, t2, 0x44);
  *c1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  *c2 = _mm256_shuffle_ps(t1, t3, 0x44);
  *c3 = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/*!
 * \brief DecodeRows for 8 candidates at a time: BoxDecode's float operations in its order on 8
 *  lanes, expf by common/expf_simd.h (libm's bit for bit), the [0, 1] clip as fmaxf(0, fminf(1, x))
 *  (minps(x, 1) gives 1 for NaN as fminf does, maxps(0, y) keeps -0 as fmaxf(0, -0) does); rows
 *  staged and stored 8 at a time. Returns the first candidate not decoded (fewer than 8 left).
 */
__attribute__((target("avx2,fma")))
int DecodeRowsAvx2(const MultiBoxDetectionParam& p, const float* loc, const float* anchor, const ImageScratch& s,
                   int begin, int end, bool dead, float* rows) {
  const int* ids = s.anchors.data();
  const __m256 vx = _mm256_set1_ps(p.variances.x), vy = _mm256_set1_ps(p.variances.y);
  const __m256 vw = _mm256_set1_ps(p.variances.w), vh = _mm256_set1_ps(p.variances.h);
  const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  alignas(32) float out[4][8];
  alignas(32) float staged[48];  // the 8 rows, stored to the output as 6 vectors
  int c = begin;
  for (; c + 8 <= end; c += 8) {
    __m256 a0, a1, a2, a3, t0, t1, t2, t3;
    Columns8(anchor, ids + c, &a0, &a1, &a2, &a3);
    Columns8(loc, ids + c, &t0, &t1, &t2, &t3);
    const __m256 aw = _mm256_sub_ps(a2, a0), ah = _mm256_sub_ps(a3, a1);
    const __m256 ax = _mm256_mul_ps(_mm256_add_ps(a0, a2), half), ay = _mm256_mul_ps(_mm256_add_ps(a1, a3), half);
    const __m256 ox = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(t0, vx), aw), ax);
    const __m256 oy = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(t1, vy), ah), ay);
    const __m256 lw = _mm256_mul_ps(t2, vw), lh = _mm256_mul_ps(t3, vh);
    const __m256 ew = _mm256_set_m128(expf_simd::Expf4(_mm256_extractf128_ps(lw, 1)),
                                      expf_simd::Expf4(_mm256_castps256_ps128(lw)));
    const __m256 eh = _mm256_set_m128(expf_simd::Expf4(_mm256_extractf128_ps(lh, 1)),
                                      expf_simd::Expf4(_mm256_castps256_ps128(lh)));
    const __m256 ow = _mm256_mul_ps(_mm256_mul_ps(ew, aw), half), oh = _mm256_mul_ps(_mm256_mul_ps(eh, ah), half);
    __m256 box[4] = {_mm256_sub_ps(ox, ow), _mm256_sub_ps(oy, oh), _mm256_add_ps(ox, ow), _mm256_add_ps(oy, oh)};
    for (int k = 0; k < 4; ++k) {
      if (p.clip) box[k] = _mm256_max_ps(zero, _mm256_min_ps(box[k], one));
      _mm256_store_ps(out[k], box[k]);
    }
    for (int j = 0; j < 8; ++j) {
      float* row = staged + 6 * j;
      row[0] = dead ? -1.f : static_cast<float>(s.classes[c + j]);
      row[1] = s.scores[c + j];
      row[2] = out[0][j];
      row[3] = out[1][j];
      row[4] = out[2][j];
      row[5] = out[3][j];
    }
    float* dst = rows + 6 * static_cast<size_t>(c);
    for (int k = 0; k < 6; ++k) _mm256_storeu_ps(dst + 8 * k, _mm256_load_ps(staged + 8 * k));
  }
  return c;
}
#pragma GCC pop_options
#endif

/*! \brief Decode the candidates at positions [begin, end) of `s` into rows `rows[c]` as
 *  [cls (or -1 when `dead`), score, box] (the box coder of common/bbox.h; 8 at a time where
 *  common/expf_simd.h reproduces libm's expf). */
void DecodeRows(const MultiBoxDetectionParam& p, const float* loc, const float* anchor, const ImageScratch& s,
                int begin, int end, bool dead, float* rows) {
#ifdef SSDKIT_HAVE_EXPF_SIMD
  if (expf_simd::Expf4MatchesLibm()) begin = DecodeRowsAvx2(p, loc, anchor, s, begin, end, dead, rows);
#endif
  constexpr int kAhead = 16;  // candidates' loc/anchor rows may be scattered: load them ahead of use
  const int v = static_cast<int>(s.anchors.size());
  for (int c = begin; c < end; ++c) {
    if (c + kAhead < v) {
      __builtin_prefetch(loc + 4 * static_cast<size_t>(s.anchors[c + kAhead]));
      __builtin_prefetch(anchor + 4 * static_cast<size_t>(s.anchors[c + kAhead]));
    }
    const int i = s.anchors[c];
    float box[4];
    BoxDecode(anchor + 4 * static_cast<size_t>(i), loc + 4 * static_cast<size_t>(i), p.variances, p.clip, box);
    WriteDetectionRow(rows + 6 * static_cast<size_t>(c), dead ? -1.f : static_cast<float>(s.classes[c]),
                      s.scores[c], box);
  }
}

/*!
 * \brief Pass 2 for one image: its candidates (anchors, classes, scores in `s`, anchor order) ->
 *  ranked, suppressed rows in `out` (rows, 6). Only the rows that are written are decoded: the
 *  ranked top (into a small rank-indexed buffer that NMS reads) and, in the default layout, the
 *  candidates past the nms_topk cut straight into their anchor-order rows; candidates that are
 *  neither (cut, and before the cut in anchor order) are never decoded.
 */
void DetectImage(const MultiBoxDetectionParam& p, int num_classes, const float* loc, const float* anchor,
                 float* out, int rows, ImageScratch* s) {
  const int v = static_cast<int>(s->anchors.size());
  const bool capped = p.max_detections > 0;
  auto row = [&](int r) { return out + 6 * static_cast<size_t>(r); };
  if (!p.nms_enabled() && !capped) {  // contrib: every candidate in anchor order, no ranking
    DecodeRows(p, loc, anchor, *s, 0, v, false, out);
    FillMinusOne(row(v), row(rows));
    return;
  }
  // ranked: without NMS the best `rows`, with NMS the nms_topk cut
  const int ranked = !p.nms_enabled() ? std::min(v, rows) : ((p.nms_topk > 0 && p.nms_topk < v) ? p.nms_topk : v);
  // a small cut of many candidates (nms_topk 400 of an untrained model's ~24k): one pass with a bar
  if (!(ranked * 8 <= v && TopKDescendingByBar(s->scores.data(), v, ranked, &s->order, &s->keys))) {
    TopKDescending(s->scores.data(), v, ranked, &s->order, &s->keys);
  }
  s->boxes.resize(4 * static_cast<size_t>(ranked));
  s->ranked_classes.resize(static_cast<size_t>(ranked));
  auto decode_ranked = [&](int r, int c) {
    const int i = s->anchors[c];
    BoxDecode(anchor + 4 * static_cast<size_t>(i), loc + 4 * static_cast<size_t>(i), p.variances, p.clip,
              s->boxes.data() + 4 * static_cast<size_t>(r));
    s->ranked_classes[r] = s->classes[c];
  };
  // the candidates' loc / anchor rows are scattered in memory: load them ahead of use
  constexpr int kAhead = 16;
  auto prefetch = [&](int c) {
    __builtin_prefetch(loc + 4 * static_cast<size_t>(s->anchors[c]));
    __builtin_prefetch(anchor + 4 * static_cast<size_t>(s->anchors[c]));
  };
  if (ranked * 4 >= v) {  // most candidates ranked: decode them in anchor order
    s->rank_of.assign(static_cast<size_t>(v), -1);
    for (int r = 0; r < ranked; ++r) s->rank_of[s->order[r]] = r;
    for (int c = 0; c < v; ++c) {
      if (c + kAhead < v) prefetch(c + kAhead);
      if (s->rank_of[c] >= 0) decode_ranked(s->rank_of[c], c);
    }
  } else {  // a small cut of many candidates: in rank order
    for (int r = 0; r < ranked; ++r) {
      if (r + kAhead < ranked) prefetch(s->order[r + kAhead]);
      decode_ranked(r, s->order[r]);
    }
  }
  int written = 0;
  auto emit = [&](int r, bool alive) {  // ranked candidate r
    WriteDetectionRow(row(written++), alive ? static_cast<float>(s->ranked_classes[r]) : -1.f,
                      s->scores[s->order[r]], s->boxes.data() + 4 * static_cast<size_t>(r));
  };
  if (!p.nms_enabled()) {
    for (int r = 0; r < ranked; ++r) emit(r, true);
  } else {
    s->identity.resize(static_cast<size_t>(ranked));
    for (int r = 0; r < ranked; ++r) s->identity[r] = r;
    NmsOptions opt;
    opt.iou_threshold = p.nms_threshold;
    opt.max_keep = capped ? rows : -1;
    GreedyNms(s->boxes.data(), p.force_suppress ? nullptr : s->ranked_classes.data(), num_classes,
              s->identity.data(), ranked, opt, &s->keep, &s->nms);
    if (capped) {
      for (int r : s->keep) emit(r, true);
    } else {
      s->kept.assign(ranked, 0);
      for (int r : s->keep) s->kept[r] = 1;
      for (int r = 0; r < ranked; ++r) emit(r, s->kept[r] != 0);
      // cut by nms_topk: contrib leaves them in their anchor-order rows, class -1
      DecodeRows(p, loc, anchor, *s, ranked, v, true, out);
      written = v;
    }
  }
  FillMinusOne(row(written), row(rows));
}

MXReturnValue DetForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource&) {
  return Guard("MultiBoxDetection", [&]() {
    MultiBoxDetectionParam p = MultiBoxDetectionParam::Parse(attrs);
    const InputDims dims = CheckInputs(p, *inputs);
    const int batch = dims.batch, channels = dims.channels, n = dims.n;
    const int num_classes = channels - (p.background_id >= 0 ? 1 : 0);
    const int rows = static_cast<int>((*outputs)[0].shape[1]);
    const float* prob = (*inputs)[0].data<float>();
    const float* loc = (*inputs)[1].data<float>();
    const float* anchor = (*inputs)[2].data<float>();
    float* out = (*outputs)[0].data<float>();

    const int blocks = (n + kAnchorBlock - 1) / kAnchorBlock;
    const int threads = NumThreads();
    TaskErrors errors(batch);
    auto best_class_pass = [&](int b, int blk, BlockCandidates* cand) {
      const int begin = blk * kAnchorBlock, end = std::min(n, begin + kAnchorBlock);
      BestClassBlock(p, prob + static_cast<size_t>(b) * channels * n, channels, n, begin, end, cand);
    };
    auto detect_image = [&](int b, ImageScratch* scratch) {
      const size_t base = static_cast<size_t>(b) * n;
      errors.Run(b, [&]() {
        DetectImage(p, num_classes, loc + 4 * base, anchor, out + 6 * static_cast<size_t>(b) * rows, rows,
                    scratch);
      });
    };
    // Enough images for every thread: one task per image runs both passes back to back, pass 1
    // appending each block's candidates straight to the image's list (no barrier, no per-anchor
    // arrays). Fewer images than threads: pass 1 is split into anchor blocks across all threads
    // first, each block keeping its candidates, which pass 2 then concatenates in anchor order.
    const bool per_image = batch >= threads;
    std::unique_ptr<BlockCandidates[]> block_out(per_image ? nullptr : new BlockCandidates[batch * blocks]);
#pragma omp parallel num_threads(threads)
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
      ImageScratch scratch;
      if (per_image) {
        std::unique_ptr<BlockCandidates> cand(new BlockCandidates);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < batch; ++b) {
          scratch.ClearCandidates();
          for (int blk = 0; blk < blocks; ++blk) {
            best_class_pass(b, blk, cand.get());
            AppendCandidates(*cand, &scratch);
          }
          detect_image(b, &scratch);
        }
      } else {
#pragma omp for schedule(dynamic, 4)
        for (int t = 0; t < batch * blocks; ++t) best_class_pass(t / blocks, t % blocks, &block_out[t]);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < batch; ++b) {
          scratch.ClearCandidates();
          for (int blk = 0; blk < blocks; ++blk) AppendCandidates(block_out[b * blocks + blk], &scratch);
          detect_image(b, &scratch);
        }
      }
    }
    errors.Rethrow();
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue DetForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                            std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("MultiBoxDetection", [&]() {
    MultiBoxDetectionParam p = MultiBoxDetectionParam::Parse(attrs);
    const InputDims dims = CheckInputs(p, *inputs);
    const int batch = dims.batch, channels = dims.channels, n = dims.n;
    void* workspace = res.alloc_gpu(MultiBoxDetectionGPUWorkspace(batch, channels, n));
    MultiBoxDetectionForwardGPU(p, batch, channels, n, (*inputs)[0].data<float>(),
                                (*inputs)[1].data<float>(), (*inputs)[2].data<float>(),
                                (*outputs)[0].data<float>(), static_cast<int>((*outputs)[0].shape[1]),
                                workspace, res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(MultiBoxDetection)
    .setParseAttrs(ssdkit::DetParseAttrs)
    .setInferType(ssdkit::DetInferType)
    .setInferShape(ssdkit::DetInferShape)
    .setForward(ssdkit::DetForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::DetForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
