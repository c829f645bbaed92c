# Mariana control-plane messages: one Envelope per ZeroMQ frame. See wire_format.md for the
# framing, the versioning rule and the decode boundary (proto/wire.h).
@0xb36aa01ac8faf09f;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mariana::proto");

# The major protocol version. A peer rejects an envelope whose version differs (error reply,
# counted). Adding fields or union members at the end is compatible and keeps the version.
const protocolVersion :UInt16 = 1;

struct Resource {
  name @0 :Text;      # "CPU", "GPU", "memory" (bytes) or a custom name
  amount @1 :Float64;
}

struct Error {
  code @0 :UInt16;    # mariana::StatusCode
  message @1 :Text;
}

# ---- agents ----
struct WorkerRef {
  actorId @0 :Text;
  incarnation @1 :UInt32;
  pid @2 :UInt32;
}

struct RegisterNode {
  nodeId @0 :Text;
  resources @1 :List(Resource);
  hostname @2 :Text;
  pid @3 :UInt32;
  workers @4 :List(WorkerRef);   # workers this agent runs now (re-registration after a restart)
  logDir @5 :Text;
  actorClasses @6 :List(Text);   # the actor classes its workers can host
}

struct RegisterNodeReply {
  epoch @0 :UInt64;              # the controller process's random start id
  heartbeatMs @1 :UInt32;
}

struct Heartbeat {
  nodeId @0 :Text;
  actorId @1 :Text;              # empty for an agent's heartbeat
  incarnation @2 :UInt32;
}

struct HeartbeatReply {
  epoch @0 :UInt64;
  known @1 :Bool;                # false: the controller does not know this sender; re-register
}

struct StartWorker {
  actorId @0 :Text;
  incarnation @1 :UInt32;
  className @2 :Text;
  jobId @3 :Text;
  args @4 :Text;                 # the actor's constructor arguments (ActorSpec.args)
}

struct StopWorker {
  actorId @0 :Text;
  incarnation @1 :UInt32;
}

struct WorkerExited {
  nodeId @0 :Text;
  actorId @1 :Text;
  incarnation @2 :UInt32;
  exitCode @3 :Int32;            # -1 when killed by a signal
  signal @4 :Int32;
}

# ---- workers ----
struct RegisterWorker {
  actorId @0 :Text;
  incarnation @1 :UInt32;
  nodeId @2 :Text;
  address @3 :Text;              # the worker's own ROUTER endpoint for direct calls (tcp)
  pid @4 :UInt32;
  localAddress @5 :Text;         # the same ROUTER on a Unix-domain socket (ipc://...); "" if none
  hostId @6 :Text;               # the worker's host (proto/host.h: the kernel's boot id)
}

struct RegisterWorkerReply {
  accept @0 :Bool;               # false: stale incarnation or unknown actor; the worker exits
  epoch @1 :UInt64;
  reason @2 :Text;
}

# ---- actors, placement groups ----
struct ActorSpec {
  className @0 :Text;
  name @1 :Text;
  resources @2 :List(Resource);
  maxRestarts @3 :Int32;         # -1: unlimited
  maxTaskRetries @4 :Int32;      # -1: unlimited
  placementGroupId @5 :Text;
  bundleIndex @6 :Int32;
  jobId @7 :Text;
  args @8 :Text;                 # constructor arguments: a JSON object ("" = none), given to every incarnation
}

struct CreateActorReply {
  actorId @0 :Text;
}

struct WaitActor {
  actorId @0 :Text;
  timeoutMs @1 :UInt32;          # reply once the actor is ALIVE or DEAD, or at the timeout
}

struct ActorInfo {
  actorId @0 :Text;
  state @1 :Text;
  address @2 :Text;
  incarnation @3 :UInt32;
  nodeId @4 :Text;
  deathCause @5 :Text;
  localAddress @6 :Text;         # as in RegisterWorker: callers on host `hostId` use it instead
  hostId @7 :Text;               # of `address` (proto::actor_endpoint)
}

struct KillActor {
  actorId @0 :Text;
  noRestart @1 :Bool;
}

struct Bundle {
  resources @0 :List(Resource);
}

struct CreatePlacementGroup {
  name @0 :Text;
  strategy @1 :Text;             # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
  bundles @2 :List(Bundle);
}

struct PlacementGroupReply {
  pgId @0 :Text;
  state @1 :Text;
}

struct RemovePlacementGroup {
  pgId @0 :Text;
}

# ---- jobs and queries ----
struct SubmitJob {
  specToml @0 :Text;             # the spec after --set overrides
  specPath @1 :Text;             # names the file in errors
}

struct SubmitJobReply {
  jobId @0 :Text;
}

struct StopJob {
  jobId @0 :Text;
}

# Monitoring reads return one JSON document (the CLI renders it as a table or prints it).
# Restarts a FAILED or STOPPED training job (a new trainer resumes from its last registered
# checkpoint, in its run directory) or pipeline (each stage that did not succeed, the same way).
struct ResumeJob {
  jobId @0 :Text;
}

struct Query {
  what @0 :Text;                 # status | nodes | actors | actor | jobs | job | metrics | counters
  id @1 :Text;
}

struct QueryReply {
  json @0 :Text;
}

# ---- actor calls ----
struct ActorCall {
  actorId @0 :Text;
  incarnation @1 :UInt32;        # 0: any
  method @2 :Text;
  args @3 :Data;                 # a Cap'n Proto message of the method's argument type
}

struct ActorReturn {
  code @0 :UInt16;               # mariana::StatusCode; 0 = OK
  error @1 :Text;
  result @2 :Data;
}

struct KvPut {
  key @0 :Text;
  value @1 :Data;
}

struct KvGet {
  key @0 :Text;
}

struct KvValue {
  found @0 :Bool;
  value @1 :Data;
}

# Argument and result types of the built-in actor classes (workers/builtin_actors.cc).
struct StepArgs {
  step @0 :UInt64;
  sleepMs @1 :UInt32;
}

struct Int64Value {
  value @0 :Int64;
}

# Arguments of the trainer actor's `start` method (workers/trainer_actor.cc): run a `pretrain` or
# `extend` job. Repeating start for the job it already runs is a no-op (after a controller restart).
struct TrainerStart {
  jobId @0 :Text;
  specToml @1 :Text;             # the spec after --set overrides, paths made absolute by submit
  specPath @2 :Text;             # names the file in errors
  runDir @3 :Text;               # the job's run directory (checkpoints, metrics.jsonl, data)
  resumeFrom @4 :Text;           # the last checkpoint the controller registered; "" = start fresh
  recordedStep @5 :Int64;        # the last step whose metrics the controller holds: a trainer that
                                 # resumes from a later checkpoint re-reports the steps in between
  rank @6 :Int32;                # a parallel job's gang: this actor's rank of `world` ([parallel] dp·ep)
  world @7 :Int32;               # 0 or 1: a one-process job
  generation @8 :UInt64;         # the gang's start number: every (re)start of the whole gang rendezvouses
                                 # under keys of its own in the controller's key-value table
}

# Arguments and results of an RL campaign's roles (workers/rl_actors.cc). Token ids travel as
# lists, log-probs as Float64 (bit for bit what the role computed), weights as raw float32 bytes.

# rl_generator.load_weights: one bucket of the policy's parameter arena. A generator assembles the
# buckets of `version` aside and takes them for sampling only when the last one has arrived whole
# and its XXH64 equals `checksum`.
struct RlWeights {
  version @0 :Int64;
  modelDir @1 :Text;             # a checkpoint directory whose config.json shapes the model
  offset @2 :Int64;              # in floats
  total @3 :Int64;               # the arena's length in floats
  data @4 :Data;                 # float32, little-endian as in memory
  checksum @5 :UInt64;           # XXH64 of the whole arena (seed 0)
}

# rl_generator.join_group: join the learner's weights group (comm/ Gloo, rank 0 the learner),
# rendezvousing under `prefix` in the controller's key-value table.
struct RlWeightsGroup {
  group @0 :Text;                # unique per formation of the group
  prefix @1 :Text;
  rank @2 :Int32;
  world @3 :Int32;
  timeoutMs @4 :Int64;           # of the rendezvous and of each collective
  modelDir @5 :Text;             # a checkpoint directory whose config.json shapes the model
}

# rl_generator.receive_weights: the receiving side of rl/weight_sync.h's broadcast, whose header
# carries the version; the generator samples from no version until it has succeeded.
struct RlWeightsReceive {
  bucketBytes @0 :Int64;
}

struct RlGenerateRequest {
  prompt @0 :List(Int32);
  maxNewTokens @1 :Int64;
  temperature @2 :Float64;
  topP @3 :Float64;
  topK @4 :Int64;
  seed @5 :UInt64;
  stream @6 :Int64;
  stopTokens @7 :List(Int32);
}

# rl_generator.generate: the requests, sampled from `version` only (else FailedPrecondition).
struct RlGenerate {
  version @0 :Int64;
  threads @1 :Int32;
  requests @2 :List(RlGenerateRequest);
}

struct RlGenerated {
  version @0 :Int64;             # the version every sample came from
  tokens @1 :List(List(Int32));
  finish @2 :List(Text);
}

# rl_scorer.score: the composite of `scorers` with `weights` on each sample.
struct RlScore {
  scorers @0 :List(Text);
  weights @1 :List(Float64);
  samples @2 :List(RlRewardSample);
  rewardModel @3 :Text;          # the "model" scorer's checkpoint ("" without one)
  threads @4 :Int32;             # the reward model's kernels (train.threads; 0 = the machine's cores)
}

struct RlRewardSample {
  prompt @0 :Text;
  response @1 :Data;             # the decoded response's bytes as they are (not always UTF-8)
  hasAnswer @2 :Bool;
  answer @3 :Text;
  tests @4 :List(RlCodeTest);
}

struct RlCodeTest {
  stdin @0 :Text;
  stdout @1 :Text;
}

struct RlScored {
  rewards @0 :List(Float64);
  ok @1 :List(Bool);
  reasons @2 :List(Text);
  parts @3 :List(Text);          # each sample's parts as a JSON object
}

# rl_reference.logprobs: the reference's tempered log-probs of a learner batch (packed as the
# learner packs it); the result is an RlLogprobs of B·S values.
struct RlReferenceLogprobs {
  referenceDir @0 :Text;
  temperature @1 :Float64;
  padId @2 :Int32;
  threads @3 :Int32;
  prompts @4 :List(List(Int32));
  responses @5 :List(List(Int32));
}

struct RlLogprobs {
  values @0 :List(Float64);
}

# Progress an actor reports on its own (a trainer's steps and checkpoints). The worker sends its
# reports in order, one at a time, and resends one until the controller answers `ok` (sent only
# once the report is durable) or `error` (a stale incarnation: dropped). Reports are idempotent.
struct ActorReport {
  actorId @0 :Text;
  incarnation @1 :UInt32;
  seq @2 :UInt64;                # 1, 2, ... per incarnation
  event @3 :Text;                # started | step | checkpoint | done | failed
  step @4 :Int64;                # started: the step resumed from (0 fresh); else the step it is about
  json @5 :Text;                 # started: {"steps": N}; step: the step's metrics; done: the summary
  path @6 :Text;                 # started: the checkpoint resumed from; checkpoint, done: its directory
  message @7 :Text;              # failed: why
}

# An agent that stops cleanly says so before it exits: the controller marks the node DEAD at once
# and restarts its actors elsewhere instead of waiting for the node timeout.
struct DeregisterNode {
  nodeId @0 :Text;
  reason @1 :Text;
}

struct Envelope {
  version @0 :UInt16;
  requestId @1 :UInt64;          # a reply carries its request's id; 0 when unknown
  sender @2 :Text;               # "cli/..", "a/<node>", "w/<actor>/<incarnation>", "controller"
  token @3 :Data;                # the cluster token (DIR/cluster.token)
  payload :union {
    error @4 :Error;
    ok @5 :Void;
    ping @6 :Void;
    registerNode @7 :RegisterNode;
    registerNodeReply @8 :RegisterNodeReply;
    heartbeat @9 :Heartbeat;
    heartbeatReply @10 :HeartbeatReply;
    startWorker @11 :StartWorker;
    stopWorker @12 :StopWorker;
    workerExited @13 :WorkerExited;
    registerWorker @14 :RegisterWorker;
    registerWorkerReply @15 :RegisterWorkerReply;
    createActor @16 :ActorSpec;
    createActorReply @17 :CreateActorReply;
    waitActor @18 :WaitActor;
    actorInfo @19 :ActorInfo;
    killActor @20 :KillActor;
    createPlacementGroup @21 :CreatePlacementGroup;
    placementGroupReply @22 :PlacementGroupReply;
    removePlacementGroup @23 :RemovePlacementGroup;
    submitJob @24 :SubmitJob;
    submitJobReply @25 :SubmitJobReply;
    stopJob @26 :StopJob;
    query @27 :Query;
    queryReply @28 :QueryReply;
    actorCall @29 :ActorCall;
    actorReturn @30 :ActorReturn;
    kvPut @31 :KvPut;
    kvGet @32 :KvGet;
    kvValue @33 :KvValue;
    shutdown @34 :Void;
    actorReport @35 :ActorReport;
    deregisterNode @36 :DeregisterNode;
    resumeJob @37 :ResumeJob;
  }
}
