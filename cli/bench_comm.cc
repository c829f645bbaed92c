// `mariana bench comm`: the Gloo communicator's collectives (allreduce, all-gather, reduce-scatter,
// all-to-all) between N local processes forked by this command (rendezvous through a FileStore in
// a temp dir, TCP over loopback), at sizes from --min-bytes to --max-bytes (×4 steps). Sizes follow
// nccl-tests: the size is the largest buffer of the op (allreduce's buffer, all-gather's output,
// reduce-scatter's input, all-to-all's send buffer); algbw = size / time; busbw = algbw × 2(n-1)/n
// for allreduce and × (n-1)/n for the others. Times are rank 0's: the median (and the slowest) of
// `reps` calls, each timed alone, after a warm-up call and a barrier. Same-run references: raw
// Gloo, the same collective called straight on the communicator's Gloo context (no argument
// checks, no error mapping; reduce-scatter in place, without the copies), its calls alternating
// with ours, and of_raw_gloo = raw time / our time (1.0: the communicator costs nothing); and a
// memcpy of each size. Reported, never asserted. With --weights CONFIG it times the RL weight sync
// instead (rl/weight_sync.h: header, buckets, checksum) against one plain broadcast of the same bytes.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/math.h>
#include <gloo/reduce_scatter.h>

#include "comm/gloo_communicator.h"
#include "core/file_util.h"
#include "model/config.h"
#include "model/model.h"
#include "rl/weight_sync.h"

namespace mariana::cli {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Calls to time at `bytes`: about 64 MiB moved per measurement, between 3 and 50 calls.
int reps_for(int64_t bytes) { return static_cast<int>(std::clamp<int64_t>((64LL << 20) / bytes, 3, 50)); }

std::vector<int64_t> sizes(int64_t min_bytes, int64_t max_bytes) {
  std::vector<int64_t> out;
  for (int64_t b = min_bytes; b <= max_bytes; b *= 4) out.push_back(b);
  return out;
}

// Seconds of each of reps_for(bytes) calls of a() and of b(), each sorted, after one warm-up call
// of each and a barrier. Calls alternate (a, b, a, b, ...) so that a change in the machine's load
// falls on both alike.
Result<std::pair<std::vector<double>, std::vector<double>>> time_pair(comm::Communicator& c, int64_t bytes,
                                                                      const std::function<Status()>& a,
                                                                      const std::function<Status()>& b) {
  MARIANA_RETURN_IF_ERROR(a());
  MARIANA_RETURN_IF_ERROR(b());
  MARIANA_RETURN_IF_ERROR(c.barrier());
  std::vector<double> ta, tb;
  for (int i = 0; i < reps_for(bytes); ++i) {
    for (auto [fn, times] : {std::pair{&a, &ta}, std::pair{&b, &tb}}) {
      const auto t0 = Clock::now();
      MARIANA_RETURN_IF_ERROR((*fn)());
      times->push_back(seconds_since(t0));
    }
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return std::pair{std::move(ta), std::move(tb)};
}

// One rank's whole run; rank 0 returns the rows, the others an empty array.
// Weight sync (rl/weight_sync.h) of a model of `config` from rank 0, against one communicator
// broadcast of the same bytes as a single buffer, alternating; rank 0's row.
Result<json> weight_sync_row(comm::Communicator& c, const ModelConfig& config, int64_t bucket_bytes, bool verify) {
  Model<float> model(config);
  if (c.rank() == 0) model.init_weights(1);
  const int64_t n = model.table().arena_size(), bytes = n * static_cast<int64_t>(sizeof(float));
  std::vector<float> flat(static_cast<size_t>(n), 0.5f);
  rl::WeightSyncOptions o;
  o.bucket_bytes = bucket_bytes;
  o.verify = verify;
  int64_t version = 0, buckets = 0;
  MARIANA_ASSIGN_OR_RETURN(auto timed, time_pair(
                                           c, bytes,
                                           [&]() -> Status {
                                             MARIANA_ASSIGN_OR_RETURN(auto r, rl::weight_sync(c, 0, model, ++version, o));
                                             buckets = r.buckets;
                                             return Status::Ok();
                                           },
                                           [&] { return c.broadcast(flat, 0); }));
  const double s = timed.first[timed.first.size() / 2], b = timed.second[timed.second.size() / 2];
  return json{{"op", "weight_sync"}, {"bytes", bytes}, {"buckets", buckets}, {"verify", verify}, {"us", s * 1e6},
              {"max_us", timed.first.back() * 1e6}, {"broadcast_us", b * 1e6}, {"of_broadcast", s / b},
              {"GBps", static_cast<double>(bytes) / s / 1e9}, {"reps", reps_for(bytes)}};
}

Result<json> rank_main(const std::string& dir, int rank, int n, const std::vector<int64_t>& byte_sizes,
                       std::chrono::milliseconds timeout, const std::string& weights_config, int64_t bucket_bytes,
                       bool verify) {
  MARIANA_ASSIGN_OR_RETURN(std::shared_ptr<comm::FileStore> store, comm::FileStore::open(dir + "/store"));
  comm::GlooOptions options;
  options.group = "bench";
  options.rank = rank;
  options.size = n;
  options.timeout = timeout;
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<comm::GlooCommunicator> c, comm::GlooCommunicator::connect(store, options));
  json rows = json::array();
  if (!weights_config.empty()) {  // the weight-sync benchmark instead of the collectives
    MARIANA_ASSIGN_OR_RETURN(ModelConfig config, model_config_load(weights_config));
    MARIANA_ASSIGN_OR_RETURN(json row, weight_sync_row(*c, config, bucket_bytes, verify));
    if (rank == 0) rows.push_back(row);
    return rows;
  }
  uint32_t raw_tag = 1u << 30;  // raw Gloo's tags, apart from the communicator's
  for (int64_t bytes : byte_sizes) {
    const size_t floats = static_cast<size_t>(bytes) / sizeof(float);
    const size_t block = floats / n;
    std::vector<float> big(floats, 1.0f), big2(floats, 0.0f), small(block, 1.0f);
    const std::vector<int64_t> counts(n, static_cast<int64_t>(block));
    const std::shared_ptr<gloo::Context> ctx = c->gloo_context();
    struct Op {
      const char* name;
      std::function<Status()> comm;
      std::function<void()> raw;  // the same collective straight on Gloo (throws on failure)
    };
    const std::vector<Op> ops = {
        {"allreduce", [&] { return c->allreduce_sum(big); },
         [&] {
           gloo::AllreduceOptions o(ctx);
           o.setOutput(big.data(), floats);
           o.setReduceFunction([](void* z, const void* a, const void* b, size_t k) { gloo::sum<float>(z, a, b, k); });
           o.setAlgorithm(static_cast<size_t>(bytes) >= options.ring_allreduce_min_bytes
                              ? gloo::AllreduceOptions::Algorithm::RING
                              : gloo::AllreduceOptions::Algorithm::BCUBE);
           o.setTag(raw_tag++);
           gloo::allreduce(o);
         }},
        {"all_gather", [&] { return c->all_gather(small, std::span<float>(big.data(), block * n)); },
         [&] {
           gloo::AllgatherOptions o(ctx);
           o.setInput(small.data(), block);
           o.setOutput(big.data(), block * n);
           o.setTag(raw_tag++);
           gloo::allgather(o);
         }},
        {"reduce_scatter", [&] { return c->reduce_scatter_sum(std::span<const float>(big.data(), block * n), small); },
         [&] {  // in place on the input, so without the communicator's copy in and out
           gloo::ReduceScatterHalvingDoubling<float> algorithm(ctx, {big.data()}, static_cast<int>(block * n),
                                                               std::vector<int>(n, static_cast<int>(block)));
           algorithm.run();
         }},
        {"all_to_all",
         [&] {
           return c->all_to_all_v(std::span<const float>(big.data(), block * n), counts,
                                  std::span<float>(big2.data(), block * n), counts);
         },
         [&] {
           gloo::AlltoallvOptions o(ctx);
           o.setInput(big.data(), counts);
           o.setOutput(big2.data(), counts);
           o.setTag(raw_tag++);
           gloo::alltoallv(o);
         }},
    };
    for (const Op& op : ops) {
      const char* name = op.name;
      const std::function<Status()> raw_call = [&]() -> Status {
        try {
          op.raw();
          return Status::Ok();
        } catch (const std::exception& e) {
          return Unavailable(std::string("bench comm: raw Gloo ") + name + ": " + e.what());
        }
      };
      MARIANA_ASSIGN_OR_RETURN(auto timed, time_pair(*c, bytes, op.comm, raw_call));
      const std::vector<double>& times = timed.first;
      const std::vector<double>& raw = timed.second;
      const double s = times[times.size() / 2], raw_s = raw[raw.size() / 2];
      const double algbw = static_cast<double>(bytes) / s / 1e9;
      const double factor = std::strcmp(name, "allreduce") == 0 ? 2.0 * (n - 1) / n : 1.0 * (n - 1) / n;
      rows.push_back({{"op", name}, {"bytes", bytes}, {"us", s * 1e6}, {"algbw_GBps", algbw},
                      {"busbw_GBps", algbw * factor}, {"max_us", times.back() * 1e6},
                      {"raw_gloo_us", raw_s * 1e6}, {"of_raw_gloo", raw_s / s}, {"reps", reps_for(bytes)}});
    }
  }
  return rank == 0 ? rows : json::array();
}

// memcpy GB/s at `bytes` (counting the bytes copied once), mean over reps_for(bytes) after a warm-up.
double memcpy_gbps(int64_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  std::memcpy(b.data(), a.data(), bytes);
  const int reps = reps_for(bytes);
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
    a[i % bytes] = static_cast<char>(i);
    std::memcpy(b.data(), a.data(), bytes);
  }
  return static_cast<double>(bytes) * reps / seconds_since(t0) / 1e9;
}

}  // namespace

int bench_comm_main(int argc, char** argv) {
  cxxopts::Options o("mariana bench comm", "Time the Gloo collectives between local processes");
  o.add_options()("ranks", "processes", cxxopts::value<int>()->default_value("2"))(
      "min-bytes", "smallest size", cxxopts::value<int64_t>()->default_value("4096"))(
      "max-bytes", "largest size (sizes step ×4)", cxxopts::value<int64_t>()->default_value("67108864"))(
      "timeout-s", "limit of each collective, and ×10 of the whole run", cxxopts::value<int>()->default_value("30"))(
      "weights", "instead: weight sync (rl/weight_sync.h) of a model of this config.json from rank 0 to the "
                 "others, against one broadcast of the same bytes", cxxopts::value<std::string>())(
      "bucket-bytes", "weight sync's bucket size", cxxopts::value<int64_t>()->default_value("33554432"))(
      "verify", "weight sync with its checksum and agreement (WeightSyncOptions::verify)")(
      "json", "print one JSON object")("h,help", "help");
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return report(InvalidArgument(std::string("bench comm: ") + e.what()));
  }
  if (r.count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  const int n = r["ranks"].as<int>(), timeout_s = r["timeout-s"].as<int>();
  const int64_t min_bytes = r["min-bytes"].as<int64_t>(), max_bytes = r["max-bytes"].as<int64_t>();
  if (n < 2 || n > 64 || timeout_s <= 0 || min_bytes < 4 * 64 || max_bytes < min_bytes || max_bytes > (1LL << 30)) {
    return report(InvalidArgument(
        "bench comm: expected 2 <= --ranks <= 64, --timeout-s > 0, 256 <= --min-bytes <= --max-bytes <= 1 GiB"));
  }
  const std::vector<int64_t> byte_sizes = sizes(min_bytes, max_bytes);
  const std::string weights = r.count("weights") ? r["weights"].as<std::string>() : "";
  const int64_t bucket_bytes = r["bucket-bytes"].as<int64_t>();
  if (bucket_bytes < 4) return report(InvalidArgument("bench comm: --bucket-bytes must be at least 4"));
  if (!weights.empty()) {
    if (auto c = model_config_load(weights); !c.ok()) return report(c.status());
  }

  std::string tmpl = (std::filesystem::temp_directory_path() / "mariana-bench-comm.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return report(errno_status(errno, "bench comm: mkdtemp " + tmpl));
  const std::string dir = tmpl;
  std::vector<pid_t> pids;
  for (int rank = 0; rank < n; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      Result<json> rows = rank_main(dir, rank, n, byte_sizes, std::chrono::seconds(timeout_s), weights, bucket_bytes,
                                    r.count("verify") > 0);
      if (!rows.ok()) {
        std::fprintf(stderr, "mariana: bench comm: rank %d: %s\n", rank, rows.status().to_string().c_str());
        ::_exit(kExitFailure);
      }
      if (rank == 0 && !write_file_atomic(dir + "/rows.json", rows->dump()).ok()) ::_exit(kExitFailure);
      ::_exit(kExitOk);
    }
    pids.push_back(pid);
  }
  // The memcpy yardstick runs after the ranks finish, so it does not compete with them for cores.
  bool failed = false;
  const auto deadline = Clock::now() + std::chrono::seconds(10LL * timeout_s);
  for (pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        for (pid_t p : pids) ::kill(p, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == kExitOk);
  }
  Result<std::string> rows_text = read_file(dir + "/rows.json");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (failed || !rows_text.ok()) return report(Unavailable("bench comm: a rank failed or was killed at the deadline"));
  json out;
  out["ranks"] = n;
  out["backend"] = "gloo tcp 127.0.0.1";
  out["collectives"] = json::parse(*rows_text);
  json yard = json::array();
  for (int64_t bytes : byte_sizes) yard.push_back({{"bytes", bytes}, {"GBps", memcpy_gbps(bytes)}});
  out["yardstick_memcpy"] = yard;
  if (!weights.empty()) {
    out.erase("yardstick_memcpy");
    out["weight_sync"] = out["collectives"][0];
    out.erase("collectives");
    out["model"] = weights;
  }
  if (r.count("json")) {
    std::printf("%s\n", out.dump().c_str());
    return kExitOk;
  }
  if (!weights.empty()) {
    const json& w = out["weight_sync"];
    std::printf("weight sync%s of %s (%lld bytes, %lld bucket(s)) to %d rank(s): median %.1f us (max %.1f), %.3f GB/s; "
                "one broadcast of the same bytes %.1f us; sync / broadcast = %.2f\n",
                w["verify"].get<bool>() ? " (verified)" : "", weights.c_str(), static_cast<long long>(w["bytes"].get<int64_t>()),
                static_cast<long long>(w["buckets"].get<int64_t>()), n - 1, w["us"].get<double>(),
                w["max_us"].get<double>(), w["GBps"].get<double>(), w["broadcast_us"].get<double>(),
                w["of_broadcast"].get<double>());
    return kExitOk;
  }
  std::printf("%-16s %10s %11s %11s %11s %8s %11s %11s %12s\n", "op", "bytes", "median us", "max us",
              "raw Gloo us", "of raw", "algbw GB/s", "busbw GB/s", "memcpy GB/s");
  for (const json& row : out["collectives"]) {
    double mc = 0;
    for (const json& y : yard)
      if (y["bytes"] == row["bytes"]) mc = y["GBps"].get<double>();
    std::printf("%-16s %10lld %11.1f %11.1f %11.1f %8.2f %11.3f %11.3f %12.2f\n", row["op"].get<std::string>().c_str(),
                static_cast<long long>(row["bytes"].get<int64_t>()), row["us"].get<double>(), row["max_us"].get<double>(),
                row["raw_gloo_us"].get<double>(), row["of_raw_gloo"].get<double>(),
                row["algbw_GBps"].get<double>(), row["busbw_GBps"].get<double>(), mc);
  }
  return kExitOk;
}

}  // namespace mariana::cli
