/*!
 * \file rpn_anchors.cc
 * \brief RPNAnchors registration (semantics in rpn_anchors-inl.h). The CPU and CUDA kernels are the
 *        shared anchor grid (common/anchor_grid.cc, common/anchor_grid.cu); the CUDA path is
 *        compiled but untested at run time (no GPU on the development machines).
 */
#include <string>
#include <unordered_map>
#include <vector>

#include "common/anchor_grid.h"
#include "common/lib_glue.h"
#include "rpn_anchors/rpn_anchors-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;

MXReturnValue AnchorsParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("RPNAnchors", [&]() {
    RPNAnchorsParam::Parse(attrs);
    *num_in = 1;
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue AnchorsInferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("RPNAnchors", in_types, out_types);
}

MXReturnValue AnchorsInferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                                std::vector<std::vector<unsigned int>>* out_shapes) {
  return Guard("RPNAnchors", [&]() {
    const auto& s = (*in_shapes)[0];
    CheckFeatureMapShape(s);
    RPNAnchorsParam p = RPNAnchorsParam::Parse(attrs);
    (*out_shapes)[0] = {1u, AnchorCount(s, p.num_anchors()), 4u};
    return mxnet::ext::MX_SUCCESS;
  });
}

AnchorGrid GridOf(const Attrs& attrs, const std::vector<MXTensor>& inputs) {
  return RPNAnchorsParam::Parse(attrs).Grid(static_cast<int>(inputs[0].shape[2]),
                                            static_cast<int>(inputs[0].shape[3]));
}

MXReturnValue AnchorsForwardCPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                std::vector<MXTensor>* outputs, const OpResource&) {
  return Guard("RPNAnchors", [&]() {
    FillAnchorGridCPU(GridOf(attrs, *inputs), (*outputs)[0].data<float>());
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue AnchorsForwardGPU(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                std::vector<MXTensor>* outputs, const OpResource& res) {
  return Guard("RPNAnchors", [&]() {
    FillAnchorGridGPU(GridOf(attrs, *inputs), (*outputs)[0].data<float>(), res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(RPNAnchors)
    .setParseAttrs(ssdkit::AnchorsParseAttrs)
    .setInferType(ssdkit::AnchorsInferType)
    .setInferShape(ssdkit::AnchorsInferShape)
    .setForward(ssdkit::AnchorsForwardCPU, "cpu")
    .setBackward(ssdkit::ZeroBackwardCPU, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::AnchorsForwardGPU, "gpu")
    .setBackward(ssdkit::ZeroBackwardGPU, "gpu")
#endif
    ;
