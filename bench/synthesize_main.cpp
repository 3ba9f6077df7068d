// sdonnx_synthesize: writes a synthetic checkpoint for benchmarks.
//
//   sdonnx_synthesize MANIFEST.tsv OUT.safetensors [random|zeros] [SEED] [f16]
//   sdonnx_synthesize --sd15 OUT.safetensors [random|zeros] [SEED] [f16]
//
// `f16` stores every float32 tensor as float16, as the released fp16
// checkpoints (such as SDXL base's 6.9 GB file) do.
// `random` fills every tensor with seeded values (the file costs its full size
// on disk); `zeros` leaves the data as sparse holes.
#include <cstdio>
#include <string>

#include "model/synthesize.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s MANIFEST.tsv|--sd15 OUT.safetensors [random|zeros] [SEED] [f16]\n", argv[0]);
    return 2;
  }
  const std::string source = argv[1];
  const std::string out = argv[2];
  const std::string fill = argc > 3 ? argv[3] : "random";
  const std::uint64_t seed = argc > 4 ? std::stoull(argv[4]) : 1;
  const std::string dtype = argc > 5 ? argv[5] : "";
  if (!dtype.empty() && dtype != "f16") {
    std::fprintf(stderr, "error: the dtype option must be f16, got '%s'\n", dtype.c_str());
    return 2;
  }
  if (fill != "random" && fill != "zeros") {
    std::fprintf(stderr, "error: fill must be random or zeros, got '%s'\n", fill.c_str());
    return 2;
  }
  std::vector<sdonnx::TensorSpec> tensors;
  if (source == "--sd15") {
    tensors = sdonnx::Sd1Layout(sdonnx::Sd1Hyperparameters{});
  } else {
    auto manifest = sdonnx::ReadManifest(source);
    if (!manifest.ok()) {
      std::fprintf(stderr, "error: %s\n", manifest.status().message().c_str());
      return 1;
    }
    tensors = std::move(manifest).value();
  }
  if (dtype == "f16") {
    for (sdonnx::TensorSpec& tensor : tensors) {
      if (tensor.dtype == sdonnx::DType::kF32) tensor.dtype = sdonnx::DType::kF16;
    }
  }
  const auto mode = fill == "random" ? sdonnx::FillMode::kRandom : sdonnx::FillMode::kZeros;
  sdonnx::Status status = sdonnx::WriteSyntheticCheckpoint(out, tensors, mode, seed);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.message().c_str());
    return 1;
  }
  std::printf("wrote %s (%zu tensors)\n", out.c_str(), tensors.size());
  return 0;
}
