#include "text/html_unescape.h"

#include <algorithm>
#include <array>
#include <optional>

namespace sdonnx {
namespace {

struct NamedReference {
  std::string_view name;  // without the trailing ';'
  char32_t first;
  char32_t second;  // 0 when the reference is one code point
  bool legacy;      // also matches without the trailing ';'
};

constexpr NamedReference kNamedReferences[] = {
#include "text/html_entities.inc"
};

// Windows-1252 meanings of the numeric references 0x80-0x9F, which the HTML
// standard applies; 0 keeps the C1 control character itself.
constexpr std::array<char32_t, 32> kWindows1252 = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

constexpr std::size_t kMaxNameLength = 32;

const NamedReference* FindName(std::u32string_view name) {
  std::string ascii;
  for (char32_t c : name) {
    if (c > 0x7F) return nullptr;
    ascii.push_back(static_cast<char>(c));
  }
  const auto* begin = std::begin(kNamedReferences);
  const auto* end = std::end(kNamedReferences);
  const auto* it = std::lower_bound(
      begin, end, ascii,
      [](const NamedReference& entry, const std::string& key) { return entry.name < key; });
  return it != end && it->name == ascii ? it : nullptr;
}

void AppendReference(const NamedReference& entry, std::u32string* out) {
  out->push_back(entry.first);
  if (entry.second != 0) out->push_back(entry.second);
}

bool IsAsciiDigit(char32_t c) { return c >= U'0' && c <= U'9'; }

int HexValue(char32_t c) {
  if (IsAsciiDigit(c)) return static_cast<int>(c - U'0');
  if (c >= U'a' && c <= U'f') return static_cast<int>(c - U'a' + 10);
  if (c >= U'A' && c <= U'F') return static_cast<int>(c - U'A' + 10);
  return -1;
}

bool IsRemovedCodePoint(std::uint32_t value) {
  return (value >= 0x1 && value <= 0x8) || value == 0xB || (value >= 0xE && value <= 0x1F) ||
         (value >= 0x7F && value <= 0x9F) || (value >= 0xFDD0 && value <= 0xFDEF) ||
         (value & 0xFFFE) == 0xFFFE;
}

void AppendNumericReference(std::uint32_t value, std::u32string* out) {
  if (value == 0) {
    out->push_back(0xFFFD);
  } else if (value >= 0x80 && value <= 0x9F) {
    const char32_t mapped = kWindows1252[value - 0x80];
    out->push_back(mapped != 0 ? mapped : static_cast<char32_t>(value));
  } else if ((value >= 0xD800 && value <= 0xDFFF) || value > 0x10FFFF) {
    out->push_back(0xFFFD);
  } else if (!IsRemovedCodePoint(value)) {
    out->push_back(static_cast<char32_t>(value));
  }
}

// Decodes the numeric reference whose '#' is at text[hash]; returns the index
// after it, or nullopt if no digits follow. Values past U+10FFFF saturate,
// since they all map to U+FFFD.
std::optional<std::size_t> DecodeNumeric(std::u32string_view text, std::size_t hash,
                                         std::u32string* out) {
  std::size_t i = hash + 1;
  const bool hex = i < text.size() && (text[i] == U'x' || text[i] == U'X');
  const std::uint32_t base = hex ? 16 : 10;
  if (hex) ++i;
  const std::size_t digits_start = i;
  std::uint32_t value = 0;
  while (i < text.size()) {
    const int digit = hex ? HexValue(text[i]) : (IsAsciiDigit(text[i]) ? text[i] - U'0' : -1);
    if (digit < 0) break;
    value = std::min<std::uint32_t>(value * base + static_cast<std::uint32_t>(digit), 0x110000);
    ++i;
  }
  if (i == digits_start) return std::nullopt;
  if (i < text.size() && text[i] == U';') ++i;
  AppendNumericReference(value, out);
  return i;
}

bool IsNameCharacter(char32_t c) {
  switch (c) {
    case U'\t': case U'\n': case U'\f': case U' ': case U'<': case U'&': case U'#': case U';':
      return false;
    default:
      return true;
  }
}

// Decodes the named reference whose name starts at text[start]; returns the
// index after it, or nullopt if no name character follows the '&'.
std::optional<std::size_t> DecodeNamed(std::u32string_view text, std::size_t start,
                                       std::u32string* out) {
  std::size_t end = start;
  while (end < text.size() && end - start < kMaxNameLength && IsNameCharacter(text[end])) ++end;
  if (end == start) return std::nullopt;
  const std::u32string_view name = text.substr(start, end - start);
  const bool semicolon = end < text.size() && text[end] == U';';
  const std::size_t after = semicolon ? end + 1 : end;

  if (const NamedReference* entry = FindName(name); entry && (semicolon || entry->legacy)) {
    AppendReference(*entry, out);
    return after;
  }
  // Otherwise the longest legacy name (at least two characters) that
  // prefixes the text replaces that prefix, and the rest stays as it is.
  for (std::size_t length = semicolon ? name.size() : name.size() - 1; length >= 2; --length) {
    const NamedReference* entry = FindName(name.substr(0, length));
    if (entry != nullptr && entry->legacy) {
      AppendReference(*entry, out);
      out->append(text.substr(start + length, after - start - length));
      return after;
    }
  }
  out->push_back(U'&');
  out->append(text.substr(start, after - start));
  return after;
}

}  // namespace

std::u32string HtmlUnescape(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != U'&') {
      out.push_back(text[i++]);
      continue;
    }
    const bool numeric = i + 1 < text.size() && text[i + 1] == U'#';
    const std::optional<std::size_t> next =
        numeric ? DecodeNumeric(text, i + 1, &out) : DecodeNamed(text, i + 1, &out);
    if (next) {
      i = *next;
    } else {
      out.push_back(U'&');
      ++i;
    }
  }
  return out;
}

}  // namespace sdonnx
