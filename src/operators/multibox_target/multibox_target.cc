/*!
 * \file multibox_target.cc
 * \brief MultiBoxTarget registration and CPU kernel (see multibox_target-inl.h for semantics).
 *
 * Two OpenMP phases:
 *  A. over (image, block of anchors): IoU of every anchor with the image's ground truths (best
 *     ground truth per anchor, best anchor per ground truth within the block) and, when mining,
 *     the background softmax probability of every anchor (max-subtracted, computed once);
 *  B. over images: merge the per-block bests, bipartite claim, threshold matching, hard-negative
 *     selection (nth_element, no full sort) and the output rows.
 */
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/fast_exp.h"
#include "common/lib_glue.h"
#include "common/match.h"
#include "common/parallel.h"
#include "multibox_target/multibox_target-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shapes = std::vector<std::vector<unsigned int>>;

// The softmax loop is compiled twice, for AVX2 and for baseline x86-64, and the loader picks
// one (gcc/clang function multi-versioning). Both do the same IEEE operations per element, so
// results are identical; AVX2 only makes the vectors twice as wide.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define SSDKIT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSDKIT_VECTOR_CLONES
#endif

constexpr int kAnchorBlock = 2048;  // anchors per phase-A task
constexpr int kSoftmaxChunk = 128;  // anchors whose softmax is computed together (class-major)

MXReturnValue TargetParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("MultiBoxTarget", [&]() {
    MultiBoxTargetParam::Parse(attrs);
    *num_in = 3;
    *num_out = 3;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue TargetInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("MultiBoxTarget", in_types, out_types);
}

MXReturnValue TargetInferShape(const Attrs& attrs, Shapes* in_shapes, Shapes* out_shapes) {
  return Guard("MultiBoxTarget", [&]() {
    MultiBoxTargetParam::Parse(attrs);
    const auto& a = (*in_shapes)[0];
    const auto& l = (*in_shapes)[1];
    const auto& c = (*in_shapes)[2];
    if (a.size() != 3 || a[0] != 1 || a[1] == 0 || a[2] != 4) {
      throw std::invalid_argument("anchor must have shape (1, N, 4) with N > 0, got " + ShapeString(a));
    }
    if (l.size() != 3 || l[0] == 0 || l[1] == 0 || l[2] < 5) {
      throw std::invalid_argument("label must have shape (B, M, W) with B, M > 0 and W >= 5 "
                                  "(rows [cls, xmin, ymin, xmax, ymax, ...]), got " + ShapeString(l));
    }
    if (c.size() != 3 || c[1] < 2) {
      throw std::invalid_argument("cls_pred must have shape (B, C + 1, N) with C >= 1, got " +
                                  ShapeString(c));
    }
    if (c[0] != l[0]) {
      throw std::invalid_argument("batch size mismatch: label " + ShapeString(l) + " vs cls_pred " +
                                  ShapeString(c));
    }
    if (c[2] != a[1]) {
      throw std::invalid_argument("number of anchors mismatch: anchor " + ShapeString(a) +
                                  " vs cls_pred " + ShapeString(c) + " (cls_pred is (B, C + 1, N))");
    }
    if (static_cast<unsigned long long>(a[1]) * 4ull > 2147483647ull) {
      throw std::invalid_argument("too many anchors: " + std::to_string(a[1]));
    }
    (*out_shapes)[0] = {l[0], a[1] * 4};
    (*out_shapes)[1] = {l[0], a[1] * 4};
    (*out_shapes)[2] = {l[0], a[1]};
    return mxnet::ext::MX_SUCCESS;
  });
}

/*!
 * \brief prob[j] = softmax(x[:, j])[0] for anchors [begin, end) of one image; x is (K, N):
 *  BackgroundProbLanes (multibox_target-inl.h, the CUDA kernel's function) over chunks of anchors.
 */
SSDKIT_VECTOR_CLONES
void BackgroundProb(const float* x, int num_channels, int num_anchors, int begin, int end, float* prob) {
  for (int c0 = begin; c0 < end; c0 += kSoftmaxChunk) {
    BackgroundProbLanes<kSoftmaxChunk>(x + c0, static_cast<size_t>(num_anchors), num_channels,
                                       std::min(kSoftmaxChunk, end - c0), prob + c0);
  }
}

/*! \brief Everything phase A and B share about one forward call. */
struct Problem {
  MultiBoxTargetParam p;
  const float* anchors;
  const float* labels;
  const float* cls_pred;
  int batch, num_anchors, num_labels, label_width, num_channels;
  int num_blocks;
  std::vector<float> gts;      // (B, M, 4) valid ground-truth boxes, compacted per image
  std::vector<int> gt_rows;    // (B, M) label row of each of them
  std::vector<int> num_gt;     // (B,)
  std::unique_ptr<float[]> best_iou;        // (B, N)
  std::unique_ptr<int[]> best_gt;           // (B, N)
  std::unique_ptr<float[]> bg_prob;         // (B, N) when mining
  std::unique_ptr<match::GtBest[]> block_best;  // (B, num_blocks, M)

  // Does image b need phase A (overlaps / probabilities)?
  bool NeedsScan(int b) const { return num_gt[b] > 0 || NeedsMiningWithoutGt(); }
  bool NeedsMiningWithoutGt() const { return p.mining() && p.minimum_negative_samples > 0; }
};

void CollectGroundTruths(Problem* pb) {
  const int num_classes = pb->num_channels - 1;
  pb->gts.assign(static_cast<size_t>(pb->batch) * pb->num_labels * 4, 0.f);
  pb->gt_rows.assign(static_cast<size_t>(pb->batch) * pb->num_labels, -1);
  pb->num_gt.assign(pb->batch, 0);
  for (int b = 0; b < pb->batch; ++b) {
    const size_t first = static_cast<size_t>(b) * pb->num_labels;
    pb->num_gt[b] = CollectImageGroundTruths(pb->labels + first * pb->label_width, pb->num_labels,
                                             pb->label_width, num_classes, pb->gts.data() + first * 4,
                                             pb->gt_rows.data() + first);
  }
}

/*! \brief Phase A for one (image, anchor block). */
void ScanBlock(Problem* pb, int b, int blk) {
  const int n = pb->num_anchors, m = pb->num_labels;
  const int begin = blk * kAnchorBlock, end = std::min(n, begin + kAnchorBlock);
  const size_t row = static_cast<size_t>(b) * n;
  match::ScanOverlaps(pb->anchors, begin, end, pb->gts.data() + static_cast<size_t>(b) * m * 4,
                      pb->num_gt[b], pb->best_iou.get() + row, pb->best_gt.get() + row,
                      pb->block_best.get() + (static_cast<size_t>(b) * pb->num_blocks + blk) * m);
  if (pb->p.mining()) {
    BackgroundProb(pb->cls_pred + static_cast<size_t>(b) * pb->num_channels * n, pb->num_channels, n,
                   begin, end, pb->bg_prob.get() + row);
  }
}

/*! \brief Phase B for image b: match, sample and write its output rows. */
void AssignImage(const Problem& pb, int b, std::vector<int>* match_buf,
                 std::vector<match::GtBest>* gt_best_buf, match::NegativeScratch* scratch,
                 float* loc_target, float* loc_mask, float* cls_target) {
  const MultiBoxTargetParam& p = pb.p;
  const int n = pb.num_anchors, m = pb.num_labels, num_gt = pb.num_gt[b];
  const size_t row = static_cast<size_t>(b) * n;
  float* loc = loc_target + row * 4;
  float* mask = loc_mask + row * 4;
  float* cls = cls_target + row;
  if (!pb.NeedsScan(b)) {
    std::fill(loc, loc + static_cast<size_t>(n) * 4, 0.f);
    std::fill(mask, mask + static_cast<size_t>(n) * 4, 0.f);
    std::fill(cls, cls + n, p.ignore_label);
    return;
  }
  const float* gts = pb.gts.data() + static_cast<size_t>(b) * m * 4;
  const float* best_iou = pb.best_iou.get() + row;
  std::vector<int>& match = *match_buf;
  match.assign(n, match::kUnmatched);
  int num_positive = 0;
  if (num_gt > 0) {
    std::vector<match::GtBest>& gt_best = *gt_best_buf;
    gt_best.assign(num_gt, match::GtBest());
    for (int blk = 0; blk < pb.num_blocks; ++blk) {
      const match::GtBest* part = pb.block_best.get() + (static_cast<size_t>(b) * pb.num_blocks + blk) * m;
      for (int g = 0; g < num_gt; ++g) match::MergeGtBest(part[g], &gt_best[g]);
    }
    num_positive = match::ClaimBestAnchors(pb.anchors, n, gts, num_gt, gt_best.data(), match.data());
    if (p.overlap_threshold > 0.f) {
      num_positive += match::MatchAboveThreshold(best_iou, pb.best_gt.get() + row, n,
                                                 p.overlap_threshold, match.data());
    }
  }
  if (p.mining()) {
    int wanted = NumNegativesWanted(num_positive, n, p.negative_mining_ratio,
                                    p.minimum_negative_samples);
    match::SelectHardNegatives(best_iou, pb.bg_prob.get() + row, n, p.negative_mining_thresh, wanted,
                               scratch, match.data());
  }
  const float* labels = pb.labels + static_cast<size_t>(b) * m * pb.label_width;
  const int* rows = pb.gt_rows.data() + static_cast<size_t>(b) * m;
  for (int j = 0; j < n; ++j) {
    const int g = match[j];
    const bool positive = g >= 0;
    const size_t o = 4 * static_cast<size_t>(j);
    WriteAnchorTarget(g, pb.anchors + o, positive ? gts + 4 * g : nullptr,
                      positive ? labels[static_cast<size_t>(rows[g]) * pb.label_width] : 0.f, p.variances,
                      p.ignore_label, loc + o, mask + o, cls + j);
  }
}

MXReturnValue TargetForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                               std::vector<MXTensor>* outputs, const OpResource&) {
  return Guard("MultiBoxTarget", [&]() {
    Problem pb;
    pb.p = MultiBoxTargetParam::Parse(attrs);
    MXTensor& anchor = (*inputs)[0];
    MXTensor& label = (*inputs)[1];
    MXTensor& pred = (*inputs)[2];
    pb.anchors = anchor.data<float>();
    pb.labels = label.data<float>();
    pb.cls_pred = pred.data<float>();
    pb.num_anchors = static_cast<int>(anchor.shape[1]);
    pb.batch = static_cast<int>(label.shape[0]);
    pb.num_labels = static_cast<int>(label.shape[1]);
    pb.label_width = static_cast<int>(label.shape[2]);
    pb.num_channels = static_cast<int>(pred.shape[1]);
    pb.num_blocks = (pb.num_anchors + kAnchorBlock - 1) / kAnchorBlock;
    const size_t bn = static_cast<size_t>(pb.batch) * pb.num_anchors;
    pb.best_iou.reset(new float[bn]);
    pb.best_gt.reset(new int[bn]);
    if (pb.p.mining()) pb.bg_prob.reset(new float[bn]);
    pb.block_best.reset(new match::GtBest[static_cast<size_t>(pb.batch) * pb.num_blocks * pb.num_labels]);
    CollectGroundTruths(&pb);

    float* loc_target = (*outputs)[0].data<float>();
    float* loc_mask = (*outputs)[1].data<float>();
    float* cls_target = (*outputs)[2].data<float>();
    const int tasks = pb.batch * pb.num_blocks;
#pragma omp parallel num_threads(NumThreads())
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < tasks; ++t) {
        const int b = t / pb.num_blocks;
        if (pb.NeedsScan(b)) ScanBlock(&pb, b, t % pb.num_blocks);
      }
      std::vector<int> match_buf;
      std::vector<match::GtBest> gt_best_buf;
      match::NegativeScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int b = 0; b < pb.batch; ++b) {
        AssignImage(pb, b, &match_buf, &gt_best_buf, &scratch, loc_target, loc_mask, cls_target);
      }
    }
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue TargetForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                               std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("MultiBoxTarget", [&]() {
    MultiBoxTargetParam p = MultiBoxTargetParam::Parse(attrs);
    MXTensor& anchor = (*inputs)[0];
    MXTensor& label = (*inputs)[1];
    MXTensor& pred = (*inputs)[2];
    const int n = static_cast<int>(anchor.shape[1]);
    const int batch = static_cast<int>(label.shape[0]);
    const int m = static_cast<int>(label.shape[1]);
    void* workspace = res.alloc_gpu(MultiBoxTargetWorkspaceBytes(batch, n, m));
    MultiBoxTargetForwardGPU(p, anchor.data<float>(), label.data<float>(), pred.data<float>(), batch, n,
                             m, static_cast<int>(label.shape[2]), static_cast<int>(pred.shape[1]),
                             (*outputs)[0].data<float>(), (*outputs)[1].data<float>(),
                             (*outputs)[2].data<float>(), workspace, res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(MultiBoxTarget)
    .setParseAttrs(ssdkit::TargetParseAttrs)
    .setInferType(ssdkit::TargetInferType)
    .setInferShape(ssdkit::TargetInferShape)
    .setForward(ssdkit::TargetForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::TargetForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
