// Test helpers for sft/: a per-test temporary directory and a starting checkpoint (the tiny model
// at initialisation plus a tokenizer trained on arithmetic chat text), as an sft or rm job's
// model.init_from.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "sft/sft_data.h"

namespace mariana::testing {

class SftRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mariana_sft_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::vector<std::string> texts;
    for (int i = 0; i < 300; ++i)
      for (const ChatMessage& m : arithmetic_chat_messages(arithmetic_chat_problem(99, i, {}))) texts.push_back(m.content);
    TokenizerTrainOptions to;
    to.vocab_size = 512;
    auto tok = Tokenizer::train_from_texts(texts, to);
    ASSERT_TRUE(tok.ok());
    auto cfg = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
    ASSERT_TRUE(cfg.ok());
    Model<float> model(cfg.value());
    model.init_weights(0);
    ASSERT_TRUE(checkpoint_save(p("base"), model, CheckpointOptions{}).ok());
    ASSERT_TRUE(tok->save(p("base/tokenizer.json")).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string p(const std::string& rel) const { return (dir_ / rel).string(); }

  // A job of `phase` from the base checkpoint on `builtin` data, small defaults, then `sets`.
  JobSpec job(const std::string& phase, const std::string& builtin, std::vector<std::string> sets) const {
    const std::string text = "[job]\nname = \"" + phase + "\"\nphase = \"" + phase + "\"\n[model]\ninit_from = \"" +
                             p("base") + "\"\n[data]\nbuiltin = \"" + builtin + "\"\n";
    sets.insert(sets.begin(), {"data.arithmetic_max_digits=2", "batch.rows=4", "train.threads=1",
                               "optimizer.warmup_steps=2"});
    auto s = job_spec_parse(text, phase + ".toml", sets);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? s.value() : JobSpec{};
  }
  std::filesystem::path dir_;
};

}  // namespace mariana::testing
