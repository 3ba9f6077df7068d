// Fuzzes AUTOMATIC1111's prompt syntax (emphasis, escapes, BREAK) and the
// split of the tokens into 77-token chunks. Every weight must be finite and
// within kMaxPromptWeight.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "text/prompt.h"
#include "tokenizer_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const sdonnx::ClipTokenizer& tokenizer = sdonnx::fuzz::FuzzTokenizer();
  const std::string_view prompt(reinterpret_cast<const char*>(data), size);
  // Written as !(a <= b) so that a NaN weight traps too.
  for (const auto& [text, weight] : sdonnx::ParsePromptAttention(prompt)) {
    if (!(std::fabs(weight) <= sdonnx::kMaxPromptWeight)) __builtin_trap();
  }
  const auto chunks = sdonnx::TokenizePrompt(tokenizer, prompt, sdonnx::kOpenClipPadId);
  if (chunks.empty()) __builtin_trap();
  for (const sdonnx::PromptChunk& chunk : chunks) {
    if (chunk.ids.size() != sdonnx::kChunkLength) __builtin_trap();
    if (chunk.weights.size() != chunk.ids.size()) __builtin_trap();
    for (float weight : chunk.weights) {
      if (!(std::fabs(weight) <= sdonnx::kMaxPromptWeight)) __builtin_trap();
    }
  }
  (void)sdonnx::CountPromptTokens(tokenizer, prompt);
  return 0;
}
