// sdonnx_run_unet: loads a converted UNet in ONNX Runtime and runs it, timing
// both and reading the process's peak RSS after loading and at the end.
// Input sizes default to batch 2 and a 64x64 latent (a 512x512 image).
//
//   sdonnx_run_unet UNET.onnx [THREADS] [LATENT_SIZE] [RUNS] [OPTION ...]
//
// Options:
//   --opt=disabled|basic|extended|all  ONNX Runtime's graph optimization level
//                                   (default extended, as generate uses)
//   --prepack                       let the CPU kernels repack the weights
//   --profile=PREFIX                write ONNX Runtime's per-node trace to
//                                   PREFIX_<date>.json
//   --compare=OTHER.onnx            run the UNet OTHER.onnx (such as the float32
//                                   conversion of a --fp16 one) on the same
//                                   inputs and print the largest difference
//                                   relative to OTHER's largest magnitude
//   --widen-at-load                 widen float16 weights of a float32 graph once
//                                   at load instead of by their Cast at each run
//   --save-optimized=PATH           write the graph as ONNX Runtime optimized it
//   --cache-dir=DIR                 load through generate's session cache in DIR
//                                   (built by the first load, mapped by later ones)
//   --config=KEY=VALUE              an ONNX Runtime session config entry, such as
//                                   optimization.disable_specified_optimizers=ConstantFolding
//   --gemm=N                        first time an N x N x N float32 MatMul with
//                                   a constant right-hand side, with every
//                                   optimization and prepacking (MLAS's best
//                                   case), and print its GFLOP/s
#include <onnx/onnx_pb.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench_util.h"
#include "runtime/ort_session.h"

namespace {

using sdonnx::bench::SecondsSince;

// The value of `field` ("VmHWM", "VmRSS") in /proc/self/status, in MB.
double ProcStatusMb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  }
  return 0;
}

struct Options {
  std::string model;
  int threads = 2;
  std::int64_t latent = 64;
  int runs = 1;
  sdonnx::SessionOptions session;
  std::int64_t gemm = 0;
  std::string compare;
};

bool ParseOptions(int argc, char** argv, Options* o) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--prepack") {
      o->session.prepack_weights = true;
    } else if (arg.rfind("--opt=", 0) == 0) {
      auto level = sdonnx::ParseGraphOptimization(arg.substr(6));
      if (!level.ok()) {
        std::fprintf(stderr, "error: %s\n", level.status().message().c_str());
        return false;
      }
      o->session.optimization = *level;
    } else if (arg.rfind("--profile=", 0) == 0) {
      o->session.profile_prefix = arg.substr(10);
    } else if (arg.rfind("--compare=", 0) == 0) {
      o->compare = arg.substr(10);
    } else if (arg == "--widen-at-load") {
      o->session.widen_weights_at_load = true;
    } else if (arg.rfind("--save-optimized=", 0) == 0) {
      o->session.optimized_model_path = arg.substr(17);
    } else if (arg.rfind("--config=", 0) == 0 && arg.find('=', 9) != std::string::npos) {
      const std::size_t eq = arg.find('=', 9);
      o->session.config_entries[arg.substr(9, eq - 9)] = arg.substr(eq + 1);
    } else if (arg.rfind("--cache-dir=", 0) == 0) {
      o->session.cache_dir = arg.substr(12);
    } else if (arg.rfind("--gemm=", 0) == 0) {
      o->gemm = std::stoll(arg.substr(7));
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "error: unknown option %s\n", arg.c_str());
      return false;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty()) return false;
  o->model = positional[0];
  if (positional.size() > 1) o->threads = std::stoi(positional[1]);
  if (positional.size() > 2) o->latent = std::stoll(positional[2]);
  if (positional.size() > 3) o->runs = std::stoi(positional[3]);
  o->session.intra_op_threads = o->threads;
  return true;
}

// Writes a model computing A x B with A an [n, n] input and B an [n, n]
// initializer, so ONNX Runtime treats B like a weight.
std::string WriteGemmModel(std::int64_t n) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("gemm");
  auto add_value = [&](onnx::ValueInfoProto* value, const char* name) {
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_value(n);
    tensor->mutable_shape()->add_dim()->set_dim_value(n);
  };
  add_value(graph->add_input(), "a");
  add_value(graph->add_output(), "c");
  auto* b = graph->add_initializer();
  b->set_name("b");
  b->set_data_type(onnx::TensorProto::FLOAT);
  b->add_dims(n);
  b->add_dims(n);
  std::vector<float> values(static_cast<std::size_t>(n * n));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::cos(0.001f * i);
  b->set_raw_data(values.data(), values.size() * sizeof(float));
  auto* node = graph->add_node();
  node->set_op_type("MatMul");
  node->add_input("a");
  node->add_input("b");
  node->add_output("c");
  const std::string path =
      (std::filesystem::temp_directory_path() / ("sdonnx_gemm_" + std::to_string(n) + ".onnx"))
          .string();
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  return path;
}

// Returns the best GFLOP/s of 3 runs of an n x n x n MatMul, or -1 on error.
double MeasureGemmRate(std::int64_t n, int threads) {
  sdonnx::SessionOptions session;
  session.intra_op_threads = threads;
  session.optimization = sdonnx::GraphOptimization::kAll;
  session.prepack_weights = true;
  const std::string path = WriteGemmModel(n);
  auto model = sdonnx::OrtModel::Load(path, session);
  std::filesystem::remove(path);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().message().c_str());
    return -1;
  }
  std::vector<float> a(static_cast<std::size_t>(n * n), 0.5f);
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto start = std::chrono::steady_clock::now();
    auto out = (*model)->Run({{"a", sdonnx::HostTensor::Float({n, n}, a)}});
    if (!out.ok()) return -1;
    best = std::min(best, SecondsSince(start));
  }
  return 2.0 * n * n * n / best / 1e9;
}

// Prints max |a - b| / max |b| and the count of values of `a` that are
// not finite.
void PrintDifference(const sdonnx::HostTensor& a, const sdonnx::HostTensor& b) {
  const sdonnx::bench::Difference d = sdonnx::bench::CompareFloats(a.f32, b.f32);
  std::printf("difference: max abs %.6g, relative to the largest magnitude %.6g, "
              "%zu values not finite\n",
              d.max_abs, d.Relative(), d.not_finite);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: %s UNET.onnx [THREADS] [LATENT_SIZE] [RUNS] [--opt=LEVEL] "
                 "[--prepack] [--cache-dir=DIR] [--gemm=N]\n",
                 argv[0]);
    return 2;
  }
  if (o.gemm > 0) {
    const double rate = MeasureGemmRate(o.gemm, o.threads);
    if (rate < 0) return 1;
    std::printf("gemm %lld^3: %.1f GFLOP/s\n", static_cast<long long>(o.gemm), rate);
  }

  const auto load_start = std::chrono::steady_clock::now();
  auto model = sdonnx::OrtModel::Load(o.model, o.session);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().message().c_str());
    return 1;
  }
  const double load_seconds = SecondsSince(load_start);
  auto sample_shape = (*model)->InputShape("sample");
  auto context_shape = (*model)->InputShape("encoder_hidden_states");
  if (!sample_shape.ok() || !context_shape.ok()) {
    std::fprintf(stderr, "error: %s is not a UNet with the sdonnx contract\n", o.model.c_str());
    return 1;
  }
  const std::int64_t channels = (*sample_shape)[1];
  const std::int64_t context_dim = (*context_shape)[2];
  const std::int64_t size = o.latent;
  std::vector<float> sample(static_cast<std::size_t>(2 * channels * size * size));
  for (std::size_t i = 0; i < sample.size(); ++i) sample[i] = std::sin(0.01f * i);
  std::vector<float> context(static_cast<std::size_t>(2 * 77 * context_dim), 0.1f);
  std::printf("load: %.2f s, peak RSS %.0f MB, RSS %.0f MB\n", load_seconds,
              ProcStatusMb("VmHWM"), ProcStatusMb("VmRSS"));
  std::map<std::string, sdonnx::HostTensor> inputs = {
      {"sample", sdonnx::HostTensor::Float({2, channels, size, size}, sample)},
      {"timestep", sdonnx::HostTensor::Float({1}, {999.0f})},
      {"encoder_hidden_states", sdonnx::HostTensor::Float({2, 77, context_dim}, context)}};
  // SDXL UNets also take the pooled text embedding and the size conditioning.
  if (auto embeds = (*model)->InputShape("text_embeds"); embeds.ok()) {
    const std::int64_t width = (*embeds)[1];
    inputs["text_embeds"] = sdonnx::HostTensor::Float(
        {2, width}, std::vector<float>(static_cast<std::size_t>(2 * width), 0.1f));
  }
  if (auto ids = (*model)->InputShape("time_ids"); ids.ok()) {
    const std::int64_t count = (*ids)[1];
    const float pixels = static_cast<float>(size * 8);
    std::vector<float> values;
    for (int row = 0; row < 2; ++row) {
      for (std::int64_t i = 0; i < count; ++i) values.push_back(i == 2 || i == 3 ? 0.0f : pixels);  // no crop
    }
    inputs["time_ids"] = sdonnx::HostTensor::Float({2, count}, values);
  }
  sdonnx::HostTensor last;
  for (int r = 0; r < o.runs || (r == 0 && !o.compare.empty()); ++r) {
    const auto run_start = std::chrono::steady_clock::now();
    auto out = (*model)->Run(inputs);
    if (!out.ok()) {
      std::fprintf(stderr, "error: %s\n", out.status().message().c_str());
      return 1;
    }
    std::printf("run %d: %.2f s\n", r + 1, SecondsSince(run_start));
    last = (*out)["out_sample"];
  }
  std::printf("end: peak RSS %.0f MB\n", ProcStatusMb("VmHWM"));
  if (o.compare.empty()) return 0;

  model->reset();
  auto other = sdonnx::OrtModel::Load(o.compare, o.session);
  auto expected = other.ok() ? (*other)->Run(inputs) : other.status();
  if (!expected.ok()) {
    std::fprintf(stderr, "error: %s\n", expected.status().message().c_str());
    return 1;
  }
  PrintDifference(last, (*expected)["out_sample"]);
  return 0;
}
