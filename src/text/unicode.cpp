#include "text/unicode.h"

#include <unicode/uchar.h>
#include <unicode/locid.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

namespace sdonnx::unicode {

std::u32string DecodeUtf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
  const std::size_t length = bytes.size();
  std::size_t i = 0;
  while (i < length) {
    UChar32 c = 0;
    U8_NEXT_OR_FFFD(data, i, length, c);
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) c = 0xFFFD;
  std::uint8_t buffer[4];
  std::size_t n = 0;
  U8_APPEND_UNSAFE(buffer, n, c);
  out->append(reinterpret_cast<const char*>(buffer), n);
}

std::string EncodeUtf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendUtf8(c, &out);
  return out;
}

bool IsSpace(char32_t c) {
  const auto cp = static_cast<UChar32>(c);
  switch (u_charDirection(cp)) {
    case U_WHITE_SPACE_NEUTRAL:
    case U_BLOCK_SEPARATOR:
    case U_SEGMENT_SEPARATOR:
      return true;
    default:
      return u_charType(cp) == U_SPACE_SEPARATOR;
  }
}

bool IsLetter(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0; }

bool IsNumber(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0; }

bool IsDecimalDigit(char32_t c) { return u_charType(static_cast<UChar32>(c)) == U_DECIMAL_DIGIT_NUMBER; }

int DecimalDigitValue(char32_t c) { return u_charDigitValue(static_cast<UChar32>(c)); }

bool IsWordCharacter(char32_t c) {
  if (c == U'_' || IsLetter(c)) return true;
  return u_getIntPropertyValue(static_cast<UChar32>(c), UCHAR_NUMERIC_TYPE) != U_NT_NONE;
}

namespace {

void AppendLower(std::u32string_view piece, std::u32string* out) {
  icu::UnicodeString utf16 = icu::UnicodeString::fromUTF32(
      reinterpret_cast<const UChar32*>(piece.data()), static_cast<std::int32_t>(piece.size()));
  utf16.toLower(icu::Locale::getRoot());
  const std::size_t start = out->size();
  out->resize(start + static_cast<std::size_t>(utf16.countChar32()));
  UErrorCode status = U_ZERO_ERROR;
  const std::int32_t written =
      utf16.toUTF32(reinterpret_cast<UChar32*>(out->data() + start),
                    static_cast<std::int32_t>(out->size() - start), status);
  out->resize(start + (U_SUCCESS(status) ? static_cast<std::size_t>(written) : 0));
}

}  // namespace

std::u32string ToLower(std::u32string_view text) {
  // ICU takes int32 lengths, so long text is converted in pieces. A piece
  // ends after a space where possible: the final-sigma rule looks at the
  // neighbouring letters, and its context never extends across U+0020.
  constexpr std::size_t kMaxPiece = std::size_t{1} << 20;
  std::u32string out;
  out.reserve(text.size());
  while (!text.empty()) {
    std::size_t length = text.size();
    if (length > kMaxPiece) {
      const std::size_t space = text.substr(0, kMaxPiece).rfind(U' ');
      length = space == std::u32string_view::npos ? kMaxPiece : space + 1;
    }
    AppendLower(text.substr(0, length), &out);
    text.remove_prefix(length);
  }
  return out;
}

}  // namespace sdonnx::unicode
