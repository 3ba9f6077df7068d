// AUTOMATIC1111's prompt syntax: emphasis weights, BREAK, and the split of a
// prompt into 77-token chunks for the CLIP text encoders. docs/prompts.md
// describes the rules for users.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/clip_tokenizer.h"

namespace sdonnx {

// Prompt tokens per chunk, and the chunk length with the start and end ids.
inline constexpr std::size_t kChunkTokens = 75;
inline constexpr std::size_t kChunkLength = kChunkTokens + 2;
// How far back from a full chunk's end a comma may be for the words after it
// to move to the next chunk (AUTOMATIC1111's default "comma_padding_backtrack").
inline constexpr std::size_t kCommaBacktrackTokens = 20;

// Padding ids: CLIP ViT-L (SD 1.x, SDXL's first encoder) pads with its
// end-of-text id, OpenCLIP (SD 2.x, SDXL's second encoder) with 0.
inline constexpr std::int32_t kClipPadId = kClipEndOfText;
inline constexpr std::int32_t kOpenClipPadId = 0;

// One encoder input: kChunkLength ids (start, tokens, end, padding) and a
// weight per id, 1.0 for the start, end and padding ids.
struct PromptChunk {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

// Every weight ParsePromptAttention and TokenizePrompt return lies in
// [-kMaxPromptWeight, kMaxPromptWeight]. The limit keeps weights finite and
// lies far above the usual weights between 0 and 2. 1.1^49 is about 107, so
// 49 or more nested '(' reach it.
inline constexpr double kMaxPromptWeight = 100.0;

// The text marker and weight that stand for a BREAK in ParsePromptAttention's
// result.
inline constexpr std::string_view kBreakText = "BREAK";
inline constexpr float kBreakWeight = -1.0f;

// Splits `prompt` into pieces of text with their emphasis weight, as
// AUTOMATIC1111's parse_prompt_attention does:
//   (text)      multiplies the weight of text by 1.1
//   [text]      divides it by 1.1
//   (text:1.5)  multiplies it by 1.5
//   \( \) \[ \] \\  are the literal characters; any other '\' is dropped
//   BREAK       (uppercase, a separate word) becomes the piece
//               {kBreakText, kBreakWeight}
// Brackets nest and their factors multiply, in double as in Python. Each
// final weight is clamped to [-kMaxPromptWeight, kMaxPromptWeight], so it is
// always finite, where AUTOMATIC1111 has no limit. A ')' or ']' with no open
// bracket is literal text, and brackets still open at the end are closed
// there. A weight that is not a number, such as "(a:1.2.3)" or "(a:inf)",
// leaves the ':' and what follows as text and the ')' as a plain close.
// Adjacent pieces of equal weight, after the clamp, are joined. Any input is
// accepted, and invalid UTF-8 is read as U+FFFD.
std::vector<std::pair<std::string, float>> ParsePromptAttention(std::string_view prompt);

// Tokenizes `prompt` into chunks as AUTOMATIC1111 does: each parsed piece is
// encoded on its own, tokens fill chunks of kChunkTokens, and BREAK starts a
// new chunk. When a chunk is full and a comma is among its last
// kCommaBacktrackTokens tokens, the tokens after that comma move to the next
// chunk. Each chunk is padded with `pad_id` after its first end-of-text id.
// An empty prompt gives one chunk.
std::vector<PromptChunk> TokenizePrompt(const ClipTokenizer& tokenizer, std::string_view prompt,
                                        std::int32_t pad_id);

// Returns the number of prompt tokens, without start, end and padding ids
// and without BREAK. AUTOMATIC1111's on-screen count differs when a chunk is
// closed early (by BREAK or a comma): it counts that chunk as full.
std::size_t CountPromptTokens(const ClipTokenizer& tokenizer, std::string_view prompt);

// Appends empty chunks to the shorter of `a` and `b` until both have the same
// number of chunks, as AUTOMATIC1111 does for the positive and negative
// prompt. An empty chunk is the start id, the end id, then `pad_id`, with all
// weights 1.0.
void EqualizeChunkCounts(std::vector<PromptChunk>& a, std::vector<PromptChunk>& b,
                         std::int32_t start_id, std::int32_t end_id, std::int32_t pad_id);

}  // namespace sdonnx
