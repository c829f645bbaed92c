// The pieces of the data pipeline that need a real Tokenizer, kept apart so that code and tests
// that feed token ids directly (TokenEncoder) link without the tokenizer.
#include "train/data.h"

namespace mariana {

Result<PrepareReport> data_prepare(const Tokenizer& tok, const PrepareOptions& opt) {
  TokenEncoder enc;
  enc.encode = [&tok](std::string_view text) { return tok.encode(text); };
  enc.vocab_size = tok.vocab_size();
  return data_prepare(enc, opt);
}

void loader_options_set_special_tokens(const Tokenizer& tok, LoaderOptions* opt) {
  opt->bos = tok.special_id(SpecialToken::kBos);
  opt->eos = tok.special_id(SpecialToken::kEos);
  opt->fim_begin = tok.special_id(SpecialToken::kFimBegin);
  opt->fim_hole = tok.special_id(SpecialToken::kFimHole);
  opt->fim_end = tok.special_id(SpecialToken::kFimEnd);
}

}  // namespace mariana
