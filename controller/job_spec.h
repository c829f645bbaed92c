// Job specs (TOML) as the controller validates them at submit. One kind runs now: "actors", the
// generic actor job (a placement group with one bundle per actor, then `steps` rounds of a
// `step` call on every actor, progress and a metric point per step, a checkpoint record every
// `checkpoint_every` steps). Training kinds are recognised and refused until the training engine
// exists. Example: configs/jobs/actors-demo.toml (tests/integration/ writes its own).
//
//   name = "demo"                # optional
//   kind = "actors"
//   [actors]
//   class = "counter"            # an actor class some agent offers
//   count = 2
//   max_restarts = 3             # default 3; -1 unlimited
//   max_task_retries = -1        # default -1 (a step call is retried on the next incarnation)
//   resources = { CPU = 1 }      # per actor = per bundle
//   [placement]
//   strategy = "SPREAD"          # PACK (default) | SPREAD | STRICT_PACK | STRICT_SPREAD
//   [run]
//   steps = 20
//   step_ms = 10                 # how long each step call works in the actor
//   checkpoint_every = 5         # 0: none
#pragma once

#include <string>
#include <vector>

#include "controller/tables.h"
#include "core/status.h"

namespace mariana::controller {

struct ActorJobSpec {
  std::string name;
  std::string kind;
  std::string actor_class;
  int64_t count = 1;
  int32_t max_restarts = 3;
  int32_t max_task_retries = -1;
  Resources resources;
  PgStrategy strategy = PgStrategy::kPack;
  int64_t steps = 1;
  int64_t step_ms = 0;
  int64_t checkpoint_every = 0;
};

// Parses and validates; errors read "<path>:<line>:<col>: field 'actors.count': ...".
Result<ActorJobSpec> job_spec_parse(const std::string& toml_text, const std::string& path);

}  // namespace mariana::controller
