// The scorer registry and the weighted composite.
#include <gtest/gtest.h>

#include "rl/rewards/reward.h"

namespace mariana::rl {
namespace {

// A scorer of fixed reward, for composing; registered through the same door a reward model uses.
class ConstantScorer : public RewardScorer {
 public:
  explicit ConstantScorer(double r) : r_(r) {}
  std::string name() const override { return "constant"; }
  Result<RewardResult> score(const RewardSample&) override {
    RewardResult res;
    res.reward = r_;
    res.ok = r_ == 1.0;
    res.reason = res.ok ? kReasonCorrect : "wrong answer";
    return res;
  }

 private:
  double r_;
};

TEST(ScorerRegistry, BuildsTheBuiltinsAndNamesTheKnownOnes) {
  for (const char* name : {"math", "format", "code"}) {
    auto s = make_scorer(name);
    ASSERT_TRUE(s.ok()) << name << ": " << s.status().to_string();
    EXPECT_EQ((*s)->name(), name);
  }
  auto unknown = make_scorer("model");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("known: code, composite, format, math, math_verify"), std::string::npos)
      << unknown.status().message();
  auto bad = make_scorer("math", {{"tolerance", 1}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tolerance"), std::string::npos);
}

TEST(ScorerRegistry, IsOpenToNewScorers) {
  ScorerRegistry reg = ScorerRegistry::with_builtins();
  ASSERT_TRUE(reg.add("model", [](const nlohmann::json& o) -> Result<std::unique_ptr<RewardScorer>> {
                   return std::unique_ptr<RewardScorer>(new ConstantScorer(o.value("r", 0.5)));
                 }).ok());
  EXPECT_FALSE(reg.add("math", nullptr).ok());
  auto s = reg.make("model", {{"r", 0.25}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->score({})->reward, 0.25);
}

TEST(CompositeScorer, WeightedSumWithItsParts) {
  auto s = make_scorer("composite", {{"parts",
                                       {{{"scorer", "math"}, {"weight", 1.0}},
                                        {{"scorer", "format"}, {"weight", 0.5}}}}});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ((*s)->name(), "composite(math*1+format*0.5)");
  RewardSample sample;
  sample.answer = "432";
  sample.response = "347 + 85 = 432\n#### 432";
  auto r = (*s)->score(sample);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->reward, 1.5);
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->parts.at("math"), 1.0);
  EXPECT_EQ(r->parts.at("format"), 1.0);

  sample.response = "#### 431";  // wrong, and no reasoning
  r = (*s)->score(sample);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->reward, 0.0);
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->reason, "wrong answer");  // the first failing part
  EXPECT_EQ(r->detail.rfind("math: ", 0), 0u) << r->detail;

  sample.response = "347 + 85 = 432\n#### 432 apples";  // right answer, wrong template
  r = (*s)->score(sample);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->reward, 1.0);
  EXPECT_EQ(r->reason, "bad format");
  const nlohmann::json j = reward_result_to_json(*r);
  EXPECT_EQ(j["parts"]["math"], 1.0);
  EXPECT_EQ(j["parts"]["format"], 0.0);
}

TEST(CompositeScorer, SameScorerTwiceAndValidation) {
  std::vector<CompositeScorer::Part> parts;
  parts.push_back({0.5, std::make_unique<ConstantScorer>(1.0)});
  parts.push_back({2.0, std::make_unique<ConstantScorer>(0.25)});
  CompositeScorer c(std::move(parts));
  auto r = c.score({});
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->reward, 0.5 * 1.0 + 2.0 * 0.25);
  EXPECT_EQ(r->parts.at("constant"), 1.0);
  EXPECT_EQ(r->parts.at("constant#2"), 0.25);

  auto s = make_scorer("composite", {{"parts", {{{"scorer", "math"}}}}});
  ASSERT_TRUE(s.ok());
  Status st = (*s)->validate({});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("math: field 'answer'"), std::string::npos) << st.message();
  auto bad = make_scorer("composite", {{"parts", {{{"scorer", "nope"}}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("parts[0]"), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace mariana::rl
