// The code reward: extracts a Python 3 program from the response, runs it in the sandbox
// (sandbox.h) once per stdin/stdout test, and rewards the fraction of tests passed. Not a judge
// for other languages, nor for interactive or special-judge problems.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "rl/rewards/reward.h"
#include "rl/rewards/sandbox.h"

namespace mariana::rl {

// The program in a response: the body of the last ```python (or ```py, ```python3) fenced block,
// up to its closing fence or the end of the text; the whole response when there is none.
std::string code_extract_program(const std::string& response);

// Whether program output matches the expected output: "\r\n" read as "\n", trailing whitespace
// of every line and trailing blank lines ignored, everything else exact.
bool code_outputs_match(const std::string& got, const std::string& expected);

// The outcome of one test run, as a RewardResult reason: "correct" (passed), "wrong answer",
// "timeout" (wall clock or CPU limit), "memory" (MemoryError, or a crash that says it could not
// allocate), "sandbox violation" (a denied socket, write, process or file-size limit, SIGSYS),
// "output limit", "runtime error" (any other failure, SyntaxError included). `detail` gets a
// one-line explanation.
std::string code_classify(const SandboxRun& run, const std::string& expected_stdout, std::string& detail);

// Options (JSON object, all optional): "timeout_s" (per test, default 2), "memory_mb" (default
// 512), "python" (default /usr/bin/python3), "max_processes" (default 32), "max_output_bytes"
// (default 1 MiB). reward = passed / tests; ok when all pass; reason and detail from the first
// failed test ("test 2/3: ..."). score() returns Unavailable when the sandbox cannot be isolated —
// the program is never run unsandboxed.
class CodeScorer : public RewardScorer {
 public:
  static Result<std::unique_ptr<RewardScorer>> create(const nlohmann::json& options);
  explicit CodeScorer(Sandbox sandbox) : sandbox_(std::move(sandbox)) {}
  std::string name() const override { return "code"; }
  Status validate(const RewardSample& sample) const override;
  Result<RewardResult> score(const RewardSample& sample) override;

 private:
  Sandbox sandbox_;
};

}  // namespace mariana::rl
