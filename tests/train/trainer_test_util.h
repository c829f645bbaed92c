// Test helper for train/: a per-test temporary directory and pretraining jobs of the tiny model
// on a small built-in corpus.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "train/job_spec.h"

namespace mariana::testing {

class TrainRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("mariana_train_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!std::getenv("MARIANA_KEEP_TEST_DIR")) std::filesystem::remove_all(dir_);
  }
  std::string p(const std::string& rel) const { return (dir_ / rel).string(); }

  // A pretrain job: tiny model, 150 mix documents, 4 rows of 32 tokens, one thread, then `sets`.
  JobSpec job(std::vector<std::string> sets) const {
    const std::string text = "[job]\nname = \"t\"\nphase = \"pretrain\"\n[model]\nconfig = \"" +
                             std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json\"\n";
    sets.insert(sets.begin(), {"data.builtin=mix", "data.documents=150", "train.seq_len=32", "batch.rows=4",
                               "train.threads=1", "optimizer.warmup_steps=2"});
    auto s = job_spec_parse(text, "test.toml", sets);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? s.value() : JobSpec{};
  }
  std::filesystem::path dir_;
};

}  // namespace mariana::testing
