/*!
 * \file mask_target.cc
 * \brief MaskTarget registration and CPU kernel (semantics in mask_target-inl.h).
 *
 * A serial pass collects every image's ground truths (labels::Collect); then one task per RoI
 * (OpenMP, dynamic schedule) matches it and writes its own S x S output rows. Each output value
 * depends on its row alone, so the result is the same for any thread count.
 */
#include <omp.h>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ground_truth.h"
#include "common/lib_glue.h"
#include "common/parallel.h"
#include "mask_target/mask_target-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

MaskTargetDims CheckInputs(const MaskTargetParam& p, const std::vector<Shape>& s) {
  return CheckMaskTargetShapes(p, s[0], s[1], s[2], s[3]);
}

MXReturnValue MtParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("MaskTarget", [&]() {
    MaskTargetParam::Parse(attrs);
    *num_in = 4;
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue MtInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("MaskTarget", in_types, out_types);
}

MXReturnValue MtInferShape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  return Guard("MaskTarget", [&]() {
    const MaskTargetParam p = MaskTargetParam::Parse(attrs);
    const MaskTargetDims d = CheckInputs(p, *in_shapes);
    const unsigned int s = static_cast<unsigned int>(p.mask_size);
    (*out_shapes)[0] = {static_cast<unsigned int>(d.num_rois), s, s};
    return mxnet::ext::MX_SUCCESS;
  });
}

std::vector<Shape> InputShapes(const std::vector<MXTensor>& inputs) {
  std::vector<Shape> shapes;
  for (size_t i = 0; i < 4; ++i) shapes.push_back(ShapeOf(inputs[i]));
  return shapes;
}

void ForwardCPU(const MaskTargetParam& p, const MaskTargetDims& d, const float* rois, const float* labels,
                const float* gt, const float* gt_masks, float* out) {
  const size_t bm = static_cast<size_t>(d.batch) * d.num_labels;
  std::vector<float> gts(bm * 4);
  std::vector<int> gt_rows(bm), num_gt(d.batch);
  for (int b = 0; b < d.batch; ++b) {
    const size_t first = static_cast<size_t>(b) * d.num_labels;
    num_gt[b] = labels::Collect(gt + first * d.label_width, d.num_labels, d.label_width, p.class_limit(),
                                gts.data() + 4 * first, gt_rows.data() + first);
  }
  const int size = p.mask_size;
  const size_t bins = static_cast<size_t>(size) * size;
  const size_t plane_size = static_cast<size_t>(d.mask_h) * d.mask_w;
  const int threads = NumThreads();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int r = 0; r < d.num_rois; ++r) {
    const float* roi = rois + 5 * static_cast<size_t>(r);
    float* dst = out + static_cast<size_t>(r) * bins;
    const int plane = MatchedMaskPlane(roi, labels[r], gt, gts.data(), gt_rows.data(), num_gt.data(), d.batch,
                                       d.num_labels, d.label_width);
    if (plane < 0) {
      std::fill(dst, dst + bins, -1.0f);
      continue;
    }
    const float* mask = gt_masks + static_cast<size_t>(plane) * plane_size;
    const RoiSampling g = MaskSampling(roi, p);
    for (int ph = 0; ph < size; ++ph) {
      for (int pw = 0; pw < size; ++pw) {
        dst[ph * size + pw] = MaskBin(mask, d.mask_h, d.mask_w, g, ph, pw, p.threshold);
      }
    }
  }
  RecordThreadsUsed(threads);
}

MXReturnValue MtForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                           const OpResource&) {
  return Guard("MaskTarget", [&]() {
    const MaskTargetParam p = MaskTargetParam::Parse(attrs);
    const MaskTargetDims d = CheckInputs(p, InputShapes(*inputs));
    ForwardCPU(p, d, (*inputs)[0].data<float>(), (*inputs)[1].data<float>(), (*inputs)[2].data<float>(),
               (*inputs)[3].data<float>(), (*outputs)[0].data<float>());
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue MtForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                           const OpResource& res) {
  return Guard("MaskTarget", [&]() {
    const MaskTargetParam p = MaskTargetParam::Parse(attrs);
    const MaskTargetDims d = CheckInputs(p, InputShapes(*inputs));
    const size_t bytes = MaskTargetWorkspaceBytes(d);
    if (bytes > 2147483647ull) throw std::invalid_argument("MaskTarget: workspace too large");
    void* workspace = res.alloc_gpu(static_cast<int>(bytes));
    MaskTargetForwardGPU(p, d, (*inputs)[0].data<float>(), (*inputs)[1].data<float>(), (*inputs)[2].data<float>(),
                         (*inputs)[3].data<float>(), (*outputs)[0].data<float>(), workspace, res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(MaskTarget)
    .setParseAttrs(ssdkit::MtParseAttrs)
    .setInferType(ssdkit::MtInferType)
    .setInferShape(ssdkit::MtInferShape)
    .setForward(ssdkit::MtForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::MtForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
