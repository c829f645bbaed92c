// The math-verify venv the reward tests use: <build dir>/pyenv-math-verify, created on first use
// with scripts/pyenv.sh (like the tokenizers venv of tokenizer.hf_compat). The calling test fails,
// never skips, when it cannot be created.
#pragma once

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "rl/rewards/math_verify_scorer.h"

namespace mariana::rl {

inline const std::string& math_verify_test_venv() {
  static const std::string venv = [] {
    const std::string v = std::string(MARIANA_BINARY_DIR) + "/pyenv-math-verify";
    const std::string cmd = std::string(MARIANA_SOURCE_DIR) + "/" + math_verify_venv_command(v) + " >&2";
    const int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << "cannot create the math-verify venv: " << cmd;
    return v;
  }();
  return venv;
}

}  // namespace mariana::rl
