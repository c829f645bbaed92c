// The math_verify scorer: options, the venv check, and a worker reply turned into a RewardResult.
#include "rl/rewards/math_verify_scorer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "core/json_util.h"
#include "rl/rewards/math_verify_worker_py.h"  // kMathVerifyWorkerPy, generated from math_verify_worker.py

namespace mariana::rl {

std::string math_verify_venv_command(const std::string& venv) {
  return "scripts/pyenv.sh " + venv + " " + kMathVerifyRequirement + " math_verify";
}

std::string math_verify_default_venv() {
  if (const char* env = std::getenv("MARIANA_MATH_VERIFY_VENV"); env != nullptr && *env != '\0') return env;
  return std::string(MARIANA_PYENV_DIR) + "/pyenv-math-verify";
}

Result<std::unique_ptr<RewardScorer>> MathVerifyScorer::create(const nlohmann::json& options) {
  MARIANA_RETURN_IF_ERROR(check_option_keys("math_verify scorer", options, {"venv", "workers", "timeout_s"}));
  const JsonFields f(options, "math_verify scorer options");
  MARIANA_ASSIGN_OR_RETURN(std::string venv, f.get_string_or("venv", math_verify_default_venv()));
  MARIANA_ASSIGN_OR_RETURN(int64_t workers, f.get_int_or("workers", 1));
  JsonLineWorkerPool::Options po;
  MARIANA_ASSIGN_OR_RETURN(po.timeout_s, f.get_double_or("timeout_s", po.timeout_s));
  if (workers < 1 || workers > 256)
    return InvalidArgument("math_verify scorer options: field 'workers': expected 1..256, got " + std::to_string(workers));
  if (!(po.timeout_s > 0))
    return InvalidArgument("math_verify scorer options: field 'timeout_s': expected > 0");
  const std::string python = venv + "/bin/python";
  const std::string fix = "; create it with `" + math_verify_venv_command(venv) +
                          "` (run from the repository root; scripts/setup.sh makes the default one)";
  if (::access(python.c_str(), X_OK) != 0)
    return FailedPrecondition("math_verify scorer: no Python venv at " + venv + " (" + python + " not found)" + fix);
  po.name = "math_verify";
  po.workers = static_cast<int>(workers);
  // -u: unbuffered; -I is not used because the venv's site-packages must be visible.
  po.argv = {python, "-u", "-c", kMathVerifyWorkerPy};
  po.check_handshake = [venv, fix](const nlohmann::json& hello) -> Status {
    if (hello.is_object() && hello.value("ready", false)) return Status::Ok();
    const std::string why = hello.is_object() && hello.contains("error") ? hello["error"].dump() : hello.dump();
    return FailedPrecondition("math_verify scorer: the venv at " + venv + " cannot run math-verify: " + why + fix);
  };
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<JsonLineWorkerPool> pool, JsonLineWorkerPool::start(std::move(po)));
  return std::unique_ptr<RewardScorer>(new MathVerifyScorer(std::move(pool)));
}

Status MathVerifyScorer::validate(const RewardSample& sample) const { return require_answer("math_verify", sample); }

Result<RewardResult> MathVerifyScorer::score(const RewardSample& sample) {
  MARIANA_RETURN_IF_ERROR(validate(sample));
  RewardResult r;
  Result<nlohmann::json> reply = pool_->call({{"response", sample.response}, {"answer", *sample.answer}});
  if (!reply.ok()) {
    const StatusCode code = reply.status().code();
    if (code != StatusCode::kDeadlineExceeded && code != StatusCode::kUnavailable) return reply.status();
    r.reason = code == StatusCode::kDeadlineExceeded ? "timeout" : "runtime error";
    r.detail = reply.status().message();
    return r;
  }
  const nlohmann::json& j = *reply;
  const bool has_error = j.contains("error") && j["error"].is_string();
  const bool extracted = j.contains("extracted") && j["extracted"].is_string();
  r.reward = j.value("score", 0.0);
  if (has_error) {
    r.reward = 0;
    r.reason = "runtime error";
    r.detail = "math-verify: " + j["error"].get<std::string>();
  } else if (r.reward >= 1.0) {
    r.ok = true;
    r.reason = kReasonCorrect;
    r.detail = "answer '" + (extracted ? j["extracted"].get<std::string>() : std::string()) + "'";
  } else if (!extracted) {
    r.reason = "no answer";
    r.detail = "math-verify extracted no answer from the response";
  } else {
    r.reason = "wrong answer";
    r.detail = "expected '" + *sample.answer + "', got '" + j["extracted"].get<std::string>() + "'";
  }
  return r;
}

}  // namespace mariana::rl
