// SFT data: chat JSONL files ({"messages": [{"role", "content"}, ...]} per line), the built-in
// arithmetic chat set, and the loader that packs encoded conversations into training rows with
// document masks and prompt masking. The chat template itself is sft/chat_template.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sft/chat_template.h"
#include "train/corpora.h"
#include "train/trainer.h"

namespace mariana {

// Reads a chat JSONL file: one conversation per non-blank line, {"messages": [{"role": ...,
// "content": ...}, ...]} (other top-level fields are ignored). Every conversation must pass
// chat_validate and hold at least one assistant turn (something to learn). NotFound for a missing
// file; InvalidArgument "<file>:<line>: ..." naming the field otherwise ("chat.jsonl:7: field
// 'messages[1].content': expected a string, got number 3"; "chat.jsonl:9: invalid JSON: ...").
Result<std::vector<std::vector<ChatMessage>>> sft_read_chat_jsonl(const std::string& path);

// One JSONL line for a conversation (the inverse of the reader).
std::string sft_chat_json_line(const std::vector<ChatMessage>& messages);

// ---- The built-in arithmetic chat set ----
// Problem `index` of the set: the same problem as document `index` of the arithmetic corpus
// (corpus_document(kArithmetic, seed, index, ...), so the training split of ArithmeticOptions).
ArithmeticProblem arithmetic_chat_problem(uint64_t seed, int64_t index, const ArithmeticOptions& opt);
// The question a user asks, "347 + 85 = ?" (the worked document's first line without "Q: ").
std::string arithmetic_chat_question(const ArithmeticProblem& p);
// user: the question; assistant: the worked answer (the document after "A: ", ending "#### N").
std::vector<ChatMessage> arithmetic_chat_messages(const ArithmeticProblem& p);
// Conversations 0..n-1 as chat JSONL, written atomically (`mariana data gen --task arithmetic-chat`).
Status write_arithmetic_chat_jsonl(int64_t n, uint64_t seed, const ArithmeticOptions& opt, const std::string& path);

// ---- Packing ----
struct SftLoaderOptions {
  int64_t seq_len = 256;   // S
  uint64_t seed = 0;       // the per-epoch shuffle: data_epoch_order(seed, epoch, n)
  int64_t epochs = 0;      // > 0: the data ends after this many epochs (rows after it are padding); 0: endless
  int32_t pad = 0;         // the padding token id (its targets are −1)
  bool shuffle = true;     // false: samples in file order every epoch (tests)
};

// Packs encoded conversations into rows of S tokens, each conversation whole (never split across
// rows) and its own document: doc_start marks its first position, so positions restart at 0 and
// attention never crosses into another sample. Targets follow EncodedChat::loss_mask: at position
// p holding sample token i, target = ids[i+1] if loss_mask[i+1] == 1, else −1; the sample's last
// token and the padding (pad id, one document from the first pad position to the row's end) get
// −1. Rows fill greedily in the epoch's order; a sample that does not fit in the rest of the row
// starts the next row. A sample longer than S is skipped (counted in skipped(), never truncated:
// a truncated sample would train on an answer cut short). An epoch's last row may continue with
// the next epoch's first samples. The position (epoch, index into the epoch's order) is the
// checkpoint state; restore() also checks the data's fingerprint (sample count and hash of the ids).
class SftLoader : public BatchSource {
 public:
  // InvalidArgument when no sample fits in S or a sample is empty.
  static Result<SftLoader> create(std::vector<EncodedChat> samples, const SftLoaderOptions& opt);
  // Pairs of sequences for the reward model: a pair is packed whole into one row as two adjacent
  // documents (first, then second), with every target −1; a pair longer than S together is
  // skipped and counted. last_pairs() says where each pair of the last next() ended.
  static Result<SftLoader> create_pairs(std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs,
                                        const SftLoaderOptions& opt);
  struct PairEnds {
    int64_t first = 0, second = 0;  // flat indices r·S + position of each sequence's last token
  };
  const std::vector<PairEnds>& last_pairs() const { return last_pairs_; }

  Status next(int64_t rows, Batch* out) override;
  nlohmann::json state() const override;
  Status restore(const nlohmann::json& state) override;
  // Rows holding at least one sample over all epochs (epochs > 0), else -1. Exact: a dry run.
  int64_t total_rows() const override;
  nlohmann::ordered_json step_stats() const override;  // epoch, samples_done, samples_skipped

  int64_t num_samples() const { return static_cast<int64_t>(samples_.size()); }  // all, skipped ones included
  int64_t skipped() const { return skipped_; }          // longer than S, never used
  int64_t epoch() const { return cursor_.epoch; }
  int64_t samples_done() const { return cursor_.samples_done; }

 private:
  struct Cursor {
    int64_t epoch = 0, index = 0;  // the next sample is order_of(epoch)[index]
    int64_t samples_done = 0;      // samples packed so far (all epochs)
  };
  SftLoader() = default;
  const std::vector<int64_t>& order_of(int64_t epoch) const;  // cached for the last epoch asked
  // The next sample that fits in a row (advancing c past longer ones and across epochs); -1 once
  // the last epoch is done.
  int64_t peek(Cursor* c) const;
  // Packs one row from c (into the three [S] arrays, or a dry run when tokens is null); returns
  // the number of samples placed (0: the data is exhausted).
  // `row_base` (r·S) is for last_pairs_, filled when `pairs` is not null.
  int64_t pack_row(Cursor* c, int32_t* tokens, int32_t* targets, int32_t* doc_start, int64_t row_base = 0,
                   std::vector<PairEnds>* pairs = nullptr) const;

  std::vector<EncodedChat> samples_;
  std::vector<int64_t> split_;         // pairs: where the second sequence starts in each sample
  std::vector<PairEnds> last_pairs_;
  SftLoaderOptions opt_;
  int64_t skipped_ = 0;
  uint64_t fingerprint_ = 0;
  Cursor cursor_;
  mutable std::vector<int64_t> order_;
  mutable int64_t order_epoch_ = -1;
};

// ---- Job plumbing shared by the sft and rm phases ----
// The data file of a job: `given` when set, else run_dir/data/<builtin>.jsonl, written by `write`
// (data.documents samples from data.seed, the data.arithmetic_* options) when it does not exist.
using BuiltinWriter = Status (*)(int64_t n, uint64_t seed, const ArithmeticOptions& opt, const std::string& path);
Result<std::string> sft_job_data_file(const JobSpec& spec, const std::string& given, const std::string& run_dir,
                                      const std::string& builtin, BuiltinWriter write);
// seq_len, train.seed, train.epochs and the tokenizer's pad id.
SftLoaderOptions sft_job_loader_options(const JobSpec& spec, const Tokenizer& tok);

// The trainer's data source for phase sft: the chat file (data.chat) or the built-in arithmetic
// chat set (data.builtin = "arithmetic-chat": data.documents conversations from data.seed, written
// to run_dir/data/arithmetic-chat.jsonl first), encoded with the run's tokenizer and packed by an
// SftLoader (seq_len, train.seed, train.epochs). Logs the sample counts to stderr. The held-out
// split (eval.held_out) is chosen by data_held_out of each conversation's JSONL line as
// sft_chat_json_line writes it: kTrain leaves those out, kHeldOut has only them, in file order,
// endless (no epochs).
Result<std::unique_ptr<BatchSource>> sft_batch_source(const JobSpec& spec, const Tokenizer& tok,
                                                      const std::string& run_dir, DataSplit split);

// train_run with the sft data source plugged in (what `mariana train` runs for phase "sft").
Result<TrainSummary> sft_train_run(TrainOptions opt);

}  // namespace mariana
