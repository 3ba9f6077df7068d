#include "text/clip_text.h"

#include "text/html_unescape.h"
#include "text/unicode.h"

namespace sdonnx {
namespace {

constexpr std::u32string_view kSpecialTokens[] = {U"<|startoftext|>", U"<|endoftext|>"};

// openai CLIP matches the contractions case-insensitively. After
// lowercasing, the only other character that still matches is U+017F LATIN
// SMALL LETTER LONG S, whose case folding is 's'.
constexpr std::u32string_view kContractions[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};

std::size_t ContractionLength(std::u32string_view rest) {
  if (rest.size() < 2 || rest[0] != U'\'') return 0;
  for (std::u32string_view suffix : kContractions) {
    const std::u32string_view candidate = rest.substr(1, suffix.size());
    bool match = candidate.size() == suffix.size();
    for (std::size_t k = 0; match && k < suffix.size(); ++k) {
      match = candidate[k] == suffix[k] || (suffix[k] == U's' && candidate[k] == 0x17F);
    }
    if (match) return 1 + suffix.size();
  }
  return 0;
}

// U+0345 COMBINING GREEK YPOGEGRAMMENI is no letter, but its case folding
// is one. openai CLIP's case-insensitive pattern (Python's `regex` module,
// version 2026.5.9 checked) matches it neither as a letter nor as "other",
// so it is dropped like whitespace. It is the only such character.
constexpr char32_t kUnmatchedCharacter = 0x345;

bool IsOther(char32_t c) {
  return c != kUnmatchedCharacter && !unicode::IsSpace(c) && !unicode::IsLetter(c) &&
         !unicode::IsNumber(c);
}

// Returns the length of the word that starts at rest[0], or 0 if no word
// starts there (whitespace and U+0345).
std::size_t WordLength(std::u32string_view rest) {
  for (std::u32string_view special : kSpecialTokens) {
    if (rest.substr(0, special.size()) == special) return special.size();
  }
  if (const std::size_t length = ContractionLength(rest); length > 0) return length;
  std::size_t length = 0;
  if (unicode::IsLetter(rest[0])) {
    while (length < rest.size() && unicode::IsLetter(rest[length])) ++length;
  } else if (unicode::IsNumber(rest[0])) {
    length = 1;
  } else {
    while (length < rest.size() && IsOther(rest[length])) ++length;
  }
  return length;
}

}  // namespace

std::u32string CleanClipText(std::string_view utf8) {
  const std::u32string unescaped = HtmlUnescape(HtmlUnescape(unicode::DecodeUtf8(utf8)));
  std::u32string collapsed;
  collapsed.reserve(unescaped.size());
  bool pending_space = false;
  for (char32_t c : unescaped) {
    if (unicode::IsSpace(c)) {
      pending_space = !collapsed.empty();
      continue;
    }
    if (pending_space) collapsed.push_back(U' ');
    pending_space = false;
    collapsed.push_back(c);
  }
  return unicode::ToLower(collapsed);
}

std::vector<std::u32string_view> SplitClipWords(std::u32string_view cleaned) {
  std::vector<std::u32string_view> words;
  std::size_t i = 0;
  while (i < cleaned.size()) {
    const std::size_t length = WordLength(cleaned.substr(i));
    if (length == 0) {
      ++i;
      continue;
    }
    words.push_back(cleaned.substr(i, length));
    i += length;
  }
  return words;
}

}  // namespace sdonnx
