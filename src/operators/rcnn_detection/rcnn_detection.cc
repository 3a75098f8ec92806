/*!
 * \file rcnn_detection.cc
 * \brief RCNNDetection registration and CPU kernel (OpenMP); semantics in rcnn_detection-inl.h.
 *
 * CPU plan, for M roi rows, B images and C foreground classes:
 *  1. serial pass: the valid roi rows of each image, ascending.
 *  2. one task per (image, class), dynamically scheduled (a batch of one still uses every thread):
 *     candidates above the threshold, decoded and clipped, ranked (common/topk.h), greedy NMS
 *     (common/nms.h GreedyNmsSoA) stopping at K kept.
 *  3. one task per image: merge the classes' kept detections (top K by score), write the rows.
 */
#include <omp.h>

#include <algorithm>
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
#include "rcnn_detection/rcnn_detection-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

/*! \brief Per-thread buffers, reused across tasks. */
struct Scratch {
  std::vector<float> scores;  // candidates, roi-row order
  std::vector<float> boxes;   // (candidates, 4)
  std::vector<int> order;     // ranked candidates
  std::vector<int> keep;
  NmsSoAScratch nms;
};

struct Dims {
  int num_rois, channels, batch;
};

Dims CheckInputs(const std::vector<MXTensor>& in) {
  unsigned int m, c, b;
  CheckRCNNDetectionShapes(ShapeOf(in[0]), ShapeOf(in[1]), ShapeOf(in[2]), ShapeOf(in[3]), &m, &c, &b);
  return {static_cast<int>(m), static_cast<int>(c), static_cast<int>(b)};
}

/*! \brief Step 2 for image `b`, foreground class `cls` (channel cls + 1). */
void DetectClass(const RCNNDetectionParam& p, const Dims& d, const std::vector<int>& rows, int cls,
                 const float* rois, const float* prob, const float* bbox, float im_height, float im_width,
                 Scratch* s, KeptBoxes* out) {
  const int channel = cls + 1;
  s->scores.clear();
  s->boxes.clear();
  float box[4];
  for (int i : rows) {
    const float score = prob[static_cast<size_t>(i) * d.channels + channel];
    if (!IsDetectionScore(score, p.score_threshold)) continue;
    const float* delta = bbox + 4 * (static_cast<size_t>(i) * d.channels + channel);
    if (!MakeDetectionBox(rois + 5 * static_cast<size_t>(i) + 1, delta, p.stds, im_height, im_width, p.clip, box)) {
      continue;
    }
    s->scores.push_back(score);
    s->boxes.insert(s->boxes.end(), box, box + 4);
  }
  const int count = static_cast<int>(s->scores.size());
  TopKDescending(s->scores.data(), count, -1, &s->order);  // all, ties by roi row
  NmsOptions opt;
  opt.iou_threshold = p.nms_threshold;
  opt.max_keep = p.max_detections;
  GreedyNmsSoA(s->boxes.data(), s->order.data(), count, opt, &s->keep, &s->nms);
  out->clear();  // boxes in pixels, clipped
  for (int c : s->keep) out->push_back(s->scores[c], s->boxes.data() + 4 * static_cast<size_t>(c));
}

/*! \brief Step 3 for image b: the best K kept detections of all classes -> det rows (K, 6). */
void MergeImage(const RCNNDetectionParam& p, int classes, const KeptBoxes* results, float im_height,
                float im_width, float* det, Scratch* s) {
  // Class order then rank order: a stable ranking breaks ties by class, then roi row.
  const int rows = p.max_detections;
  const int written = MergeKeptTopK(results, classes, rows, &s->scores, &s->order,
                                    [&](int r, int cls, float score, const float* box) {
                                      WriteRCNNDetection(det + 6 * static_cast<size_t>(r), cls, score, box,
                                                         p.normalize, im_height, im_width);
                                    });
  std::fill(det + 6 * static_cast<size_t>(written), det + 6 * static_cast<size_t>(rows), -1.f);
}

MXReturnValue DetectionParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("RCNNDetection", [&]() {
    RCNNDetectionParam::Parse(attrs);
    *num_in = 4;
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue DetectionInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("RCNNDetection", in_types, out_types);
}

MXReturnValue DetectionInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  return Guard("RCNNDetection", [&]() {
    RCNNDetectionParam p = RCNNDetectionParam::Parse(attrs);
    unsigned int m, c, b;
    CheckRCNNDetectionShapes((*in_shapes)[0], (*in_shapes)[1], (*in_shapes)[2], (*in_shapes)[3], &m, &c, &b);
    (*out_shapes)[0] = {b, static_cast<unsigned int>(p.max_detections), 6u};
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue DetectionForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource&) {
  return Guard("RCNNDetection", [&]() {
    const RCNNDetectionParam p = RCNNDetectionParam::Parse(attrs);
    const Dims d = CheckInputs(*inputs);
    const float* rois = (*inputs)[0].data<float>();
    const float* prob = (*inputs)[1].data<float>();
    const float* bbox = (*inputs)[2].data<float>();
    const float* im_info = (*inputs)[3].data<float>();
    float* det = (*outputs)[0].data<float>();
    CheckImInfoValues(im_info, d.batch);
    std::vector<std::vector<int>> rows(static_cast<size_t>(d.batch));
    for (int i = 0; i < d.num_rois; ++i) {
      const int b = RoiImage(rois + 5 * static_cast<size_t>(i), d.batch);
      if (b >= 0) rows[b].push_back(i);
    }
    const int classes = d.channels - 1;
    const int tasks = d.batch * classes;
    std::vector<KeptBoxes> results(static_cast<size_t>(tasks));
    TaskErrors errors(tasks);
#pragma omp parallel num_threads(NumThreads())
    {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
      RecordThreadsUsed(omp_get_num_threads());
      Scratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int t = 0; t < tasks; ++t) {
        const int b = t / classes, c = t % classes;
        errors.Run(t, [&]() {
          DetectClass(p, d, rows[b], c, rois, prob, bbox, im_info[3 * b], im_info[3 * b + 1], &scratch, &results[t]);
        });
      }
#pragma omp for schedule(dynamic, 1)
      for (int b = 0; b < d.batch; ++b) {
        MergeImage(p, classes, results.data() + static_cast<size_t>(b) * classes, im_info[3 * b],
                   im_info[3 * b + 1], det + 6 * static_cast<size_t>(b) * p.max_detections, &scratch);
      }
    }
    errors.Rethrow();
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue DetectionForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource& res) {
  return Guard("RCNNDetection", [&]() {
    const RCNNDetectionParam p = RCNNDetectionParam::Parse(attrs);
    const Dims d = CheckInputs(*inputs);
    void* workspace = res.alloc_gpu(static_cast<int>(RCNNDetectionGPUWorkspace(p, d.num_rois, d.channels, d.batch)));
    RCNNDetectionForwardGPU(p, d.num_rois, d.channels, d.batch, (*inputs)[0].data<float>(),
                            (*inputs)[1].data<float>(), (*inputs)[2].data<float>(), (*inputs)[3].data<float>(),
                            (*outputs)[0].data<float>(), workspace, res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(RCNNDetection)
    .setParseAttrs(ssdkit::DetectionParseAttrs)
    .setInferType(ssdkit::DetectionInferType)
    .setInferShape(ssdkit::DetectionInferShape)
    .setForward(ssdkit::DetectionForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::DetectionForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
