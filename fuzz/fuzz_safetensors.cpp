// Fuzzes the safetensors header parser with whole files: the 8-byte length,
// the JSON header and the data section that the offsets are checked against.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<sdonnx::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> warnings;
  const sdonnx::Status status = sdonnx::ParseSafetensorsHeader(
      "fuzz.safetensors", std::span<const std::uint8_t>(data, size), &tensors, &metadata,
      &warnings);
  if (!status.ok()) return 0;
  // Every accepted tensor must lie inside the input, or Data() would read
  // out of bounds.
  for (const sdonnx::TensorInfo& tensor : tensors) {
    if (tensor.offset > size || size - tensor.offset < tensor.nbytes) __builtin_trap();
  }
  return 0;
}
