// Program extraction, output comparison and outcome classification for the code reward.
#include "rl/rewards/code_scorer.h"

#include <signal.h>

#include <string_view>
#include <vector>

#include "core/json_util.h"

namespace mariana::rl {
namespace {

std::string clip(std::string s, size_t n = 160) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  if (s.size() > n) s = s.substr(0, n) + "...";
  return s;
}

std::vector<std::string> normalized_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.pop_back();
    lines.push_back(std::move(line));
    pos = eol + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// Substrings of stderr that name the cause; the hint nearest the end of stderr decides.
struct Hint {
  std::string_view text;
  const char* reason;
  const char* detail;
};
constexpr Hint kHints[] = {
    {"MemoryError", "memory", "MemoryError (address-space limit)"},
    {"Cannot allocate memory", "memory", "cannot allocate memory (address-space limit)"},
    {"out of memory", "memory", "out of memory (address-space limit)"},
    {"PermissionError", "sandbox violation", "PermissionError: a denied socket, write or system call"},
    {"Read-only file system", "sandbox violation", "write outside the sandbox's temp dir (read-only file system)"},
    {"Operation not permitted", "sandbox violation", "operation not permitted by the sandbox"},
    {"Network is unreachable", "sandbox violation", "network access (no network in the sandbox)"},
    {"BlockingIOError", "sandbox violation", "process limit reached (fork failed)"},
    {"Resource temporarily unavailable", "sandbox violation", "process limit reached (fork failed)"},
    {"File too large", "sandbox violation", "file size limit"},
};

const Hint* last_hint(const std::string& err) {
  const Hint* best = nullptr;
  size_t best_pos = 0;
  for (const Hint& h : kHints) {
    const size_t p = err.rfind(h.text);
    if (p != std::string::npos && (!best || p > best_pos)) best = &h, best_pos = p;
  }
  return best;
}

std::string last_line(const std::string& text) {
  const std::vector<std::string> lines = normalized_lines(text);
  return lines.empty() ? "" : lines.back();
}

}  // namespace

std::string code_extract_program(const std::string& response) {
  size_t best_body = std::string::npos;
  for (std::string_view tag : {"```python3", "```python", "```py"}) {
    for (size_t p = response.find(tag); p != std::string::npos; p = response.find(tag, p + 1)) {
      const size_t after = p + tag.size();
      // The tag must end the fence's info word: "```py" must not match "```pyth".
      const size_t eol = response.find('\n', after);
      const std::string_view rest(response.data() + after, (eol == std::string::npos ? response.size() : eol) - after);
      if (rest.find_first_not_of(" \t\r") != std::string_view::npos) continue;
      const size_t body = eol == std::string::npos ? response.size() : eol + 1;
      if (best_body == std::string::npos || body > best_body) best_body = body;
    }
  }
  if (best_body == std::string::npos) return response;
  size_t close = response.find("```", best_body);
  if (close == std::string::npos) close = response.size();
  return response.substr(best_body, close - best_body);
}

bool code_outputs_match(const std::string& got, const std::string& expected) {
  return normalized_lines(got) == normalized_lines(expected);
}

std::string code_classify(const SandboxRun& run, const std::string& expected_stdout, std::string& detail) {
  if (run.timed_out) {
    detail = "killed after the wall-clock limit";
    return "timeout";
  }
  if (run.output_limit) {
    detail = "stdout or stderr passed the output limit";
    return "output limit";
  }
  if (run.memory_limit) {
    detail = "killed by the memory limit (cgroup OOM)";
    return "memory";
  }
  if (run.signal != 0) {
    switch (run.signal) {
      case SIGXCPU:
      case SIGKILL:  // the hard RLIMIT_CPU
        detail = "CPU time limit (signal " + std::to_string(run.signal) + ")";
        return "timeout";
      case SIGSYS:
        detail = "killed by the seccomp filter (SIGSYS)";
        return "sandbox violation";
      case SIGXFSZ:
        detail = "file size limit (SIGXFSZ)";
        return "sandbox violation";
      default:
        break;
    }
    const Hint* h = last_hint(run.err);
    if (h && std::string_view(h->reason) == "memory") {
      detail = h->detail;
      return "memory";
    }
    detail = "killed by signal " + std::to_string(run.signal) + " (" + strsignal(run.signal) + ")";
    return "runtime error";
  }
  if (run.exit_code != 0) {
    if (const Hint* h = last_hint(run.err)) {
      detail = std::string(h->detail) + ": " + clip(last_line(run.err));
      return h->reason;
    }
    const std::string line = last_line(run.err);
    detail = line.empty() ? "exit code " + std::to_string(run.exit_code) : clip(line);
    return "runtime error";
  }
  if (code_outputs_match(run.out, expected_stdout)) {
    detail.clear();
    return kReasonCorrect;
  }
  detail = "expected '" + clip(expected_stdout, 80) + "', got '" + clip(run.out, 80) + "'";
  return "wrong answer";
}

Result<std::unique_ptr<RewardScorer>> CodeScorer::create(const nlohmann::json& options) {
  MARIANA_RETURN_IF_ERROR(check_option_keys(
      "code scorer", options, {"timeout_s", "memory_mb", "disk_mb", "python", "max_processes", "max_output_bytes"}));
  const JsonFields f(options, "code scorer options");
  SandboxOptions so;
  MARIANA_ASSIGN_OR_RETURN(so.timeout_s, f.get_double_or("timeout_s", so.timeout_s));
  MARIANA_ASSIGN_OR_RETURN(so.memory_mb, f.get_int_or("memory_mb", so.memory_mb));
  MARIANA_ASSIGN_OR_RETURN(so.disk_mb, f.get_int_or("disk_mb", so.disk_mb));
  MARIANA_ASSIGN_OR_RETURN(so.python, f.get_string_or("python", so.python));
  MARIANA_ASSIGN_OR_RETURN(so.max_processes, f.get_int_or("max_processes", so.max_processes));
  MARIANA_ASSIGN_OR_RETURN(so.max_output_bytes, f.get_int_or("max_output_bytes", so.max_output_bytes));
  MARIANA_ASSIGN_OR_RETURN(Sandbox sandbox, Sandbox::create(std::move(so)));
  return std::unique_ptr<RewardScorer>(new CodeScorer(std::move(sandbox)));
}

Status CodeScorer::validate(const RewardSample& sample) const {
  if (sample.tests.empty()) return InvalidArgument("field 'tests': the code scorer needs at least one test");
  return Status::Ok();
}

Result<RewardResult> CodeScorer::score(const RewardSample& sample) {
  MARIANA_RETURN_IF_ERROR(validate(sample));
  const std::string program = code_extract_program(sample.response);
  RewardResult r;
  size_t passed = 0;
  const size_t n = sample.tests.size();
  for (size_t i = 0; i < n; ++i) {
    MARIANA_ASSIGN_OR_RETURN(SandboxRun run, sandbox_.run_python(program, sample.tests[i].stdin_text));
    std::string detail;
    const std::string reason = code_classify(run, sample.tests[i].expected_stdout, detail);
    if (reason == kReasonCorrect) {
      ++passed;
    } else if (r.reason.empty()) {
      r.reason = reason;
      r.detail = "test " + std::to_string(i + 1) + "/" + std::to_string(n) + ": " + detail;
    }
  }
  r.reward = static_cast<double>(passed) / static_cast<double>(n);
  r.ok = passed == n;
  if (r.ok) {
    r.reason = kReasonCorrect;
    r.detail = std::to_string(n) + "/" + std::to_string(n) + " tests passed";
  } else {
    r.detail += " (" + std::to_string(passed) + "/" + std::to_string(n) + " passed)";
  }
  return r;
}

}  // namespace mariana::rl
