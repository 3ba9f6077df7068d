// Fuzzes the CLIP tokenizer's text cleaning, word split and BPE with
// arbitrary bytes, then decodes the ids again.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const sdonnx::ClipTokenizer& tokenizer = sdonnx::fuzz::FuzzTokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<std::int32_t> ids = tokenizer.Encode(text);
  for (std::int32_t id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= tokenizer.VocabSize()) __builtin_trap();
  }
  (void)tokenizer.Decode(ids);
  return 0;
}
