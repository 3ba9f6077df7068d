// Fuzzes the ONNX reader (OnnxFile::Open) with whole .onnx files: the
// protobuf, the initializer sizes and the external data checks. Each input
// is written to model.onnx in a private temporary folder, beside a 4 KiB
// file weights.bin that external data may name.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "formats/onnx_file.h"

namespace {

// Returns the path inputs are written to, creating its folder under $TMPDIR
// (or /tmp) on the first call.
const std::string& ModelPath() {
  static const std::string path = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/sdonnx-fuzz-onnx-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::exit(2);
    }
    std::ofstream(pattern + "/weights.bin", std::ios::binary) << std::string(4096, '\x01');
    return pattern + "/model.onnx";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = ModelPath();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto file = sdonnx::OnnxFile::Open(path);
  if (!file.ok()) return 0;
  // Every accepted initializer must have exactly the bytes its dims need.
  for (const sdonnx::OnnxInitializer& init : (*file)->initializers()) {
    if ((*file)->Data(init).size() != init.nbytes) __builtin_trap();
  }
  return 0;
}
