// json_load_file (read_file + nlohmann::json::parse, with the error position turned into
// line:column) and JsonFields' typed getters.
#include "core/json_util.h"

#include <limits>

#include "core/file_util.h"

namespace mariana {

namespace {

// 1-based line and column of byte offset `byte` (counted from 1, as nlohmann reports it).
std::pair<size_t, size_t> line_column(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  size_t end = std::min(byte > 0 ? byte - 1 : 0, text.size());
  for (size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

constexpr size_t kMaxShown = 40;

}  // namespace

std::string json_describe(const nlohmann::json& value) {
  auto shown = [](std::string s) {
    if (s.size() > kMaxShown) s = s.substr(0, kMaxShown) + "...";
    return s;
  };
  switch (value.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "object";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::string: return "string " + shown(value.dump());
    case nlohmann::json::value_t::boolean: return "boolean " + value.dump();
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float: return "number " + value.dump();
    default: return "binary";
  }
}

Result<nlohmann::json> json_load_file(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    auto [line, col] = line_column(text, e.byte);
    // Drop nlohmann's "[json.exception...] parse error at line L, column C: " prefix: its position
    // counts differently from ours and two positions in one message confuse.
    std::string what = e.what();
    size_t column = what.find("column ");
    size_t colon = column == std::string::npos ? std::string::npos : what.find(": ", column);
    if (colon != std::string::npos) what = what.substr(colon + 2);
    return InvalidArgument(path + ":" + std::to_string(line) + ":" + std::to_string(col) +
                           ": invalid JSON (byte " + std::to_string(e.byte) + "): " + what);
  }
}

JsonFields::JsonFields(nlohmann::json obj, std::string file, std::string prefix)
    : root_(std::make_shared<const nlohmann::json>(std::move(obj))),
      obj_(root_.get()),
      file_(std::move(file)),
      prefix_(std::move(prefix)) {}

Result<JsonFields> JsonFields::load(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(nlohmann::json j, json_load_file(path));
  return JsonFields(std::move(j), path);
}

Result<JsonFields> JsonFields::parse_object(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(where + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(where + ": expected a JSON object, got " + json_describe(j));
  return JsonFields(std::move(j), where);
}

JsonFields::JsonFields(std::shared_ptr<const nlohmann::json> root, const nlohmann::json* obj,
                       std::string file, std::string prefix)
    : root_(std::move(root)), obj_(obj), file_(std::move(file)), prefix_(std::move(prefix)) {}

std::string JsonFields::path_of(const std::string& name) const {
  return prefix_.empty() ? name : prefix_ + "." + name;
}

Status JsonFields::type_error(const std::string& field_path, const char* expected,
                              const nlohmann::json& got) const {
  return InvalidArgument(file_ + ": field '" + field_path + "': expected " + expected + ", got " +
                         json_describe(got));
}

Result<const nlohmann::json*> JsonFields::lookup(const std::string& name) const {
  if (!obj_->is_object()) {
    return InvalidArgument(file_ + ": " + (prefix_.empty() ? "top level" : "field '" + prefix_ + "'") +
                           ": expected an object, got " + json_describe(*obj_));
  }
  auto it = obj_->find(name);
  if (it == obj_->end() || it->is_null()) {
    return InvalidArgument(file_ + ": missing field '" + path_of(name) + "'");
  }
  return &*it;
}

bool JsonFields::has(const std::string& name) const {
  if (!obj_->is_object()) return false;
  auto it = obj_->find(name);
  return it != obj_->end() && !it->is_null();
}

std::optional<nlohmann::json> JsonFields::find(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  return obj_->at(name);
}

std::vector<std::string> JsonFields::keys() const {
  std::vector<std::string> out;
  if (!obj_->is_object()) return out;
  for (auto it = obj_->begin(); it != obj_->end(); ++it) out.push_back(it.key());
  return out;
}

namespace {

// Converts one JSON value; nullopt when the type does not match.
std::optional<int64_t> as_int(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}
std::optional<double> as_double(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  return std::nullopt;
}
std::optional<bool> as_bool(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>();
  return std::nullopt;
}
std::optional<std::string> as_string(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return std::nullopt;
}

}  // namespace

template <typename T, typename Conv>
Result<T> JsonFields::get_typed(const std::string& name, Conv conv, const char* expected) const {
  MARIANA_ASSIGN_OR_RETURN(const nlohmann::json* v, lookup(name));
  std::optional<T> out = conv(*v);
  if (!out) return type_error(path_of(name), expected, *v);
  return std::move(*out);
}

template <typename T, typename Conv>
Result<std::vector<T>> JsonFields::get_array(const std::string& name, Conv conv,
                                             const char* expected) const {
  MARIANA_ASSIGN_OR_RETURN(const nlohmann::json* v, lookup(name));
  if (!v->is_array()) return type_error(path_of(name), "an array", *v);
  std::vector<T> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    std::optional<T> e = conv((*v)[i]);
    if (!e) return type_error(path_of(name) + "[" + std::to_string(i) + "]", expected, (*v)[i]);
    out.push_back(std::move(*e));
  }
  return out;
}

Result<int64_t> JsonFields::get_int(const std::string& name) const {
  return get_typed<int64_t>(name, as_int, "an integer");
}
Result<double> JsonFields::get_double(const std::string& name) const {
  return get_typed<double>(name, as_double, "a number");
}
Result<bool> JsonFields::get_bool(const std::string& name) const {
  return get_typed<bool>(name, as_bool, "a boolean");
}
Result<std::string> JsonFields::get_string(const std::string& name) const {
  return get_typed<std::string>(name, as_string, "a string");
}
Result<std::vector<int64_t>> JsonFields::get_int_array(const std::string& name) const {
  return get_array<int64_t>(name, as_int, "an integer");
}
Result<std::vector<double>> JsonFields::get_double_array(const std::string& name) const {
  return get_array<double>(name, as_double, "a number");
}
Result<std::vector<std::string>> JsonFields::get_string_array(const std::string& name) const {
  return get_array<std::string>(name, as_string, "a string");
}

Result<JsonFields> JsonFields::get_object(const std::string& name) const {
  MARIANA_ASSIGN_OR_RETURN(const nlohmann::json* v, lookup(name));
  if (!v->is_object()) return type_error(path_of(name), "an object", *v);
  return JsonFields(root_, v, file_, path_of(name));
}

Result<std::vector<JsonFields>> JsonFields::get_object_array(const std::string& name) const {
  MARIANA_ASSIGN_OR_RETURN(const nlohmann::json* v, lookup(name));
  if (!v->is_array()) return type_error(path_of(name), "an array", *v);
  std::vector<JsonFields> out;
  for (size_t i = 0; i < v->size(); ++i) {
    std::string elem_path = path_of(name) + "[" + std::to_string(i) + "]";
    if (!(*v)[i].is_object()) return type_error(elem_path, "an object", (*v)[i]);
    out.push_back(JsonFields(root_, &(*v)[i], file_, elem_path));
  }
  return out;
}

Result<int64_t> JsonFields::get_int_or(const std::string& name, int64_t dflt) const {
  if (!has(name)) return dflt;
  return get_int(name);
}
Result<double> JsonFields::get_double_or(const std::string& name, double dflt) const {
  if (!has(name)) return dflt;
  return get_double(name);
}
Result<bool> JsonFields::get_bool_or(const std::string& name, bool dflt) const {
  if (!has(name)) return dflt;
  return get_bool(name);
}
Result<std::string> JsonFields::get_string_or(const std::string& name, std::string dflt) const {
  if (!has(name)) return dflt;
  return get_string(name);
}

}  // namespace mariana
