// sdonnx_run_unet: loads a converted UNet in ONNX Runtime and runs it, timing
// both. Input sizes default to batch 2 and a 64x64 latent (a 512x512 image).
//
//   sdonnx_run_unet UNET.onnx [THREADS] [LATENT_SIZE] [RUNS]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "runtime/ort_session.h"

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s UNET.onnx [THREADS] [LATENT_SIZE] [RUNS]\n", argv[0]);
    return 2;
  }
  const int threads = argc > 2 ? std::stoi(argv[2]) : 2;
  const std::int64_t size = argc > 3 ? std::stoll(argv[3]) : 64;
  const int runs = argc > 4 ? std::stoi(argv[4]) : 1;

  const auto load_start = std::chrono::steady_clock::now();
  auto model = sdonnx::OrtModel::Load(argv[1], {threads, sdonnx::Provider::kCpu});
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().message().c_str());
    return 1;
  }
  const double load_seconds = SecondsSince(load_start);
  auto sample_shape = (*model)->InputShape("sample");
  auto context_shape = (*model)->InputShape("encoder_hidden_states");
  if (!sample_shape.ok() || !context_shape.ok()) {
    std::fprintf(stderr, "error: %s is not a UNet with the sdonnx contract\n", argv[1]);
    return 1;
  }
  const std::int64_t channels = (*sample_shape)[1];
  const std::int64_t context_dim = (*context_shape)[2];
  std::vector<float> sample(static_cast<std::size_t>(2 * channels * size * size));
  for (std::size_t i = 0; i < sample.size(); ++i) sample[i] = std::sin(0.01f * i);
  std::vector<float> context(static_cast<std::size_t>(2 * 77 * context_dim), 0.1f);
  std::printf("load: %.2f s\n", load_seconds);
  for (int r = 0; r < runs; ++r) {
    const auto run_start = std::chrono::steady_clock::now();
    auto out = (*model)->Run(
        {{"sample", sdonnx::HostTensor::Float({2, channels, size, size}, sample)},
         {"timestep", sdonnx::HostTensor::Float({1}, {999.0f})},
         {"encoder_hidden_states", sdonnx::HostTensor::Float({2, 77, context_dim}, context)}});
    if (!out.ok()) {
      std::fprintf(stderr, "error: %s\n", out.status().message().c_str());
      return 1;
    }
    std::printf("run %d: %.2f s\n", r + 1, SecondsSince(run_start));
  }
  return 0;
}
