// Chat JSONL reading, the built-in arithmetic chat set, and the packing SftLoader.
#include "sft/sft_data.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/file_util.h"
#include "core/json_util.h"
#include "core/philox.h"
#include "train/data.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

// The stream train/corpora.cc derives document seeds from: conversation i of the arithmetic chat
// set is the problem of document i of the arithmetic corpus (a test checks it).
constexpr uint64_t kArithmeticDocSeedStream = 0xC0'0000;

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// One line's conversation; errors are prefixed by the caller with "<file>:<line>: ".
Result<std::vector<ChatMessage>> parse_chat_line(const std::string& line, const std::string& where) {
  MARIANA_ASSIGN_OR_RETURN(JsonFields f, JsonFields::parse_object(line, where));
  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> msgs, f.get_object_array("messages"));
  std::vector<ChatMessage> out;
  for (const JsonFields& m : msgs) {
    ChatMessage cm;
    MARIANA_ASSIGN_OR_RETURN(cm.role, m.get_string("role"));
    MARIANA_ASSIGN_OR_RETURN(cm.content, m.get_string("content"));
    out.push_back(std::move(cm));
  }
  if (Status st = chat_validate(out); !st.ok()) {
    const std::string& m = st.message();  // "messages[1].role: ..."
    const size_t colon = m.find(": ");
    return InvalidArgument(where + ": field '" + m.substr(0, colon) + "'" + m.substr(colon));
  }
  if (std::none_of(out.begin(), out.end(), [](const ChatMessage& m) { return m.role == "assistant"; })) {
    return InvalidArgument(where + ": field 'messages': no assistant turn, nothing to learn");
  }
  return out;
}

}  // namespace

Result<std::vector<std::vector<ChatMessage>>> sft_read_chat_jsonl(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<std::vector<ChatMessage>> out;
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    MARIANA_ASSIGN_OR_RETURN(auto conv, parse_chat_line(line, path + ":" + std::to_string(line_no)));
    out.push_back(std::move(conv));
  }
  if (out.empty()) return InvalidArgument(path + ": no conversations");
  return out;
}

std::string sft_chat_json_line(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return nlohmann::ordered_json{{"messages", msgs}}.dump();
}

ArithmeticProblem arithmetic_chat_problem(uint64_t seed, int64_t index, const ArithmeticOptions& opt) {
  const auto w = philox_block(seed, kArithmeticDocSeedStream, static_cast<uint64_t>(index));
  return make_arithmetic((static_cast<uint64_t>(w[0]) << 32) | w[1], opt);
}

std::string arithmetic_chat_question(const ArithmeticProblem& p) {
  return std::to_string(p.a) + " " + p.op + " " + std::to_string(p.b) + " = ?";
}

std::vector<ChatMessage> arithmetic_chat_messages(const ArithmeticProblem& p) {
  // p.text is "Q: <question>\nA: <worked answer>\n#### N\n".
  const size_t a = p.text.find("\nA: ");
  MARIANA_CHECK(a != std::string::npos);
  std::string answer = p.text.substr(a + 4);
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  return {{"user", arithmetic_chat_question(p)}, {"assistant", std::move(answer)}};
}

Status write_arithmetic_chat_jsonl(int64_t n, uint64_t seed, const ArithmeticOptions& opt, const std::string& path) {
  if (n <= 0) return InvalidArgument("arithmetic-chat: the number of conversations must be positive, got " + std::to_string(n));
  CorpusOptions co;
  co.arithmetic = opt;
  MARIANA_RETURN_IF_ERROR(corpus_options_validate(co));
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    out += sft_chat_json_line(arithmetic_chat_messages(arithmetic_chat_problem(seed, i, opt)));
    out += '\n';
  }
  return write_file_atomic(path, out);
}

// ---- SftLoader ----

Result<SftLoader> SftLoader::create(std::vector<EncodedChat> samples, const SftLoaderOptions& opt) {
  if (opt.seq_len < 2) return InvalidArgument("sft loader: seq_len must be >= 2, got " + std::to_string(opt.seq_len));
  if (opt.epochs < 0) return InvalidArgument("sft loader: epochs must be >= 0");
  SftLoader l;
  l.opt_ = opt;
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const EncodedChat& s = samples[i];
    if (s.ids.empty() || s.ids.size() != s.loss_mask.size())
      return InvalidArgument("sft loader: sample " + std::to_string(i) + " is empty or its mask has another length");
    if (static_cast<int64_t>(s.ids.size()) > opt.seq_len) ++l.skipped_;
    const uint64_t n = s.ids.size();
    XXH64_update(h, &n, sizeof(n));
    XXH64_update(h, s.ids.data(), s.ids.size() * sizeof(int32_t));
    XXH64_update(h, s.loss_mask.data(), s.loss_mask.size());
  }
  l.fingerprint_ = XXH64_digest(h);
  XXH64_freeState(h);
  if (l.skipped_ == static_cast<int64_t>(samples.size())) {
    return InvalidArgument("sft loader: none of the " + std::to_string(samples.size()) +
                           " samples fits in seq_len " + std::to_string(opt.seq_len));
  }
  l.samples_ = std::move(samples);
  return l;
}

Result<SftLoader> SftLoader::create_pairs(std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs,
                                          const SftLoaderOptions& opt) {
  std::vector<EncodedChat> samples;
  std::vector<int64_t> split;
  for (size_t i = 0; i < pairs.size(); ++i) {
    auto& [a, b] = pairs[i];
    if (a.empty() || b.empty()) return InvalidArgument("pair loader: pair " + std::to_string(i) + " has an empty sequence");
    EncodedChat e;
    split.push_back(static_cast<int64_t>(a.size()));
    e.ids = std::move(a);
    e.ids.insert(e.ids.end(), b.begin(), b.end());
    e.loss_mask.assign(e.ids.size(), 0);
    samples.push_back(std::move(e));
  }
  MARIANA_ASSIGN_OR_RETURN(SftLoader l, create(std::move(samples), opt));
  l.split_ = std::move(split);
  return l;
}

const std::vector<int64_t>& SftLoader::order_of(int64_t epoch) const {
  if (order_epoch_ != epoch) {
    const int64_t n = num_samples();
    if (opt_.shuffle) {
      order_ = data_epoch_order(opt_.seed, epoch, n);
    } else {
      order_.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) order_[i] = i;
    }
    order_epoch_ = epoch;
  }
  return order_;
}

int64_t SftLoader::peek(Cursor* c) const {
  const int64_t n = num_samples();
  while (!(opt_.epochs > 0 && c->epoch >= opt_.epochs)) {
    if (c->index >= n) {
      ++c->epoch;
      c->index = 0;
      continue;
    }
    const int64_t s = order_of(c->epoch)[c->index];
    if (static_cast<int64_t>(samples_[s].ids.size()) <= opt_.seq_len) return s;
    ++c->index;  // longer than a row: skipped (counted once in skipped_)
  }
  return -1;
}

int64_t SftLoader::pack_row(Cursor* c, int32_t* tokens, int32_t* targets, int32_t* doc_start, int64_t row_base,
                            std::vector<PairEnds>* pairs) const {
  const int64_t S = opt_.seq_len;
  int64_t p = 0;
  int64_t placed = 0;
  for (int64_t s; (s = peek(c)) >= 0;) {
    const EncodedChat& x = samples_[s];
    const int64_t L = static_cast<int64_t>(x.ids.size());
    if (L > S - p) break;
    const int64_t split = split_.empty() ? L : split_[s];  // a pair's second document starts here
    if (tokens != nullptr) {
      for (int64_t i = 0; i < L; ++i) {
        tokens[p + i] = x.ids[i];
        targets[p + i] = i + 1 < L && x.loss_mask[i + 1] ? x.ids[i + 1] : -1;
        doc_start[p + i] = static_cast<int32_t>(i < split ? p : p + split);
      }
    }
    if (pairs != nullptr && !split_.empty()) pairs->push_back({row_base + p + split - 1, row_base + p + L - 1});
    p += L;
    ++placed;
    ++c->index;
    ++c->samples_done;
  }
  if (tokens != nullptr) {
    for (int64_t i = p; i < S; ++i) {
      tokens[i] = opt_.pad;
      targets[i] = -1;
      doc_start[i] = static_cast<int32_t>(p);
    }
  }
  return placed;
}

Status SftLoader::next(int64_t rows, Batch* out) {
  const int64_t S = opt_.seq_len;
  out->B = rows;
  out->S = S;
  out->tokens.assign(static_cast<size_t>(rows * S), 0);
  out->targets.assign(static_cast<size_t>(rows * S), -1);
  out->doc_start.assign(static_cast<size_t>(rows * S), 0);
  last_pairs_.clear();
  for (int64_t r = 0; r < rows; ++r) {
    pack_row(&cursor_, out->tokens.data() + r * S, out->targets.data() + r * S, out->doc_start.data() + r * S,
             r * S, &last_pairs_);
  }
  return Status::Ok();
}

nlohmann::json SftLoader::state() const {
  return {{"kind", "sft"},
          {"epoch", cursor_.epoch},
          {"index", cursor_.index},
          {"samples_done", cursor_.samples_done},
          {"num_samples", num_samples()},
          {"fingerprint", hex64(fingerprint_)}};
}

Status SftLoader::restore(const nlohmann::json& st) {
  try {
    if (st.at("kind").get<std::string>() != "sft") return InvalidArgument("sft loader state: kind is not \"sft\"");
    if (st.at("num_samples").get<int64_t>() != num_samples() || st.at("fingerprint").get<std::string>() != hex64(fingerprint_)) {
      return FailedPrecondition("sft loader state: the data differs from the checkpoint's (" +
                                std::to_string(st.at("num_samples").get<int64_t>()) + " samples, fingerprint " +
                                st.at("fingerprint").get<std::string>() + "; now " + std::to_string(num_samples()) +
                                ", " + hex64(fingerprint_) + ")");
    }
    Cursor c;
    c.epoch = st.at("epoch").get<int64_t>();
    c.index = st.at("index").get<int64_t>();
    c.samples_done = st.at("samples_done").get<int64_t>();
    if (c.epoch < 0 || c.index < 0 || c.index > num_samples() || c.samples_done < 0)
      return InvalidArgument("sft loader state: position out of range");
    cursor_ = c;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("sft loader state: ") + e.what());
  }
  return Status::Ok();
}

int64_t SftLoader::total_rows() const {
  if (opt_.epochs <= 0) return -1;
  Cursor c;  // a dry run from the start
  int64_t rows = 0;
  while (pack_row(&c, nullptr, nullptr, nullptr) > 0) ++rows;
  return rows;
}

nlohmann::ordered_json SftLoader::step_stats() const {
  return {{"epoch", cursor_.epoch}, {"samples_done", cursor_.samples_done}, {"samples_skipped", skipped_}};
}

// ---- The trainer's data source ----

Result<std::string> sft_job_data_file(const JobSpec& spec, const std::string& given, const std::string& run_dir,
                                      const std::string& builtin, BuiltinWriter write) {
  if (!given.empty()) return given;
  const fs::path dir = fs::path(run_dir) / "data";
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (dir / (builtin + ".jsonl")).string();
  if (!fs::exists(path)) {
    MARIANA_RETURN_IF_ERROR(write(spec.data_documents, spec.data_seed, job_arithmetic_options(spec), path));
  }
  return path;
}

SftLoaderOptions sft_job_loader_options(const JobSpec& spec, const Tokenizer& tok) {
  SftLoaderOptions lo;
  lo.seq_len = spec.seq_len;
  lo.seed = spec.seed;
  lo.epochs = spec.epochs;
  lo.pad = tok.pad_id();
  return lo;
}

Result<std::unique_ptr<BatchSource>> sft_batch_source(const JobSpec& spec, const Tokenizer& tok,
                                                      const std::string& run_dir, DataSplit split) {
  MARIANA_ASSIGN_OR_RETURN(const std::string path,
                           sft_job_data_file(spec, spec.data_chat, run_dir, "arithmetic-chat", &write_arithmetic_chat_jsonl));
  MARIANA_ASSIGN_OR_RETURN(auto convs, sft_read_chat_jsonl(path));
  SftLoaderOptions lo = sft_job_loader_options(spec, tok);
  if (split != DataSplit::kAll && spec.eval_held_out > 0) {
    const bool want = split == DataSplit::kHeldOut;
    std::erase_if(convs, [&](const auto& c) { return data_held_out(sft_chat_json_line(c), spec.eval_held_out) != want; });
    if (convs.empty()) {
      return InvalidArgument(spec.source + ": field 'eval.held_out': " + path + " has no conversation " +
                             (want ? "in" : "outside") + " the held-out fraction " + std::to_string(spec.eval_held_out));
    }
  }
  if (split == DataSplit::kHeldOut) {
    lo.epochs = 0;
    lo.shuffle = false;
  }
  std::vector<EncodedChat> samples;
  samples.reserve(convs.size());
  int64_t tokens = 0, loss_tokens = 0;
  for (const auto& c : convs) {
    MARIANA_ASSIGN_OR_RETURN(EncodedChat e, encode_chat(tok, c));  // validated by the reader already
    tokens += static_cast<int64_t>(e.ids.size());
    for (uint8_t m : e.loss_mask) loss_tokens += m;
    samples.push_back(std::move(e));
  }
  MARIANA_ASSIGN_OR_RETURN(SftLoader loader, SftLoader::create(std::move(samples), lo));
  std::fprintf(stderr, "sft %sdata %s: %lld conversations, %lld tokens (%lld with loss), %lld skipped (longer than seq_len %lld)\n",
               split == DataSplit::kHeldOut ? "held-out " : "", path.c_str(), (long long)loader.num_samples(), (long long)tokens, (long long)loss_tokens,
               (long long)loader.skipped(), (long long)spec.seq_len);
  return std::unique_ptr<BatchSource>(std::make_unique<SftLoader>(std::move(loader)));
}

Result<TrainSummary> sft_train_run(TrainOptions opt) {
  opt.data_source = sft_batch_source;
  return train_run(opt);
}

}  // namespace mariana
