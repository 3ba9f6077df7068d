// Fuzzes the restricted unpickler with one pickle, under its default limits.
#include <cstddef>
#include <cstdint>
#include <span>

#include "formats/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto result = sdonnx::pickle::Unpickle(std::span<const std::uint8_t>(data, size), "fuzz.pkl");
  if (result.ok() && result->end > size) __builtin_trap();
  return 0;
}
