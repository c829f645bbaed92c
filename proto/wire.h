// The one decode boundary of the control plane, and the matching encoder. Every received ZeroMQ
// frame passes through decode_envelope(): a frame that is empty, not word-sized, oversized, not a
// valid Cap'n Proto message, of another protocol version, without the cluster token, or with a
// payload this build does not know becomes a Status and bumps one WireCounters field. A Frame that
// decodes is fully validated against the schema, so handlers may read it without exceptions.
// Not thread-safe per object; WireCounters fields are atomics so another thread may read them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include "core/status.h"
#include "proto/mariana.capnp.h"

namespace mariana::proto {

constexpr size_t kMaxFrameBytes = size_t{16} << 20;  // control messages only; tensors go over comm/

struct WireCounters {
  std::atomic<uint64_t> decoded{0};
  std::atomic<uint64_t> malformed{0};        // empty, not a multiple of 8 bytes, bad Cap'n Proto, schema mismatch
  std::atomic<uint64_t> oversized{0};        // larger than DecodeOptions::max_frame_bytes
  std::atomic<uint64_t> bad_version{0};      // Envelope.version != protocolVersion
  std::atomic<uint64_t> unauthenticated{0};  // wrong or missing token
  std::atomic<uint64_t> unknown_payload{0};  // a union member this build does not know
  uint64_t rejected() const {
    return malformed.load() + oversized.load() + bad_version.load() + unauthenticated.load() +
           unknown_payload.load();
  }
};

struct DecodeOptions {
  size_t max_frame_bytes = kMaxFrameBytes;
  std::string_view token;  // the cluster token every envelope must carry
  // Clients accept an Error payload without a token: a server never sends its token to a peer
  // that failed to authenticate, and such an error can only make the client fail.
  bool accept_tokenless_errors = false;
};

// A decoded, validated envelope. Owns an 8-byte-aligned copy of the frame (ZeroMQ frames over tcp
// are not aligned: docs/dependencies.md#unaligned-zeromq-frames). Move-only.
class Frame {
 public:
  Frame(kj::Array<capnp::word> words, size_t traversal_limit_words);
  Frame(Frame&&) noexcept = default;
  Frame& operator=(Frame&&) noexcept = default;

  Envelope::Reader envelope() const { return root_; }
  Envelope::Payload::Reader payload() const { return root_.getPayload(); }
  uint64_t request_id() const { return root_.getRequestId(); }

 private:
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  Envelope::Reader root_;
};

// Decodes one frame. On error returns the Status (InvalidArgument, ResourceExhausted,
// FailedPrecondition for the version, PermissionDenied for the token, Unimplemented for an unknown
// payload) and, when the frame was readable that far, sets *request_id for the error reply.
// Never throws.
Result<Frame> decode_envelope(const void* data, size_t size, const DecodeOptions& options,
                              WireCounters* counters, uint64_t* request_id = nullptr);

// Builds one envelope. Usage: Outgoing m(id, sender, token); m.payload().initPing(); send(m.bytes()).
class Outgoing {
 public:
  Outgoing(uint64_t request_id, std::string_view sender, std::string_view token);
  Envelope::Builder envelope() { return root_; }
  Envelope::Payload::Builder payload() { return root_.initPayload(); }
  // The serialized frame (a flat array: segment table + segments).
  std::string bytes();

 private:
  capnp::MallocMessageBuilder builder_;
  Envelope::Builder root_;
};

// An error reply carrying `status`.
std::string encode_error(uint64_t request_id, std::string_view sender, std::string_view token,
                         const Status& status);
// The Status carried by an Error payload.
Status error_status(Error::Reader error);

// "registerNode", "actorCall", ... ("unknown(N)" beyond this build's schema).
std::string payload_name(Envelope::Payload::Which which);

// Cap'n Proto values as plain bytes (for ActorCall.args / ActorReturn.result): any struct type.
template <typename T, typename Fill>
std::string encode_struct(Fill&& fill) {
  capnp::MallocMessageBuilder b(64);
  auto root = b.initRoot<T>();
  fill(root);
  auto words = capnp::messageToFlatArray(b);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Reads a struct from bytes (copying to aligned words, validating). `what` names it in errors.
template <typename T>
class StructValue {
 public:
  static Result<StructValue> decode(std::string_view bytes, const char* what);
  typename T::Reader get() const { return reader_->template getRoot<T>(); }

 private:
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

// Copies bytes into aligned words; validates the root struct against T's schema. Never throws.
Result<kj::Array<capnp::word>> validate_struct_bytes(std::string_view bytes, capnp::StructSchema schema,
                                                     const char* what);

template <typename T>
Result<StructValue<T>> StructValue<T>::decode(std::string_view bytes, const char* what) {
  MARIANA_ASSIGN_OR_RETURN(auto words, validate_struct_bytes(bytes, capnp::Schema::from<T>(), what));
  StructValue v;
  v.words_ = std::move(words);
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = 8 * v.words_.size() + 1024;
  v.reader_ = std::make_unique<capnp::FlatArrayMessageReader>(v.words_.asPtr(), opts);
  return v;
}

// Routing ids are deterministic so the controller reaches agents and workers again after it
// restarts: "a/<node>" for an agent, "w/<actor>/<incarnation>" for a worker.
inline std::string agent_peer(const std::string& node_id) { return "a/" + node_id; }
inline std::string worker_peer(const std::string& actor_id, uint32_t incarnation) {
  return "w/" + actor_id + "/" + std::to_string(incarnation);
}

// Constant-time comparison of two tokens.
bool token_equal(std::string_view a, std::string_view b);

}  // namespace mariana::proto
