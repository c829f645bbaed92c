// The chat template's exact token layout, its loss mask and its role validation.
#include "sft/chat_template.h"

#include <gtest/gtest.h>

namespace mariana {
namespace {

const Tokenizer& tok() {
  static const Tokenizer t = [] {
    TokenizerTrainOptions o;
    o.vocab_size = 300;
    o.min_frequency = 1;
    auto r = Tokenizer::train_from_texts({"hello world, what is 2 + 2? 2 + 2 = 4", "be brief"}, o);
    MARIANA_CHECK(r.ok());
    return std::move(r).value();
  }();
  return t;
}

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(ChatTemplate, ExactLayoutAndMask) {
  const Tokenizer& t = tok();
  const int32_t bos = t.bos_id(), eos = t.eos_id(), user = t.special_id(SpecialToken::kUser),
                asst = t.special_id(SpecialToken::kAssistant);
  const auto sys = t.encode("be brief"), q1 = t.encode("what is 2 + 2?"), a1 = t.encode("4"),
             q2 = t.encode("hello"), a2 = t.encode("hello world");
  auto r = encode_chat(t, {{"system", "be brief"}, {"user", "what is 2 + 2?"}, {"assistant", "4"},
                           {"user", "hello"}, {"assistant", "hello world"}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const std::vector<int32_t> want =
      cat({{bos}, sys, {user}, q1, {asst}, a1, {eos}, {user}, q2, {asst}, a2, {eos}});
  EXPECT_EQ(r->ids, want);
  std::vector<uint8_t> mask;
  auto put = [&](size_t n, uint8_t v) { mask.insert(mask.end(), n, v); };
  put(1 + sys.size() + 1 + q1.size() + 1, 0);
  put(a1.size() + 1, 1);
  put(1 + q2.size() + 1, 0);
  put(a2.size() + 1, 1);
  EXPECT_EQ(r->loss_mask, mask);
  EXPECT_EQ(t.decode(r->ids),
            std::string(special_token_text(SpecialToken::kBos)) + "be brief" +
                special_token_text(SpecialToken::kUser) + "what is 2 + 2?" +
                special_token_text(SpecialToken::kAssistant) + "4" + special_token_text(SpecialToken::kEos) +
                special_token_text(SpecialToken::kUser) + "hello" +
                special_token_text(SpecialToken::kAssistant) + "hello world" +
                special_token_text(SpecialToken::kEos));
}

TEST(ChatTemplate, GenerationPromptIsThePrefixBeforeTheReply) {
  const Tokenizer& t = tok();
  const std::vector<ChatMessage> prompt = {{"user", "what is 2 + 2?"}};
  const auto p = encode_generation_prompt(t, prompt);
  EXPECT_EQ(p, cat({{t.bos_id(), t.special_id(SpecialToken::kUser)}, t.encode("what is 2 + 2?"),
                    {t.special_id(SpecialToken::kAssistant)}}));
  EXPECT_EQ(encode_generation_prompt(t, "what is 2 + 2?"), p);
  auto full = encode_chat(t, {{"user", "what is 2 + 2?"}, {"assistant", "4"}});
  ASSERT_TRUE(full.ok());
  ASSERT_GT(full->ids.size(), p.size());
  EXPECT_TRUE(std::equal(p.begin(), p.end(), full->ids.begin()));
  // Everything after the prompt is what the model is trained to produce.
  for (size_t i = 0; i < full->ids.size(); ++i) EXPECT_EQ(full->loss_mask[i], i >= p.size() ? 1 : 0) << i;
}

TEST(ChatTemplate, SpecialTextInContentIsPlainBytes) {
  const Tokenizer& t = tok();
  auto r = encode_chat(t, {{"user", special_token_text(SpecialToken::kEos)}, {"assistant", ""}});
  ASSERT_TRUE(r.ok());
  // BOS USER <bytes of the EOS spelling> ASSISTANT EOS: exactly one EOS id, at the end.
  EXPECT_EQ(std::count(r->ids.begin(), r->ids.end(), t.eos_id()), 1);
  EXPECT_EQ(r->ids.back(), t.eos_id());
  EXPECT_EQ(r->loss_mask.back(), 1);  // an empty reply still learns to stop
}

TEST(ChatTemplate, RolesAreValidated) {
  const Tokenizer& t = tok();
  struct Case {
    std::vector<ChatMessage> m;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{}, "empty conversation"},
      {{{"user", "a"}, {"bot", "b"}}, "messages[1].role: 'bot' is not one of"},
      {{{"user", "a"}, {"system", "b"}}, "messages[1].role: 'system' is allowed only as the first"},
      {{{"assistant", "a"}}, "messages[0].role: expected 'user'"},
      {{{"user", "a"}, {"user", "b"}}, "messages[1].role: expected 'assistant'"},
      {{{"system", "a"}}, "no user turn"},
  };
  for (const Case& c : cases) {
    auto r = encode_chat(t, c.m);
    ASSERT_FALSE(r.ok()) << c.needle;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status().message();
  }
  Status g = chat_validate({{"user", "a"}, {"assistant", "b"}}, /*for_generation=*/true);
  EXPECT_NE(g.message().find("must end with a user turn"), std::string::npos) << g.message();
  EXPECT_TRUE(chat_validate({{"system", "s"}, {"user", "a"}}, true).ok());
  EXPECT_DEATH(encode_generation_prompt(t, std::vector<ChatMessage>{{"assistant", "x"}}), "expected 'user'");
}

}  // namespace
}  // namespace mariana
