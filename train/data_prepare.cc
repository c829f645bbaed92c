// data_prepare: text and JSONL inputs → tokenized shards + index.json in a directory that appears
// atomically (train/shard_format.md). Bad inputs fail with "file:line: reason" or, with skip_bad,
// are skipped and counted. The Tokenizer overload lives in train/data_tokenizer.cc.
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "core/file_util.h"
#include "core/json_util.h"
#include "train/data.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxSkippedWhere = 100;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Reads a file; a missing file stays NotFound, any other failure (a directory, no permission)
// becomes InvalidArgument so that the CLI reports it as bad input.
Result<std::string> read_input(const std::string& path) {
  Result<std::string> r = read_file(path);
  if (!r.ok() && r.status().code() != StatusCode::kNotFound)
    return InvalidArgument(path + ": unreadable: " + r.status().message());
  return r;
}

// Writes shards into a directory as documents arrive, `shard_tokens` tokens or more per shard.
class ShardSink {
 public:
  ShardSink(std::string dir, int64_t vocab_size, int64_t shard_tokens)
      : dir_(std::move(dir)), vocab_size_(vocab_size), shard_tokens_(shard_tokens) {}

  Status add(const std::vector<int32_t>& doc) {
    tokens_.insert(tokens_.end(), doc.begin(), doc.end());
    offsets_.push_back(static_cast<int64_t>(tokens_.size()));
    if (static_cast<int64_t>(tokens_.size()) >= shard_tokens_) return flush();
    return Status::Ok();
  }
  Status flush() {
    if (offsets_.size() <= 1) return Status::Ok();
    char name[32];
    std::snprintf(name, sizeof name, "shard_%05zu.bin", index_.size());
    MARIANA_ASSIGN_OR_RETURN(ShardHeader h, shard_write(dir_ + "/" + name, vocab_size_, offsets_, tokens_));
    nlohmann::ordered_json e;
    e["file"] = name;
    e["documents"] = h.num_documents;
    e["tokens"] = h.num_tokens;
    e["bytes"] = h.file_bytes;
    e["body_xxh64"] = hex64(h.body_xxh64);
    index_.push_back(std::move(e));
    offsets_.assign(1, 0);
    tokens_.clear();
    return Status::Ok();
  }
  const nlohmann::ordered_json& index() const { return index_; }

 private:
  std::string dir_;
  int64_t vocab_size_, shard_tokens_;
  std::vector<int64_t> offsets_{0};
  std::vector<int32_t> tokens_;
  nlohmann::ordered_json index_ = nlohmann::ordered_json::array();
};

// The directory to write and its parent, with a trailing slash tolerated.
fs::path normalized_target(const std::string& out_dir) {
  fs::path p = fs::path(out_dir).lexically_normal();
  if (p.filename().empty() && p.has_parent_path()) p = p.parent_path();
  return p;
}

}  // namespace

bool data_held_out(std::string_view text, double fraction) {
  if (!(fraction > 0)) return false;
  const uint64_t h = XXH64(text.data(), text.size(), 0);
  return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;  // uniform in [0, 1)
}

Result<PrepareReport> data_prepare(const TokenEncoder& enc, const PrepareOptions& opt) {
  if (!enc.encode) return InvalidArgument("data prepare: no encoder");
  if (enc.vocab_size <= 0) return InvalidArgument("data prepare: vocab_size must be positive");
  if (opt.inputs.empty()) return InvalidArgument("data prepare: no input files");
  if (opt.out_dir.empty()) return InvalidArgument("data prepare: no output directory");
  if (opt.shard_tokens <= 0) return InvalidArgument("data prepare: shard_tokens must be positive");

  const fs::path target = normalized_target(opt.out_dir);
  const std::string tname = target.filename().string();
  if (tname.empty() || tname == "." || tname == "..")
    return InvalidArgument("data prepare: output directory '" + opt.out_dir + "' must name a directory");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec)) return FailedPrecondition(target.string() + ": exists and is not a directory");
    if (!fs::is_empty(target, ec) && !fs::exists(target / "index.json", ec))
      return FailedPrecondition(target.string() + ": a non-empty directory without index.json (not a data directory); refusing to replace it");
  }

  PrepareReport report;
  auto skip_or_fail = [&](Status st) -> Status {
    if (!opt.skip_bad) return st;
    ++report.skipped;
    if (report.skipped_where.size() < kMaxSkippedWhere) report.skipped_where.push_back(st.message());
    return Status::Ok();
  };

  fs::create_directories(parent, ec);
  if (ec) return Unavailable(parent.string() + ": cannot create: " + ec.message());
  std::string tmpl = (parent / ("." + tname + ".tmp-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return errno_status(errno, "data prepare: mkdtemp " + tmpl);
  const fs::path tmp = tmpl;
  auto fail = [&](Status st) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    return st;
  };

  ShardSink sink(tmp.string(), enc.vocab_size, opt.shard_tokens);
  for (const std::string& path : opt.inputs) {
    const bool is_txt = ends_with(path, ".txt"), is_jsonl = ends_with(path, ".jsonl");
    if (!is_txt && !is_jsonl) {
      Status st = skip_or_fail(InvalidArgument(path + ": unsupported input type (expected .txt or .jsonl)"));
      if (!st.ok()) return fail(st);
      continue;
    }
    Result<std::string> bytes = read_input(path);
    if (!bytes.ok()) {
      Status st = skip_or_fail(bytes.status());
      if (!st.ok()) return fail(st);
      continue;
    }
    std::vector<std::string> texts;
    if (is_txt) {
      if (bytes->empty()) {
        Status st = skip_or_fail(InvalidArgument(path + ": empty file"));
        if (!st.ok()) return fail(st);
        continue;
      }
      texts.push_back(std::move(bytes).value());
    } else {
      const std::string& b = *bytes;
      bool any_line = false;
      int64_t line_no = 0;
      for (size_t pos = 0; pos < b.size();) {
        size_t nl = b.find('\n', pos);
        if (nl == std::string::npos) nl = b.size();
        std::string_view line(b.data() + pos, nl - pos);
        pos = nl + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank lines carry nothing
        any_line = true;
        const std::string where = path + ":" + std::to_string(line_no) + ": ";
        nlohmann::json j;
        Status line_status;
        try {
          j = nlohmann::json::parse(line.begin(), line.end());
        } catch (const nlohmann::json::exception& e) {
          line_status = InvalidArgument(where + "invalid JSON: " + e.what());
        }
        if (line_status.ok()) {
          if (!j.is_object()) {
            line_status = InvalidArgument(where + "expected a JSON object with a \"text\" field, got " + json_describe(j));
          } else if (!j.contains("text")) {
            line_status = InvalidArgument(where + "missing field 'text'");
          } else if (!j["text"].is_string()) {
            line_status = InvalidArgument(where + "field 'text': expected a string, got " + json_describe(j["text"]));
          } else if (j["text"].get_ref<const std::string&>().empty()) {
            line_status = InvalidArgument(where + "field 'text' is empty");
          }
        }
        if (!line_status.ok()) {
          Status st = skip_or_fail(line_status);
          if (!st.ok()) return fail(st);
          continue;
        }
        texts.push_back(std::move(j["text"].get_ref<std::string&>()));
      }
      if (!any_line) {
        Status st = skip_or_fail(InvalidArgument(path + ": empty file"));
        if (!st.ok()) return fail(st);
        continue;
      }
    }

    if (opt.split != DataSplit::kAll) {
      const bool want = opt.split == DataSplit::kHeldOut;
      std::erase_if(texts, [&](const std::string& t) { return data_held_out(t, opt.held_out) != want; });
    }
    // Encoding is the slow part and the encoder is thread-safe: documents in parallel, results in order.
    std::vector<std::vector<int32_t>> ids(texts.size());
    const int64_t n = static_cast<int64_t>(texts.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i) ids[i] = enc.encode(texts[i]);
    for (int64_t i = 0; i < n; ++i) {
      for (int32_t t : ids[i])
        if (t < 0 || t >= enc.vocab_size)
          return fail(Internal(path + ": the tokenizer produced id " + std::to_string(t) + " outside its vocabulary of " +
                               std::to_string(enc.vocab_size)));
      Status st = sink.add(ids[i]);
      if (!st.ok()) return fail(st);
      ++report.documents;
      report.tokens += static_cast<int64_t>(ids[i].size());
      std::vector<int32_t>().swap(ids[i]);
    }
  }
  if (report.documents == 0) return fail(InvalidArgument("data prepare: the inputs hold no documents" +
                                                         std::string(report.skipped ? " (all skipped as bad)" : "")));
  if (Status st = sink.flush(); !st.ok()) return fail(st);
  report.shards = static_cast<int64_t>(sink.index().size());

  nlohmann::ordered_json index;
  index["format"] = "mariana-token-shards";
  index["version"] = 1;
  index["vocab_size"] = enc.vocab_size;
  index["token_bytes"] = enc.vocab_size <= 65536 ? 2 : 4;
  index["documents"] = report.documents;
  index["tokens"] = report.tokens;
  index["shards"] = sink.index();
  if (Status st = write_file_atomic((tmp / "index.json").string(), index.dump(2) + "\n"); !st.ok()) return fail(st);

  // Swap: move an existing data directory aside, rename the new one into place, delete the old.
  fs::path old;
  if (fs::exists(target, ec)) {
    std::string otmpl = (parent / ("." + tname + ".old-XXXXXX")).string();
    if (::mkdtemp(otmpl.data()) == nullptr) return fail(errno_status(errno, "data prepare: mkdtemp " + otmpl));
    old = fs::path(otmpl) / tname;
    fs::rename(target, old, ec);
    if (ec) {
      fs::remove_all(otmpl, ec);
      return fail(Unavailable(target.string() + ": cannot move the old data directory aside: " + ec.message()));
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    const std::string msg = ec.message();
    if (!old.empty()) fs::rename(old, target, ec);
    return fail(Unavailable(target.string() + ": cannot rename into place: " + msg));
  }
  if (!old.empty()) fs::remove_all(old.parent_path(), ec);
  // The rename is durable once the parent directory's entry is on disk.
  const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return report;
}

}  // namespace mariana
