// The scorer interface's shared pieces: JSON form of a result, the weighted composite and the
// registry of scorer factories.
#include "rl/rewards/reward.h"

#include <algorithm>
#include <sstream>

#include "core/json_util.h"
#include "rl/rewards/code_scorer.h"
#include "rl/rewards/format_scorer.h"
#include "rl/rewards/math_scorer.h"
#include "rl/rewards/math_verify_scorer.h"

namespace mariana::rl {

nlohmann::json reward_result_to_json(const RewardResult& r) {
  nlohmann::json j = {{"reward", r.reward}, {"ok", r.ok}, {"reason", r.reason}, {"detail", r.detail}};
  if (!r.parts.empty()) j["parts"] = r.parts;
  return j;
}

RewardScorer::~RewardScorer() = default;

Status RewardScorer::validate(const RewardSample&) const { return Status::Ok(); }

Status check_option_keys(const std::string& who, const nlohmann::json& options, const std::vector<std::string>& known) {
  if (options.is_null()) return Status::Ok();
  if (!options.is_object()) return InvalidArgument(who + ": options must be a JSON object, got " + json_describe(options));
  for (const auto& [key, value] : options.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    return InvalidArgument(who + ": unknown option '" + key + "' (known: " + (list.empty() ? "none" : list) + ")");
  }
  return Status::Ok();
}

// ---- CompositeScorer ----

CompositeScorer::CompositeScorer(std::vector<Part> parts) : parts_(std::move(parts)) {
  std::map<std::string, int> seen;
  for (const Part& p : parts_) {
    const std::string base = p.scorer->name();
    const int k = ++seen[base];
    keys_.push_back(k == 1 ? base : base + "#" + std::to_string(k));
  }
}

std::string CompositeScorer::name() const {
  std::ostringstream s;
  s << "composite(";
  for (size_t i = 0; i < parts_.size(); ++i) s << (i ? "+" : "") << keys_[i] << "*" << parts_[i].weight;
  s << ")";
  return s.str();
}

Status CompositeScorer::validate(const RewardSample& sample) const {
  for (size_t i = 0; i < parts_.size(); ++i) {
    Status st = parts_[i].scorer->validate(sample);
    if (!st.ok()) return Status(st.code(), keys_[i] + ": " + st.message());
  }
  return Status::Ok();
}

Result<RewardResult> CompositeScorer::score(const RewardSample& sample) {
  RewardResult out;
  out.ok = true;
  for (size_t i = 0; i < parts_.size(); ++i) {
    Result<RewardResult> r = parts_[i].scorer->score(sample);
    if (!r.ok()) return Status(r.status().code(), keys_[i] + ": " + r.status().message());
    out.reward += parts_[i].weight * r->reward;
    out.parts[keys_[i]] = r->reward;
    if (!r->ok && out.ok) {
      out.ok = false;
      out.reason = r->reason;
      out.detail = keys_[i] + ": " + r->detail;
    }
  }
  if (out.ok) out.reason = kReasonCorrect;
  return out;
}

// ---- ScorerRegistry ----

ScorerRegistry ScorerRegistry::with_builtins() {
  ScorerRegistry reg;
  MARIANA_CHECK(reg.add("math", [](const nlohmann::json& o) -> Result<std::unique_ptr<RewardScorer>> {
                  MARIANA_RETURN_IF_ERROR(check_option_keys("math scorer", o, {}));
                  return std::unique_ptr<RewardScorer>(new MathScorer());
                }).ok());
  MARIANA_CHECK(reg.add("math_verify", &MathVerifyScorer::create).ok());
  MARIANA_CHECK(reg.add("format", &FormatScorer::create).ok());
  MARIANA_CHECK(reg.add("code", &CodeScorer::create).ok());
  return reg;
}

Status ScorerRegistry::add(const std::string& name, Factory factory) {
  if (name == "composite" || factories_.count(name)) return AlreadyExists("scorer '" + name + "' is already registered");
  factories_[name] = std::move(factory);
  return Status::Ok();
}

bool ScorerRegistry::has(const std::string& name) const { return name == "composite" || factories_.count(name) > 0; }

std::vector<std::string> ScorerRegistry::names() const {
  std::vector<std::string> out = {"composite"};
  for (const auto& [name, f] : factories_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::unique_ptr<RewardScorer>> ScorerRegistry::make(const std::string& name, const nlohmann::json& options) const {
  if (name == "composite") return make_composite(options);
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    std::string list;
    for (const auto& n : names()) list += (list.empty() ? "" : ", ") + n;
    return NotFound("unknown scorer '" + name + "' (known: " + list + ")");
  }
  return it->second(options.is_null() ? nlohmann::json::object() : options);
}

Result<std::unique_ptr<RewardScorer>> ScorerRegistry::make_composite(const nlohmann::json& options) const {
  MARIANA_RETURN_IF_ERROR(check_option_keys("composite scorer", options, {"parts"}));
  const JsonFields f(options, "composite scorer options");
  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> specs, f.get_object_array("parts"));
  if (specs.empty()) return InvalidArgument("composite scorer: 'parts' is empty");
  std::vector<CompositeScorer::Part> parts;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string where = "composite scorer: parts[" + std::to_string(i) + "]";
    MARIANA_RETURN_IF_ERROR(check_option_keys(where, specs[i].json(), {"scorer", "weight", "options"}));
    MARIANA_ASSIGN_OR_RETURN(std::string name, specs[i].get_string("scorer"));
    MARIANA_ASSIGN_OR_RETURN(double weight, specs[i].get_double_or("weight", 1.0));
    const nlohmann::json opts = specs[i].find("options").value_or(nlohmann::json::object());
    if (name == "composite") return InvalidArgument(where + ": a composite cannot contain a composite");
    Result<std::unique_ptr<RewardScorer>> s = make(name, opts);
    if (!s.ok()) return Status(s.status().code(), where + ": " + s.status().message());
    parts.push_back({weight, std::move(s).value()});
  }
  return std::unique_ptr<RewardScorer>(new CompositeScorer(std::move(parts)));
}

Status require_answer(const std::string& scorer, const RewardSample& sample) {
  if (!sample.answer) return InvalidArgument("field 'answer': the " + scorer + " scorer needs a reference answer");
  return Status::Ok();
}

Result<std::unique_ptr<RewardScorer>> make_scorer(const std::string& name, const nlohmann::json& options) {
  return ScorerRegistry::with_builtins().make(name, options);
}

Result<RewardSample> reward_sample_parse(const std::string& text, const std::string& where, bool response_required) {
  MARIANA_ASSIGN_OR_RETURN(const JsonFields f, JsonFields::parse_object(text, where));
  RewardSample s;
  MARIANA_ASSIGN_OR_RETURN(s.prompt, f.get_string_or("prompt", ""));
  if (response_required) {
    MARIANA_ASSIGN_OR_RETURN(s.response, f.get_string("response"));
  } else {
    MARIANA_ASSIGN_OR_RETURN(s.response, f.get_string_or("response", ""));
  }
  if (auto a = f.find("answer")) {
    if (a->is_string())
      s.answer = a->get<std::string>();
    else if (a->is_number())
      s.answer = a->dump();
    else
      return InvalidArgument(where + ": field 'answer': expected a string or a number, got " + json_describe(*a));
  }
  if (f.has("tests")) {
    MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> tests, f.get_object_array("tests"));
    for (const JsonFields& t : tests) {
      CodeTest ct;
      MARIANA_ASSIGN_OR_RETURN(ct.stdin_text, t.get_string_or("stdin", ""));
      MARIANA_ASSIGN_OR_RETURN(ct.expected_stdout, t.get_string("stdout"));
      s.tests.push_back(std::move(ct));
    }
  }
  return s;
}

}  // namespace mariana::rl
