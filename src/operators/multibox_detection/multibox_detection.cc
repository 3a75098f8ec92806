/*!
 * \file multibox_detection.cc
 * \brief MultiBoxDetection registration and CPU kernel (OpenMP), semantics in multibox_detection-inl.h.
 *
 * CPU plan, for B images of N anchors and C+1 channels:
 *  1. best class per anchor: one streaming pass over cls_prob, channel-outer / anchor-inner so the
 *     (B, C+1, N) layout is read contiguously; parallel over (image, block of anchors) when there
 *     are fewer images than threads, else each image's task runs it right before step 2.
 *  2. per image, in parallel over images: gather the candidates (anchor order), decode only them,
 *     rank them (partial sort when nms_topk cuts, common/topk.h), greedy NMS against the kept
 *     boxes of the same class (common/nms.h, stopping early at max_detections), write the rows.
 */
#include <omp.h>

#include <algorithm>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/bbox.h"
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
  std::vector<float> boxes;    // (V, 4) decoded corners
  std::vector<int> order;      // ranked candidate positions
  std::vector<int> keep;       // kept candidate positions, best first
  std::vector<char> kept;      // (V,) 1 if kept
  NmsScratch nms;
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

/*!
 * \brief Pass 1: best object class (-1: not a candidate) and its score for anchors [begin, end).
 *  First the best score of every anchor (a vectorised max over channels), then, for the few
 *  candidates only, the KeepBest scan that names the channel, while the block is still in cache.
 *  `v > s ? v : s` from s = -1 is KeepBest's score rule, so both scans agree.
 */
SSDKIT_AVX2_CLONE
void BestClassBlock(const MultiBoxDetectionParam& p, const float* prob, int channels, int n, int begin,
                    int end, int* best_class, float* best_score) {
  float score[kAnchorBlock];
  const int len = end - begin;
  for (int i = 0; i < len; ++i) score[i] = -1.f;
  for (int c = 0; c < channels; ++c) {
    if (c == p.background_id) continue;
    const float* row = prob + static_cast<size_t>(c) * n + begin;
    for (int i = 0; i < len; ++i) score[i] = row[i] > score[i] ? row[i] : score[i];
  }
  for (int i = 0; i < len; ++i) {
    int cls = -1;
    if (IsCandidate(score[i] > -1.f ? 0 : -1, score[i], p.threshold)) {
      float s = -1.f;
      int best = -1;
      for (int c = 0; c < channels; ++c) {
        if (c != p.background_id) KeepBest(prob[static_cast<size_t>(c) * n + begin + i], c, &s, &best);
      }
      cls = ChannelToClass(best, p.background_id);
    }
    best_class[begin + i] = cls;
    best_score[begin + i] = score[i];
  }
}

/*! \brief Pass 2 for one image: candidates -> ranked, suppressed rows in `out` (rows, 6). */
void DetectImage(const MultiBoxDetectionParam& p, int n, int num_classes, const int* best_class,
                 const float* best_score, const float* loc, const float* anchor, float* out, int rows,
                 ImageScratch* s) {
  s->anchors.clear();
  for (int i = 0; i < n; ++i) {
    if (best_class[i] >= 0) s->anchors.push_back(i);
  }
  const int v = static_cast<int>(s->anchors.size());
  s->classes.resize(v);
  s->scores.resize(v);
  s->boxes.resize(4 * static_cast<size_t>(v));
  constexpr int kAhead = 16;  // candidates' loc/anchor rows are scattered: load them ahead of use
  for (int c = 0; c < v; ++c) {
    if (c + kAhead < v) {
      __builtin_prefetch(loc + 4 * static_cast<size_t>(s->anchors[c + kAhead]));
      __builtin_prefetch(anchor + 4 * static_cast<size_t>(s->anchors[c + kAhead]));
    }
    const int i = s->anchors[c];
    s->classes[c] = best_class[i];
    s->scores[c] = best_score[i];
    BoxDecode(anchor + 4 * static_cast<size_t>(i), loc + 4 * static_cast<size_t>(i), p.variances, p.clip,
              s->boxes.data() + 4 * static_cast<size_t>(c));
  }
  const bool capped = p.max_detections > 0;
  int written = 0;
  auto row = [&](int r) { return out + 6 * static_cast<size_t>(r); };
  auto emit = [&](int c, bool alive) {
    WriteDetectionRow(row(written++), alive ? static_cast<float>(s->classes[c]) : -1.f, s->scores[c],
             s->boxes.data() + 4 * static_cast<size_t>(c));
  };
  if (!p.nms_enabled()) {
    if (capped) {
      TopKDescending(s->scores.data(), v, std::min(v, rows), &s->order);
      for (int c : s->order) emit(c, true);
    } else {
      for (int c = 0; c < v; ++c) emit(c, true);  // contrib: anchor order, no ranking
    }
  } else {
    const int topk = (p.nms_topk > 0 && p.nms_topk < v) ? p.nms_topk : v;
    TopKDescending(s->scores.data(), v, topk, &s->order);
    NmsOptions opt;
    opt.iou_threshold = p.nms_threshold;
    opt.max_keep = capped ? rows : -1;
    GreedyNms(s->boxes.data(), p.force_suppress ? nullptr : s->classes.data(), num_classes,
              s->order.data(), topk, opt, &s->keep, &s->nms);
    if (capped) {
      for (int c : s->keep) emit(c, true);
    } else {
      s->kept.assign(v, 0);
      for (int c : s->keep) s->kept[c] = 1;
      for (int r = 0; r < topk; ++r) emit(s->order[r], s->kept[s->order[r]] != 0);
      for (int c = topk; c < v; ++c) emit(c, false);  // cut by nms_topk: contrib leaves them unsorted
    }
  }
  std::fill(row(written), row(rows), -1.f);
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

    // per-anchor best class and score (default-initialised: pass 1 writes every cell)
    const size_t cells = static_cast<size_t>(batch) * n;
    std::unique_ptr<int[]> best_class_buf(new int[cells]);
    std::unique_ptr<float[]> best_score_buf(new float[cells]);
    int* best_class = best_class_buf.get();
    float* best_score = best_score_buf.get();
    const int blocks = (n + kAnchorBlock - 1) / kAnchorBlock;
    const int tasks = batch * blocks;
    const int threads = NumThreads();
    TaskErrors errors(batch);
    auto best_class_pass = [&](int b, int blk) {
      const int begin = blk * kAnchorBlock, end = std::min(n, begin + kAnchorBlock);
      const size_t base = static_cast<size_t>(b) * n;
      BestClassBlock(p, prob + base * channels, channels, n, begin, end, best_class + base,
                     best_score + base);
    };
    auto detect_image = [&](int b, ImageScratch* scratch) {
      const size_t base = static_cast<size_t>(b) * n;
      errors.Run(b, [&]() {
        DetectImage(p, n, num_classes, best_class + base, best_score + base, loc + 4 * base, anchor,
                    out + 6 * static_cast<size_t>(b) * rows, rows, scratch);
      });
    };
    // Enough images for every thread: one task per image runs both passes back to back, so pass 2
    // finds the image's best_class / best_score still in cache and no barrier separates them.
    // Fewer images than threads: pass 1 is split into anchor blocks across all threads first.
    const bool per_image = batch >= threads;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
      ImageScratch scratch;
      if (per_image) {
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < batch; ++b) {
          for (int blk = 0; blk < blocks; ++blk) best_class_pass(b, blk);
          detect_image(b, &scratch);
        }
      } else {
#pragma omp for schedule(dynamic, 4)
        for (int t = 0; t < tasks; ++t) best_class_pass(t / blocks, t % blocks);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < batch; ++b) detect_image(b, &scratch);
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
