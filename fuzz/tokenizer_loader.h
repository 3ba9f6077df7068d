// The CLIP tokenizer for the text fuzz targets, loaded from the file that
// $SDONNX_FUZZ_TOKENIZER names.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "text/clip_tokenizer.h"

namespace sdonnx::fuzz {

// Loads the tokenizer, or exits with a message if it cannot.
inline std::unique_ptr<ClipTokenizer> LoadFuzzTokenizer() {
  const char* path = std::getenv("SDONNX_FUZZ_TOKENIZER");
  if (path == nullptr) {
    std::fprintf(stderr, "set SDONNX_FUZZ_TOKENIZER to bpe_simple_vocab_16e6.txt.gz\n");
    std::exit(2);
  }
  Result<ClipTokenizer> tokenizer = ClipTokenizer::Load(path);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().message().c_str());
    std::exit(2);
  }
  return std::make_unique<ClipTokenizer>(std::move(*tokenizer));
}

// Returns the tokenizer, loading it on the first call.
inline const ClipTokenizer& FuzzTokenizer() {
  static const std::unique_ptr<ClipTokenizer> tokenizer = LoadFuzzTokenizer();
  return *tokenizer;
}

}  // namespace sdonnx::fuzz
