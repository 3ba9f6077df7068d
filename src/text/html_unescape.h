// HTML character reference decoding, the first step of CLIP's text cleanup.
#pragma once

#include <string>
#include <string_view>

namespace sdonnx {

// Replaces the HTML character references in `text` as Python's
// html.unescape does, with the HTML5 rules. Named references come from the
// HTML standard's list, and legacy names such as "&amp" need no ';' and may
// be followed by other characters. In decimal and hexadecimal references,
// 0x80-0x9F map to their Windows-1252 characters, surrogates and values past
// U+10FFFF become U+FFFD, and noncharacters and most control characters are
// removed. Text that is not a known reference is kept as it is.
std::u32string HtmlUnescape(std::u32string_view text);

}  // namespace sdonnx
