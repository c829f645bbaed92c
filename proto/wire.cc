// The decode boundary and encoder (see wire.h and wire_format.md).
#include "proto/wire.h"

#include <algorithm>

#include <cstring>

#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <kj/exception.h>

namespace mariana::proto {

namespace {

constexpr int kMaxDepth = 32;

// Reads every field, list element and text of `value` so that a schema mismatch (a text pointer
// that points at a struct, an out-of-bounds pointer, a text without its NUL) throws here, at the
// boundary, instead of later in a handler. Unknown union members below the payload are skipped.
void validate_value(const capnp::DynamicValue::Reader& value, int depth);

void validate_struct(const capnp::DynamicStruct::Reader& s, int depth) {
  if (depth > kMaxDepth) KJ_FAIL_REQUIRE("message nested too deeply");
  for (auto field : s.getSchema().getNonUnionFields()) {
    if (s.has(field)) validate_value(s.get(field), depth + 1);
  }
  KJ_IF_MAYBE(f, s.which()) { validate_value(s.get(*f), depth + 1); }
}

void validate_value(const capnp::DynamicValue::Reader& value, int depth) {
  switch (value.getType()) {
    case capnp::DynamicValue::TEXT: {
      auto t = value.as<capnp::Text>();
      (void)t.size();
      break;
    }
    case capnp::DynamicValue::DATA: {
      auto d = value.as<capnp::Data>();
      (void)d.size();
      break;
    }
    case capnp::DynamicValue::LIST: {
      auto list = value.as<capnp::DynamicList>();
      for (auto element : list) validate_value(element, depth + 1);
      break;
    }
    case capnp::DynamicValue::STRUCT:
      validate_struct(value.as<capnp::DynamicStruct>(), depth);
      break;
    default:
      break;
  }
}

// The payloads of direct actor calls, checked through the generated readers: the same pointer
// and blob checks validate_struct makes, without its schema reflection (about 2 µs a frame, a
// few per cent of a loopback sync call). tests/proto/wire_test.cc pins these field lists to the
// schema, so a field added to one of these structs fails that test until it is checked here.
// Returns false for the other payloads, which take validate_struct.
bool validate_hot_payload(Envelope::Reader env) {
  auto p = env.getPayload();
  switch (p.which()) {
    case Envelope::Payload::ACTOR_CALL: {
      auto c = p.getActorCall();
      (void)c.getActorId().size();
      (void)c.getMethod().size();
      (void)c.getArgs().size();
      break;
    }
    case Envelope::Payload::ACTOR_RETURN: {
      auto r = p.getActorReturn();
      (void)r.getError().size();
      (void)r.getResult().size();
      break;
    }
    case Envelope::Payload::PING:
    case Envelope::Payload::OK: break;
    default: return false;
  }
  (void)env.getSender().size();  // token: compared by the caller
  return true;
}

kj::Array<capnp::word> copy_aligned(const void* data, size_t size) {
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  return words;
}

std::string kj_message(const kj::Exception& e) {
  return std::string(e.getDescription().cStr());
}

}  // namespace

Frame::Frame(kj::Array<capnp::word> words, size_t traversal_limit_words) : words_(std::move(words)) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = traversal_limit_words;
  opts.nestingLimit = kMaxDepth + 8;
  reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words_.asPtr(), opts);
  root_ = reader_->getRoot<Envelope>();
}

bool token_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The highest payload discriminant this build knows (the schema's last union member).
static uint16_t last_payload_discriminant() {
  static const uint16_t last = [] {
    uint16_t m = 0;
    for (auto f : capnp::Schema::from<Envelope::Payload>().getUnionFields())
      m = std::max<uint16_t>(m, f.getProto().getDiscriminantValue());
    return m;
  }();
  return last;
}

Result<Frame> decode_envelope(const void* data, size_t size, const DecodeOptions& options,
                              WireCounters* counters, uint64_t* request_id) {
  WireCounters scratch;
  WireCounters& c = counters ? *counters : scratch;
  if (request_id) *request_id = 0;
  if (size > options.max_frame_bytes) {
    c.oversized.fetch_add(1, std::memory_order_relaxed);
    return ResourceExhausted("frame of " + std::to_string(size) + " bytes exceeds the limit of " +
                             std::to_string(options.max_frame_bytes));
  }
  if (size == 0 || size % sizeof(capnp::word) != 0) {
    c.malformed.fetch_add(1, std::memory_order_relaxed);
    return InvalidArgument("malformed frame: " + std::to_string(size) +
                           " bytes is not a positive multiple of 8");
  }
  const size_t n_words = size / sizeof(capnp::word);
  std::unique_ptr<Frame> frame;
  try {
    frame = std::make_unique<Frame>(copy_aligned(data, size), 8 * n_words + 1024);
    auto env = frame->envelope();
    const uint16_t version = env.getVersion();
    if (request_id) *request_id = env.getRequestId();
    if (version != PROTOCOL_VERSION) {
      c.bad_version.fetch_add(1, std::memory_order_relaxed);
      return FailedPrecondition("protocol version " + std::to_string(version) + " is not supported (this build speaks " +
                                std::to_string(PROTOCOL_VERSION) + ")");
    }
    const bool tokenless_error = options.accept_tokenless_errors && env.getToken().size() == 0 &&
                                 env.getPayload().which() == Envelope::Payload::ERROR;
    if (!env.hasToken() && !tokenless_error) {
      c.unauthenticated.fetch_add(1, std::memory_order_relaxed);
      return PermissionDenied("missing cluster token");
    }
    auto tok = env.getToken();
    if (!tokenless_error &&
        !token_equal(std::string_view(reinterpret_cast<const char*>(tok.begin()), tok.size()), options.token)) {
      c.unauthenticated.fetch_add(1, std::memory_order_relaxed);
      return PermissionDenied("wrong cluster token");
    }
    const auto which = env.getPayload().which();
    if (static_cast<uint16_t>(which) > last_payload_discriminant()) {
      c.unknown_payload.fetch_add(1, std::memory_order_relaxed);
      return Unimplemented("unknown payload " + payload_name(which));
    }
    if (!validate_hot_payload(env)) validate_struct(capnp::DynamicStruct::Reader(env), 0);
  } catch (const kj::Exception& e) {
    c.malformed.fetch_add(1, std::memory_order_relaxed);
    return InvalidArgument("malformed frame: " + kj_message(e));
  } catch (const std::exception& e) {
    c.malformed.fetch_add(1, std::memory_order_relaxed);
    return InvalidArgument(std::string("malformed frame: ") + e.what());
  }
  c.decoded.fetch_add(1, std::memory_order_relaxed);
  return std::move(*frame);
}

Result<kj::Array<capnp::word>> validate_struct_bytes(std::string_view bytes, capnp::StructSchema schema,
                                                     const char* what) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0 || bytes.size() > kMaxFrameBytes)
    return InvalidArgument(std::string(what) + ": " + std::to_string(bytes.size()) +
                           " bytes is not a Cap'n Proto message");
  auto words = copy_aligned(bytes.data(), bytes.size());
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = 8 * words.size() + 1024;
    opts.nestingLimit = kMaxDepth + 8;
    capnp::FlatArrayMessageReader reader(words.asPtr(), opts);
    validate_struct(reader.getRoot<capnp::DynamicStruct>(schema), 0);
  } catch (const kj::Exception& e) {
    return InvalidArgument(std::string(what) + ": malformed: " + kj_message(e));
  }
  return words;
}

Outgoing::Outgoing(uint64_t request_id, std::string_view sender, std::string_view token)
    : builder_(128), root_(builder_.initRoot<Envelope>()) {
  root_.setVersion(PROTOCOL_VERSION);
  root_.setRequestId(request_id);
  root_.setSender(capnp::Text::Reader(sender.data(), sender.size()));
  root_.setToken(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(token.data()), token.size()));
}

std::string Outgoing::bytes() {
  const size_t words = capnp::computeSerializedSizeInWords(builder_);
  std::string out(words * sizeof(capnp::word), '\0');
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
  capnp::writeMessage(stream, builder_);
  return out;
}

std::string encode_error(uint64_t request_id, std::string_view sender, std::string_view token,
                         const Status& status) {
  Outgoing m(request_id, sender, token);
  auto e = m.payload().initError();
  e.setCode(static_cast<uint16_t>(status.code()));
  e.setMessage(status.message());
  return m.bytes();
}

Status error_status(Error::Reader error) {
  const uint16_t code = error.getCode();
  const auto sc = (code == 0 || code > static_cast<uint16_t>(StatusCode::kDataLoss)) ? StatusCode::kUnknown
                                                                                   : static_cast<StatusCode>(code);
  return Status(sc, std::string(error.getMessage().cStr()));
}

std::string payload_name(Envelope::Payload::Which which) {
  auto fields = capnp::Schema::from<Envelope::Payload>().getUnionFields();
  for (auto f : fields) {
    if (f.getProto().getDiscriminantValue() == static_cast<uint16_t>(which))
      return std::string(f.getProto().getName().cStr());
  }
  return "unknown(" + std::to_string(static_cast<uint16_t>(which)) + ")";
}

}  // namespace mariana::proto
