// The built-in actor classes (see actor.h).
#include <chrono>
#include <exception>
#include <thread>

#include <kj/exception.h>

#include "proto/wire.h"
#include "workers/actor.h"
#include "workers/rl_campaign.h"

namespace mariana::workers {

namespace {

std::string int64_bytes(int64_t v) {
  return proto::encode_struct<proto::Int64Value>([&](proto::Int64Value::Builder b) { b.setValue(v); });
}

class Counter final : public Actor {
 public:
  // Constructor arguments: {"initial": N} starts the total at N (default 0).
  static Result<std::unique_ptr<Counter>> create(const nlohmann::json& args) {
    auto c = std::make_unique<Counter>();
    for (const auto& [key, value] : args.items()) {
      if (key != "initial") return InvalidArgument("actor class counter: unknown constructor argument '" + key + "'");
      if (!value.is_number_integer())
        return InvalidArgument("actor class counter: constructor argument 'initial': expected an integer, got " +
                               value.dump());
      c->total_ = value.get<int64_t>();
    }
    return c;
  }
  Result<std::string> step(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::StepArgs>::decode(args, "counter.step args"));
    if (a.get().getSleepMs() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(a.get().getSleepMs()));
    return int64_bytes(++steps_);
  }
  Result<std::string> add(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::Int64Value>::decode(args, "counter.add args"));
    total_ += a.get().getValue();
    return int64_bytes(total_);
  }
  Result<std::string> get(std::string_view) { return int64_bytes(total_); }
  Result<std::string> fail(std::string_view) { return FailedPrecondition("counter.fail: failing on purpose"); }

 private:
  int64_t steps_ = 0;
  int64_t total_ = 0;
};

class Echo final : public Actor {
 public:
  Result<std::string> echo(std::string_view args) { return std::string(args); }
  Result<std::string> noop(std::string_view) { return std::string(); }
};

ActorRegistry make_registry() {
  ActorRegistry r;
  r.add(ActorClassBuilder<Counter>("counter")
            .method("step", &Counter::step)
            .method("add", &Counter::add)
            .method("get", &Counter::get)
            .method("fail", &Counter::fail)
            .build());
  r.add(ActorClassBuilder<Echo>("echo").method("echo", &Echo::echo).method("noop", &Echo::noop).build());
  r.add(trainer_actor_class());
  r.add(rl_generator_class());
  r.add(rl_scorer_class());
  r.add(rl_reference_class());
  return r;
}

}  // namespace

const ActorRegistry& builtin_actor_registry() {
  static const ActorRegistry registry = make_registry();
  return registry;
}

Result<std::string> actor_invoke(const ActorClass& cls, Actor& actor, std::string_view method, std::string_view args) {
  auto it = cls.methods.find(method);
  if (it == cls.methods.end())
    return NotFound("actor class " + cls.name + " has no method \"" + std::string(method) + "\"");
  // A method that throws (a Cap'n Proto reader past its limits, a JSON type error) fails its call,
  // not the worker.
  try {
    return it->second(actor, args);
  } catch (const kj::Exception& e) {
    return Internal("actor class " + cls.name + ", method " + std::string(method) + ": " + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Internal("actor class " + cls.name + ", method " + std::string(method) + ": " + e.what());
  }
}

}  // namespace mariana::workers
