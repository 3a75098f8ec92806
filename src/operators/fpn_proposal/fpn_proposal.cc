/*!
 * \file fpn_proposal.cc
 * \brief FPNProposal registration and CPU kernel (OpenMP); semantics in fpn_proposal-inl.h.
 *
 * CPU plan, for B images and L levels:
 *  1. one task per (image, level), largest levels first, dynamically scheduled, so that a batch of
 *     one still spreads its levels over the threads: rank the level (partial sort of packed integer
 *     (score, index) keys, the order of common/topk.h), decode and clip only the top pre_nms_top_n,
 *     greedy NMS (common/nms.h GreedyNmsSoA) stopping at P kept.
 *  2. one task per image: merge the levels' kept proposals (top P by score) and write the rows.
 */
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/bbox.h"
#include "common/lib_glue.h"
#include "common/nms.h"
#include "common/parallel.h"
#include "common/topk.h"
#include "common/two_stage.h"
#include "fpn_proposal/fpn_proposal-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

/*! \brief Per-thread buffers, reused across tasks. */
struct Scratch {
  std::vector<uint64_t> ranked;  // (level size,) packed (score key, anchor) of step 1
  std::vector<float> boxes;      // (C, 4) candidates that passed the size test, rank order
  std::vector<int> cand;         // (C,) their position within the level
  std::vector<int> visit;        // 0..C-1
  std::vector<int> keep;         // kept candidate positions
  NmsSoAScratch nms;
  std::vector<float> merged_scores;  // per image: kept scores of all levels, level order
  std::vector<int> order;            // per image: merged ranking
};

/*!
 * \brief Step 1 as integers: the score's common/topk.h ScoreRankKey (larger score, larger key; 0
 *  for non-finite scores, below every finite one) in the high 32 bits and the complement of the
 *  anchor's position in the low 32 bits. Descending packed values are then exactly the
 *  common/topk.h order (descending score, ascending index), compared as plain integers; the CUDA
 *  kernels rank by the same key.
 */
inline uint64_t PackRank(float score, int position) {
  return (static_cast<uint64_t>(ScoreRankKey(score)) << 32) |
         static_cast<uint32_t>(~static_cast<uint32_t>(position));
}

inline int UnpackPosition(uint64_t packed) { return static_cast<int>(~static_cast<uint32_t>(packed)); }
inline bool PackedIsCandidate(uint64_t packed) { return (packed >> 32) != 0; }

void ProposeLevel(const FPNProposalParam& p, const FPNLevelPlan& plan, int level, int n, const float* cls,
                  const float* bbox, const float* anchor, float im_height, float im_width, Scratch* s,
                  KeptBoxes* out) {
  const int begin = plan.anchor_begin[level];
  const int size = plan.anchor_begin[level + 1] - begin;
  const int top = p.level_top(level);
  const float* score = cls + begin;
  s->ranked.resize(static_cast<size_t>(size));
  for (int i = 0; i < size; ++i) s->ranked[i] = PackRank(score[i], i);
  const auto first = s->ranked.begin(), cut = first + top;
  if (top < size) std::nth_element(first, cut, s->ranked.end(), std::greater<uint64_t>());
  std::sort(first, cut, std::greater<uint64_t>());
  s->boxes.resize(4 * static_cast<size_t>(top));
  s->cand.clear();
  for (int r = 0; r < top; ++r) {
    if (!PackedIsCandidate(s->ranked[r])) break;  // non-finite scores rank last: none after this one either
    const int i = UnpackPosition(s->ranked[r]);
    const size_t a = static_cast<size_t>(begin + i);
    float* box = s->boxes.data() + 4 * s->cand.size();
    if (MakeProposal(anchor + 4 * a, bbox + 4 * a, p.stds, im_height, im_width, p.min_size, box)) {
      s->cand.push_back(i);
    }
  }
  const int count = static_cast<int>(s->cand.size());
  s->visit.resize(static_cast<size_t>(count));
  std::iota(s->visit.begin(), s->visit.end(), 0);
  NmsOptions opt;
  opt.iou_threshold = p.nms_threshold;
  opt.max_keep = p.post_nms_top_n;
  GreedyNmsSoA(s->boxes.data(), s->visit.data(), count, opt, &s->keep, &s->nms);
  out->clear();
  for (int c : s->keep) out->push_back(score[s->cand[c]], s->boxes.data() + 4 * static_cast<size_t>(c));
}

/*! \brief Step 2 for image b: the best P kept proposals of all levels -> rows of rois / scores. */
void MergeImage(const FPNProposalParam& p, int num_levels, int b, const KeptBoxes* levels, float* rois,
                float* scores, Scratch* s) {
  // Level order then rank order: a stable ranking by score breaks ties by ascending anchor index.
  const int rows = p.post_nms_top_n;
  const int written = MergeKeptTopK(levels, num_levels, rows, &s->merged_scores, &s->order,
                                    [&](int r, int, float score, const float* box) {
                                      WriteRoi(rois + 5 * static_cast<size_t>(r), scores + r, b, box, score);
                                    });
  for (int r = written; r < rows; ++r) WritePaddingRoi(rois + 5 * static_cast<size_t>(r), scores + r, b);
}

MXReturnValue ProposalParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("FPNProposal", [&]() {
    FPNProposalParam::Parse(attrs);
    *num_in = 4;
    *num_out = 2;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue ProposalInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32FillUnknown("FPNProposal", in_types, out_types);
}

/*!
 * \brief Fill in input shapes MXNet does not know yet (empty) but the others determine: the anchor
 *  (1, sum(level_sizes), 4), e.g. when anchors are a fixed parameter of a Module, and im_info (B, 3).
 */
void CompleteShapes(const FPNProposalParam& p, std::vector<Shape>* in) {
  unsigned int n = 0, batch = 0;
  for (int s : p.level_sizes) n += static_cast<unsigned int>(s);
  for (int i : {0, 1, 3}) {
    if (!(*in)[i].empty() && batch == 0) batch = (*in)[i][0];
  }
  if ((*in)[2].empty()) (*in)[2] = {1u, n, 4u};
  if ((*in)[3].empty() && batch > 0) (*in)[3] = {batch, 3u};
}

MXReturnValue ProposalInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  return Guard("FPNProposal", [&]() {
    FPNProposalParam p = FPNProposalParam::Parse(attrs);
    CompleteShapes(p, in_shapes);
    unsigned int batch, n;
    CheckFPNProposalShapes(p, (*in_shapes)[0], (*in_shapes)[1], (*in_shapes)[2], (*in_shapes)[3], &batch, &n);
    const unsigned int rows = batch * static_cast<unsigned int>(p.post_nms_top_n);
    (*out_shapes)[0] = {rows, 5u};
    (*out_shapes)[1] = {rows, 1u};
    return mxnet::ext::MX_SUCCESS;
  });
}

/*! \brief Forward-time check of the input shapes; returns (B, N). */
void CheckInputs(const FPNProposalParam& p, const std::vector<MXTensor>& in, int* batch, int* n) {
  unsigned int ub, un;
  CheckFPNProposalShapes(p, ShapeOf(in[0]), ShapeOf(in[1]), ShapeOf(in[2]), ShapeOf(in[3]), &ub, &un);
  *batch = static_cast<int>(ub);
  *n = static_cast<int>(un);
}

MXReturnValue ProposalForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                 const OpResource&) {
  return Guard("FPNProposal", [&]() {
    const FPNProposalParam p = FPNProposalParam::Parse(attrs);
    int batch, n;
    CheckInputs(p, *inputs, &batch, &n);
    const float* cls = (*inputs)[0].data<float>();
    const float* bbox = (*inputs)[1].data<float>();
    const float* anchor = (*inputs)[2].data<float>();
    const float* im_info = (*inputs)[3].data<float>();
    float* rois = (*outputs)[0].data<float>();
    float* scores = (*outputs)[1].data<float>();
    CheckImInfoValues(im_info, batch);
    const FPNLevelPlan plan = PlanLevels(p);
    const int levels = plan.num_levels;
    // tasks: (image, level), the largest levels first
    std::vector<int> level_order(static_cast<size_t>(levels));
    std::iota(level_order.begin(), level_order.end(), 0);
    std::stable_sort(level_order.begin(), level_order.end(),
                     [&](int a, int b) { return p.level_sizes[a] > p.level_sizes[b]; });
    const int tasks = batch * levels;
    std::vector<KeptBoxes> results(static_cast<size_t>(tasks));
    TaskErrors errors(tasks);
    const int rows = p.post_nms_top_n;
#pragma omp parallel num_threads(NumThreads())
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
      Scratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < tasks; ++t) {
        const int l = level_order[t / batch], b = t % batch;
        errors.Run(t, [&]() {
          ProposeLevel(p, plan, l, n, cls + static_cast<size_t>(b) * n, bbox + 4 * static_cast<size_t>(b) * n,
                       anchor, im_info[3 * b], im_info[3 * b + 1], &scratch, &results[b * levels + l]);
        });
      }
#pragma omp for schedule(dynamic, 1)
      for (int b = 0; b < batch; ++b) {
        MergeImage(p, levels, b, results.data() + static_cast<size_t>(b) * levels,
                   rois + 5 * static_cast<size_t>(b) * rows, scores + static_cast<size_t>(b) * rows, &scratch);
      }
    }
    errors.Rethrow();
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue ProposalForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                 const OpResource& res) {
  return Guard("FPNProposal", [&]() {
    const FPNProposalParam p = FPNProposalParam::Parse(attrs);
    int batch, n;
    CheckInputs(p, *inputs, &batch, &n);
    void* workspace = res.alloc_gpu(static_cast<int>(FPNProposalGPUWorkspace(p, batch, n)));
    FPNProposalForwardGPU(p, batch, n, (*inputs)[0].data<float>(), (*inputs)[1].data<float>(),
                          (*inputs)[2].data<float>(), (*inputs)[3].data<float>(), (*outputs)[0].data<float>(),
                          (*outputs)[1].data<float>(), workspace, res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(FPNProposal)
    .setParseAttrs(ssdkit::ProposalParseAttrs)
    .setInferType(ssdkit::ProposalInferType)
    .setInferShape(ssdkit::ProposalInferShape)
    .setForward(ssdkit::ProposalForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::ProposalForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
