/*!
 * \file lib_glue.h
 * \brief Small helpers shared by the lib_api glue of every operator (.cc files only).
 */
#ifndef SSDKIT_COMMON_LIB_GLUE_H_
#define SSDKIT_COMMON_LIB_GLUE_H_

#include <exception>
#include <string>
#include <vector>

#include "common/shapes.h"
#include "mxnet/lib_api.h"

namespace ssdkit {

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

/*! \brief Hand `message` to MXNet as the error of the failing call; returns MX_FAIL.
 *  lib_api keeps every message ever added and prints them all with each later error, so earlier
 *  (already reported) messages are dropped first (library.cc). */
MXReturnValue ReportError(const std::string& message);

/*! \brief Run `body`; turn any exception into an MXNet error (MX_FAIL) instead of a crash. */
template <typename F>
inline MXReturnValue Guard(const char* op, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return ReportError(std::string(op) + ": " + e.what());
  } catch (...) {
    return ReportError(std::string(op) + ": unknown error");
  }
}

/*! \brief The shape of a tensor handed to an operator (ShapeString prints it). */
inline std::vector<unsigned int> ShapeOf(const MXTensor& t) {
  return std::vector<unsigned int>(t.shape.begin(), t.shape.end());
}

/*! \brief Every input must be float32 (the dtype of detection graphs); outputs are float32. */
inline MXReturnValue InferFloat32(const char* op, std::vector<int>* in_types,
                                  std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    if ((*in_types)[i] != mxnet::ext::kFloat32) {
      return ReportError(std::string(op) + ": input " + std::to_string(i) +
                         " must be float32 (got dtype code " + std::to_string((*in_types)[i]) +
                         "); cast it with .astype('float32')");
    }
  }
  for (auto& t : *out_types) t = mxnet::ext::kFloat32;
  return mxnet::ext::MX_SUCCESS;
}

/*! \brief InferFloat32, but inputs whose type MXNet does not know yet (-1, e.g. a parameter of a
 *  Module before its first value) are declared float32 instead of refused. */
inline MXReturnValue InferFloat32FillUnknown(const char* op, std::vector<int>* in_types,
                                             std::vector<int>* out_types) {
  for (auto& t : *in_types) {
    if (t == -1) t = mxnet::ext::kFloat32;
  }
  return InferFloat32(op, in_types, out_types);
}

/*! \brief Backward of operators without a gradient: zeros for every input gradient.
 *  Inputs of a backward call are (out grads..., inputs..., outputs...); outputs are the input grads. */
MXReturnValue ZeroBackwardCPU(const std::unordered_map<std::string, std::string>& attrs,
                              std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource& res);
#ifdef SSDKIT_WITH_CUDA
MXReturnValue ZeroBackwardGPU(const std::unordered_map<std::string, std::string>& attrs,
                              std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource& res);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_LIB_GLUE_H_
