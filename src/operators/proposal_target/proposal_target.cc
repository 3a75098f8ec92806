/*!
 * \file proposal_target.cc
 * \brief ProposalTarget registration and CPU kernel (semantics in proposal_target-inl.h).
 *
 * A serial pass buckets the rois rows by image; then, in parallel over random states (image b uses
 * state b % 1024, images sharing one run in order), each image gathers its candidates, finds their
 * best ground truths, subsamples (common/sample.h) and writes its S output rows.
 */
#include <omp.h>

#include <algorithm>
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
#include "proposal_target/proposal_target-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

struct Dims {
  int num_rois, batch, num_labels, label_width;
};

/*! \brief Check rois (R, 5), label (B, M, W >= 5) and the output size. */
Dims CheckShapes(const ProposalTargetParam& p, const Shape& r, const Shape& l) {
  if (r.size() != 2 || r[0] == 0 || r[1] != 5) {
    throw std::invalid_argument("rois must have shape (R, 5) with R > 0 (rows [batch_index, x0, y0, x1, y1]), "
                                "got " + ShapeString(r));
  }
  if (l.size() != 3 || l[0] == 0 || l[1] == 0 || l[2] < 5) {
    throw std::invalid_argument("label must have shape (B, M, W) with B, M > 0 and W >= 5 "
                                "(rows [cls, x0, y0, x1, y1, ...]), got " + ShapeString(l));
  }
  if (p.batch_images > 0 && static_cast<unsigned int>(p.batch_images) != l[0]) {
    throw std::invalid_argument("batch_images = " + std::to_string(p.batch_images) +
                                " but label has " + std::to_string(l[0]) + " images: " + ShapeString(l));
  }
  const unsigned long long rows = static_cast<unsigned long long>(l[0]) * p.batch_rois;
  if (rows * 4ull * (p.num_classes + 1ull) > 2147483647ull || r[0] > 2147483647u / 4) {
    throw std::invalid_argument("output too large: " + std::to_string(rows) + " RoIs x " +
                                std::to_string(4 * (p.num_classes + 1)) + " box targets");
  }
  return {static_cast<int>(r[0]), static_cast<int>(l[0]), static_cast<int>(l[1]), static_cast<int>(l[2])};
}

MXReturnValue PtParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("ProposalTarget", [&]() {
    ProposalTargetParam::Parse(attrs);
    *num_in = 2;
    *num_out = 4;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue PtInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("ProposalTarget", in_types, out_types);
}

MXReturnValue PtInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  return Guard("ProposalTarget", [&]() {
    ProposalTargetParam p = ProposalTargetParam::Parse(attrs);
    Dims d = CheckShapes(p, (*in_shapes)[0], (*in_shapes)[1]);
    const unsigned int rows = static_cast<unsigned int>(d.batch) * static_cast<unsigned int>(p.batch_rois);
    const unsigned int width = 4u * static_cast<unsigned int>(p.num_classes + 1);
    (*out_shapes)[0] = {rows, 5u};
    (*out_shapes)[1] = {rows};
    (*out_shapes)[2] = {rows, width};
    (*out_shapes)[3] = {rows, width};
    return mxnet::ext::MX_SUCCESS;
  });
}

/*! \brief Per-thread buffers, reused across images. */
struct Scratch {
  std::vector<float> gts;     // (M, 4)
  std::vector<int> gt_rows;   // (M,)
  std::vector<float> boxes;   // (n, 4) candidates
  std::vector<int> best_gt;   // (n,)
  std::vector<int> fg, bg;    // candidate indices
};

/*! \brief Outputs of one call. */
struct Outputs {
  float* rois;
  float* labels;
  float* box_target;
  float* box_weight;
};

/*! \brief Everything about image b: gather, match, sample, write its S rows. */
void ProcessImage(const ProposalTargetParam& p, const Dims& d, const float* rois, const float* label,
                  const std::vector<int>& roi_rows, int b, std::mt19937* rng, Scratch* s, const Outputs& out) {
  const int width = 4 * (p.num_classes + 1);
  const float* image_labels = label + static_cast<size_t>(b) * d.num_labels * d.label_width;
  s->gts.resize(static_cast<size_t>(d.num_labels) * 4);
  s->gt_rows.resize(d.num_labels);
  const int num_gt = labels::Collect(image_labels, d.num_labels, d.label_width,
                                     static_cast<float>(p.num_classes), s->gts.data(), s->gt_rows.data());
  // Candidates: this image's rois, then its ground truths.
  const int num_rois = static_cast<int>(roi_rows.size());
  const int n = num_rois + (p.add_gt_as_proposals ? num_gt : 0);
  s->boxes.resize(static_cast<size_t>(n) * 4);
  for (int i = 0; i < num_rois; ++i) {
    std::copy(rois + 5 * static_cast<size_t>(roi_rows[i]) + 1, rois + 5 * static_cast<size_t>(roi_rows[i]) + 5,
              s->boxes.data() + 4 * static_cast<size_t>(i));
  }
  if (p.add_gt_as_proposals) {
    std::copy(s->gts.data(), s->gts.data() + 4 * static_cast<size_t>(num_gt),
              s->boxes.data() + 4 * static_cast<size_t>(num_rois));
  }
  s->best_gt.resize(n);
  s->fg.clear();
  s->bg.clear();
  for (int j = 0; j < n; ++j) {
    float iou;
    match::BestOverlap(s->boxes.data() + 4 * static_cast<size_t>(j), s->gts.data(), num_gt, &iou, &s->best_gt[j]);
    const int kind = ClassifyCandidate(iou, s->best_gt[j], p.fg_thresh, p.bg_thresh_lo, p.bg_thresh_hi);
    if (kind == kForeground) s->fg.push_back(j);
    if (kind == kBackground) s->bg.push_back(j);
  }
  const int kept_fg = sample::ChooseK(s->fg.data(), static_cast<int>(s->fg.size()), p.max_foreground(), rng);
  const int kept_bg = sample::ChooseK(s->bg.data(), static_cast<int>(s->bg.size()), p.batch_rois - kept_fg, rng);
  std::sort(s->fg.begin(), s->fg.begin() + kept_fg);
  std::sort(s->bg.begin(), s->bg.begin() + kept_bg);

  const size_t first = static_cast<size_t>(b) * p.batch_rois;
  std::fill(out.box_target + first * width, out.box_target + (first + p.batch_rois) * width, 0.f);
  std::fill(out.box_weight + first * width, out.box_weight + (first + p.batch_rois) * width, 0.f);
  for (int i = 0; i < p.batch_rois; ++i) {
    const size_t row = first + i;
    float* roi = out.rois + 5 * row;
    roi[0] = static_cast<float>(b);
    if (i >= kept_fg + kept_bg) {  // padding
      for (int k = 1; k < 5; ++k) roi[k] = 0.f;
      out.labels[row] = -1.f;
      continue;
    }
    const bool fg = i < kept_fg;
    const int j = fg ? s->fg[i] : s->bg[i - kept_fg];
    const float* box = s->boxes.data() + 4 * static_cast<size_t>(j);
    for (int k = 0; k < 4; ++k) roi[1 + k] = box[k];
    if (!fg) {
      out.labels[row] = 0.f;
      continue;
    }
    const int g = s->best_gt[j];
    const int cls = static_cast<int>(image_labels[static_cast<size_t>(s->gt_rows[g]) * d.label_width]);
    out.labels[row] = static_cast<float>(cls + 1);
    const size_t slot = row * width + 4 * static_cast<size_t>(cls + 1);
    BoxEncode(box, s->gts.data() + 4 * g, p.stds, out.box_target + slot);
    std::fill(out.box_weight + slot, out.box_weight + slot + 4, 1.f);
  }
}

MXReturnValue PtForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                           const OpResource& res) {
  return Guard("ProposalTarget", [&]() {
    const ProposalTargetParam p = ProposalTargetParam::Parse(attrs);
    const Dims d = CheckShapes(p, ShapeOf((*inputs)[0]), ShapeOf((*inputs)[1]));
    mxnet::ext::mx_cpu_rand_t* states = res.get_cpu_rand_states();
    if (states == nullptr) throw std::runtime_error("MXNet provided no CPU random states");
    const float* rois = (*inputs)[0].data<float>();
    const float* label = (*inputs)[1].data<float>();
    // Bucket the rois rows by image, keeping their order.
    std::vector<std::vector<int>> roi_rows(d.batch);
    for (int r = 0; r < d.num_rois; ++r) {
      const int b = RoiImage(rois + 5 * static_cast<size_t>(r), d.batch);
      if (b >= 0) roi_rows[b].push_back(r);
    }
    const Outputs out{(*outputs)[0].data<float>(), (*outputs)[1].data<float>(), (*outputs)[2].data<float>(),
                      (*outputs)[3].data<float>()};
    const int groups = std::min(d.batch, sample::kCpuRandomStates);
#pragma omp parallel num_threads(NumThreads())
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
      Scratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int g = 0; g < groups; ++g) {
        for (int b = g; b < d.batch; b += sample::kCpuRandomStates) {
          ProcessImage(p, d, rois, label, roi_rows[b], b, &states[g], &scratch, out);
        }
      }
    }
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue PtForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                           const OpResource& res) {
  return Guard("ProposalTarget", [&]() {
    const ProposalTargetParam p = ProposalTargetParam::Parse(attrs);
    const Dims d = CheckShapes(p, ShapeOf((*inputs)[0]), ShapeOf((*inputs)[1]));
    if (d.batch > sample::kGpuRandomStates) {
      throw std::invalid_argument("ProposalTarget on GPU supports at most " +
                                  std::to_string(sample::kGpuRandomStates) + " images per batch");
    }
    void* states = res.get_gpu_rand_states();
    if (states == nullptr) throw std::runtime_error("MXNet provided no GPU random states");
    const size_t bytes = ProposalTargetWorkspaceBytes(d.batch, d.num_rois, d.num_labels);
    if (bytes > 2147483647ull) throw std::invalid_argument("ProposalTarget: workspace too large");
    void* workspace = res.alloc_gpu(static_cast<int>(bytes));
    ProposalTargetForwardGPU(p, (*inputs)[0].data<float>(), (*inputs)[1].data<float>(), d.batch, d.num_rois,
                             d.num_labels, d.label_width, (*outputs)[0].data<float>(), (*outputs)[1].data<float>(),
                             (*outputs)[2].data<float>(), (*outputs)[3].data<float>(), states, workspace,
                             res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(ProposalTarget)
    .setParseAttrs(ssdkit::PtParseAttrs)
    .setInferType(ssdkit::PtInferType)
    .setInferShape(ssdkit::PtInferShape)
    .setForward(ssdkit::PtForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::PtForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
