// The two steps of openai CLIP's tokenizer before BPE: text cleanup and the
// split into words.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sdonnx {

// Cleans `utf8` as openai CLIP's SimpleTokenizer does, except that ftfy's
// fix_text is not applied: decodes HTML character references twice, replaces
// each run of whitespace (Python's str.isspace) with one space, strips both
// ends and lowercases (Python's str.lower). Invalid UTF-8 is read as U+FFFD.
std::u32string CleanClipText(std::string_view utf8);

// Splits cleaned text into words with openai CLIP's pattern, tried in this
// order at each position: the literals "<|startoftext|>" and "<|endoftext|>";
// the contractions 's 't 're 've 'm 'll 'd; a run of letters (\p{L}); one
// number character (\p{N}); a run of characters that are neither whitespace,
// letters nor numbers. Whitespace between words is dropped.
std::vector<std::u32string_view> SplitClipWords(std::u32string_view cleaned);

}  // namespace sdonnx
