// Fuzzes the PyTorch checkpoint reader with whole .ckpt files: the zip
// directory, the legacy layout, the pickles and the tensor views.
#include <cstddef>
#include <cstdint>
#include <span>

#include "formats/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  (void)sdonnx::LooksLikeTorchCheckpoint(bytes);
  auto checkpoint = sdonnx::ReadTorchCheckpoint("fuzz.ckpt", bytes);
  if (!checkpoint.ok()) return 0;
  // Tensors kept in the file must lie inside it, and copied-out views must
  // have the size their shape needs.
  for (const sdonnx::TorchTensor& tensor : checkpoint->tensors) {
    if (!tensor.in_file) {
      if (tensor.materialized.size() != tensor.nbytes) __builtin_trap();
      continue;
    }
    if (tensor.file_offset > size || size - tensor.file_offset < tensor.nbytes) {
      __builtin_trap();
    }
  }
  return 0;
}
