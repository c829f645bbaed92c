// tokenizer.json (HF tokenizers format, see train/tokenizer_format.md): save() writes it in one
// canonical layout; load() accepts that layout and HF byte-level BPE files (Sequence/Split/ByteLevel/
// Digits pre-tokenizers, added tokens, an identity normalizer), and rejects settings that would
// make HF produce other ids than we do.
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/json_util.h"
#include "train/tokenizer_internal.h"

namespace mariana {

namespace {

using ojson = nlohmann::ordered_json;

std::string json_quote(const std::string& s) { return nlohmann::json(s).dump(); }

Status field_error(const std::string& file, const std::string& field, const std::string& what) {
  return InvalidArgument(file + ": field '" + field + "': " + what);
}

// The field must be absent or null: we implement none of it.
Status require_null(const JsonFields& f, const std::string& name, const char* why) {
  if (!f.has(name)) return Status::Ok();
  const std::string path = f.prefix().empty() ? name : f.prefix() + "." + name;
  return field_error(f.file(), path, std::string("expected null (") + why + "), got " + json_describe(*f.find(name)));
}

Status require_string(const JsonFields& f, const std::string& name, const std::string& want) {
  MARIANA_ASSIGN_OR_RETURN(std::string got, f.get_string(name));
  if (got == want) return Status::Ok();
  const std::string path = f.prefix().empty() ? name : f.prefix() + "." + name;
  return field_error(f.file(), path, "expected " + json_quote(want) + ", got " + json_quote(got));
}

Status require_bool(const JsonFields& f, const std::string& name, bool dflt, bool want) {
  MARIANA_ASSIGN_OR_RETURN(bool got, f.get_bool_or(name, dflt));
  if (got == want) return Status::Ok();
  const std::string path = f.prefix().empty() ? name : f.prefix() + "." + name;
  return field_error(f.file(), path, std::string("expected ") + (want ? "true" : "false") + " (only that is supported)");
}

std::string path_of(const JsonFields& f, const std::string& name) { return f.prefix().empty() ? name : f.prefix() + "." + name; }

// A ByteLevel decoder / post-processor object (they change neither ids nor decoded bytes).
Status check_byte_level(const JsonFields& root, const std::string& name) {
  MARIANA_ASSIGN_OR_RETURN(JsonFields o, root.get_object(name));
  return require_string(o, "type", "ByteLevel");
}

// Only normalizers that change nothing: null or a Sequence of such (DeepSeek-V3 has an empty one).
Status check_normalizer(const JsonFields& n) {
  MARIANA_ASSIGN_OR_RETURN(std::string type, n.get_string("type"));
  if (type != "Sequence") {
    return field_error(n.file(), path_of(n, "type"), "normalizer " + json_quote(type) +
                       " is not supported (only null or a Sequence of none; it would change the ids)");
  }
  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> parts, n.get_object_array("normalizers"));
  for (const JsonFields& p : parts) MARIANA_RETURN_IF_ERROR(check_normalizer(p));
  return Status::Ok();
}

Result<SplitBehavior> parse_behavior(const JsonFields& o) {
  MARIANA_ASSIGN_OR_RETURN(std::string b, o.get_string("behavior"));
  static const std::pair<const char*, SplitBehavior> kNames[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  for (const auto& [name, v] : kNames) {
    if (b == name) return v;
  }
  return field_error(o.file(), path_of(o, "behavior"),
                     "expected one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous, got " + json_quote(b));
}

// Appends the split steps of one pre-tokenizer object to `pre`. The bytes-to-alphabet mapping of
// ByteLevel must come last (a Split after it would see the mapped characters); `byte_level` records
// that it was seen.
Status parse_pre_tokenizer(const JsonFields& o, PreTokenizer* pre, bool* byte_level) {
  MARIANA_ASSIGN_OR_RETURN(std::string type, o.get_string("type"));
  if (*byte_level) return field_error(o.file(), path_of(o, "type"), "a pre-tokenizer after ByteLevel is not supported (ByteLevel must be last)");
  if (type == "Sequence") {
    MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> parts, o.get_object_array("pretokenizers"));
    for (const JsonFields& p : parts) MARIANA_RETURN_IF_ERROR(parse_pre_tokenizer(p, pre, byte_level));
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    MARIANA_RETURN_IF_ERROR(require_bool(o, "add_prefix_space", true, false));
    MARIANA_ASSIGN_OR_RETURN(bool use_regex, o.get_bool_or("use_regex", true));
    if (use_regex) pre->append(PreTokenizer::gpt2());
    *byte_level = true;
    return Status::Ok();
  }
  if (type == "Digits") {  // HF: split on char::is_numeric (categories Nd, Nl, No)
    MARIANA_ASSIGN_OR_RETURN(bool individual, o.get_bool_or("individual_digits", false));
    pre->add({Regex::compile(individual ? "\\p{N}" : "\\p{N}+", false).value(), SplitBehavior::kIsolated, false});
    return Status::Ok();
  }
  if (type == "Split") {
    MARIANA_ASSIGN_OR_RETURN(JsonFields pattern, o.get_object("pattern"));
    const bool literal = pattern.has("String");
    if (literal == pattern.has("Regex")) {
      return field_error(o.file(), path_of(o, "pattern"), "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    MARIANA_ASSIGN_OR_RETURN(std::string text, pattern.get_string(literal ? "String" : "Regex"));
    auto re = Regex::compile(text, literal);
    if (!re.ok()) return field_error(o.file(), path_of(pattern, literal ? "String" : "Regex"), re.status().message());
    SplitStep step{std::move(re).value()};
    MARIANA_ASSIGN_OR_RETURN(step.behavior, parse_behavior(o));
    MARIANA_ASSIGN_OR_RETURN(step.invert, o.get_bool_or("invert", false));
    pre->add(std::move(step));
    return Status::Ok();
  }
  return field_error(o.file(), path_of(o, "type"), "pre-tokenizer " + json_quote(type) + " is not supported (Sequence, Split, ByteLevel, Digits are)");
}

// The bytes an added token decodes to: HF's ByteLevel decoder maps a token whose characters are
// all in the byte-level alphabet back to those bytes, and any other token to its UTF-8.
std::string added_token_bytes(const std::string& content) {
  std::string bytes;
  return byte_level_decode(content, &bytes) ? bytes : content;
}

}  // namespace

Status Tokenizer::save(const std::string& path) const {
  const Impl& im = *impl_;
  std::vector<std::string> vocab(im.id_bytes.size());
  for (size_t i = 0; i < vocab.size(); ++i) vocab[i] = im.id_is_special[i] ? im.id_bytes[i] : byte_level_encode(im.id_bytes[i]);
  for (const AddedToken& a : im.added_tokens) vocab[a.id] = a.content;

  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (size_t k = 0; k < im.added_tokens.size(); ++k) {
    const AddedToken& a = im.added_tokens[k];
    ojson t;
    t["id"] = a.id;
    t["content"] = a.content;
    t["single_word"] = false;
    t["lstrip"] = false;
    t["rstrip"] = false;
    t["normalized"] = a.normalized;
    t["special"] = a.special;
    out += (k ? ",\n    " : "\n    ") + t.dump();
  }
  out += "\n  ],\n  \"normalizer\": null,\n";
  out += "  \"pre_tokenizer\": " +
         (im.pre_tokenizer_json.empty() ? std::string("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}")
                                        : im.pre_tokenizer_json) + ",\n";
  out += "  \"post_processor\": null,\n";
  out += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n";
  out += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
         "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
         "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {";
  for (size_t i = 0; i < vocab.size(); ++i) out += (i ? ",\n      " : "\n      ") + json_quote(vocab[i]) + ": " + std::to_string(i);
  out += "\n    },\n    \"merges\": [";
  for (size_t r = 0; r < im.merges.size(); ++r) {
    out += (r ? ",\n      [" : "\n      [") + json_quote(vocab[im.merges[r].first]) + ", " + json_quote(vocab[im.merges[r].second]) + "]";
  }
  out += im.merges.empty() ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n";
  return write_file_atomic(path, out);
}

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(JsonFields root, JsonFields::load(path));
  // Settings HF would apply and we do not: refuse them rather than produce other ids.
  MARIANA_RETURN_IF_ERROR(require_null(root, "truncation", "truncation is not supported"));
  MARIANA_RETURN_IF_ERROR(require_null(root, "padding", "padding is not supported"));
  if (root.has("normalizer")) {
    MARIANA_ASSIGN_OR_RETURN(JsonFields normalizer, root.get_object("normalizer"));
    MARIANA_RETURN_IF_ERROR(check_normalizer(normalizer));
  }
  auto impl = std::make_unique<Impl>();
  {
    MARIANA_ASSIGN_OR_RETURN(JsonFields pre, root.get_object("pre_tokenizer"));
    bool byte_level = false;
    MARIANA_RETURN_IF_ERROR(parse_pre_tokenizer(pre, &impl->pre_tokenizer, &byte_level));
    if (!byte_level) return field_error(path, "pre_tokenizer", "expected a ByteLevel pre-tokenizer (last in a Sequence)");
    // The plain GPT-2 ByteLevel is save()'s default; anything else is written back as read.
    MARIANA_ASSIGN_OR_RETURN(std::string type, pre.get_string("type"));
    MARIANA_ASSIGN_OR_RETURN(bool use_regex, pre.get_bool_or("use_regex", true));
    if (type != "ByteLevel" || !use_regex) impl->pre_tokenizer_json = pre.json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (root.has("decoder")) MARIANA_RETURN_IF_ERROR(check_byte_level(root, "decoder"));
  if (root.has("post_processor")) MARIANA_RETURN_IF_ERROR(check_byte_level(root, "post_processor"));

  MARIANA_ASSIGN_OR_RETURN(JsonFields model, root.get_object("model"));
  MARIANA_RETURN_IF_ERROR(require_string(model, "type", "BPE"));
  if (model.has("dropout")) {
    MARIANA_ASSIGN_OR_RETURN(double dropout, model.get_double("dropout"));
    if (dropout != 0.0) return field_error(path, "model.dropout", "expected null (BPE dropout is not supported)");
  }
  for (const char* f : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    MARIANA_ASSIGN_OR_RETURN(std::string v, model.get_string_or(f, ""));
    if (!v.empty()) return field_error(path, std::string("model.") + f, "expected null (not supported), got " + json_quote(v));
  }
  MARIANA_RETURN_IF_ERROR(require_bool(model, "ignore_merges", false, false));

  // Added tokens (special or not): matched in the text before pre-tokenization. Their texts may
  // also be in model.vocab (HF's trainer puts them there) with the same id.
  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> added, root.get_object_array("added_tokens"));
  std::unordered_map<std::string, int32_t> added_ids;
  impl->special_ids.fill(-1);
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    AddedToken t;
    MARIANA_ASSIGN_OR_RETURN(t.content, added[i].get_string("content"));
    MARIANA_ASSIGN_OR_RETURN(int64_t id, added[i].get_int("id"));
    MARIANA_ASSIGN_OR_RETURN(t.special, added[i].get_bool_or("special", false));
    MARIANA_ASSIGN_OR_RETURN(t.normalized, added[i].get_bool_or("normalized", !t.special));
    for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
      MARIANA_RETURN_IF_ERROR(require_bool(added[i], flag, false, false));
    }
    if (t.content.empty()) return field_error(path, field + ".content", "empty");
    if (id < 0 || id >= (int64_t{1} << 31) - 1) return field_error(path, field + ".id", "id " + std::to_string(id) + " out of range");
    t.id = static_cast<int32_t>(id);
    if (!added_ids.emplace(t.content, t.id).second) return field_error(path, field + ".content", "duplicate added token " + json_quote(t.content));
    for (int s = 0; s < kNumSpecialTokens; ++s) {
      if (t.content == special_token_text(static_cast<SpecialToken>(s))) impl->special_ids[s] = t.id;
    }
    impl->added_tokens.push_back(std::move(t));
  }
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    if (impl->special_ids[s] < 0) {
      return field_error(path, "added_tokens", std::string("missing special token ") + json_quote(special_token_text(static_cast<SpecialToken>(s))));
    }
  }

  // Vocab: string -> id. Every string that is not an added token must spell bytes in the
  // byte-level alphabet.
  MARIANA_ASSIGN_OR_RETURN(JsonFields vocab_f, model.get_object("vocab"));
  std::vector<int8_t> kind;  // per id: 0 unset, 1 ordinary, 2 added token
  std::unordered_map<std::string, int32_t> vocab;
  auto place = [&](int64_t id, std::string bytes, bool is_added, const std::string& field) -> Status {
    if (id < 0 || id >= (int64_t{1} << 31) - 1) return field_error(path, field, "id " + std::to_string(id) + " out of range");
    if (static_cast<size_t>(id) >= kind.size()) {
      kind.resize(id + 1, 0);
      impl->id_bytes.resize(id + 1);
    }
    if (kind[id] != 0) return field_error(path, field, "id " + std::to_string(id) + " is already used by " + json_quote(byte_level_encode(impl->id_bytes[id])));
    kind[id] = is_added ? 2 : 1;
    impl->id_bytes[id] = std::move(bytes);
    return Status::Ok();
  };
  for (const AddedToken& t : impl->added_tokens) MARIANA_RETURN_IF_ERROR(place(t.id, added_token_bytes(t.content), true, "added_tokens"));
  for (const std::string& key : vocab_f.keys()) {
    const std::string field = "model.vocab." + key;
    const nlohmann::json& v = vocab_f.json().at(key);
    if (!v.is_number_integer()) return field_error(path, field, "expected an integer id, got " + json_describe(v));
    const int64_t id = v.get<int64_t>();
    if (auto a = added_ids.find(key); a != added_ids.end()) {
      if (a->second != id) return field_error(path, field, "id " + std::to_string(id) + " differs from added_tokens' id " + std::to_string(a->second));
    } else {
      std::string bytes;
      if (!byte_level_decode(key, &bytes) || bytes.empty()) {
        return field_error(path, "model.vocab", "token " + json_quote(key) + " is not a string of byte-level alphabet characters");
      }
      MARIANA_RETURN_IF_ERROR(place(id, std::move(bytes), false, field));
    }
    vocab.emplace(key, static_cast<int32_t>(id));
  }
  for (size_t id = 0; id < kind.size(); ++id) {
    if (kind[id] == 0) return field_error(path, "model.vocab", "no token has id " + std::to_string(id) + " (ids must be 0.." + std::to_string(kind.size() - 1) + ")");
  }
  impl->id_is_special.resize(kind.size());
  for (size_t id = 0; id < kind.size(); ++id) impl->id_is_special[id] = kind[id] == 2;
  impl->byte_ids.fill(-1);
  for (size_t id = 0; id < kind.size(); ++id) {
    if (kind[id] == 1 && impl->id_bytes[id].size() == 1) impl->byte_ids[static_cast<uint8_t>(impl->id_bytes[id][0])] = static_cast<int32_t>(id);
  }
  for (int b = 0; b < 256; ++b) {
    if (impl->byte_ids[b] < 0) return field_error(path, "model.vocab", "byte " + std::to_string(b) + " (" + json_quote(byte_level_char(b)) + ") has no token");
  }

  // Merges: [["a", "b"], ...] or the older ["a b", ...]; both parts and their concatenation must be
  // ordinary vocab tokens.
  std::optional<nlohmann::json> merges_j = model.find("merges");
  if (!merges_j) return field_error(path, "model.merges", "missing");
  if (!merges_j->is_array()) return field_error(path, "model.merges", "expected an array, got " + json_describe(*merges_j));
  for (size_t r = 0; r < merges_j->size(); ++r) {
    const std::string field = "model.merges[" + std::to_string(r) + "]";
    const nlohmann::json& m = (*merges_j)[r];
    std::string left, right;
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else if (m.is_string() && m.get<std::string>().find(' ') != std::string::npos &&
               m.get<std::string>().find(' ') == m.get<std::string>().rfind(' ')) {
      const std::string s = m.get<std::string>();
      left = s.substr(0, s.find(' '));
      right = s.substr(s.find(' ') + 1);
    } else {
      return field_error(path, field, "expected [\"left\", \"right\"] or \"left right\", got " + json_describe(m));
    }
    int32_t ids[3];
    const std::string parts[3] = {left, right, left + right};
    for (int k = 0; k < 3; ++k) {
      auto it = vocab.find(parts[k]);
      if (it == vocab.end() || impl->id_is_special[it->second]) {
        return field_error(path, field, std::string(k == 2 ? "merged token " : "token ") + json_quote(parts[k]) + " is not in model.vocab");
      }
      ids[k] = it->second;
    }
    impl->merges.emplace_back(ids[0], ids[1]);
  }
  return TokenizerBuilder::finish(std::move(impl));
}

}  // namespace mariana
