// SFT data: the chat JSONL reader's errors, the built-in arithmetic chat set, and the packing
// loader — every target of a packed batch, document masks, epochs, the skip count, exact restore.
#include "sft/sft_data.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "core/file_util.h"
#include "model/model.h"
#include "train/corpora.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("mariana_sft_" + std::to_string(::getpid()) + "_" + name)).string();
}

const Tokenizer& tok() {
  static const Tokenizer t = [] {
    std::vector<std::string> texts;
    for (int i = 0; i < 200; ++i) {
      for (const ChatMessage& m : arithmetic_chat_messages(arithmetic_chat_problem(7, i, {}))) texts.push_back(m.content);
    }
    TokenizerTrainOptions o;
    o.vocab_size = 400;
    auto r = Tokenizer::train_from_texts(texts, o);
    MARIANA_CHECK(r.ok());
    return std::move(r).value();
  }();
  return t;
}

// ---- Reader ----

TEST(SftChatJsonl, ReadsConversations) {
  const std::string path = temp_path("ok.jsonl");
  ASSERT_TRUE(write_file_atomic(path,
                                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                                "{\"role\": \"assistant\", \"content\": \"hello\"}], \"id\": 3}\n"
                                "\n" +
                                    sft_chat_json_line({{"system", "s"}, {"user", "a"}, {"assistant", "b"}}) + "\n")
                  .ok());
  auto r = sft_read_chat_jsonl(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0][1].role, "assistant");
  EXPECT_EQ((*r)[0][1].content, "hello");
  EXPECT_EQ((*r)[1][0].role, "system");
  fs::remove(path);
}

TEST(SftChatJsonl, BadLinesNameFileLineAndField) {
  const std::string good = sft_chat_json_line({{"user", "a"}, {"assistant", "b"}});
  struct Case {
    std::string line, needle;
  };
  const std::vector<Case> cases = {
      {"{\"messages\": [", ":2: invalid JSON"},
      {"[1, 2]", ":2: expected a JSON object, got array"},
      {"{\"msgs\": []}", ":2: missing field 'messages'"},
      {"{\"messages\": {}}", ":2: field 'messages': expected an array"},
      {"{\"messages\": [3]}", ":2: field 'messages[0]': expected an object, got number 3"},
      {"{\"messages\": [{\"role\": \"user\"}]}", ":2: missing field 'messages[0].content'"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", ":2: field 'messages[0].content': expected a string, got number 5"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}",
       ":2: field 'messages[1].role': 'bot' is not one of system, user, assistant"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", ":2: field 'messages': no assistant turn"},
      {"{\"messages\": []}", ":2: field 'messages': empty conversation"},
  };
  const std::string path = temp_path("bad.jsonl");
  for (const Case& c : cases) {
    ASSERT_TRUE(write_file_atomic(path, good + "\n" + c.line + "\n" + good + "\n").ok());
    auto r = sft_read_chat_jsonl(path);
    ASSERT_FALSE(r.ok()) << c.line;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(path + c.needle), std::string::npos) << r.status().message();
  }
  fs::remove(path);
  EXPECT_EQ(sft_read_chat_jsonl(path).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(write_file_atomic(path, "\n\n").ok());
  EXPECT_NE(sft_read_chat_jsonl(path).status().message().find("no conversations"), std::string::npos);
  fs::remove(path);
}

// ---- The arithmetic chat set ----

TEST(ArithmeticChat, SameProblemsAsTheCorpusSplitIntoQuestionAndWorkedAnswer) {
  CorpusOptions co;
  for (int64_t i = 0; i < 50; ++i) {
    const ArithmeticProblem p = arithmetic_chat_problem(11, i, co.arithmetic);
    EXPECT_EQ(p.text, corpus_document(CorpusTask::kArithmetic, 11, i, co)) << i;
    EXPECT_FALSE(arithmetic_held_out(p.a, p.op, p.b));  // the training split
    const auto m = arithmetic_chat_messages(p);
    ASSERT_EQ(m.size(), 2u);
    EXPECT_EQ(m[0].role, "user");
    EXPECT_EQ(m[0].content, std::to_string(p.a) + " " + p.op + " " + std::to_string(p.b) + " = ?");
    EXPECT_EQ(m[1].role, "assistant");
    EXPECT_EQ("Q: " + m[0].content + "\nA: " + m[1].content + "\n", p.text);
    const std::string tail = "\n#### " + std::to_string(p.answer);
    ASSERT_GE(m[1].content.size(), tail.size());
    EXPECT_EQ(m[1].content.substr(m[1].content.size() - tail.size()), tail);
  }
  const std::string path = temp_path("chat.jsonl");
  ArithmeticOptions ao;
  ao.max_digits = 2;
  ao.ops = "+";
  ASSERT_TRUE(write_arithmetic_chat_jsonl(20, 3, ao, path).ok());
  auto r = sft_read_chat_jsonl(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 20u);
  for (int64_t i = 0; i < 20; ++i) {
    EXPECT_EQ((*r)[i][0].content, arithmetic_chat_question(arithmetic_chat_problem(3, i, ao)));
    EXPECT_NE((*r)[i][0].content.find(" + "), std::string::npos);
  }
  fs::remove(path);
  EXPECT_FALSE(write_arithmetic_chat_jsonl(0, 3, ao, path).ok());
}

// ---- Packing ----

// Each token's role, computed from the messages independently of encode_chat's mask: 'P' prompt
// (BOS, system, markers, user content), 'A' assistant content or its closing EOS.
std::vector<char> token_roles(const std::vector<ChatMessage>& msgs) {
  std::vector<char> r = {'P'};
  for (const ChatMessage& m : msgs) {
    const size_t n = tok().encode(m.content).size();
    if (m.role == "system") r.insert(r.end(), n, 'P');
    if (m.role == "user") r.insert(r.end(), 1 + n, 'P');
    if (m.role == "assistant") {
      r.push_back('P');
      r.insert(r.end(), n + 1, 'A');
    }
  }
  return r;
}

std::vector<std::vector<ChatMessage>> some_chats(int n) {
  std::vector<std::vector<ChatMessage>> out;
  for (int i = 0; i < n; ++i) {
    auto m = arithmetic_chat_messages(arithmetic_chat_problem(5, i, ArithmeticOptions{1, 2, "+-"}));
    if (i % 3 == 1) m.insert(m.begin(), ChatMessage{"system", "Work it out."});
    if (i % 4 == 2) {  // two rounds
      auto more = arithmetic_chat_messages(arithmetic_chat_problem(6, i, ArithmeticOptions{1, 1, "+"}));
      m.insert(m.end(), more.begin(), more.end());
    }
    out.push_back(m);
  }
  return out;
}

std::vector<EncodedChat> encode_all(const std::vector<std::vector<ChatMessage>>& chats) {
  std::vector<EncodedChat> out;
  for (const auto& c : chats) out.push_back(encode_chat(tok(), c).value());
  return out;
}

TEST(SftLoader, EveryTargetOfAPackedBatchMasksExactlyThePrompt) {
  const auto chats = some_chats(12);
  const auto enc = encode_all(chats);
  int64_t longest = 0;
  for (const auto& e : enc) longest = std::max<int64_t>(longest, e.ids.size());
  SftLoaderOptions lo;
  lo.seq_len = longest + 40;  // several samples per row, and padding
  lo.shuffle = false;
  lo.epochs = 1;
  lo.pad = tok().pad_id();
  auto loader = SftLoader::create(enc, lo);
  ASSERT_TRUE(loader.ok()) << loader.status().to_string();
  Batch b;
  ASSERT_TRUE(loader->next(loader->total_rows(), &b).ok());
  const int64_t S = lo.seq_len;
  size_t next_sample = 0;
  int64_t checked_assistant = 0, checked_prompt = 0, padding = 0;
  for (int64_t r = 0; r < b.B; ++r) {
    int64_t p = 0;
    // Samples in file order, each whole, while they fit.
    while (next_sample < chats.size() && p + static_cast<int64_t>(enc[next_sample].ids.size()) <= S) {
      const auto& ids = enc[next_sample].ids;
      const std::vector<char> roles = token_roles(chats[next_sample]);
      ASSERT_EQ(roles.size(), ids.size());
      const int64_t L = static_cast<int64_t>(ids.size());
      for (int64_t i = 0; i < L; ++i) {
        const int64_t t = r * S + p + i;
        ASSERT_EQ(b.tokens[t], ids[i]);
        EXPECT_EQ(b.doc_start[t], p) << "row " << r << " pos " << p + i;
        if (i + 1 < L && roles[i + 1] == 'A') {
          EXPECT_EQ(b.targets[t], ids[i + 1]) << "row " << r << " pos " << p + i;
          ++checked_assistant;
        } else {
          EXPECT_EQ(b.targets[t], -1) << "row " << r << " pos " << p + i;
          ++checked_prompt;
        }
      }
      p += L;
      ++next_sample;
    }
    ASSERT_GT(p, 0) << "row " << r << " holds no sample";
    for (int64_t i = p; i < S; ++i) {  // padding: one document, no loss
      EXPECT_EQ(b.tokens[r * S + i], tok().pad_id());
      EXPECT_EQ(b.targets[r * S + i], -1);
      EXPECT_EQ(b.doc_start[r * S + i], p);
      ++padding;
    }
  }
  EXPECT_EQ(next_sample, chats.size());
  EXPECT_GT(checked_assistant, 100);
  EXPECT_GT(checked_prompt, 100);
  EXPECT_GT(padding, 0);
  EXPECT_GE(b.B, 2);
  // After the last epoch: rows of padding only.
  Batch after;
  ASSERT_TRUE(loader->next(1, &after).ok());
  for (int32_t t : after.targets) EXPECT_EQ(t, -1);
}

TEST(SftLoader, PackedSamplesAreMutuallyInvisible) {
  // The model's logits for a sample inside a packed row equal those of the sample alone: document
  // masks hide the neighbours and positions restart at each sample.
  auto cfg = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
  ASSERT_TRUE(cfg.ok());
  Model<float> model(cfg.value());
  model.init_weights(3);
  const auto enc = encode_all(some_chats(4));
  SftLoaderOptions lo;
  lo.seq_len = 200;
  lo.shuffle = false;
  lo.pad = tok().pad_id();
  auto loader = SftLoader::create(enc, lo);
  ASSERT_TRUE(loader.ok());
  Batch packed;
  ASSERT_TRUE(loader->next(1, &packed).ok());
  LossWeights w;
  ForwardResult res;
  ASSERT_TRUE(model.forward(packed, w, &res).ok());
  const int64_t V = cfg->vocab_size;
  const std::vector<float> packed_logits(model.logits(), model.logits() + lo.seq_len * V);
  int64_t p = 0;
  int samples_in_row = 0;
  for (const EncodedChat& e : enc) {
    const int64_t L = static_cast<int64_t>(e.ids.size());
    if (p + L > lo.seq_len) break;
    ++samples_in_row;
    auto alone = SftLoader::create({e}, SftLoaderOptions{L, 0, 0, tok().pad_id(), false});
    ASSERT_TRUE(alone.ok());
    Batch one;
    ASSERT_TRUE(alone->next(1, &one).ok());
    ASSERT_TRUE(model.forward(one, w, &res).ok());
    for (int64_t i = 0; i < L * V; ++i) {
      // Same arithmetic up to the order of the masked-out terms: 1e-4 absolute on logits of size ~1.
      ASSERT_NEAR(model.logits()[i], packed_logits[p * V + i], 1e-4) << "sample at " << p << " index " << i;
    }
    p += L;
  }
  EXPECT_GE(samples_in_row, 2);
}

TEST(SftLoader, EpochsShuffleSkipAndCount) {
  auto chats = some_chats(9);
  std::vector<EncodedChat> enc = encode_all(chats);
  int64_t longest = 0;
  for (const auto& e : enc) longest = std::max<int64_t>(longest, e.ids.size());
  EncodedChat huge;
  huge.ids.assign(500, tok().bos_id());
  huge.loss_mask.assign(500, 1);
  enc.push_back(huge);  // longer than any row: skipped, counted
  SftLoaderOptions lo;
  lo.seq_len = longest + 10;
  lo.seed = 4;
  lo.epochs = 3;
  lo.pad = tok().pad_id();
  auto loader = SftLoader::create(enc, lo);
  ASSERT_TRUE(loader.ok());
  EXPECT_EQ(loader->skipped(), 1);
  const int64_t total = loader->total_rows();
  ASSERT_GT(total, 3);
  // Walk the rows one at a time, recovering each sample from its document segment.
  std::map<std::vector<int32_t>, int> seen;
  std::vector<std::vector<int32_t>> sequence;
  for (int64_t r = 0; r < total; ++r) {
    Batch b;
    ASSERT_TRUE(loader->next(1, &b).ok());
    int64_t start = 0;
    for (int64_t i = 1; i <= lo.seq_len; ++i) {
      if (i == lo.seq_len || b.doc_start[i] != b.doc_start[i - 1]) {
        if (b.tokens[start] == tok().bos_id()) {
          std::vector<int32_t> s(b.tokens.begin() + start, b.tokens.begin() + i);
          ++seen[s];
          sequence.push_back(s);
        }
        start = i;
      }
    }
  }
  EXPECT_EQ(loader->samples_done(), 27);
  ASSERT_EQ(seen.size(), 9u);
  for (const auto& [s, n] : seen) EXPECT_EQ(n, 3);
  ASSERT_EQ(sequence.size(), 27u);
  EXPECT_NE(std::vector(sequence.begin(), sequence.begin() + 9), std::vector(sequence.begin() + 9, sequence.begin() + 18))
      << "each epoch has its own order";
  EXPECT_EQ(loader->epoch(), 3);
  EXPECT_EQ(loader->step_stats()["samples_skipped"], 1);
  lo.seq_len = 8;
  EXPECT_EQ(SftLoader::create(encode_all(chats), lo).status().code(), StatusCode::kInvalidArgument);
}

TEST(SftLoader, RestoreContinuesExactlyAndChecksTheData) {
  const auto enc = encode_all(some_chats(10));
  SftLoaderOptions lo;
  lo.seq_len = 100;
  lo.seed = 9;
  lo.pad = tok().pad_id();
  auto a = SftLoader::create(enc, lo);
  ASSERT_TRUE(a.ok());
  Batch x, y;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->next(2, &x).ok());
  const nlohmann::json st = a->state();
  auto b = SftLoader::create(enc, lo);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(b->restore(st).ok());
  for (int i = 0; i < 6; ++i) {  // crosses epochs (endless)
    ASSERT_TRUE(a->next(2, &x).ok());
    ASSERT_TRUE(b->next(2, &y).ok());
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.targets, y.targets);
    EXPECT_EQ(x.doc_start, y.doc_start);
  }
  EXPECT_GT(a->epoch(), 0);
  auto c = SftLoader::create(encode_all(some_chats(11)), lo);
  ASSERT_TRUE(c.ok());
  const Status bad = c->restore(st);
  EXPECT_EQ(bad.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(bad.message().find("data differs"), std::string::npos) << bad.message();
}

}  // namespace
}  // namespace mariana
