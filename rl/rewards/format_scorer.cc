// Template check for the format reward: reasoning lines, then exactly one answer line last.
#include "rl/rewards/format_scorer.h"

#include <cctype>
#include <vector>

#include "core/json_util.h"

namespace mariana::rl {
namespace {

std::string rtrim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

bool blank(const std::string& s) {
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

RewardResult bad_format(std::string detail) {
  RewardResult r;
  r.reason = "bad format";
  r.detail = std::move(detail);
  return r;
}

}  // namespace

Result<std::unique_ptr<RewardScorer>> FormatScorer::create(const nlohmann::json& options) {
  MARIANA_RETURN_IF_ERROR(check_option_keys("format scorer", options, {"answer_regex", "require_reasoning"}));
  const JsonFields f(options, "format scorer options");
  MARIANA_ASSIGN_OR_RETURN(std::string pattern, f.get_string_or("answer_regex", kFormatDefaultAnswerRegex));
  MARIANA_ASSIGN_OR_RETURN(bool require_reasoning, f.get_bool_or("require_reasoning", true));
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return InvalidArgument("format scorer: option 'answer_regex': invalid regex '" + pattern + "': " + e.what());
  }
  return std::unique_ptr<RewardScorer>(new FormatScorer(std::move(pattern), std::move(re), require_reasoning));
}

Result<RewardResult> FormatScorer::score(const RewardSample& sample) {
  std::vector<std::string> lines;
  size_t pos = 0;
  const std::string& text = sample.response;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    lines.push_back(rtrim(text.substr(pos, eol - pos)));  // also drops a '\r'
    pos = eol + 1;
  }
  while (!lines.empty() && blank(lines.back())) lines.pop_back();
  if (lines.empty()) return bad_format("empty response");

  std::vector<size_t> answer_lines;
  for (size_t i = 0; i < lines.size(); ++i)
    if (std::regex_match(lines[i], answer_line_)) answer_lines.push_back(i);
  if (answer_lines.empty()) return bad_format("no final answer line matching /" + pattern_ + "/");
  if (answer_lines.back() != lines.size() - 1)
    return bad_format("text after the answer line (line " + std::to_string(answer_lines.back() + 1) + ")");
  if (answer_lines.size() > 1)
    return bad_format(std::to_string(answer_lines.size()) + " answer lines; the template has one");
  if (require_reasoning_) {
    bool reasoning = false;
    for (size_t i = 0; i + 1 < lines.size(); ++i) reasoning = reasoning || !blank(lines[i]);
    if (!reasoning) return bad_format("no reasoning before the answer line");
  }
  RewardResult r;
  r.reward = 1.0;
  r.ok = true;
  r.reason = kReasonCorrect;
  return r;
}

}  // namespace mariana::rl
