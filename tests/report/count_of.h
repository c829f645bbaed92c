// How many times a needle occurs in a text (non-overlapping): the report tests count <svg>,
// <circle> and the like with it.
#pragma once

#include <string>

namespace mariana::testing {

inline int count_of(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

}  // namespace mariana::testing
