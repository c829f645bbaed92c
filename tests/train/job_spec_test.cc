// Job specs: defaults, overrides, errors naming the field, and the schedules.
#include <gtest/gtest.h>

#include <cmath>

#include "train/job_spec.h"

namespace mariana {
namespace {

const char* kBase = R"(
[job]
name = "t"
phase = "pretrain"
[model]
config = "configs/models/tiny.json"
[train]
steps = 100
[optimizer]
lr = 1e-3
final_lr = 1e-4
warmup_steps = 10
constant_steps = 20
decay_steps = 50
tail_lr = 5e-5
)";

TEST(JobSpec, DefaultsAndValues) {
  auto s = job_spec_parse(kBase, "job.toml", {});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s.value().steps, 100);
  EXPECT_EQ(s.value().seq_len, 128);  // default
  EXPECT_DOUBLE_EQ(s.value().beta2, 0.95);
  EXPECT_DOUBLE_EQ(s.value().fim_rate, 0.1);
}

TEST(JobSpec, SetOverridesAField) {
  auto s = job_spec_parse(kBase, "job.toml", {"train.steps=20", "data.builtin=arithmetic", "optimizer.lr=2"});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s.value().steps, 20);
  EXPECT_EQ(s.value().data_builtin, "arithmetic");
  EXPECT_DOUBLE_EQ(s.value().lr, 2.0);  // an integer where a number is expected
}

TEST(JobSpec, UnknownKeyInFileIsNamed) {
  auto s = job_spec_parse(std::string(kBase) + "stepz = 3\n", "job.toml", {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("optimizer.stepz"), std::string::npos) << s.status().message();
  EXPECT_NE(s.status().message().find("job.toml"), std::string::npos);
}

TEST(JobSpec, UnknownSetKeyIsNamed) {
  auto s = job_spec_parse(kBase, "job.toml", {"train.stepz=3"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("train.stepz"), std::string::npos) << s.status().message();
}

TEST(JobSpec, WrongTypeIsNamed) {
  auto s = job_spec_parse(kBase, "job.toml", {"train.steps=\"many\""});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("train.steps"), std::string::npos);
}

TEST(JobSpec, TeacherSlipIsAProbabilityAndReachesTheGenerators) {
  auto s = job_spec_parse(kBase, "job.toml", {"data.arithmetic_teacher_slip=0.75", "data.arithmetic_ops=\"+-\""});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const ArithmeticOptions ao = job_arithmetic_options(*s);
  EXPECT_DOUBLE_EQ(ao.teacher_slip, 0.75);
  EXPECT_EQ(ao.ops, "+-");
  EXPECT_DOUBLE_EQ(job_arithmetic_options(*job_spec_parse(kBase, "job.toml", {})).teacher_slip, 0.0);
  auto bad = job_spec_parse(kBase, "job.toml", {"data.arithmetic_teacher_slip=1.5"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("data.arithmetic_teacher_slip"), std::string::npos) << bad.status().message();
}

// Every numeric field: a NaN or infinity anywhere (file or --set) is refused naming the field;
// ranges hold (probabilities, betas, positive sizes, tokens per step).
TEST(JobSpec, NonFiniteAndOutOfRangeValuesNameTheField) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"optimizer.lr=inf", "optimizer.lr"},          {"optimizer.lr=nan", "optimizer.lr"},
      {"optimizer.final_lr=-inf", "optimizer.final_lr"}, {"train.grad_clip=nan", "train.grad_clip"},
      {"balance.gamma=inf", "balance.gamma"},        {"mtp.weight=nan", "mtp.weight"},
      {"data.fim_rate=nan", "data.fim_rate"},        {"extend.factor=inf", "extend.factor"},
      {"optimizer.beta1=1.0", "optimizer.beta1"},    {"optimizer.beta2=-0.1", "optimizer.beta2"},
      {"optimizer.eps=0.0", "optimizer.eps"},        {"optimizer.weight_decay=-1.0", "optimizer.weight_decay"},
      {"balance.alpha=-1e-4", "balance.alpha"},      {"data.documents=0", "data.documents"},
      {"batch.ramp_steps=-1", "batch.ramp_steps"},   {"optimizer.decay_steps=-2", "optimizer.decay_steps"},
      {"train.threads=5000", "train.threads"},       {"batch.rows=1099511627776", "batch.rows"},
      {"batch.rows_start=1099511627776", "batch.rows_start"},
  };
  for (const auto& [set, field] : bad) {
    auto s = job_spec_parse(kBase, "job.toml", {set});
    ASSERT_FALSE(s.ok()) << set;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << set;
    EXPECT_NE(s.status().message().find("field '" + field + "'"), std::string::npos) << set << ": " << s.status().message();
  }
  auto f = job_spec_parse(std::string(kBase) + "[balance]\ngamma = nan\n", "job.toml", {});
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("job.toml:17:9:"), std::string::npos) << f.status().message();
  EXPECT_NE(f.status().message().find("field 'balance.gamma': expected a finite number, got nan"), std::string::npos)
      << f.status().message();
  EXPECT_TRUE(job_spec_parse(kBase, "job.toml", {"batch.rows=4096", "train.seq_len=4096"}).ok());
}

TEST(JobSpec, BadPhase) {
  auto s = job_spec_parse(kBase, "job.toml", {"job.phase=sft2"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("job.phase"), std::string::npos);
}

TEST(JobSpec, LrScheduleWarmupConstantCosineTail) {
  const JobSpec s = job_spec_parse(kBase, "job.toml", {}).value();
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1e-4);           // (0+1)/10 of peak
  EXPECT_DOUBLE_EQ(s.lr_at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1e-3);          // constant
  EXPECT_DOUBLE_EQ(s.lr_at(29), 1e-3);
  EXPECT_DOUBLE_EQ(s.lr_at(30), 1e-3);          // cosine starts at the peak
  EXPECT_NEAR(s.lr_at(55), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(M_PI * 25 / 50)), 1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at(80), 5e-5);          // tail
}

TEST(JobSpec, BatchRampAndSchedules) {
  const JobSpec s = job_spec_parse(kBase, "job.toml",
                                   {"batch.rows=16", "batch.rows_start=4", "batch.ramp_steps=12",
                                    "balance.gamma_zero_after=50", "mtp.switch_step=40"})
                        .value();
  EXPECT_EQ(s.rows_at(0), 4);
  EXPECT_EQ(s.rows_at(6), 10);
  EXPECT_EQ(s.rows_at(12), 16);
  EXPECT_DOUBLE_EQ(s.gamma_at(49), 0.001);
  EXPECT_DOUBLE_EQ(s.gamma_at(50), 0.0);
  EXPECT_DOUBLE_EQ(s.mtp_weight_at(39), 0.3);
  EXPECT_DOUBLE_EQ(s.mtp_weight_at(40), 0.1);
}

}  // namespace
}  // namespace mariana
