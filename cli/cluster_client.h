// Where a client verb finds the controller and its token, and a small client for the monitoring
// queries. Shared by the cluster verbs (cluster_commands.cc) and `mariana bench actors`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "core/status.h"
#include "proto/client.h"

namespace mariana::cli {

struct ClientTarget {
  std::string address;
  std::string token;
  std::string token_file;
  std::string curve_file;       // CURVE credentials (needed for a non-loopback controller)
  proto::CurveClientKeys curve;
};

// From --controller/--token-file, MARIANA_CONTROLLER/MARIANA_TOKEN_FILE, or --state-dir DIR
// (DIR/controller.addr and DIR/cluster.token); CURVE credentials from --curve-file F,
// MARIANA_CURVE_FILE, or DIR/curve/client.key when the state dir has one.
Result<ClientTarget> client_target(const cxxopts::ParseResult& r);
Result<ClientTarget> client_target_from_state_dir(const std::string& dir);

class ClusterClient {
 public:
  explicit ClusterClient(const ClientTarget& t) : ctx_(1), rpc_(ctx_, t.address, t.token, "", &t.curve) {}
  proto::RpcClient& rpc() { return rpc_; }
  zmq::context_t& context() { return ctx_; }
  // One monitoring query ("status", "nodes", "actors", "actor", "jobs", "job", "metrics").
  Result<nlohmann::json> query(const std::string& what, const std::string& id, int timeout_ms);

 private:
  zmq::context_t ctx_;
  proto::RpcClient rpc_;
};

// A job file ready for SubmitJob: the TOML with --set overrides applied (a dotted key, a value
// parsed as TOML or else taken as a string). A training job file ([job] phase, the file
// `mariana train` takes) is first validated with the training engine's own parser (errors name
// the file, line and field), its input files must exist, and its relative paths (model.config,
// model.init_from, tokenizer.path, data.inputs, data.chat, data.preferences) are made absolute,
// which is how `mariana train` reads them, so a worker finds them whatever its own directory.
// Any job file also passes the controller's own spec check (controller/job_spec.h) here.
struct JobSubmission {
  std::string toml;
  std::string path;
  bool training = false;
  int64_t ranks = 1;  // the actors of { CPU = 1 } a training job runs: [parallel] dp × ep, or a campaign's roles
};
Result<JobSubmission> job_submission_prepare(const std::string& path, const std::vector<std::string>& sets);

// Sends SubmitJob; returns the job id.
Result<std::string> job_submit(proto::RpcClient& rpc, const JobSubmission& job, int timeout_ms);

// A job document's time remaining (the controller's "eta_s", from its recent steps/s) as "ETA 1h02m",
// "ETA 3m05s" or "ETA 42s"; "" while unknown (not running, or too few steps yet).
std::string format_eta(const nlohmann::json& job);
// A job document's state is final (SUCCEEDED, FAILED or STOPPED): the client side of
// controller::job_state_terminal.
bool job_doc_terminal(const std::string& state);

}  // namespace mariana::cli
