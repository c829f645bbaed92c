// toml_load_file / toml_parse (toml++ with exceptions, caught here and turned into Status) and
// TomlFields' typed getters; field errors carry the node's line:column.
#include "core/toml_util.h"

#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"

namespace mariana {

namespace {

constexpr size_t kMaxShown = 40;

std::string quoted(const std::string& s) {
  std::string q = nlohmann::json(s).dump();  // JSON string escaping is also valid TOML basic-string
  if (q.size() > kMaxShown) q = q.substr(0, kMaxShown) + "...";
  return q;
}

std::optional<int64_t> as_int(const toml::node& n) { return n.value_exact<int64_t>(); }
std::optional<double> as_double(const toml::node& n) {
  if (n.is_integer() || n.is_floating_point()) return n.value<double>();
  return std::nullopt;
}
std::optional<bool> as_bool(const toml::node& n) { return n.value_exact<bool>(); }
std::optional<std::string> as_string(const toml::node& n) { return n.value_exact<std::string>(); }

}  // namespace

std::string toml_describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string " + quoted(*node.value_exact<std::string>());
    case toml::node_type::integer: return "integer " + std::to_string(*node.value_exact<int64_t>());
    case toml::node_type::floating_point: {
      std::ostringstream os;
      os << *node.value_exact<double>();
      return "float " + os.str();
    }
    case toml::node_type::boolean: return *node.value_exact<bool>() ? "boolean true" : "boolean false";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

Status toml_set_override(toml::table& tbl, const std::string& kv) {
  const size_t eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) return InvalidArgument("--set " + kv + ": expected key=value");
  const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (parts.back().empty()) return InvalidArgument("--set " + kv + ": empty part in the key '" + key + "'");
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  toml::table* cur = &tbl;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* sub = cur->get(parts[i]);
    if (sub == nullptr) sub = cur->insert_or_assign(parts[i], toml::table{}).first->second.as_table();
    if (!sub->is_table()) return InvalidArgument("--set " + kv + ": '" + parts[i] + "' is not a table");
    cur = sub->as_table();
  }
  // One TOML value ("v = <value>" parses to exactly the key v), else the text as a string.
  auto as_toml = toml_parse("v = " + value, "--set");
  if (as_toml.ok() && as_toml.value().size() == 1 && as_toml.value().contains("v")) {
    cur->insert_or_assign(parts.back(), *as_toml.value().get("v"));
  } else {
    cur->insert_or_assign(parts.back(), value);
  }
  return Status::Ok();
}

Result<toml::table> toml_parse(std::string_view text, const std::string& path) {
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const toml::source_position& pos = e.source().begin;
    return InvalidArgument(path + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) +
                           ": invalid TOML: " + std::string(e.description()));
  }
}

Result<toml::table> toml_load_file(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return toml_parse(text, path);
}

TomlFields::TomlFields(toml::table table, std::string file, std::string prefix)
    : root_(std::make_shared<const toml::table>(std::move(table))),
      table_(root_.get()),
      file_(std::move(file)),
      prefix_(std::move(prefix)) {}

TomlFields::TomlFields(std::shared_ptr<const toml::table> root, const toml::table* table,
                       std::string file, std::string prefix)
    : root_(std::move(root)), table_(table), file_(std::move(file)), prefix_(std::move(prefix)) {}

Result<TomlFields> TomlFields::load(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(toml::table t, toml_load_file(path));
  return TomlFields(std::move(t), path);
}

std::string TomlFields::path_of(const std::string& name) const {
  return prefix_.empty() ? name : prefix_ + "." + name;
}

Status TomlFields::type_error(const std::string& field_path, const char* expected,
                              const toml::node& got) const {
  std::string where = file_;
  const toml::source_position& pos = got.source().begin;
  if (pos) where += ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
  return InvalidArgument(where + ": field '" + field_path + "': expected " + expected + ", got " +
                         toml_describe(got));
}

Result<const toml::node*> TomlFields::lookup(const std::string& name) const {
  const toml::node* n = table_->get(name);
  if (n == nullptr) return InvalidArgument(file_ + ": missing field '" + path_of(name) + "'");
  return n;
}

bool TomlFields::has(const std::string& name) const { return table_->contains(name); }

std::vector<std::string> TomlFields::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, node] : *table_) out.emplace_back(key.str());
  return out;
}

template <typename T, typename Conv>
Result<T> TomlFields::get_typed(const std::string& name, Conv conv, const char* expected) const {
  MARIANA_ASSIGN_OR_RETURN(const toml::node* n, lookup(name));
  std::optional<T> out = conv(*n);
  if (!out) return type_error(path_of(name), expected, *n);
  return std::move(*out);
}

template <typename T, typename Conv>
Result<std::vector<T>> TomlFields::get_array(const std::string& name, Conv conv,
                                             const char* expected) const {
  MARIANA_ASSIGN_OR_RETURN(const toml::node* n, lookup(name));
  const toml::array* arr = n->as_array();
  if (arr == nullptr) return type_error(path_of(name), "an array", *n);
  std::vector<T> out;
  out.reserve(arr->size());
  for (size_t i = 0; i < arr->size(); ++i) {
    std::optional<T> e = conv((*arr)[i]);
    if (!e) return type_error(path_of(name) + "[" + std::to_string(i) + "]", expected, (*arr)[i]);
    out.push_back(std::move(*e));
  }
  return out;
}

Result<int64_t> TomlFields::get_int(const std::string& name) const {
  return get_typed<int64_t>(name, as_int, "an integer");
}
Result<double> TomlFields::get_double(const std::string& name) const {
  return get_typed<double>(name, as_double, "a number");
}
Result<bool> TomlFields::get_bool(const std::string& name) const {
  return get_typed<bool>(name, as_bool, "a boolean");
}
Result<std::string> TomlFields::get_string(const std::string& name) const {
  return get_typed<std::string>(name, as_string, "a string");
}
Result<std::vector<int64_t>> TomlFields::get_int_array(const std::string& name) const {
  return get_array<int64_t>(name, as_int, "an integer");
}
Result<std::vector<double>> TomlFields::get_double_array(const std::string& name) const {
  return get_array<double>(name, as_double, "a number");
}
Result<std::vector<std::string>> TomlFields::get_string_array(const std::string& name) const {
  return get_array<std::string>(name, as_string, "a string");
}

Result<TomlFields> TomlFields::get_object(const std::string& name) const {
  MARIANA_ASSIGN_OR_RETURN(const toml::node* n, lookup(name));
  const toml::table* t = n->as_table();
  if (t == nullptr) return type_error(path_of(name), "a table", *n);
  return TomlFields(root_, t, file_, path_of(name));
}

Result<std::vector<TomlFields>> TomlFields::get_object_array(const std::string& name) const {
  MARIANA_ASSIGN_OR_RETURN(const toml::node* n, lookup(name));
  const toml::array* arr = n->as_array();
  if (arr == nullptr) return type_error(path_of(name), "an array of tables", *n);
  std::vector<TomlFields> out;
  for (size_t i = 0; i < arr->size(); ++i) {
    std::string elem_path = path_of(name) + "[" + std::to_string(i) + "]";
    const toml::table* t = (*arr)[i].as_table();
    if (t == nullptr) return type_error(elem_path, "a table", (*arr)[i]);
    out.push_back(TomlFields(root_, t, file_, elem_path));
  }
  return out;
}

Result<int64_t> TomlFields::get_int_or(const std::string& name, int64_t dflt) const {
  if (!has(name)) return dflt;
  return get_int(name);
}
Result<double> TomlFields::get_double_or(const std::string& name, double dflt) const {
  if (!has(name)) return dflt;
  return get_double(name);
}
Result<bool> TomlFields::get_bool_or(const std::string& name, bool dflt) const {
  if (!has(name)) return dflt;
  return get_bool(name);
}
Result<std::string> TomlFields::get_string_or(const std::string& name, std::string dflt) const {
  if (!has(name)) return dflt;
  return get_string(name);
}

}  // namespace mariana
