// Client target resolution and monitoring queries (see cluster_client.h).
#include "cli/cluster_client.h"

#include <cstdlib>

#include "core/file_util.h"

namespace mariana::cli {

namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

Result<ClientTarget> client_target_from_state_dir(const std::string& dir) {
  ClientTarget t;
  MARIANA_ASSIGN_OR_RETURN(auto addr, read_file(dir + "/controller.addr"));
  t.address = trim(addr);
  t.token_file = dir + "/cluster.token";
  MARIANA_ASSIGN_OR_RETURN(auto tok, read_file(t.token_file));
  t.token = trim(tok);
  return t;
}

Result<ClientTarget> client_target(const cxxopts::ParseResult& r) {
  ClientTarget t;
  if (r.count("state-dir")) {
    MARIANA_ASSIGN_OR_RETURN(t, client_target_from_state_dir(r["state-dir"].as<std::string>()));
  }
  if (r.count("controller")) t.address = r["controller"].as<std::string>();
  else if (t.address.empty() && std::getenv("MARIANA_CONTROLLER")) t.address = std::getenv("MARIANA_CONTROLLER");
  if (r.count("token-file")) t.token_file = r["token-file"].as<std::string>();
  else if (t.token_file.empty() && std::getenv("MARIANA_TOKEN_FILE")) t.token_file = std::getenv("MARIANA_TOKEN_FILE");
  if (t.address.empty())
    return InvalidArgument("no controller address: pass --controller ADDR (or set MARIANA_CONTROLLER)");
  if (t.token_file.empty())
    return InvalidArgument("no cluster token: pass --token-file F (or set MARIANA_TOKEN_FILE)");
  MARIANA_ASSIGN_OR_RETURN(auto tok, read_file(t.token_file));
  t.token = trim(tok);
  return t;
}

Result<nlohmann::json> ClusterClient::query(const std::string& what, const std::string& id, int timeout_ms) {
  MARIANA_ASSIGN_OR_RETURN(auto reply, rpc_.call(
                                           [&](proto::Envelope::Payload::Builder p) {
                                             auto q = p.initQuery();
                                             q.setWhat(what);
                                             q.setId(id);
                                           },
                                           timeout_ms));
  if (reply.payload().which() != proto::Envelope::Payload::QUERY_REPLY)
    return Internal("query " + what + ": unexpected reply " + proto::payload_name(reply.payload().which()));
  auto doc = nlohmann::json::parse(reply.payload().getQueryReply().getJson().cStr(), nullptr, false);
  if (doc.is_discarded()) return DataLoss("query " + what + ": the controller sent invalid JSON");
  return doc;
}

}  // namespace mariana::cli
