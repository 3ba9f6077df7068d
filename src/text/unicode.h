// Code point helpers for the CLIP tokenizer and the prompt parser. The
// character classes reproduce those of Python's `str` methods and regular
// expressions, which the reference tokenizer and prompt parser are written
// in, using ICU's Unicode data.
#pragma once

#include <string>
#include <string_view>

namespace sdonnx::unicode {

// Decodes UTF-8. Each maximal ill-formed subsequence becomes one U+FFFD, as
// Python's bytes.decode("utf-8", errors="replace") does.
std::u32string DecodeUtf8(std::string_view bytes);

// Encodes code points as UTF-8. Surrogates and values past U+10FFFF, which
// DecodeUtf8 never returns, are written as U+FFFD.
std::string EncodeUtf8(std::u32string_view text);
void AppendUtf8(char32_t c, std::string* out);

// Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
bool IsSpace(char32_t c);
// Regular expression class \p{L}: general category L*.
bool IsLetter(char32_t c);
// Regular expression class \p{N}: general category N*.
bool IsNumber(char32_t c);
// Python's \d for str patterns: general category Nd.
bool IsDecimalDigit(char32_t c);
// Returns the value 0-9 of a character for which IsDecimalDigit is true.
int DecimalDigitValue(char32_t c);
// Python's \w for str patterns: letters, characters with a numeric value,
// and '_'.
bool IsWordCharacter(char32_t c);

// Python's str.lower(): full case mapping, including the final-sigma rule.
std::u32string ToLower(std::u32string_view text);

}  // namespace sdonnx::unicode
