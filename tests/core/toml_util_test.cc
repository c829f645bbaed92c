// toml_load_file and TomlFields: values, defaults, parse-error positions, and field errors that
// name the file, position and dotted field.
#include "core/toml_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file_util.h"
#include "tests/core/temp_dir.h"

namespace mariana {
namespace {

using ::testing::HasSubstr;

const char* kRun = R"(name = "tiny"
steps = 100
lr = 3e-4
warmup = 10
resume = true
dims = [1, 2, 3]
mixed = [1, "two"]

[optimizer]
kind = "adamw"
betas = [0.9, 0.95]
eps = "small"

[optimizer.schedule]
kind = 5

[[stages]]
steps = 10

[[stages]]
steps = "many"
)";

TomlFields fields() { return TomlFields(*toml_parse(kRun, "runs/tiny.toml"), "runs/tiny.toml"); }

TEST(TomlFields, ReadsTypedValues) {
  TomlFields f = fields();
  EXPECT_EQ(*f.get_string("name"), "tiny");
  EXPECT_EQ(*f.get_int("steps"), 100);
  EXPECT_DOUBLE_EQ(*f.get_double("lr"), 3e-4);
  EXPECT_DOUBLE_EQ(*f.get_double("warmup"), 10.0);  // integers accepted as doubles
  EXPECT_EQ(*f.get_bool("resume"), true);
  EXPECT_EQ(*f.get_int_array("dims"), (std::vector<int64_t>{1, 2, 3}));
  TomlFields opt = *f.get_object("optimizer");
  EXPECT_EQ(*opt.get_string("kind"), "adamw");
  EXPECT_EQ(*opt.get_double_array("betas"), (std::vector<double>{0.9, 0.95}));
  std::vector<TomlFields> stages = *f.get_object_array("stages");
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(*stages[0].get_int("steps"), 10);
}

TEST(TomlFields, HasAndDefaults) {
  TomlFields f = fields();
  EXPECT_TRUE(f.has("steps"));
  EXPECT_FALSE(f.has("absent"));
  EXPECT_EQ(*f.get_int_or("absent", 3), 3);
  EXPECT_EQ(*f.get_int_or("steps", 3), 100);
  EXPECT_DOUBLE_EQ(*f.get_double_or("absent", 0.5), 0.5);
  EXPECT_EQ(*f.get_bool_or("absent", false), false);
  EXPECT_EQ(*f.get_string_or("absent", "d"), "d");
  EXPECT_FALSE(f.get_string_or("steps", "d").ok());
  EXPECT_EQ(f.keys().size(), 9u);
}

TEST(TomlFields, WrongTypeMessageNamesFilePositionAndField) {
  TomlFields f = fields();
  Result<int64_t> r = f.get_int("name");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "runs/tiny.toml:1:8: field 'name': expected an integer, got string \"tiny\"");
  EXPECT_THAT(f.get_int("lr").status().message(), HasSubstr("field 'lr': expected an integer, got float 0.0003"));
  EXPECT_THAT(f.get_string("resume").status().message(), HasSubstr("expected a string, got boolean true"));
  EXPECT_THAT(f.get_object("steps").status().message(), HasSubstr("expected a table, got integer 100"));
}

TEST(TomlFields, MissingAndNestedMessages) {
  TomlFields f = fields();
  EXPECT_EQ(f.get_int("epochs").status().message(), "runs/tiny.toml: missing field 'epochs'");
  TomlFields opt = *f.get_object("optimizer");
  EXPECT_EQ(opt.get_double("eps").status().message(),
            "runs/tiny.toml:12:7: field 'optimizer.eps': expected a number, got string \"small\"");
  EXPECT_EQ(opt.get_int("beta3").status().message(), "runs/tiny.toml: missing field 'optimizer.beta3'");
  TomlFields sched = *opt.get_object("schedule");
  EXPECT_THAT(sched.get_string("kind").status().message(), HasSubstr("field 'optimizer.schedule.kind'"));
  std::vector<TomlFields> stages = *f.get_object_array("stages");
  EXPECT_THAT(stages[1].get_int("steps").status().message(),
              HasSubstr("runs/tiny.toml:21:9: field 'stages[1].steps': expected an integer"));
  EXPECT_THAT(f.get_int_array("mixed").status().message(),
              HasSubstr("field 'mixed[1]': expected an integer, got string \"two\""));
}

TEST(TomlFields, NestedFieldsOutliveTheParent) {
  Result<TomlFields> opt = fields().get_object("optimizer");
  ASSERT_TRUE(opt.ok());
  EXPECT_EQ(*opt->get_string("kind"), "adamw");
}

TEST(TomlLoadFile, LoadsAFile) {
  TempDir dir;
  std::string path = dir.file("run.toml");
  ASSERT_TRUE(write_file_atomic(path, kRun).ok());
  Result<toml::table> t = toml_load_file(path);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(TomlFields(std::move(*t), path).get_int("steps").value(), 100);
  Result<TomlFields> f = TomlFields::load(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->get_int("name").status().message(),
            path + ":1:8: field 'name': expected an integer, got string \"tiny\"");
}

TEST(TomlLoadFile, MissingFileIsNotFound) {
  TempDir dir;
  std::string path = dir.file("missing.toml");
  Result<toml::table> t = toml_load_file(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr(path));
}

TEST(TomlLoadFile, ParseErrorGivesLineAndColumn) {
  TempDir dir;
  std::string path = dir.file("bad.toml");
  ASSERT_TRUE(write_file_atomic(path, "a = 1\nb = [1, 2\nc = 3\n").ok());
  Result<toml::table> t = toml_load_file(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr(path + ":3:"));
  EXPECT_THAT(t.status().message(), HasSubstr("invalid TOML"));
}

// --set values: one TOML value (arrays and quoted strings with commas whole), else the text as a
// string; a value that would smuggle in a second key stays a string; dotted keys make tables.
TEST(TomlSetOverride, ValuesAreTomlElseStrings) {
  toml::table t;
  ASSERT_TRUE(toml_set_override(t, "reward.weights=[1.0,0.1]").ok());
  ASSERT_TRUE(toml_set_override(t, "data.arithmetic_ops=+,-").ok());
  ASSERT_TRUE(toml_set_override(t, "job.name=\"a,b\"").ok());
  ASSERT_TRUE(toml_set_override(t, "train.steps=3").ok());
  ASSERT_TRUE(toml_set_override(t, "job.note=x\ny = 1").ok());
  const toml::array* w = t["reward"]["weights"].as_array();
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->size(), 2u);
  EXPECT_DOUBLE_EQ(w->get(1)->value_or(0.0), 0.1);
  EXPECT_EQ(t["data"]["arithmetic_ops"].value_or(std::string()), "+,-");
  EXPECT_EQ(t["job"]["name"].value_or(std::string()), "a,b");
  EXPECT_EQ(t["train"]["steps"].value_or(int64_t{0}), 3);
  EXPECT_EQ(t["job"]["note"].value_or(std::string()), "x\ny = 1");
  EXPECT_FALSE(t.contains("y"));
  EXPECT_FALSE(toml_set_override(t, "novalue").ok());
  EXPECT_FALSE(toml_set_override(t, "a..b=1").ok());
  EXPECT_FALSE(toml_set_override(t, "train.steps.x=1").ok());  // steps is not a table
}

}  // namespace
}  // namespace mariana
