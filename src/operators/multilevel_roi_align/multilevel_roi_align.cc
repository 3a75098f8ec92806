/*!
 * \file multilevel_roi_align.cc
 * \brief MultiLevelROIAlign registration and CPU kernels (OpenMP); semantics in multilevel_roi_align-inl.h.
 *
 * CPU plan, for R RoIs, C channels, P x P bins:
 *  1. one task per RoI: its level (FPN rule or the levels input) and its batch row, checked.
 *  2. the RoIs in chunks of bounded sample count; per chunk, one task per RoI writes the bilinear
 *     taps of all its samples (common to every channel) into one table;
 *  3. forward: one task per (RoI, channel) of the chunk reads its plane through the taps;
 *     backward: one task per block of 8 channels adds the chunk's RoIs, in row order, into those
 *     channels' planes of every level and image: no two tasks write the same element and the order
 *     of the additions to an element does not depend on the thread count.
 */
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/lib_glue.h"
#include "common/parallel.h"
#ifdef SSDKIT_WITH_CUDA
#include "common/cuda_utils.h"
#endif
#include "multilevel_roi_align/multilevel_roi_align-inl.h"

namespace ssdkit {
namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

/*! \brief Bilinear taps per chunk: enough for ~16 MB of table, at least one RoI. */
constexpr size_t kChunkTaps = size_t(1) << 19;

/*! \brief Step 1's result for one RoI. */
struct RoiJob {
  int level = -1;      // level index, -1: the row gives zeros and no gradient
  int batch = 0;
  RoiSampling geom{};
  size_t first_tap = 0;  // into the chunk's table; taps of bin (ph, pw) are contiguous
};

/*! \brief Step 1: level, batch row and sampling grid of every RoI. */
std::vector<RoiJob> PlanRois(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const float* rois,
                             const float* levels) {
  std::vector<RoiJob> jobs(static_cast<size_t>(d.num_rois));
  TaskErrors errors(d.num_rois);
  const int threads = NumThreads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int r = 0; r < d.num_rois; ++r) {
    errors.Run(r, [&]() {
      const float* roi = rois + 5 * static_cast<size_t>(r);
      RoiJob& job = jobs[static_cast<size_t>(r)];
      if (!RoiRowValid(roi)) return;
      if (roi[0] >= static_cast<float>(d.batch)) {
        throw std::invalid_argument("rois row " + std::to_string(r) + " has batch index " + std::to_string(roi[0]) +
                                    " but the feature maps hold " + std::to_string(d.batch) + " images");
      }
      const int batch = static_cast<int>(roi[0]);
      const int level = levels != nullptr
          ? GivenLevelIndex(levels[r], p.num_levels(), p.min_level)
          : FpnLevelIndex(roi, p.num_levels(), static_cast<float>(p.canonical_size), p.canonical_level, p.min_level);
      if (level < 0) return;
      job.level = level;
      job.batch = batch;
      job.geom = RoiGeometry(roi, static_cast<float>(p.spatial_scales[static_cast<size_t>(level)]), p.pooled_h,
                             p.pooled_w, p.sample_ratio, p.aligned);
    });
  }
  errors.Rethrow();
  return jobs;
}

size_t TapsOf(const MultiLevelROIAlignParam& p, const RoiJob& job) {
  if (job.level < 0) return 0;
  return static_cast<size_t>(p.pooled_h) * p.pooled_w * job.geom.grid_h * job.geom.grid_w;
}

/*! \brief The end of the chunk that starts at RoI `begin`; numbers the chunk's taps in jobs. */
int ChunkEnd(const MultiLevelROIAlignParam& p, std::vector<RoiJob>* jobs, int begin, size_t* total) {
  *total = 0;
  int end = begin;
  const int n = static_cast<int>(jobs->size());
  while (end < n) {
    const size_t taps = TapsOf(p, (*jobs)[static_cast<size_t>(end)]);
    if (end > begin && *total + taps > kChunkTaps) break;
    (*jobs)[static_cast<size_t>(end)].first_tap = *total;
    *total += taps;
    ++end;
  }
  return end;
}

/*! \brief Step 2: the taps of RoIs [begin, end) into `table` (a tap outside the map has zero weights). */
void FillTaps(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const std::vector<RoiJob>& jobs, int begin,
              int end, std::vector<BilinearTap>* table) {
  const int threads = NumThreads();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int r = begin; r < end; ++r) {
    const RoiJob& job = jobs[static_cast<size_t>(r)];
    if (job.level < 0) continue;
    const RoiSampling& g = job.geom;
    const int height = d.height[static_cast<size_t>(job.level)], width = d.width[static_cast<size_t>(job.level)];
    BilinearTap* tap = table->data() + job.first_tap;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        for (int iy = 0; iy < g.grid_h; ++iy) {
          for (int ix = 0; ix < g.grid_w; ++ix, ++tap) {
            float y, x;
            SamplePosition(g, ph, pw, iy, ix, &y, &x);
            if (!BilinearTaps(y, x, height, width, tap)) *tap = BilinearTap{{0, 0, 0, 0}, {0.f, 0.f, 0.f, 0.f}};
          }
        }
      }
    }
  }
}

/*! \brief Chunk by chunk: plan, taps, then `apply(begin, end, table)`. */
template <typename F>
void ForEachChunk(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, std::vector<RoiJob>* jobs, F&& apply) {
  std::vector<BilinearTap> table;
  for (int begin = 0; begin < d.num_rois;) {
    size_t total = 0;
    const int end = ChunkEnd(p, jobs, begin, &total);
    table.resize(total);
    FillTaps(p, d, *jobs, begin, end, &table);
    apply(begin, end, table);
    begin = end;
  }
}

void ForwardCPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const std::vector<const float*>& features,
                const float* rois, const float* levels, float* out) {
  std::vector<RoiJob> jobs = PlanRois(p, d, rois, levels);
  const int bins = p.pooled_h * p.pooled_w;
  const int channels = d.channels;
  const int threads = NumThreads();
  ForEachChunk(p, d, &jobs, [&](int begin, int end, const std::vector<BilinearTap>& table) {
    const long long tasks = static_cast<long long>(end - begin) * channels;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long long t = 0; t < tasks; ++t) {
      const int r = begin + static_cast<int>(t / channels), c = static_cast<int>(t % channels);
      const RoiJob& job = jobs[static_cast<size_t>(r)];
      float* dst = out + (static_cast<size_t>(r) * channels + c) * bins;
      if (job.level < 0) {
        std::fill(dst, dst + bins, 0.0f);
        continue;
      }
      const size_t plane = static_cast<size_t>(d.height[static_cast<size_t>(job.level)]) *
                           d.width[static_cast<size_t>(job.level)];
      const float* src = features[static_cast<size_t>(job.level)] +
                         (static_cast<size_t>(job.batch) * channels + c) * plane;
      const int samples = job.geom.grid_h * job.geom.grid_w;
      const BilinearTap* tap = table.data() + job.first_tap;
      for (int bin = 0; bin < bins; ++bin) {
        float sum = 0.0f;
        for (int s = 0; s < samples; ++s, ++tap) {
          sum += tap->weight[0] * src[tap->offset[0]] + tap->weight[1] * src[tap->offset[1]] +
                 tap->weight[2] * src[tap->offset[2]] + tap->weight[3] * src[tap->offset[3]];
        }
        dst[bin] = sum / job.geom.count;
      }
    }
    RecordThreadsUsed(threads);
  });
}

void BackwardCPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const float* grad_out, const float* rois,
                 const float* levels, const std::vector<float*>& grads) {
  const int threads = NumThreads();
  for (int l = 0; l < p.num_levels(); ++l) {
    const size_t n = static_cast<size_t>(d.batch) * d.channels * d.height[static_cast<size_t>(l)] *
                     d.width[static_cast<size_t>(l)];
    float* g = grads[static_cast<size_t>(l)];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long long i = 0; i < static_cast<long long>(n); ++i) g[i] = 0.0f;
  }
  std::vector<RoiJob> jobs = PlanRois(p, d, rois, levels);
  const int bins = p.pooled_h * p.pooled_w;
  const int channels = d.channels;
  // Tasks are blocks of kBlock channels: each reads a RoI's taps once for the whole block.
  constexpr int kBlock = 8;
  const int blocks = (channels + kBlock - 1) / kBlock;
  ForEachChunk(p, d, &jobs, [&](int begin, int end, const std::vector<BilinearTap>& table) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int block = 0; block < blocks; ++block) {
      const int c0 = block * kBlock, width = std::min(kBlock, channels - c0);
      for (int r = begin; r < end; ++r) {
        const RoiJob& job = jobs[static_cast<size_t>(r)];
        if (job.level < 0) continue;
        const size_t plane = static_cast<size_t>(d.height[static_cast<size_t>(job.level)]) *
                             d.width[static_cast<size_t>(job.level)];
        float* dst[kBlock];
        const float* dy[kBlock];
        for (int k = 0; k < width; ++k) {
          dst[k] = grads[static_cast<size_t>(job.level)] + (static_cast<size_t>(job.batch) * channels + c0 + k) * plane;
          dy[k] = grad_out + (static_cast<size_t>(r) * channels + c0 + k) * bins;
        }
        const int samples = job.geom.grid_h * job.geom.grid_w;
        const BilinearTap* tap = table.data() + job.first_tap;
        for (int bin = 0; bin < bins; ++bin) {
          float g[kBlock];
          for (int k = 0; k < width; ++k) g[k] = dy[k][bin] / job.geom.count;
          for (int s = 0; s < samples; ++s, ++tap) {
            for (int k = 0; k < width; ++k) {
              for (int t = 0; t < 4; ++t) dst[k][tap->offset[t]] += tap->weight[t] * g[k];
            }
          }
        }
      }
    }
    RecordThreadsUsed(threads);
  });
}

MXReturnValue ParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  return Guard("MultiLevelROIAlign", [&]() {
    *num_in = MultiLevelROIAlignParam::Parse(attrs).num_inputs();
    *num_out = 1;
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue InferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  return InferFloat32("MultiLevelROIAlign", in_types, out_types);
}

MXReturnValue InferShape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  return Guard("MultiLevelROIAlign", [&]() {
    MultiLevelROIAlignParam p = MultiLevelROIAlignParam::Parse(attrs);
    RoiAlignDims d = CheckRoiAlignShapes(p, *in_shapes);
    (*out_shapes)[0] = {static_cast<unsigned int>(d.num_rois), static_cast<unsigned int>(d.channels),
                        static_cast<unsigned int>(p.pooled_h), static_cast<unsigned int>(p.pooled_w)};
    return mxnet::ext::MX_SUCCESS;
  });
}

/*! \brief Parameters and sizes of a forward call (inputs: features..., rois[, levels]). */
struct Call {
  MultiLevelROIAlignParam p;
  RoiAlignDims d;
  std::vector<const float*> features;
  const float* rois = nullptr;
  const float* levels = nullptr;
};

Call ReadCall(const Attrs& attrs, std::vector<MXTensor>& in, size_t first) {
  Call call;
  call.p = MultiLevelROIAlignParam::Parse(attrs);
  std::vector<Shape> shapes;
  for (int i = 0; i < call.p.num_inputs(); ++i) shapes.push_back(ShapeOf(in[first + static_cast<size_t>(i)]));
  call.d = CheckRoiAlignShapes(call.p, shapes);
  for (int l = 0; l < call.p.num_levels(); ++l) call.features.push_back(in[first + static_cast<size_t>(l)].data<float>());
  call.rois = in[first + static_cast<size_t>(call.p.num_levels())].data<float>();
  if (call.p.level_input) call.levels = in[first + static_cast<size_t>(call.p.num_levels()) + 1].data<float>();
  return call;
}

MXReturnValue ForwardCPUGlue(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                             const OpResource&) {
  return Guard("MultiLevelROIAlign", [&]() {
    Call call = ReadCall(attrs, *inputs, 0);
    ForwardCPU(call.p, call.d, call.features, call.rois, call.levels, (*outputs)[0].data<float>());
    return mxnet::ext::MX_SUCCESS;
  });
}

/*! Backward inputs: (grad of out, features..., rois[, levels], out); outputs: one grad per input. */
MXReturnValue BackwardCPUGlue(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource&) {
  return Guard("MultiLevelROIAlign", [&]() {
    Call call = ReadCall(attrs, *inputs, 1);
    std::vector<float*> grads;
    for (int l = 0; l < call.p.num_levels(); ++l) grads.push_back((*outputs)[static_cast<size_t>(l)].data<float>());
    BackwardCPU(call.p, call.d, (*inputs)[0].data<float>(), call.rois, call.levels, grads);
    for (size_t i = static_cast<size_t>(call.p.num_levels()); i < outputs->size(); ++i) {
      MXTensor& t = (*outputs)[i];
      std::memset(t.data_ptr, 0, sizeof(float) * static_cast<size_t>(t.size()));
    }
    return mxnet::ext::MX_SUCCESS;
  });
}

#ifdef SSDKIT_WITH_CUDA
MXReturnValue ForwardGPUGlue(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                             const OpResource& res) {
  return Guard("MultiLevelROIAlign", [&]() {
    Call call = ReadCall(attrs, *inputs, 0);
    MultiLevelROIAlignForwardGPU(call.p, call.d, call.features.data(), call.rois, call.levels,
                                 (*outputs)[0].data<float>(), res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}

MXReturnValue BackwardGPUGlue(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource& res) {
  return Guard("MultiLevelROIAlign", [&]() {
    Call call = ReadCall(attrs, *inputs, 1);
    std::vector<float*> grads;
    for (int l = 0; l < call.p.num_levels(); ++l) grads.push_back((*outputs)[static_cast<size_t>(l)].data<float>());
    for (auto& t : *outputs) cuda::ZeroFill(t.data<float>(), static_cast<size_t>(t.size()), res.get_cuda_stream());
    MultiLevelROIAlignBackwardGPU(call.p, call.d, (*inputs)[0].data<float>(), call.rois, call.levels, grads.data(),
                                  res.get_cuda_stream());
    return mxnet::ext::MX_SUCCESS;
  });
}
#endif

}  // namespace
}  // namespace ssdkit

REGISTER_OP(MultiLevelROIAlign)
    .setParseAttrs(ssdkit::ParseAttrs)
    .setInferType(ssdkit::InferType)
    .setInferShape(ssdkit::InferShape)
    .setForward(ssdkit::ForwardCPUGlue, "cpu")
    .setBackward(ssdkit::BackwardCPUGlue, "cpu")
#ifdef SSDKIT_WITH_CUDA
    .setForward(ssdkit::ForwardGPUGlue, "gpu")
    .setBackward(ssdkit::BackwardGPUGlue, "gpu")
#endif
    ;
