/*!
 * \file multibox_prior.cc
 * \brief MultiBoxPrior registration; the kernels are the shared anchor grid (common/anchor_grid.h).
 *  Input  data   : (B, C, H, W) feature map, only its H and W are read.
 *  Output anchors: (1, H*W*A, 4) corner boxes, see multibox_prior-inl.h.
 */
#include <string>
#include <unordered_map>
#include <vector>

#include "common/anchor_grid.h"
#include "common/lib_glue.h"
#include "multibox_prior/multibox_prior-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;

MXReturnValue PriorParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("MultiBoxPrior", [&]() {
    MultiBoxPriorParam::Parse(attrs);
    *num_in = 1;
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue PriorInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("MultiBoxPrior", in_types, out_types);
}

MXReturnValue PriorInferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                              std::vector<std::vector<unsigned int>>* out_shapes) {
  return Guard("MultiBoxPrior", [&]() {
    const auto& s = (*in_shapes)[0];
    CheckFeatureMapShape(s);
    MultiBoxPriorParam p = MultiBoxPriorParam::Parse(attrs);
    (*out_shapes)[0] = {1u, AnchorCount(s, p.num_anchors()), 4u};
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue PriorForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource&) {
  return Guard("MultiBoxPrior", [&]() {
    MultiBoxPriorParam p = MultiBoxPriorParam::Parse(attrs);
    AnchorGrid grid = p.Grid(static_cast<int>((*inputs)[0].shape[2]), static_cast<int>((*inputs)[0].shape[3]));
    FillAnchorGridCPU(grid, (*outputs)[0].data<float>());
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue PriorForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                              std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("MultiBoxPrior", [&]() {
    MultiBoxPriorParam p = MultiBoxPriorParam::Parse(attrs);
    AnchorGrid grid = p.Grid(static_cast<int>((*inputs)[0].shape[2]), static_cast<int>((*inputs)[0].shape[3]));
    FillAnchorGridGPU(grid, (*outputs)[0].data<float>(), res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(MultiBoxPrior)
    .setParseAttrs(ssdkit::PriorParseAttrs)
    .setInferType(ssdkit::PriorInferType)
    .setInferShape(ssdkit::PriorInferShape)
    .setForward(ssdkit::PriorForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::PriorForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
