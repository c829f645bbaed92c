// The decode boundary (proto/wire.h): valid frames round-trip, including unaligned ones; every
// kind of bad frame is an error plus exactly one counter; random and mutated frames never crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include <capnp/schema.h>

#include "proto/wire.h"

namespace mariana::proto {
namespace {

const std::string kToken(64, 'k');

DecodeOptions opts() {
  DecodeOptions o;
  o.token = kToken;
  return o;
}

std::string ping(uint64_t id = 7, const std::string& token = kToken) {
  Outgoing m(id, "cli/test", token);
  m.payload().setPing();
  return m.bytes();
}

// A message with lists, texts and data: a richer target for mutation.
std::string register_node() {
  Outgoing m(11, "a/n1", kToken);
  auto r = m.payload().initRegisterNode();
  r.setNodeId("n1");
  auto res = r.initResources(2);
  res[0].setName("CPU");
  res[0].setAmount(4);
  res[1].setName("GPU");
  res[1].setAmount(1);
  r.setHostname("host");
  auto w = r.initWorkers(1);
  w[0].setActorId("actor-1");
  w[0].setIncarnation(2);
  auto cls = r.initActorClasses(2);
  cls.set(0, "counter");
  cls.set(1, "echo");
  return m.bytes();
}

std::string actor_call() {
  Outgoing m(12, "cli/x", kToken);
  auto c = m.payload().initActorCall();
  c.setActorId("actor-3");
  c.setMethod("step");
  auto args = encode_struct<StepArgs>([](StepArgs::Builder b) {
    b.setStep(5);
    b.setSleepMs(1);
  });
  c.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
  return m.bytes();
}

std::string actor_return() {
  Outgoing m(13, "w/actor-3/1", kToken);
  auto r = m.payload().initActorReturn();
  r.setCode(3);
  r.setError("bad argument");
  const std::string result = "result bytes";
  r.setResult(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(result.data()), result.size()));
  return m.bytes();
}

// Reads every field a handler might read, to prove a decoded frame is safe to use.
void touch_everything(const Frame& f) {
  auto env = f.envelope();
  (void)env.getSender().size();
  auto p = f.payload();
  (void)payload_name(p.which());
  if (p.which() == Envelope::Payload::REGISTER_NODE) {
    auto r = p.getRegisterNode();
    for (auto x : r.getResources()) (void)x.getName().size();
    for (auto w : r.getWorkers()) (void)w.getActorId().size();
    for (auto c : r.getActorClasses()) (void)c.size();
    (void)r.getHostname().size();
  }
  if (p.which() == Envelope::Payload::ACTOR_CALL) {
    (void)p.getActorCall().getActorId().size();
    (void)p.getActorCall().getMethod().size();
    (void)p.getActorCall().getArgs().size();
  }
  if (p.which() == Envelope::Payload::ACTOR_RETURN) {
    (void)p.getActorReturn().getError().size();
    (void)p.getActorReturn().getResult().size();
  }
}

TEST(Wire, RoundTrip) {
  WireCounters c;
  const std::string bytes = ping(42);
  auto f = decode_envelope(bytes.data(), bytes.size(), opts(), &c);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f.value().request_id(), 42u);
  EXPECT_EQ(f.value().payload().which(), Envelope::Payload::PING);
  EXPECT_EQ(std::string(f.value().envelope().getSender().cStr()), "cli/test");
  EXPECT_EQ(c.decoded.load(), 1u);
  EXPECT_EQ(c.rejected(), 0u);
}

TEST(Wire, UnalignedFrameDecodes) {
  // ZeroMQ frames over tcp are not 8-byte aligned (docs/dependencies.md#unaligned-zeromq-frames).
  const std::string bytes = register_node();
  std::vector<char> buf(bytes.size() + 3);
  std::memcpy(buf.data() + 3, bytes.data(), bytes.size());
  auto f = decode_envelope(buf.data() + 3, bytes.size(), opts(), nullptr);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f.value().payload().getRegisterNode().getResources()[0].getAmount(), 4.0);
}

TEST(Wire, EmptyAndRaggedFramesAreMalformed) {
  WireCounters c;
  EXPECT_EQ(decode_envelope(nullptr, 0, opts(), &c).status().code(), StatusCode::kInvalidArgument);
  const std::string bytes = ping();
  EXPECT_EQ(decode_envelope(bytes.data(), bytes.size() - 3, opts(), &c).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.malformed.load(), 2u);
}

TEST(Wire, OversizedFrameIsRejectedBeforeParsing) {
  WireCounters c;
  DecodeOptions o = opts();
  o.max_frame_bytes = 64;
  std::string big(128, '\0');
  auto f = decode_envelope(big.data(), big.size(), o, &c);
  EXPECT_EQ(f.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(c.oversized.load(), 1u);
  EXPECT_EQ(c.rejected(), 1u);
}

TEST(Wire, OtherProtocolVersionIsRejectedWithItsRequestId) {
  WireCounters c;
  Outgoing m(99, "cli/x", kToken);
  m.envelope().setVersion(PROTOCOL_VERSION + 1);
  m.payload().setPing();
  const std::string bytes = m.bytes();
  uint64_t rid = 0;
  auto f = decode_envelope(bytes.data(), bytes.size(), opts(), &c, &rid);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(f.status().message().find("version"), std::string::npos);
  EXPECT_EQ(rid, 99u);
  EXPECT_EQ(c.bad_version.load(), 1u);
}

TEST(Wire, WrongOrMissingTokenIsUnauthenticated) {
  WireCounters c;
  const std::string wrong = ping(1, std::string(64, 'x'));
  EXPECT_EQ(decode_envelope(wrong.data(), wrong.size(), opts(), &c).status().code(), StatusCode::kPermissionDenied);
  const std::string none = ping(1, "");
  EXPECT_EQ(decode_envelope(none.data(), none.size(), opts(), &c).status().code(), StatusCode::kPermissionDenied);
  const std::string shorter = ping(1, kToken.substr(1));
  EXPECT_EQ(decode_envelope(shorter.data(), shorter.size(), opts(), &c).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(c.unauthenticated.load(), 3u);
}

TEST(Wire, TokenlessErrorsOnlyWhenAllowed) {
  const std::string err = encode_error(5, "controller", "", PermissionDenied("wrong cluster token"));
  EXPECT_FALSE(decode_envelope(err.data(), err.size(), opts(), nullptr).ok());
  DecodeOptions o = opts();
  o.accept_tokenless_errors = true;
  auto f = decode_envelope(err.data(), err.size(), o, nullptr);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(error_status(f.value().payload().getError()).code(), StatusCode::kPermissionDenied);
  // A tokenless frame that is not an error is still refused.
  const std::string p = ping(1, "");
  EXPECT_FALSE(decode_envelope(p.data(), p.size(), o, nullptr).ok());
}

TEST(Wire, UnknownPayloadIsUnimplemented) {
  std::string bytes = ping();
  // Patch the union discriminant (a 16-bit slot in the root's data section) to a value from the
  // future. Layout: 8-byte segment table, 8-byte root pointer, then the root struct's data.
  const uint32_t slot = capnp::Schema::from<Envelope::Payload>().getProto().getStruct().getDiscriminantOffset();
  const uint16_t future = 999;
  std::memcpy(bytes.data() + 16 + 2 * slot, &future, 2);
  WireCounters c;
  auto f = decode_envelope(bytes.data(), bytes.size(), opts(), &c);
  EXPECT_EQ(f.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(f.status().message().find("unknown(999)"), std::string::npos);
  EXPECT_EQ(c.unknown_payload.load(), 1u);
}

TEST(Wire, RandomFramesNeverCrashAndAreAllCounted) {
  std::mt19937_64 rng(1234);
  WireCounters c;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    size_t len = rng() % 512;
    if (i % 2) len &= ~size_t{7};
    std::string buf(len, '\0');
    for (auto& ch : buf) ch = static_cast<char>(rng());
    auto f = decode_envelope(buf.data(), buf.size(), opts(), &c);
    if (f.ok()) touch_everything(f.value());
  }
  EXPECT_EQ(c.decoded.load() + c.rejected(), static_cast<uint64_t>(n));
  EXPECT_GT(c.rejected(), static_cast<uint64_t>(n * 0.99));  // random bytes essentially never carry the token
}

TEST(Wire, MutatedFramesNeverCrash) {
  std::mt19937_64 rng(99);
  WireCounters c;
  const std::vector<std::string> seeds = {ping(), register_node(), actor_call(), actor_return()};
  const int n = 30000;
  for (int i = 0; i < n; ++i) {
    std::string buf = seeds[static_cast<size_t>(i) % seeds.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % buf.size();
      switch (rng() % 3) {
        case 0: buf[pos] = static_cast<char>(rng()); break;          // random byte
        case 1: buf[pos] ^= static_cast<char>(1 << (rng() % 8)); break;  // bit flip
        default: std::memset(buf.data() + (pos & ~size_t{7}), 0xff, std::min<size_t>(8, buf.size() - (pos & ~size_t{7})));
      }
    }
    if (rng() % 10 == 0) buf.resize(buf.size() - 8 * (1 + rng() % 2));  // truncated
    auto f = decode_envelope(buf.data(), buf.size(), opts(), &c);
    if (f.ok()) touch_everything(f.value());
  }
  EXPECT_EQ(c.decoded.load() + c.rejected(), static_cast<uint64_t>(n));
  EXPECT_GT(c.malformed.load(), 0u);
}

// decode_envelope checks the direct-call payloads field by field through the generated readers
// (validate_hot_payload in wire.cc); a field added to one of them must be added there too.
TEST(Wire, HotPayloadFieldListsArePinned) {
  auto names = [](capnp::StructSchema s) {
    std::vector<std::string> v;
    for (auto f : s.getFields()) v.push_back(f.getProto().getName().cStr());
    return v;
  };
  EXPECT_EQ(names(capnp::Schema::from<ActorCall>()), (std::vector<std::string>{"actorId", "incarnation", "method", "args"}));
  EXPECT_EQ(names(capnp::Schema::from<ActorReturn>()), (std::vector<std::string>{"code", "error", "result"}));
  EXPECT_EQ(capnp::Schema::from<Envelope>().getNonUnionFields().size(), 5u);  // version, requestId, sender, token, payload
  for (const std::string& frame : {actor_call(), actor_return()}) {
    auto f = decode_envelope(frame.data(), frame.size(), opts(), nullptr, nullptr);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    touch_everything(f.value());
  }
}

TEST(Wire, StructValueRejectsGarbageAndReadsValid) {
  auto good = encode_struct<Int64Value>([](Int64Value::Builder b) { b.setValue(-5); });
  auto v = StructValue<Int64Value>::decode(good, "value");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v.value().get().getValue(), -5);
  EXPECT_FALSE(StructValue<Int64Value>::decode("", "value").ok());
  EXPECT_FALSE(StructValue<Int64Value>::decode("1234567", "value").ok());
  std::string bad(16, '\xff');
  auto r = StructValue<StepArgs>::decode(bad, "step args");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("step args"), std::string::npos);
}

TEST(Wire, PayloadNamesComeFromTheSchema) {
  EXPECT_EQ(payload_name(Envelope::Payload::REGISTER_NODE), "registerNode");
  EXPECT_EQ(payload_name(Envelope::Payload::ACTOR_CALL), "actorCall");
  EXPECT_EQ(payload_name(static_cast<Envelope::Payload::Which>(500)), "unknown(500)");
}

TEST(Wire, TokenEqual) {
  EXPECT_TRUE(token_equal("abc", "abc"));
  EXPECT_FALSE(token_equal("abc", "abd"));
  EXPECT_FALSE(token_equal("abc", "ab"));
}

}  // namespace
}  // namespace mariana::proto
