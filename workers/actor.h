// Actor classes registered in C++ with their methods. A worker process hosts one actor: it looks
// its class up in an ActorRegistry, constructs it, and runs each ActorCall's method one at a time,
// in arrival order: on the worker's thread, or for a class's long methods on a thread of their own
// while the worker's thread goes on heartbeating. Arguments and results are bytes holding a Cap'n Proto
// message of the method's types (proto::encode_struct / proto::StructValue). The built-in classes
// (builtin_actors.cc) serve the generic actor job, the tests and `mariana bench actors`; the
// "trainer" class (trainer_actor.cc) runs `pretrain`, `extend`, `sft` and `rm` jobs.
// An actor may work on threads of its own (the trainer does); what it wants the controller to know
// meanwhile it hands out as ActorEvents, which the worker sends as ActorReport payloads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mariana::workers {

// Something an actor reports to the controller on its own (proto ActorReport without the ids).
struct ActorEvent {
  std::string event;  // started | step | checkpoint | done | failed
  int64_t step = 0;
  std::string json, path, message;
};

class Actor {
 public:
  virtual ~Actor() = default;
  // Events produced since the last call, oldest first. Called from the worker's thread; an actor
  // with threads of its own must make this thread-safe.
  virtual std::vector<ActorEvent> take_events() { return {}; }
};

using ActorMethod = std::function<Result<std::string>(Actor& self, std::string_view args)>;

struct ActorClass {
  std::string name;
  // Constructs an instance from its constructor arguments (a JSON object's text, "" = none);
  // InvalidArgument naming the class and the field when they are not what it takes.
  std::function<Result<std::unique_ptr<Actor>>(const std::string& args)> create;
  std::map<std::string, ActorMethod, std::less<>> methods;
  // Methods that may run for seconds (a generation, a forward pass): the worker runs them on a
  // thread of their own and keeps heartbeating meanwhile; calls that arrive in the meantime wait
  // their turn, so an actor still runs one call at a time, in arrival order.
  std::set<std::string, std::less<>> long_methods;
};

// Typed registration: ActorClassBuilder<Counter>("counter").method("add", &Counter::add).build().
// A class that takes constructor arguments has
//   static Result<std::unique_ptr<T>> create(const nlohmann::json& args);  // args: a JSON object
// (the same object to every incarnation, so a restarted actor is built as the first one was);
// one without it is default-constructed and refuses any argument.
template <typename T>
class ActorClassBuilder {
 public:
  explicit ActorClassBuilder(std::string name) {
    cls_.name = std::move(name);
    cls_.create = [name = cls_.name](const std::string& text) -> Result<std::unique_ptr<Actor>> {
      nlohmann::json args = nlohmann::json::object();
      if (!text.empty()) {
        args = nlohmann::json::parse(text, nullptr, false);
        if (!args.is_object())
          return InvalidArgument("actor class " + name + ": constructor arguments: expected a JSON object, got " + text);
      }
      if constexpr (requires { T::create(args); }) {
        MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<T> made, T::create(args));
        return std::unique_ptr<Actor>(std::move(made));
      } else {
        if (!args.empty())
          return InvalidArgument("actor class " + name + " takes no constructor arguments, got " + args.dump());
        return std::unique_ptr<Actor>(std::make_unique<T>());
      }
    };
  }
  ActorClassBuilder& method(const std::string& name, Result<std::string> (T::*fn)(std::string_view)) {
    cls_.methods[name] = [fn](Actor& self, std::string_view args) { return (static_cast<T&>(self).*fn)(args); };
    return *this;
  }
  ActorClassBuilder& long_method(const std::string& name, Result<std::string> (T::*fn)(std::string_view)) {
    method(name, fn);
    cls_.long_methods.insert(name);
    return *this;
  }
  ActorClass build() { return std::move(cls_); }

 private:
  ActorClass cls_;
};

class ActorRegistry {
 public:
  void add(ActorClass cls) { classes_[cls.name] = std::move(cls); }
  const ActorClass* find(std::string_view name) const {
    auto it = classes_.find(std::string(name));
    return it == classes_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (auto& [n, _] : classes_) out.push_back(n);
    return out;
  }

 private:
  std::map<std::string, ActorClass> classes_;
};

// "counter": step(StepArgs) sleeps sleepMs and returns the number of steps done (Int64Value);
//            add(Int64Value) / get() on a running total; fail() returns an error.
// "echo":    echo(any bytes) returns them; noop() returns nothing.
// "trainer": start(TrainerStart) runs a pretrain, extend, sft, rm or rl job on a thread of its own, reporting
//            started / step / checkpoint / done / failed events (trainer_actor.cc).
// "rl_generator", "rl_scorer", "rl_reference": an RL campaign's roles (rl_campaign.h).
const ActorRegistry& builtin_actor_registry();

ActorClass trainer_actor_class();

// Runs one call on `actor`: NotFound for an unknown method, otherwise the method's result.
Result<std::string> actor_invoke(const ActorClass& cls, Actor& actor, std::string_view method, std::string_view args);

}  // namespace mariana::workers
