// ControllerKvStore: kvPut / kvGet calls through an RpcClient.
#include "workers/controller_kv_store.h"

namespace mariana::workers {

ControllerKvStore::ControllerKvStore(const std::string& endpoint, const std::string& token, int call_timeout_ms,
                                     proto::CurveClientKeys curve)
    : curve_(std::move(curve)),
      client_(std::make_unique<proto::RpcClient>(ctx_, endpoint, token, "", curve_.enabled() ? &curve_ : nullptr)),
      call_timeout_ms_(call_timeout_ms) {}

ControllerKvStore::~ControllerKvStore() {
  client_.reset();  // the socket closes before its context
}

Status ControllerKvStore::set(const std::string& key, const std::string& value) {
  Result<proto::Frame> reply = client_->call(
      [&](proto::Envelope::Payload::Builder p) {
        auto put = p.initKvPut();
        put.setKey(key);
        put.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
      },
      call_timeout_ms_);
  if (!reply.ok()) return Status(reply.status().code(), "controller kv store: kvPut '" + key + "': " + reply.status().message());
  return Status::Ok();
}

Result<std::optional<std::string>> ControllerKvStore::try_get(const std::string& key) {
  Result<proto::Frame> reply =
      client_->call([&](proto::Envelope::Payload::Builder p) { p.initKvGet().setKey(key); }, call_timeout_ms_);
  if (!reply.ok()) return Status(reply.status().code(), "controller kv store: kvGet '" + key + "': " + reply.status().message());
  if (reply->payload().which() != proto::Envelope::Payload::KV_VALUE) {
    return Internal("controller kv store: kvGet '" + key + "': the reply is not a kvValue");
  }
  auto v = reply->payload().getKvValue();
  if (!v.getFound()) return std::optional<std::string>();
  auto data = v.getValue();
  return std::optional<std::string>(std::string(reinterpret_cast<const char*>(data.begin()), data.size()));
}

}  // namespace mariana::workers
