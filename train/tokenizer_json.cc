// tokenizer.json (HF tokenizers format, see train/tokenizer_format.md): save() writes it in one
// canonical layout; load() accepts that layout and any HF byte-level BPE file of the same shape,
// and rejects settings that would make HF produce other ids than we do.
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

// A ByteLevel pre-tokenizer / decoder / post-processor object; HF's defaults for absent fields.
Status check_byte_level(const JsonFields& root, const std::string& name, bool check_split) {
  MARIANA_ASSIGN_OR_RETURN(JsonFields o, root.get_object(name));
  MARIANA_RETURN_IF_ERROR(require_string(o, "type", "ByteLevel"));
  if (check_split) {
    MARIANA_RETURN_IF_ERROR(require_bool(o, "add_prefix_space", true, false));
    MARIANA_RETURN_IF_ERROR(require_bool(o, "use_regex", true, true));
  }
  return Status::Ok();
}

int special_index(std::string_view text) {
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    if (text == special_token_text(static_cast<SpecialToken>(s))) return s;
  }
  return -1;
}

}  // namespace

Status Tokenizer::save(const std::string& path) const {
  const Impl& im = *impl_;
  std::vector<std::string> vocab(im.id_bytes.size());
  for (size_t i = 0; i < vocab.size(); ++i) vocab[i] = im.id_is_special[i] ? im.id_bytes[i] : byte_level_encode(im.id_bytes[i]);

  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    ojson t;
    t["id"] = im.special_ids[s];
    t["content"] = vocab[im.special_ids[s]];
    t["single_word"] = false;
    t["lstrip"] = false;
    t["rstrip"] = false;
    t["normalized"] = false;
    t["special"] = true;
    out += (s ? ",\n    " : "\n    ") + t.dump();
  }
  out += "\n  ],\n  \"normalizer\": null,\n";
  out += "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},\n";
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
  MARIANA_RETURN_IF_ERROR(require_null(root, "normalizer", "normalizers are not supported"));
  MARIANA_RETURN_IF_ERROR(check_byte_level(root, "pre_tokenizer", /*check_split=*/true));
  if (root.has("decoder")) MARIANA_RETURN_IF_ERROR(check_byte_level(root, "decoder", false));
  if (root.has("post_processor")) MARIANA_RETURN_IF_ERROR(check_byte_level(root, "post_processor", false));

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

  // Vocab: string -> id. Special-token texts may be in it (HF puts them there) or only in
  // added_tokens; every other string must spell bytes in the byte-level alphabet.
  MARIANA_ASSIGN_OR_RETURN(JsonFields vocab_f, model.get_object("vocab"));
  auto impl = std::make_unique<Impl>();
  std::vector<int8_t> kind;  // per id: 0 unset, 1 ordinary, 2 special
  std::unordered_map<std::string, int32_t> vocab;
  auto place = [&](int64_t id, std::string bytes, bool special, const std::string& field) -> Status {
    if (id < 0 || id >= (int64_t{1} << 31) - 1) return field_error(path, field, "id " + std::to_string(id) + " out of range");
    if (static_cast<size_t>(id) >= kind.size()) {
      kind.resize(id + 1, 0);
      impl->id_bytes.resize(id + 1);
    }
    if (kind[id] != 0) {
      if (special && kind[id] == 2 && impl->id_bytes[id] == bytes) return Status::Ok();  // same token in vocab and added_tokens
      return field_error(path, field, "id " + std::to_string(id) + " is already used by " + json_quote(byte_level_encode(impl->id_bytes[id])));
    }
    kind[id] = special ? 2 : 1;
    impl->id_bytes[id] = std::move(bytes);
    return Status::Ok();
  };
  for (const std::string& key : vocab_f.keys()) {
    const std::string field = "model.vocab." + key;
    const nlohmann::json& v = vocab_f.json().at(key);
    if (!v.is_number_integer()) return field_error(path, field, "expected an integer id, got " + json_describe(v));
    const int64_t id = v.get<int64_t>();
    if (special_index(key) >= 0) {
      MARIANA_RETURN_IF_ERROR(place(id, key, true, field));
    } else {
      std::string bytes;
      if (!byte_level_decode(key, &bytes) || bytes.empty()) {
        return field_error(path, "model.vocab", "token " + json_quote(key) + " is not a string of byte-level alphabet characters");
      }
      MARIANA_RETURN_IF_ERROR(place(id, std::move(bytes), false, field));
    }
    vocab.emplace(key, static_cast<int32_t>(id));
  }

  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> added, root.get_object_array("added_tokens"));
  impl->special_ids.fill(-1);
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    MARIANA_ASSIGN_OR_RETURN(std::string content, added[i].get_string("content"));
    MARIANA_ASSIGN_OR_RETURN(int64_t id, added[i].get_int("id"));
    const int s = special_index(content);
    if (s < 0) {
      return field_error(path, field + ".content", "unsupported added token " + json_quote(content) + " (only Mariana's special tokens are supported)");
    }
    if (impl->special_ids[s] >= 0) return field_error(path, field + ".content", "duplicate added token " + json_quote(content));
    MARIANA_RETURN_IF_ERROR(place(id, content, true, field + ".id"));
    impl->special_ids[s] = static_cast<int32_t>(id);
  }
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    if (impl->special_ids[s] < 0) {
      return field_error(path, "added_tokens", std::string("missing special token ") + json_quote(special_token_text(static_cast<SpecialToken>(s))));
    }
  }
  for (const auto& [key, id] : vocab) {
    const int s = special_index(key);
    if (s >= 0 && impl->special_ids[s] != id) {
      return field_error(path, "model.vocab." + key, "id " + std::to_string(id) + " differs from added_tokens' id " + std::to_string(impl->special_ids[s]));
    }
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
