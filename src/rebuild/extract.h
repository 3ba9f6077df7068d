// extract: every initializer of one ONNX file into a safetensors file.
#pragma once

#include <cstdint>
#include <string>

#include "util/status.h"

namespace sdonnx {

struct ExtractOptions {
  std::string onnx_path;
  std::string output_path;
  bool overwrite = false;
};

struct ExtractReport {
  std::string component;  // sdonnx.component, or guessed from the path for other files
  bool made_by_sdonnx = false;
  std::size_t tensors = 0;
  std::uint64_t bytes = 0;  // Size of the written file.
};

// Writes every initializer of the model (external data included) under its
// ONNX name, in its stored dtype and bytes, in graph order. The output's
// metadata marks it as a one-component extract: sdonnx.extract ("one
// component; not a loadable checkpoint"), sdonnx.extract_component,
// sdonnx.extract_source_file and sdonnx.extract_made_by_sdonnx. The file is
// written under a temporary name and renamed, so an error leaves nothing.
// Missing folders above the output are created, and removed again when the
// extract fails.
Result<ExtractReport> ExtractInitializers(const ExtractOptions& options);

}  // namespace sdonnx
