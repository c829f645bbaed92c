// Loading TOML files with toml++ and reading typed fields with errors that name the file, the
// position and the dotted field path: "run.toml:3:7: field 'train.lr': expected a number, got
// string "fast"". Mirrors JsonFields (core/json_util.h). Not a schema validator.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "core/status.h"

namespace mariana {

// NotFound if the file is missing; InvalidArgument "<path>:<line>:<column>: invalid TOML: ..." on a
// parse error.
Result<toml::table> toml_load_file(const std::string& path);
// Parses `text`; `path` only names it in errors and node source regions.
Result<toml::table> toml_parse(std::string_view text, const std::string& path);

// Typed, error-reporting access to one TOML table; nested TomlFields share it. toml++ drops source
// positions when a table is copied (only moves keep them), so pass the table as an rvalue — or use
// load() — to get line:column in field errors.
class TomlFields {
 public:
  TomlFields(toml::table table, std::string file, std::string prefix = "");
  // toml_load_file(path), wrapped.
  static Result<TomlFields> load(const std::string& path);

  bool has(const std::string& name) const;
  std::vector<std::string> keys() const;  // in the table's (sorted) order

  Result<int64_t> get_int(const std::string& name) const;
  Result<double> get_double(const std::string& name) const;  // integers accepted
  Result<bool> get_bool(const std::string& name) const;
  Result<std::string> get_string(const std::string& name) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& name) const;
  Result<std::vector<double>> get_double_array(const std::string& name) const;
  Result<std::vector<std::string>> get_string_array(const std::string& name) const;
  // A sub-table ([name] or name = { ... }).
  Result<TomlFields> get_object(const std::string& name) const;
  // An array of tables ([[name]]); element i's errors read "name[i].field".
  Result<std::vector<TomlFields>> get_object_array(const std::string& name) const;

  // The default when absent; an error when present with the wrong type.
  Result<int64_t> get_int_or(const std::string& name, int64_t dflt) const;
  Result<double> get_double_or(const std::string& name, double dflt) const;
  Result<bool> get_bool_or(const std::string& name, bool dflt) const;
  Result<std::string> get_string_or(const std::string& name, std::string dflt) const;

  const toml::table& table() const { return *table_; }
  const std::string& file() const { return file_; }
  const std::string& prefix() const { return prefix_; }

 private:
  TomlFields(std::shared_ptr<const toml::table> root, const toml::table* table, std::string file,
             std::string prefix);
  std::string path_of(const std::string& name) const;
  Result<const toml::node*> lookup(const std::string& name) const;
  Status type_error(const std::string& field_path, const char* expected, const toml::node& got) const;
  template <typename T, typename Conv>
  Result<T> get_typed(const std::string& name, Conv conv, const char* expected) const;
  template <typename T, typename Conv>
  Result<std::vector<T>> get_array(const std::string& name, Conv conv, const char* expected) const;

  std::shared_ptr<const toml::table> root_;  // keeps table_ alive
  const toml::table* table_;
  std::string file_;
  std::string prefix_;
};

// Applies one `--set key=value` to `tbl`: the dotted key names the field (tables on the way are
// created), the value is read as one TOML value (1, 2.5, true, "x", [1.0, 0.1], {a = 1}); text
// that is not a TOML value stays a plain string (fast, +,-). The one reading of --set for
// `mariana train`, `submit` and `run`. InvalidArgument naming the override when malformed.
Status toml_set_override(toml::table& tbl, const std::string& kv);

// `string "fast"`, `integer 3`, `float 1.5`, `boolean true`, `table`, `array`, `date`, ...
std::string toml_describe(const toml::node& node);

}  // namespace mariana
