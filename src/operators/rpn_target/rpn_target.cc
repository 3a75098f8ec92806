/*!
 * \file rpn_target.cc
 * \brief RPNTarget registration and CPU kernel (semantics in rpn_target-inl.h).
 *
 * Three OpenMP phases:
 *  A. over (image, block of anchors): usable anchors, each anchor's best ground truth and each
 *     ground truth's highest IoU within the block;
 *  B. over (image, block of anchors): positive / negative candidate / ignored (common/match.h),
 *     with each ground truth's highest IoU merged over the blocks;
 *  C. over random states (image b uses state b % 1024, images sharing one run in order):
 *     random subsampling (common/sample.h) and the output rows.
 */
#include <omp.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/bbox.h"
#include "common/ground_truth.h"
#include "common/lib_glue.h"
#include "common/match.h"
#include "common/parallel.h"
#include "common/sample.h"
#include "common/two_stage.h"
#include "rpn_target/rpn_target-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

static_assert(sample::kCpuRandomStates == MX_NUM_CPU_RANDOM_STATES, "lib_api's CPU random states");
static_assert(sample::kGpuRandomStates == MX_NUM_GPU_RANDOM_STATES, "lib_api's GPU random states");

constexpr int kAnchorBlock = 4096;  // anchors per task of phases A and B

struct Dims {
  int batch, num_anchors, num_labels, label_width;
};

/*! \brief Check anchor (1, N, 4), label (B, M, W >= 5), im_info (B, 3). */
Dims CheckShapes(const Shape& a, const Shape& l, const Shape& info) {
  if (a.size() != 3 || a[0] != 1 || a[1] == 0 || a[2] != 4) {
    throw std::invalid_argument("anchor must have shape (1, N, 4) with N > 0, got " + ShapeString(a));
  }
  if (l.size() != 3 || l[0] == 0 || l[1] == 0 || l[2] < 5) {
    throw std::invalid_argument("label must have shape (B, M, W) with B, M > 0 and W >= 5 "
                                "(rows [cls, x0, y0, x1, y1, ...]), got " + ShapeString(l));
  }
  if (info.size() != 2 || info[1] != 3) {
    throw std::invalid_argument("im_info must have shape (B, 3) (rows [valid_height, valid_width, scale]), "
                                "got " + ShapeString(info));
  }
  if (info[0] != l[0]) {
    throw std::invalid_argument("batch size mismatch: label " + ShapeString(l) + " vs im_info " +
                                ShapeString(info));
  }
  if (static_cast<unsigned long long>(a[1]) * 4ull > 2147483647ull) {
    throw std::invalid_argument("too many anchors: " + std::to_string(a[1]));
  }
  return {static_cast<int>(l[0]), static_cast<int>(a[1]), static_cast<int>(l[1]), static_cast<int>(l[2])};
}

MXReturnValue RpnParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("RPNTarget", [&]() {
    RPNTargetParam::Parse(attrs);
    *num_in = 3;
    *num_out = 3;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue RpnInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("RPNTarget", in_types, out_types);
}

MXReturnValue RpnInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes,
                                  std::vector<Shape>* out_shapes) {
  return Guard("RPNTarget", [&]() {
    RPNTargetParam::Parse(attrs);
    Dims d = CheckShapes((*in_shapes)[0], (*in_shapes)[1], (*in_shapes)[2]);
    const unsigned int b = static_cast<unsigned int>(d.batch), n = static_cast<unsigned int>(d.num_anchors);
    (*out_shapes)[0] = {b, n};
    (*out_shapes)[1] = {b, 4 * n};
    (*out_shapes)[2] = {b, 4 * n};
    return mxnet::ext::MX_SUCCESS;
  });
}

/*! \brief Everything the phases share about one forward call. */
struct Problem {
  RPNTargetParam p;
  const float* anchors;
  const float* labels;
  const float* im_info;
  Dims d;
  int num_blocks;
  std::vector<float> gts;       // (B, M, 4) ground truths, compacted per image
  std::vector<int> gt_rows;     // (B, M) their label rows
  std::vector<int> num_gt;      // (B,)
  std::vector<float> block_max; // (B, num_blocks, M) highest IoU of each gt within each block
  std::vector<float> gt_max;    // (B, M) ... over all anchors
  std::unique_ptr<unsigned char[]> usable;  // (B, N)
  std::unique_ptr<float[]> best_iou;        // (B, N)
  std::unique_ptr<int[]> best_gt;           // (B, N)
  std::unique_ptr<int[]> match;             // (B, N)

  const float* GtsOf(int b) const { return gts.data() + static_cast<size_t>(b) * d.num_labels * 4; }
  size_t Row(int b) const { return static_cast<size_t>(b) * d.num_anchors; }
};

void CollectGroundTruths(Problem* pb) {
  const Dims& d = pb->d;
  pb->gts.assign(static_cast<size_t>(d.batch) * d.num_labels * 4, 0.f);
  pb->gt_rows.assign(static_cast<size_t>(d.batch) * d.num_labels, -1);
  pb->num_gt.assign(d.batch, 0);
  for (int b = 0; b < d.batch; ++b) {
    pb->num_gt[b] = labels::Collect(pb->labels + static_cast<size_t>(b) * d.num_labels * d.label_width,
                                    d.num_labels, d.label_width, INFINITY,
                                    pb->gts.data() + static_cast<size_t>(b) * d.num_labels * 4,
                                    pb->gt_rows.data() + static_cast<size_t>(b) * d.num_labels);
  }
}

/*! \brief Phase A for one (image, block). */
void ScanBlock(Problem* pb, int b, int blk) {
  const Dims& d = pb->d;
  const int begin = blk * kAnchorBlock, end = std::min(d.num_anchors, begin + kAnchorBlock);
  const float* info = pb->im_info + 3 * b;
  unsigned char* usable = pb->usable.get() + pb->Row(b);
  for (int j = begin; j < end; ++j) {
    usable[j] = AnchorIsUsable(pb->anchors + 4 * static_cast<size_t>(j), info[0], info[1],
                               pb->p.allowed_border) ? 1 : 0;
  }
  match::ScanBestOverlaps(pb->anchors, usable, begin, end, pb->GtsOf(b), pb->num_gt[b],
                          pb->best_iou.get() + pb->Row(b), pb->best_gt.get() + pb->Row(b),
                          pb->block_max.data() + (static_cast<size_t>(b) * pb->num_blocks + blk) * d.num_labels);
}

/*! \brief Merge the per-block highest IoUs of every ground truth. */
void MergeGtMax(Problem* pb) {
  const Dims& d = pb->d;
  pb->gt_max.assign(static_cast<size_t>(d.batch) * d.num_labels, -1.f);
  for (int b = 0; b < d.batch; ++b) {
    float* out = pb->gt_max.data() + static_cast<size_t>(b) * d.num_labels;
    for (int blk = 0; blk < pb->num_blocks; ++blk) {
      const float* part = pb->block_max.data() + (static_cast<size_t>(b) * pb->num_blocks + blk) * d.num_labels;
      for (int g = 0; g < pb->num_gt[b]; ++g) out[g] = std::max(out[g], part[g]);
    }
  }
}

/*! \brief Phase B for one (image, block). */
void AssignBlock(Problem* pb, int b, int blk) {
  const Dims& d = pb->d;
  const int begin = blk * kAnchorBlock, end = std::min(d.num_anchors, begin + kAnchorBlock);
  const size_t row = pb->Row(b);
  const float* gt_max = pb->gt_max.data() + static_cast<size_t>(b) * d.num_labels;
  for (int j = begin; j < end; ++j) {
    pb->match[row + j] = match::AssignByIoU(pb->anchors + 4 * static_cast<size_t>(j), pb->usable[row + j] != 0,
                                            pb->best_iou[row + j], pb->best_gt[row + j], pb->GtsOf(b),
                                            pb->num_gt[b], gt_max, pb->p.positive_iou, pb->p.negative_iou);
  }
}

/*! \brief Phase C for image b: subsample with `rng` and write the image's output rows. */
void SampleImage(const Problem& pb, int b, std::mt19937* rng, std::vector<int>* pos, std::vector<int>* neg,
                 float* cls_target, float* box_target, float* box_weight) {
  const int n = pb.d.num_anchors;
  const size_t row = pb.Row(b);
  float* cls = cls_target + row;
  float* target = box_target + 4 * row;
  float* weight = box_weight + 4 * row;
  std::fill(cls, cls + n, -1.f);
  std::fill(target, target + 4 * static_cast<size_t>(n), 0.f);
  std::fill(weight, weight + 4 * static_cast<size_t>(n), 0.f);
  const int* m = pb.match.get() + row;
  const float* gts = pb.GtsOf(b);
  pos->clear();
  neg->clear();
  for (int j = 0; j < n; ++j) {
    if (m[j] >= 0) {
      pos->push_back(j);
      const size_t o = 4 * static_cast<size_t>(j);
      BoxEncode(pb.anchors + o, gts + 4 * m[j], pb.p.stds, target + o);
    } else if (m[j] == match::kUnmatched) {
      neg->push_back(j);
    }
  }
  const int kept_pos = sample::ChooseK(pos->data(), static_cast<int>(pos->size()), pb.p.max_positives(), rng);
  const int kept_neg = sample::ChooseK(neg->data(), static_cast<int>(neg->size()),
                                       pb.p.batch_size_per_image - kept_pos, rng);
  for (int i = 0; i < kept_pos; ++i) {
    const int j = (*pos)[i];
    cls[j] = 1.f;
    std::fill(weight + 4 * static_cast<size_t>(j), weight + 4 * static_cast<size_t>(j) + 4, 1.f);
  }
  for (int i = 0; i < kept_neg; ++i) cls[(*neg)[i]] = 0.f;
}

MXReturnValue RpnForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                  std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("RPNTarget", [&]() {
    Problem pb;
    pb.p = RPNTargetParam::Parse(attrs);
    pb.d = CheckShapes(ShapeOf((*inputs)[0]), ShapeOf((*inputs)[1]), ShapeOf((*inputs)[2]));
    mxnet::ext::mx_cpu_rand_t* states = res.get_cpu_rand_states();
    if (states == nullptr) throw std::runtime_error("MXNet provided no CPU random states");
    pb.anchors = (*inputs)[0].data<float>();
    pb.labels = (*inputs)[1].data<float>();
    pb.im_info = (*inputs)[2].data<float>();
    const Dims& d = pb.d;
    CheckImInfoValues(pb.im_info, d.batch);
    pb.num_blocks = (d.num_anchors + kAnchorBlock - 1) / kAnchorBlock;
    const size_t bn = static_cast<size_t>(d.batch) * d.num_anchors;
    pb.usable.reset(new unsigned char[bn]);
    pb.best_iou.reset(new float[bn]);
    pb.best_gt.reset(new int[bn]);
    pb.match.reset(new int[bn]);
    pb.block_max.assign(static_cast<size_t>(d.batch) * pb.num_blocks * d.num_labels, -1.f);
    CollectGroundTruths(&pb);

    float* cls_target = (*outputs)[0].data<float>();
    float* box_target = (*outputs)[1].data<float>();
    float* box_weight = (*outputs)[2].data<float>();
    const int tasks = d.batch * pb.num_blocks;
    const int groups = std::min(d.batch, sample::kCpuRandomStates);
#pragma omp parallel num_threads(NumThreads())
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < tasks; ++t) ScanBlock(&pb, t / pb.num_blocks, t % pb.num_blocks);
#pragma omp single
      MergeGtMax(&pb);
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < tasks; ++t) AssignBlock(&pb, t / pb.num_blocks, t % pb.num_blocks);
      std::vector<int> pos, neg;
#pragma omp for schedule(dynamic, 1)
      for (int s = 0; s < groups; ++s) {
        for (int b = s; b < d.batch; b += sample::kCpuRandomStates) {
          SampleImage(pb, b, &states[s], &pos, &neg, cls_target, box_target, box_weight);
        }
      }
    }
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue RpnForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                  std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("RPNTarget", [&]() {
    RPNTargetParam p = RPNTargetParam::Parse(attrs);
    Dims d = CheckShapes(ShapeOf((*inputs)[0]), ShapeOf((*inputs)[1]), ShapeOf((*inputs)[2]));
    if (d.batch > sample::kGpuRandomStates) {
      throw std::invalid_argument("RPNTarget on GPU supports at most " +
                                  std::to_string(sample::kGpuRandomStates) + " images per batch");
    }
    void* states = res.get_gpu_rand_states();
    if (states == nullptr) throw std::runtime_error("MXNet provided no GPU random states");
    const size_t bytes = RPNTargetWorkspaceBytes(d.batch, d.num_anchors, d.num_labels);
    if (bytes > 2147483647ull) throw std::invalid_argument("RPNTarget: workspace too large");
    void* workspace = res.alloc_gpu(static_cast<int>(bytes));
    RPNTargetForwardGPU(p, (*inputs)[0].data<float>(), (*inputs)[1].data<float>(), (*inputs)[2].data<float>(),
                        d.batch, d.num_anchors, d.num_labels, d.label_width, (*outputs)[0].data<float>(),
                        (*outputs)[1].data<float>(), (*outputs)[2].data<float>(), states, workspace,
                        res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(RPNTarget)
    .setParseAttrs(ssdkit::RpnParseAttrs)
    .setInferType(ssdkit::RpnInferType)
    .setInferShape(ssdkit::RpnInferShape)
    .setForward(ssdkit::RpnForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::RpnForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
