// Evaluations on a checkpoint: passkey retrieval over a length × depth grid (the report's
// "needle in a haystack" figure), with greedy decoding by full forwards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/model.h"
#include "train/tokenizer.h"

namespace mariana {

struct PasskeyGrid {
  std::vector<int64_t> lengths;              // context lengths in tokens (prompt + answer)
  std::vector<double> depths;                // relative position of the passkey, 0..1
  std::vector<std::vector<double>> accuracy; // [length][depth], fraction of exact answers
  int64_t samples = 0;                       // per cell
  std::vector<std::string> examples;         // per cell: "expected -> generated" of its first sample
  double mean(size_t length_index) const;
};

// `samples` prompts per cell, each left-padded into one batch as an invisible document; a cell is
// right when the greedy continuation starts with the answer's digits.
Result<PasskeyGrid> eval_passkey(Model<float>& model, const Tokenizer& tok, const std::vector<int64_t>& lengths,
                                 const std::vector<double>& depths, int64_t samples, uint64_t seed);

std::string passkey_table(const PasskeyGrid& g);
std::string passkey_svg(const PasskeyGrid& g, const std::string& title);
nlohmann::ordered_json passkey_json(const PasskeyGrid& g);

}  // namespace mariana
