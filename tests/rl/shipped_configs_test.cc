// Every job file shipped in configs/jobs and configs/pipeline loads with the loader `mariana train`
// uses for its phase (rl: the GRPO spec; the others: the training job spec), so a renamed or
// mistyped key in a shipped file fails here rather than in a user's first run; a pipeline file's
// stages name job files that exist.
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <toml++/toml.h>

#include "rl/grpo.h"
#include "train/job_spec.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

TEST(ShippedConfigs, EveryJobFileLoadsForItsPhase) {
  int files = 0;
  for (const char* dir : {"configs/jobs", "configs/pipeline"}) {
    for (const auto& e : fs::directory_iterator(fs::path(MARIANA_SOURCE_DIR) / dir)) {
      if (e.path().extension() != ".toml") continue;
      const std::string path = e.path().string();
      toml::table t;
      ASSERT_NO_THROW(t = toml::parse_file(path)) << path;
      if (t["kind"].value_or(std::string()) == "pipeline") {  // its stages' job files, beside it, load below
        const toml::array* stages = t["stages"].as_array();
        ASSERT_TRUE(stages != nullptr && !stages->empty()) << path;
        for (const auto& st : *stages) {
          const std::string job = (*st.as_table())["job"].value_or(std::string());
          EXPECT_TRUE(fs::exists(e.path().parent_path() / job)) << path << ": stage job " << job;
        }
        ++files;
        continue;
      }
      const std::string phase = t["job"]["phase"].value_or(std::string());
      ASSERT_FALSE(phase.empty()) << path << ": no job.phase";
      if (phase == "rl") {
        auto s = rl::rl_spec_load(path, {});
        EXPECT_TRUE(s.ok()) << path << ": " << s.status().to_string();
      } else {
        // A job continuing an earlier one names that run's directory, absent until it has run.
        auto s = job_spec_load(path, {});
        const bool awaits_run = !s.ok() && s.status().message().find("field 'model.init_from'") != std::string::npos &&
                                s.status().message().find("does not exist") != std::string::npos;
        EXPECT_TRUE(s.ok() || awaits_run) << path << ": " << s.status().to_string();
      }
      ++files;
    }
  }
  EXPECT_GE(files, 11);
}

// The pipeline's SFT data is the imperfect teacher's; the RL task draws the same operand mix.
TEST(ShippedConfigs, PipelineSftUsesTheSlippingTeacher) {
  // model.init_from names the extend run, absent here: any existing directory stands in for it.
  auto sft = job_spec_load(std::string(MARIANA_SOURCE_DIR) + "/configs/pipeline/3-sft.toml",
                           {"model.init_from=" + std::string(MARIANA_SOURCE_DIR)});
  ASSERT_TRUE(sft.ok()) << sft.status().to_string();
  EXPECT_GT(sft->arithmetic_teacher_slip, 0.0);
  auto rl = rl::rl_spec_load(std::string(MARIANA_SOURCE_DIR) + "/configs/pipeline/4-rl.toml", {});
  ASSERT_TRUE(rl.ok()) << rl.status().to_string();
  EXPECT_EQ(rl->arithmetic.ops, sft->arithmetic_ops);
  EXPECT_EQ(rl->arithmetic.max_digits, sft->arithmetic_max_digits);
}

}  // namespace
}  // namespace mariana
