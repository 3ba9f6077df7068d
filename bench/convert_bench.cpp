// Micro-benchmarks of the conversion path on the full-size SD 1.5 layout:
// header parsing, graph building (no weight bytes are touched), and the
// float16 rounding used for fp16 weights.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>

#include "formats/checkpoint.h"
#include "formats/dtype_convert.h"
#include "graph/builder.h"
#include "model/model_spec.h"
#include "model/synthesize.h"
#include "networks/unet.h"

namespace {

namespace fs = std::filesystem;

// A sparse full-size SD 1.5 checkpoint, written once per process.
const std::string& Sd15Path() {
  static const std::string path = [] {
    const fs::path p = fs::temp_directory_path() / "sdonnx-bench-sd15-sparse.safetensors";
    auto status = sdonnx::WriteSyntheticCheckpoint(
        p.string(), sdonnx::Sd1Layout(sdonnx::Sd1Hyperparameters{}), sdonnx::FillMode::kZeros, 0);
    if (!status.ok()) throw std::runtime_error(status.message());
    return p.string();
  }();
  return path;
}

void BM_OpenSafetensorsHeader(benchmark::State& state) {
  const std::string& path = Sd15Path();
  for (auto _ : state) {
    auto checkpoint = sdonnx::Checkpoint::Open(path);
    benchmark::DoNotOptimize(checkpoint);
  }
}
BENCHMARK(BM_OpenSafetensorsHeader)->Unit(benchmark::kMillisecond);

void BM_BuildSd15UNetGraph(benchmark::State& state) {
  auto checkpoint = sdonnx::Checkpoint::Open(Sd15Path());
  auto spec = sdonnx::DetectModel(**checkpoint, std::nullopt);
  for (auto _ : state) {
    sdonnx::GraphBuilder builder(**checkpoint, 17, "unet");
    auto status = sdonnx::BuildUNet(builder, spec->unet);
    benchmark::DoNotOptimize(status);
  }
}
BENCHMARK(BM_BuildSd15UNetGraph)->Unit(benchmark::kMillisecond);

void BM_FloatToHalf(benchmark::State& state) {
  std::vector<float> values(1 << 20);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 1e-3f - 300;
  std::vector<std::uint16_t> out(values.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = sdonnx::FloatToHalf(values[i]);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * values.size() * 4));
}
BENCHMARK(BM_FloatToHalf);

// The --fp16 weight path: rounding plus the clamp and flush counts, on
// state.range(0) threads, over one 4M-element piece as the writer uses.
void BM_ConvertF32ToF16(benchmark::State& state) {
  std::vector<float> values(std::size_t{4} << 20);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 1e-4f - 200;
  std::vector<std::uint8_t> out(values.size() * 2);
  const std::span<const std::uint8_t> source(reinterpret_cast<const std::uint8_t*>(values.data()),
                                             values.size() * 4);
  for (auto _ : state) {
    sdonnx::NarrowingCounts counts;
    auto status = sdonnx::ConvertElementsParallel(sdonnx::DType::kF32, source,
                                                  sdonnx::DType::kF16, out,
                                                  static_cast<int>(state.range(0)), &counts);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * values.size() * 4));
}
BENCHMARK(BM_ConvertF32ToF16)->Arg(1)->Arg(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
