// json_load_file and JsonFields: values, defaults, and error messages that name the file, the
// (dotted) field and what was expected.
#include "core/json_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file_util.h"
#include "tests/core/temp_dir.h"

namespace mariana {
namespace {

using ::testing::HasSubstr;

const char* kConfig = R"({
  "hidden_size": 64,
  "as_string": "64",
  "rms_norm_eps": 1e-6,
  "vocab_size": 32000,
  "tie_word_embeddings": false,
  "model_type": "deepseek_v3",
  "rope_scaling": {"type": "yarn", "factor": 40, "beta": "fast", "deep": {"x": [1, 2]}},
  "null_field": null,
  "dims": [1, 2, 3],
  "mixed": [1, "two", 3],
  "ratios": [0.5, 1],
  "names": ["a", "b"],
  "layers": [{"kind": "dense"}, {"kind": 3}],
  "huge": 18446744073709551615
})";

JsonFields fields() { return JsonFields(nlohmann::json::parse(kConfig), "configs/models/tiny.json"); }

TEST(JsonFields, ReadsTypedValues) {
  JsonFields f = fields();
  EXPECT_EQ(*f.get_int("hidden_size"), 64);
  EXPECT_DOUBLE_EQ(*f.get_double("rms_norm_eps"), 1e-6);
  EXPECT_DOUBLE_EQ(*f.get_double("vocab_size"), 32000.0);  // integers accepted as doubles
  EXPECT_EQ(*f.get_bool("tie_word_embeddings"), false);
  EXPECT_EQ(*f.get_string("model_type"), "deepseek_v3");
  EXPECT_EQ(*f.get_int_array("dims"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(*f.get_double_array("ratios"), (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(*f.get_string_array("names"), (std::vector<std::string>{"a", "b"}));
  Result<JsonFields> rope = f.get_object("rope_scaling");
  ASSERT_TRUE(rope.ok());
  EXPECT_EQ(*rope->get_int("factor"), 40);
  EXPECT_EQ(rope->prefix(), "rope_scaling");
}

TEST(JsonFields, HasAndDefaults) {
  JsonFields f = fields();
  EXPECT_TRUE(f.has("hidden_size"));
  EXPECT_FALSE(f.has("absent"));
  EXPECT_FALSE(f.has("null_field"));  // null counts as absent
  EXPECT_FALSE(f.find("absent").has_value());
  EXPECT_EQ(*f.find("hidden_size"), 64);
  EXPECT_EQ(*f.get_int_or("absent", 7), 7);
  EXPECT_EQ(*f.get_int_or("null_field", 8), 8);
  EXPECT_EQ(*f.get_int_or("hidden_size", 7), 64);
  EXPECT_DOUBLE_EQ(*f.get_double_or("absent", 0.25), 0.25);
  EXPECT_EQ(*f.get_bool_or("absent", true), true);
  EXPECT_EQ(*f.get_string_or("absent", "x"), "x");
  // A default does not hide a wrong type.
  Result<int64_t> wrong = f.get_int_or("as_string", 7);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("'as_string'"));
}

TEST(JsonFields, WrongTypeMessageNamesFileFieldAndValue) {
  JsonFields f = fields();
  Result<int64_t> r = f.get_int("as_string");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "configs/models/tiny.json: field 'as_string': expected an integer, got string \"64\"");
  EXPECT_EQ(f.get_int("rms_norm_eps").status().message(),
            "configs/models/tiny.json: field 'rms_norm_eps': expected an integer, got number 1e-06");
  EXPECT_THAT(f.get_bool("hidden_size").status().message(), HasSubstr("expected a boolean, got number 64"));
  EXPECT_THAT(f.get_string("tie_word_embeddings").status().message(),
              HasSubstr("expected a string, got boolean false"));
  EXPECT_THAT(f.get_object("dims").status().message(), HasSubstr("expected an object, got array"));
  EXPECT_THAT(f.get_int("null_field").status().message(), HasSubstr("missing field 'null_field'"));
  EXPECT_THAT(f.get_int("huge").status().message(), HasSubstr("expected an integer"));
}

TEST(JsonFields, MissingFieldMessage) {
  Result<int64_t> r = fields().get_int("num_layers");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "configs/models/tiny.json: missing field 'num_layers'");
}

TEST(JsonFields, NestedFieldsShowDottedPath) {
  JsonFields rope = *fields().get_object("rope_scaling");
  EXPECT_EQ(rope.get_double("beta").status().message(),
            "configs/models/tiny.json: field 'rope_scaling.beta': expected a number, got string \"fast\"");
  EXPECT_EQ(rope.get_int("gamma").status().message(),
            "configs/models/tiny.json: missing field 'rope_scaling.gamma'");
  JsonFields deep = *rope.get_object("deep");
  EXPECT_THAT(deep.get_string_array("x").status().message(),
              HasSubstr("field 'rope_scaling.deep.x[0]': expected a string, got number 1"));
}

TEST(JsonFields, ArrayElementErrorsNameTheIndex) {
  JsonFields f = fields();
  EXPECT_THAT(f.get_int_array("mixed").status().message(),
              HasSubstr("field 'mixed[1]': expected an integer, got string \"two\""));
  EXPECT_THAT(f.get_int_array("hidden_size").status().message(),
              HasSubstr("field 'hidden_size': expected an array, got number 64"));
  Result<std::vector<JsonFields>> layers = f.get_object_array("layers");
  ASSERT_TRUE(layers.ok());
  ASSERT_EQ(layers->size(), 2u);
  EXPECT_EQ(*(*layers)[0].get_string("kind"), "dense");
  EXPECT_THAT((*layers)[1].get_string("kind").status().message(),
              HasSubstr("field 'layers[1].kind': expected a string, got number 3"));
}

TEST(JsonFields, NestedFieldsOutliveTheParent) {
  Result<JsonFields> rope = fields().get_object("rope_scaling");  // the parent is a temporary
  ASSERT_TRUE(rope.ok());
  EXPECT_EQ(*rope->get_string("type"), "yarn");
}

TEST(JsonFields, NotAnObject) {
  JsonFields f(nlohmann::json::array({1, 2}), "x.json");
  EXPECT_FALSE(f.has("a"));
  EXPECT_EQ(f.get_int("a").status().message(), "x.json: top level: expected an object, got array");
}

TEST(JsonLoadFile, LoadsAFile) {
  TempDir dir;
  std::string path = dir.file("c.json");
  ASSERT_TRUE(write_file_atomic(path, kConfig).ok());
  Result<nlohmann::json> j = json_load_file(path);
  ASSERT_TRUE(j.ok()) << j.status().to_string();
  EXPECT_EQ((*j)["hidden_size"], 64);
  Result<JsonFields> f = JsonFields::load(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->get_int("as_string").status().message(),
            path + ": field 'as_string': expected an integer, got string \"64\"");
  EXPECT_EQ(JsonFields::load(dir.file("missing.json")).status().code(), StatusCode::kNotFound);
}

TEST(JsonLoadFile, MissingFileIsNotFound) {
  TempDir dir;
  std::string path = dir.file("missing.json");
  Result<nlohmann::json> j = json_load_file(path);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(j.status().message(), HasSubstr(path));
}

TEST(JsonLoadFile, ParseErrorGivesLineAndColumn) {
  TempDir dir;
  std::string path = dir.file("bad.json");
  ASSERT_TRUE(write_file_atomic(path, "{\n  \"a\": 1,\n  \"b\": tru\n}\n").ok());
  Result<nlohmann::json> j = json_load_file(path);
  ASSERT_FALSE(j.status().ok());
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  // nlohmann stops on the byte after "tru" (the newline: byte 23, line 3, column 11).
  EXPECT_THAT(j.status().message(), HasSubstr(path + ":3:11: invalid JSON (byte 23): syntax error"));
  EXPECT_THAT(j.status().message(), ::testing::Not(HasSubstr("json.exception")));
}

}  // namespace
}  // namespace mariana
