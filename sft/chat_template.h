// The chat template: how a conversation becomes token ids, DeepSeek-style. The layout is
//   [BOS] system? ([USER] user-content [ASSISTANT] assistant-content [EOS])* ...
// where [X] is one special token id and *-content is tokenizer.encode_ordinary(content) (special-
// token text in a message stays text, so content cannot inject control tokens).
// SFT trains on the assistant content and its closing EOS only; generation, evaluation and GRPO
// start decoding right after a prompt that ends with [ASSISTANT]. This file is the template only;
// the SFT data loader is sft/sft_data.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "train/tokenizer.h"

namespace mariana {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;  // plain text; special-token spellings in it are encoded as ordinary bytes
};

struct EncodedChat {
  std::vector<int32_t> ids;
  // loss_mask[i] (same length as ids) is on INPUT positions: 1 where ids[i] is a token the model
  // must learn to produce — an assistant-content token or the EOS that closes an assistant turn —
  // and 0 for BOS, system and user content, the [USER] and [ASSISTANT] markers. For training, the
  // prediction made at position i (target ids[i+1]) gets a loss iff loss_mask[i+1] == 1, so the
  // [ASSISTANT] marker's position predicts the first assistant token, and the last assistant
  // token's position predicts EOS. Position 0 (BOS) is never a loss target.
  std::vector<uint8_t> loss_mask;
};

// The conversation rules, checked by encode_chat and chat_validate: roles are "system", "user" or
// "assistant"; at most one system message, and only as the first message; after it, user and
// assistant turns alternate starting with user; at least one user turn. InvalidArgument
// "messages[i].role: ..." otherwise. With `for_generation` the last message must be a user turn.
Status chat_validate(const std::vector<ChatMessage>& messages, bool for_generation = false);

// The whole conversation (it may end with either role; a trailing user turn is encoded as
// [USER] content with nothing after it). Errors: chat_validate's.
Result<EncodedChat> encode_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages);

// The prompt for generating the next assistant turn: the conversation, which must end with a user
// turn, encoded as encode_chat does, followed by [ASSISTANT]. Decoding continues from there and
// stops at EOS. Equal to the prefix of encode_chat(messages + {assistant, reply}).ids that ends
// with that [ASSISTANT]. Invalid messages are a caller bug (check with chat_validate(messages,
// true) first when they come from a user): MARIANA_CHECK aborts naming the problem.
std::vector<int32_t> encode_generation_prompt(const Tokenizer& tok, const std::vector<ChatMessage>& messages);

// The same for a single-turn prompt: [BOS] [USER] encode(user) [ASSISTANT].
std::vector<int32_t> encode_generation_prompt(const Tokenizer& tok, const std::string& user);

}  // namespace mariana
