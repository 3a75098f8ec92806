/*!
 * \file shapes.h
 * \brief Tensor shapes in error messages. Standard library only, so the nvcc-safe -inl.h headers
 *  may include it (common/lib_glue.h does, for the .cc glue).
 */
#ifndef SSDKIT_COMMON_SHAPES_H_
#define SSDKIT_COMMON_SHAPES_H_

#include <string>
#include <vector>

namespace ssdkit {

/*! \brief "(2, 3)", "(5,)", "()": a shape as Python prints it. */
inline std::string ShapeString(const std::vector<unsigned int>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_SHAPES_H_
