/*!
 * \file parallel.h
 * \brief The thread count every ssdkit CPU kernel uses.
 *
 * MXNet lets OpenMP run a single thread inside operators on small machines, so our kernels pass an
 * explicit `num_threads(ssdkit::NumThreads())` to their parallel regions. The default comes from
 * the environment when the library loads: OMP_NUM_THREADS or MXNET_OMP_MAX_THREADS if the user set
 * one (the smaller if both), else every core this process may run on. Python can change it through
 * ssdkit_set_num_threads (ssdkit.ops.set_num_threads).
 */
#ifndef SSDKIT_COMMON_PARALLEL_H_
#define SSDKIT_COMMON_PARALLEL_H_

namespace ssdkit {

/*! \brief Threads our CPU kernels use (>= 1). */
int NumThreads();

/*! \brief Record how many threads the last parallel region really ran with (for tests). */
void RecordThreadsUsed(int n);

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_PARALLEL_H_
