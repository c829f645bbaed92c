// The DeepSeek-style chat template (layout and mask semantics in sft/chat_template.h).
#include "sft/chat_template.h"

#include <cstdio>
#include <cstdlib>

namespace mariana {
namespace {

void append(std::vector<int32_t>* ids, std::vector<uint8_t>* mask, const std::vector<int32_t>& toks,
            uint8_t m) {
  ids->insert(ids->end(), toks.begin(), toks.end());
  mask->insert(mask->end(), toks.size(), m);
}

void append_one(std::vector<int32_t>* ids, std::vector<uint8_t>* mask, int32_t id, uint8_t m) {
  ids->push_back(id);
  mask->push_back(m);
}

EncodedChat encode_valid(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  EncodedChat out;
  append_one(&out.ids, &out.loss_mask, tok.bos_id(), 0);
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      append(&out.ids, &out.loss_mask, tok.encode_ordinary(m.content), 0);
    } else if (m.role == "user") {
      append_one(&out.ids, &out.loss_mask, tok.special_id(SpecialToken::kUser), 0);
      append(&out.ids, &out.loss_mask, tok.encode_ordinary(m.content), 0);
    } else {  // assistant
      append_one(&out.ids, &out.loss_mask, tok.special_id(SpecialToken::kAssistant), 0);
      append(&out.ids, &out.loss_mask, tok.encode_ordinary(m.content), 1);
      append_one(&out.ids, &out.loss_mask, tok.eos_id(), 1);
    }
  }
  return out;
}

}  // namespace

Status chat_validate(const std::vector<ChatMessage>& messages, bool for_generation) {
  if (messages.empty()) return InvalidArgument("messages: empty conversation");
  bool any_user = false;
  std::string expect = "user";  // the role the next non-system turn must have
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    const std::string where = "messages[" + std::to_string(i) + "].role";
    if (role == "system") {
      if (i != 0) return InvalidArgument(where + ": 'system' is allowed only as the first message");
      continue;
    }
    if (role != "user" && role != "assistant") {
      return InvalidArgument(where + ": '" + role + "' is not one of system, user, assistant");
    }
    if (role != expect) {
      return InvalidArgument(where + ": expected '" + expect + "' (user and assistant turns alternate, " +
                             "starting with user), got '" + role + "'");
    }
    any_user = any_user || role == "user";
    expect = role == "user" ? "assistant" : "user";
  }
  if (!any_user) return InvalidArgument("messages: no user turn");
  if (for_generation && messages.back().role != "user") {
    return InvalidArgument("messages[" + std::to_string(messages.size() - 1) +
                           "].role: a generation prompt must end with a user turn, got '" +
                           messages.back().role + "'");
  }
  return Status::Ok();
}

Result<EncodedChat> encode_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  MARIANA_RETURN_IF_ERROR(chat_validate(messages));
  return encode_valid(tok, messages);
}

std::vector<int32_t> encode_generation_prompt(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  Status st = chat_validate(messages, /*for_generation=*/true);
  if (!st.ok()) {
    std::fprintf(stderr, "encode_generation_prompt: %s\n", st.to_string().c_str());
    MARIANA_CHECK(st.ok());
  }
  std::vector<int32_t> ids = encode_valid(tok, messages).ids;
  ids.push_back(tok.special_id(SpecialToken::kAssistant));
  return ids;
}

std::vector<int32_t> encode_generation_prompt(const Tokenizer& tok, const std::string& user) {
  return encode_generation_prompt(tok, std::vector<ChatMessage>{{"user", user}});
}

}  // namespace mariana
