#include "text/prompt.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "text/unicode.h"

namespace sdonnx {
namespace {

// Weights stay in double until the end, as in AUTOMATIC1111 (Python floats):
// equal-weight pieces are joined by exact comparison, so the products must
// be formed in the same order and precision.
struct Segment {
  std::u32string text;
  double weight;
};

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;
// Bound on an explicit weight and on a weight while brackets still multiply
// it. The product of two such values stays below 1e300, so no weight becomes
// infinite (and then NaN, as infinity times 0 would) before the final clamp
// to kMaxPromptWeight. Ordinary prompts stay far below it, so until that
// clamp their weights match AUTOMATIC1111's exactly.
constexpr double kRunningWeightLimit = 1e150;
constexpr std::u32string_view kBreak = U"BREAK";

bool IsSyntaxCharacter(char32_t c) {
  return c == U'\\' || c == U'(' || c == U')' || c == U'[' || c == U']' || c == U':';
}

double ClampRunningWeight(double weight) {
  return std::clamp(weight, -kRunningWeightLimit, kRunningWeightLimit);
}

// Converts the sign, digits (any script's decimal digits, as Python's
// float() accepts) and dots of a weight; nullopt unless it is a number. A
// number too large for a double becomes kRunningWeightLimit, where Python
// gives inf, and one too small becomes 0.
std::optional<double> ParseWeightNumber(std::u32string_view text) {
  std::string ascii;
  bool negative = false;
  if (!text.empty() && (text[0] == U'+' || text[0] == U'-')) {
    negative = text[0] == U'-';
    text.remove_prefix(1);
  }
  for (char32_t c : text) {
    ascii.push_back(c == U'.' ? '.' : static_cast<char>('0' + unicode::DecimalDigitValue(c)));
  }
  const bool has_digit = ascii.find_first_of("0123456789") != std::string::npos;
  if (!has_digit || std::count(ascii.begin(), ascii.end(), '.') > 1) return std::nullopt;
  double value = 0;
  const auto [end, error] = std::from_chars(ascii.data(), ascii.data() + ascii.size(), value);
  if (error != std::errc() && error != std::errc::result_out_of_range) return std::nullopt;
  if (end != ascii.data() + ascii.size()) return std::nullopt;
  if (error == std::errc::result_out_of_range) {
    // from_chars leaves `value` unchanged here. Only a number with a nonzero
    // digit before the '.' can overflow; any other one underflowed.
    const std::string integer_part = ascii.substr(0, ascii.find('.'));
    const bool overflow = integer_part.find_first_of("123456789") != std::string::npos;
    value = overflow ? kRunningWeightLimit : 0.0;
  }
  value = ClampRunningWeight(value);
  return negative ? -value : value;
}

// Matches AUTOMATIC1111's weight token `:\s*([+-]?[.\d]+)\s*\)` at
// prompt[colon]. On success returns the weight and sets *end past the ')'.
std::optional<double> MatchWeight(std::u32string_view prompt, std::size_t colon,
                                  std::size_t* end) {
  std::size_t i = colon + 1;
  while (i < prompt.size() && unicode::IsSpace(prompt[i])) ++i;
  const std::size_t number_start = i;
  if (i < prompt.size() && (prompt[i] == U'+' || prompt[i] == U'-')) ++i;
  const std::size_t digits_start = i;
  while (i < prompt.size() && (prompt[i] == U'.' || unicode::IsDecimalDigit(prompt[i]))) ++i;
  if (i == digits_start) return std::nullopt;
  const std::size_t number_end = i;
  while (i < prompt.size() && unicode::IsSpace(prompt[i])) ++i;
  if (i >= prompt.size() || prompt[i] != U')') return std::nullopt;
  std::optional<double> weight =
      ParseWeightNumber(prompt.substr(number_start, number_end - number_start));
  if (weight) *end = i + 1;
  return weight;
}

// Splits text at AUTOMATIC1111's `\s*\bBREAK\b\s*`: "BREAK" with no word
// character (Python's \w) right before or after it, with the whitespace
// around it.
std::vector<std::u32string_view> SplitAtBreak(std::u32string_view text) {
  std::vector<std::u32string_view> parts;
  std::size_t part_start = 0;
  std::size_t search = 0;
  while (true) {
    const std::size_t k = text.find(kBreak, search);
    if (k == std::u32string_view::npos) break;
    const std::size_t after = k + kBreak.size();
    const bool bounded = (k == 0 || !unicode::IsWordCharacter(text[k - 1])) &&
                         (after == text.size() || !unicode::IsWordCharacter(text[after]));
    if (!bounded) {
      search = k + 1;
      continue;
    }
    std::size_t match_start = k;
    while (match_start > part_start && unicode::IsSpace(text[match_start - 1])) --match_start;
    std::size_t match_end = after;
    while (match_end < text.size() && unicode::IsSpace(text[match_end])) ++match_end;
    parts.push_back(text.substr(part_start, match_start - part_start));
    part_start = match_end;
    search = match_end;
  }
  parts.push_back(text.substr(part_start));
  return parts;
}

class AttentionParser {
 public:
  std::vector<Segment> Parse(std::u32string_view prompt) {
    std::size_t i = 0;
    while (i < prompt.size()) i = Step(prompt, i);
    // Brackets still open at the end close there: round ones first, each in
    // the order it was opened, then square ones.
    for (std::size_t start : round_) MultiplyFrom(start, kRoundMultiplier);
    for (std::size_t start : square_) MultiplyFrom(start, kSquareMultiplier);
    if (segments_.empty()) segments_.push_back({U"", 1.0});
    // Clamped before the join, so pieces that both reach the limit join.
    for (Segment& segment : segments_) {
      segment.weight = std::clamp(segment.weight, -kMaxPromptWeight, kMaxPromptWeight);
    }
    return JoinEqualWeights();
  }

 private:
  // Handles the syntax element at prompt[i] and returns the index after it.
  std::size_t Step(std::u32string_view prompt, std::size_t i) {
    switch (prompt[i]) {
      case U'\\':
        return AddEscape(prompt, i);
      case U'(':
        round_.push_back(segments_.size());
        return i + 1;
      case U'[':
        square_.push_back(segments_.size());
        return i + 1;
      case U':':
        return AddColon(prompt, i);
      case U')':
        return Close(round_, kRoundMultiplier, prompt, i);
      case U']':
        return Close(square_, kSquareMultiplier, prompt, i);
      default:
        return AddTextRun(prompt, i);
    }
  }

  // `\(` `\)` `\[` `\]` `\\` add their second character, and any other '\'
  // adds nothing. Neither is checked for BREAK.
  std::size_t AddEscape(std::u32string_view prompt, std::size_t i) {
    const char32_t next = i + 1 < prompt.size() ? prompt[i + 1] : U'\0';
    const bool escape =
        next == U'(' || next == U')' || next == U'[' || next == U']' || next == U'\\';
    segments_.push_back({escape ? std::u32string(1, next) : U"", 1.0});
    return i + (escape ? 2 : 1);
  }

  // A weight closes the innermost '(' with that factor. Without an open '(',
  // the whole weight token is text, and a ':' that starts no weight is too.
  std::size_t AddColon(std::u32string_view prompt, std::size_t i) {
    std::size_t end = 0;
    const std::optional<double> weight = MatchWeight(prompt, i, &end);
    if (!weight) {
      AddText(prompt.substr(i, 1));
      return i + 1;
    }
    if (round_.empty()) {
      AddText(prompt.substr(i, end - i));
    } else {
      MultiplyFrom(PopBack(round_), *weight);
    }
    return end;
  }

  std::size_t Close(std::vector<std::size_t>& open, double factor, std::u32string_view prompt,
                    std::size_t i) {
    if (open.empty()) {
      AddText(prompt.substr(i, 1));
    } else {
      MultiplyFrom(PopBack(open), factor);
    }
    return i + 1;
  }

  std::size_t AddTextRun(std::u32string_view prompt, std::size_t i) {
    std::size_t end = i;
    while (end < prompt.size() && !IsSyntaxCharacter(prompt[end])) ++end;
    AddText(prompt.substr(i, end - i));
    return end;
  }

  static std::size_t PopBack(std::vector<std::size_t>& stack) {
    const std::size_t value = stack.back();
    stack.pop_back();
    return value;
  }

  void AddText(std::u32string_view text) {
    const std::vector<std::u32string_view> parts = SplitAtBreak(text);
    for (std::size_t p = 0; p < parts.size(); ++p) {
      if (p > 0) segments_.push_back({std::u32string(kBreak), -1.0});
      segments_.push_back({std::u32string(parts[p]), 1.0});
    }
  }

  // Multiplies the weight of every piece from `start` on, within
  // kRunningWeightLimit. A piece inside n brackets is visited n times, so the
  // work grows with depth times length. For 100 KB of "(a" that takes about
  // 0.5 s on a 2-core x86-64 machine
  // (PromptParse.HundredKilobytesOfNestedPiecesIsFast, Release build).
  void MultiplyFrom(std::size_t start, double factor) {
    for (std::size_t p = start; p < segments_.size(); ++p) {
      segments_[p].weight = ClampRunningWeight(segments_[p].weight * factor);
    }
  }

  std::vector<Segment> JoinEqualWeights() {
    std::vector<Segment> joined;
    for (Segment& segment : segments_) {
      if (!joined.empty() && joined.back().weight == segment.weight) {
        joined.back().text += segment.text;
      } else {
        joined.push_back(std::move(segment));
      }
    }
    return joined;
  }

  std::vector<Segment> segments_;
  std::vector<std::size_t> round_;   // index of the first piece inside each open '('
  std::vector<std::size_t> square_;  // index of the first piece inside each open '['
};

std::vector<Segment> ParseSegments(std::string_view prompt) {
  return AttentionParser().Parse(unicode::DecodeUtf8(prompt));
}

bool IsBreak(const Segment& segment) { return segment.text == kBreak && segment.weight == -1.0; }

class Chunker {
 public:
  Chunker(const ClipTokenizer& tokenizer, std::int32_t pad_id)
      : start_id_(tokenizer.StartId()),
        end_id_(tokenizer.EndId()),
        pad_id_(pad_id),
        comma_id_(tokenizer.TokenId(",</w>")) {}

  void AddBreak() { CloseChunk(); }

  void AddToken(std::int32_t token, float weight) {
    if (comma_id_ && token == *comma_id_) {
      last_comma_ = ids_.size();
    } else if (ids_.size() == kChunkTokens && last_comma_ &&
               ids_.size() - *last_comma_ <= kCommaBacktrackTokens) {
      const std::size_t cut = *last_comma_ + 1;
      std::vector<std::int32_t> moved_ids(ids_.begin() + cut, ids_.end());
      std::vector<float> moved_weights(weights_.begin() + cut, weights_.end());
      ids_.resize(cut);
      weights_.resize(cut);
      CloseChunk();
      ids_ = std::move(moved_ids);
      weights_ = std::move(moved_weights);
    }
    if (ids_.size() == kChunkTokens) CloseChunk();
    ids_.push_back(token);
    weights_.push_back(weight);
  }

  std::vector<PromptChunk> Finish() {
    if (!ids_.empty() || chunks_.empty()) CloseChunk();
    return std::move(chunks_);
  }

 private:
  void CloseChunk() {
    PromptChunk chunk;
    chunk.ids.reserve(kChunkLength);
    chunk.ids.push_back(start_id_);
    chunk.ids.insert(chunk.ids.end(), ids_.begin(), ids_.end());
    chunk.ids.resize(kChunkLength - 1, end_id_);
    chunk.ids.push_back(end_id_);
    chunk.weights.push_back(1.0f);
    chunk.weights.insert(chunk.weights.end(), weights_.begin(), weights_.end());
    chunk.weights.resize(kChunkLength, 1.0f);
    if (pad_id_ != end_id_) {
      // As AUTOMATIC1111 does: everything after the first end-of-text id,
      // even a prompt token, becomes padding.
      auto first_end = std::find(chunk.ids.begin(), chunk.ids.end(), end_id_);
      if (first_end != chunk.ids.end()) std::fill(first_end + 1, chunk.ids.end(), pad_id_);
    }
    chunks_.push_back(std::move(chunk));
    ids_.clear();
    weights_.clear();
    last_comma_.reset();
  }

  std::int32_t start_id_;
  std::int32_t end_id_;
  std::int32_t pad_id_;
  std::optional<std::int32_t> comma_id_;
  std::vector<std::int32_t> ids_;  // tokens of the open chunk, without start and end
  std::vector<float> weights_;
  std::optional<std::size_t> last_comma_;  // index in ids_ of its last comma
  std::vector<PromptChunk> chunks_;
};

PromptChunk EmptyChunk(std::int32_t start_id, std::int32_t end_id, std::int32_t pad_id) {
  PromptChunk chunk;
  chunk.ids.assign(kChunkLength, pad_id);
  chunk.ids[0] = start_id;
  chunk.ids[1] = end_id;
  chunk.weights.assign(kChunkLength, 1.0f);
  return chunk;
}

}  // namespace

std::vector<std::pair<std::string, float>> ParsePromptAttention(std::string_view prompt) {
  std::vector<std::pair<std::string, float>> result;
  for (const Segment& segment : ParseSegments(prompt)) {
    result.emplace_back(unicode::EncodeUtf8(segment.text), static_cast<float>(segment.weight));
  }
  return result;
}

std::vector<PromptChunk> TokenizePrompt(const ClipTokenizer& tokenizer, std::string_view prompt,
                                        std::int32_t pad_id) {
  Chunker chunker(tokenizer, pad_id);
  for (const Segment& segment : ParseSegments(prompt)) {
    if (IsBreak(segment)) {
      chunker.AddBreak();
      continue;
    }
    const float weight = static_cast<float>(segment.weight);
    for (std::int32_t token : tokenizer.Encode(unicode::EncodeUtf8(segment.text))) {
      chunker.AddToken(token, weight);
    }
  }
  return chunker.Finish();
}

std::size_t CountPromptTokens(const ClipTokenizer& tokenizer, std::string_view prompt) {
  std::size_t count = 0;
  for (const Segment& segment : ParseSegments(prompt)) {
    if (!IsBreak(segment)) count += tokenizer.Encode(unicode::EncodeUtf8(segment.text)).size();
  }
  return count;
}

void EqualizeChunkCounts(std::vector<PromptChunk>& a, std::vector<PromptChunk>& b,
                         std::int32_t start_id, std::int32_t end_id, std::int32_t pad_id) {
  std::vector<PromptChunk>& shorter = a.size() < b.size() ? a : b;
  const std::size_t target = std::max(a.size(), b.size());
  while (shorter.size() < target) shorter.push_back(EmptyChunk(start_id, end_id, pad_id));
}

}  // namespace sdonnx
