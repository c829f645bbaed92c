// Loading JSON files and reading typed fields from them with errors that name the file and the
// dotted field path: "configs/models/tiny.json: field 'hidden_size': expected an integer, got
// string "64"". A field set to null counts as absent. Not a schema validator.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mariana {

// NotFound if the file is missing; InvalidArgument "<path>:<line>:<column>: invalid JSON (byte N):
// ..." on a parse error.
Result<nlohmann::json> json_load_file(const std::string& path);

// Typed, error-reporting access to the fields of one JSON object. `file` and `prefix` only feed
// error messages; get_object() extends the prefix ("rope_scaling.factor"). Takes the object by
// value (move it in to avoid a copy); nested JsonFields share it.
class JsonFields {
 public:
  JsonFields(nlohmann::json obj, std::string file, std::string prefix = "");
  // json_load_file(path), wrapped.
  static Result<JsonFields> load(const std::string& path);
  // One JSON object in `text` (a JSONL line); `where` ("file:line") prefixes the errors:
  // "<where>: invalid JSON: ..." or "<where>: expected a JSON object, got <type>".
  static Result<JsonFields> parse_object(const std::string& text, const std::string& where);

  // Present and not null.
  bool has(const std::string& name) const;
  // The raw value if present and not null.
  std::optional<nlohmann::json> find(const std::string& name) const;
  // Field names in the object (sorted, as nlohmann stores them).
  std::vector<std::string> keys() const;

  Result<int64_t> get_int(const std::string& name) const;
  Result<double> get_double(const std::string& name) const;  // integers accepted
  Result<bool> get_bool(const std::string& name) const;
  Result<std::string> get_string(const std::string& name) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& name) const;
  Result<std::vector<double>> get_double_array(const std::string& name) const;
  Result<std::vector<std::string>> get_string_array(const std::string& name) const;
  Result<JsonFields> get_object(const std::string& name) const;
  // An array of objects; element i's errors read "name[i].field".
  Result<std::vector<JsonFields>> get_object_array(const std::string& name) const;

  // The default when absent or null; an error when present with the wrong type.
  Result<int64_t> get_int_or(const std::string& name, int64_t dflt) const;
  Result<double> get_double_or(const std::string& name, double dflt) const;
  Result<bool> get_bool_or(const std::string& name, bool dflt) const;
  Result<std::string> get_string_or(const std::string& name, std::string dflt) const;

  const nlohmann::json& json() const { return *obj_; }
  const std::string& file() const { return file_; }
  const std::string& prefix() const { return prefix_; }

 private:
  JsonFields(std::shared_ptr<const nlohmann::json> root, const nlohmann::json* obj, std::string file,
             std::string prefix);
  std::string path_of(const std::string& name) const;
  // The field's value, or NotFound "missing field" / InvalidArgument if this is not an object.
  Result<const nlohmann::json*> lookup(const std::string& name) const;
  Status type_error(const std::string& field_path, const char* expected, const nlohmann::json& got) const;
  template <typename T, typename Conv>
  Result<T> get_typed(const std::string& name, Conv conv, const char* expected) const;
  template <typename T, typename Conv>
  Result<std::vector<T>> get_array(const std::string& name, Conv conv, const char* expected) const;

  std::shared_ptr<const nlohmann::json> root_;  // keeps obj_ alive
  const nlohmann::json* obj_;
  std::string file_;
  std::string prefix_;
};

// `string "64"`, `number 1.5`, `boolean true`, `null`, `array`, `object`: for error messages.
std::string json_describe(const nlohmann::json& value);

}  // namespace mariana
