/*!
 * \file parallel.h
 * \brief The thread count every ssdkit CPU kernel uses.
 *
 * MXNet lets OpenMP run a single thread inside operators on small machines, so our kernels pass an
 * explicit `num_threads(ssdkit::NumThreads())` to their parallel regions. The default comes from
 * the environment when the library loads: OMP_NUM_THREADS or MXNET_OMP_MAX_THREADS if the user set
 * one (the smaller if both), else every core this process may run on. Python can change it through
 * ssdkit_set_num_threads (ssdkit.ops.set_num_threads).
 * An exception must not leave an OpenMP region: tasks that may throw run through TaskErrors.
 */
#ifndef SSDKIT_COMMON_PARALLEL_H_
#define SSDKIT_COMMON_PARALLEL_H_

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssdkit {

/*! \brief Threads our CPU kernels use (>= 1). */
int NumThreads();

/*! \brief Record how many threads the last parallel region really ran with (for tests). */
void RecordThreadsUsed(int n);

/*!
 * \brief The exceptions of the tasks of a parallel loop: Run(t, body) inside the OpenMP region keeps
 *  task t's message instead of letting the exception escape; Rethrow() after the region throws
 *  std::runtime_error with the message of the lowest failed task, if any.
 */
class TaskErrors {
 public:
  explicit TaskErrors(int tasks) : messages_(static_cast<size_t>(tasks)) {}

  template <typename F>
  void Run(int task, F&& body) {
    try {
      body();
    } catch (const std::exception& e) {
      messages_[static_cast<size_t>(task)] = e.what();
    }
  }

  void Rethrow() const {
    for (const auto& m : messages_) {
      if (!m.empty()) throw std::runtime_error(m);
    }
  }

 private:
  std::vector<std::string> messages_;
};

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_PARALLEL_H_
