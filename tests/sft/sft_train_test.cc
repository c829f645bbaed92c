// The sft phase end to end on the tiny model: job fields, exact resume, epochs deriving the steps,
// and the assistant-token loss falling on held-out conversations.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/file_util.h"
#include "model/checkpoint.h"
#include "sft/sft_data.h"
#include "tests/sft/sft_test_util.h"
#include "train/trainer.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

class SftTrainTest : public testing::SftRunTest {
 protected:
  JobSpec job(std::vector<std::string> sets) const {
    sets.insert(sets.begin(), {"data.documents=24", "train.seq_len=96"});
    return SftRunTest::job("sft", "arithmetic-chat", sets);
  }
};

TEST_F(SftTrainTest, JobFieldsAreValidated) {
  const std::string head = "[job]\nphase = \"sft\"\n";
  auto no_src = job_spec_parse(head + "[data]\nbuiltin = \"arithmetic-chat\"\n", "a.toml", {});
  ASSERT_FALSE(no_src.ok());
  EXPECT_NE(no_src.status().message().find("a.toml: field 'model.init_from'"), std::string::npos)
      << no_src.status().message();
  auto no_chat = job_spec_parse(head + "[model]\ninit_from = \"x\"\n", "b.toml", {});  // builtin defaults to "mix"
  ASSERT_FALSE(no_chat.ok());
  EXPECT_NE(no_chat.status().message().find("b.toml: field 'data.builtin': an sft job takes chat data"),
            std::string::npos)
      << no_chat.status().message();
  auto chat = job_spec_parse(head + "[model]\ninit_from = \"x\"\n[data]\nchat = \"c.jsonl\"\n[train]\nepochs = 2\n",
                             "c.toml", {});
  ASSERT_TRUE(chat.ok()) << chat.status().to_string();
  EXPECT_EQ(chat->data_chat, "c.jsonl");
  EXPECT_EQ(chat->epochs, 2);
  auto neg = job_spec_parse(head + "[model]\ninit_from = \"x\"\n[data]\nchat = \"c.jsonl\"\n", "d.toml",
                            {"train.epochs=-1"});
  EXPECT_FALSE(neg.ok());
  auto pre = job_spec_parse("[model]\nconfig = \"m.json\"\n[data]\nchat = \"c.jsonl\"\n", "e.toml", {});
  ASSERT_FALSE(pre.ok());
  EXPECT_NE(pre.status().message().find("field 'data.chat'"), std::string::npos);
}

TEST_F(SftTrainTest, ResumeIsExactAcrossEpochs) {
  // Steps derived from two epochs of the data; N straight vs N/2 + resume + the rest.
  const JobSpec spec = job({"train.epochs=2", "train.checkpoint_every=1", "train.keep_last=20"});
  std::vector<double> straight, resumed;
  std::vector<int64_t> loss_tokens;
  TrainOptions a;
  a.spec = spec;
  a.run_dir = p("a");
  a.quiet = true;
  a.on_step = [&](const StepMetrics& m) {
    straight.push_back(m.loss);
    loss_tokens.push_back(m.loss_tokens);
  };
  auto ra = sft_train_run(a);
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();
  const int64_t n = ra->steps_done;
  ASSERT_GE(n, 4);
  ASSERT_EQ(static_cast<int64_t>(straight.size()), n);
  for (int64_t t : loss_tokens) EXPECT_GT(t, 0);

  // Every conversation was seen twice: the last step's data stats say so.
  const std::string metrics = read_file(p("a/metrics.jsonl")).value();
  const std::string last_line = metrics.substr(metrics.rfind('\n', metrics.size() - 2) + 1);
  const auto last = nlohmann::json::parse(last_line);
  EXPECT_EQ(last["data"]["samples_done"], 48) << last_line;
  EXPECT_EQ(last["loss_tokens"], loss_tokens.back());

  TrainOptions b = a;
  b.run_dir = p("b");
  b.stop_after = n / 2;  // as if killed right after that step's checkpoint
  b.on_step = [&](const StepMetrics& m) { resumed.push_back(m.loss); };
  ASSERT_TRUE(sft_train_run(b).ok());
  ASSERT_EQ(static_cast<int64_t>(resumed.size()), n / 2);
  b.stop_after = -1;
  b.resume = true;
  auto rb = sft_train_run(b);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  EXPECT_EQ(rb->resumed_from, n / 2);
  ASSERT_EQ(resumed.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(straight[i], resumed[i]) << "step " << i + 1;  // bitwise
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(read_file(ra->final_checkpoint + "/" + f).value(), read_file(rb->final_checkpoint + "/" + f).value()) << f;
  }
  // The same state, the loader's position included (key order may differ after a resume).
  EXPECT_EQ(nlohmann::json::parse(read_file(ra->final_checkpoint + "/trainer_state.json").value()),
            nlohmann::json::parse(read_file(rb->final_checkpoint + "/trainer_state.json").value()));
}

// Mean cross-entropy over the assistant tokens of `chats` (the SFT loss, MTP off).
double assistant_loss(const std::string& checkpoint, const std::vector<std::vector<ChatMessage>>& chats) {
  auto ck = checkpoint_load<float>(checkpoint);
  MARIANA_CHECK(ck.ok());
  auto tok = Tokenizer::load(checkpoint + "/tokenizer.json");
  MARIANA_CHECK(tok.ok());
  std::vector<EncodedChat> enc;
  for (const auto& c : chats) enc.push_back(encode_chat(tok.value(), c).value());
  auto loader = SftLoader::create(enc, SftLoaderOptions{96, 0, 1, tok->pad_id(), false});
  MARIANA_CHECK(loader.ok());
  Batch b;
  MARIANA_CHECK(loader->next(loader->total_rows(), &b).ok());
  LossWeights w;
  w.mtp_weight = 0;
  w.balance_alpha = 0;
  ForwardResult res;
  MARIANA_CHECK(ck->model.forward(b, w, &res).ok());
  return res.loss_main;
}

TEST_F(SftTrainTest, ShortRunLowersTheAssistantLossOnHeldOutConversations) {
  TrainOptions o;
  o.spec = job({"data.documents=200", "train.steps=30", "train.checkpoint_every=30", "batch.rows=8",
                "optimizer.lr=5e-3", "optimizer.final_lr=1e-3"});
  o.run_dir = p("r");
  o.quiet = true;
  auto r = sft_train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  std::vector<std::vector<ChatMessage>> held;  // another seed: conversations the run never saw
  for (int i = 0; i < 16; ++i) held.push_back(arithmetic_chat_messages(arithmetic_chat_problem(12345, i, {1, 2, "+-*"})));
  const double before = assistant_loss(p("base"), held), after = assistant_loss(r->final_checkpoint, held);
  // From about ln(1024) ≈ 6.9 at initialisation; the worked answers are templated digit text, so
  // 30 steps take the assistant-token loss well below half of that.
  EXPECT_GT(before, 6.0);
  EXPECT_LT(after, 3.5) << "before " << before;
  std::printf("assistant-token loss on held-out conversations: %.3f -> %.3f\n", before, after);
}

}  // namespace
}  // namespace mariana
