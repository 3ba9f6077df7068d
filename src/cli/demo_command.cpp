// `sdonnx demo`: the main job on a built-in default. It synthesizes a small
// SD 1.x checkpoint with random weights in the real key layout, converts it,
// runs the four ONNX files in ONNX Runtime, chained the way a pipeline chains
// them, and ends by generating an image with `generate`.
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "convert/convert.h"
#include "generate/generate.h"
#include "model/synthesize.h"
#include "runtime/ort_session.h"
#include "util/temporaries.h"

namespace sdonnx::cli {
namespace {

namespace fs = std::filesystem;

struct DemoArgs {
  std::string work_dir;
  std::string output = "sdonnx-demo.png";
  std::uint64_t seed = 42;
};

std::string Summary(const HostTensor& t) {
  double sum = 0, sum_sq = 0;
  bool finite = true;
  for (float v : t.f32) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
    finite = finite && std::isfinite(v);
  }
  const double n = static_cast<double>(t.f32.size());
  const double mean = sum / n;
  std::string shape;
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    shape += (i ? "x" : "") + std::to_string(t.shape[i]);
  }
  char text[160];
  std::snprintf(text, sizeof(text), "[%s] mean %.4f std %.4f%s", shape.c_str(), mean,
                std::sqrt(std::max(0.0, sum_sq / n - mean * mean)), finite ? "" : " NON-FINITE");
  return text;
}

Result<HostTensor> RunOne(const std::string& path, const std::map<std::string, HostTensor>& inputs,
                          const std::string& output) {
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<OrtModel> model, OrtModel::Load(path));
  SDONNX_ASSIGN_OR_RETURN(auto outputs, model->Run(inputs, {output}));
  PrintLine("ran " + fs::path(path).filename().string() + ": " + output + " " +
            Summary(outputs[output]));
  return std::move(outputs[output]);
}

Status RunPipeline(const ConvertReport& report, const fs::path& out_dir, const std::string& stem) {
  auto file = [&](const std::string& component) {
    return (out_dir / (component + "_" + stem + ".onnx")).string();
  };
  const std::int64_t context_length = report.spec.text->context_length;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(context_length), 49407);
  const std::vector<std::int32_t> prompt = {49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558};
  std::copy(prompt.begin(), prompt.end(), ids.begin());
  SDONNX_ASSIGN_OR_RETURN(
      HostTensor context,
      RunOne(file("clip_text"), {{"input_ids", HostTensor::Int32({1, context_length}, ids)}},
             "last_hidden_state"));

  const std::int64_t channels = report.spec.unet.in_channels;
  std::vector<float> noise(static_cast<std::size_t>(channels * 16 * 16));
  for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = std::sin(0.37f * static_cast<float>(i));
  SDONNX_ASSIGN_OR_RETURN(
      HostTensor eps,
      RunOne(file("unet"),
             {{"sample", HostTensor::Float({1, channels, 16, 16}, noise)},
              {"timestep", HostTensor::Float({1}, {999.0f})},
              {"encoder_hidden_states", context}},
             "out_sample"));
  SDONNX_ASSIGN_OR_RETURN(HostTensor image,
                          RunOne(file("vae_decoder"), {{"latent_sample", eps}}, "sample"));
  SDONNX_ASSIGN_OR_RETURN(HostTensor moments,
                          RunOne(file("vae_encoder"), {{"sample", image}}, "latent_parameters"));
  return Status::Ok();
}

// Writes a minimal CLIP tokenizer in Hugging Face's format: the 512
// byte-level tokens, the two special tokens and no merges, so every word is
// spelled with single-byte tokens. The real tokenizer files are not shipped;
// this one is enough to drive the pipeline.
Status WriteDemoTokenizer(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  // GPT-2's byte-to-character map, which CLIP uses: printable Latin-1 bytes
  // map to themselves, the other 68 bytes to U+0100 onwards, in order.
  nlohmann::json vocab = nlohmann::json::object();
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t c = printable ? static_cast<char32_t>(b) : next_extra++;
    std::string utf8;  // c < 0x800, so one or two UTF-8 bytes.
    if (c < 0x80) {
      utf8.push_back(static_cast<char>(c));
    } else {
      utf8.push_back(static_cast<char>(0xC0 | (c >> 6)));
      utf8.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
    vocab[utf8] = b;
    vocab[utf8 + "</w>"] = 256 + b;
  }
  vocab["<|startoftext|>"] = 512;
  vocab["<|endoftext|>"] = 513;
  std::ofstream vocab_file(dir / "vocab.json");
  vocab_file << vocab.dump();
  std::ofstream merges_file(dir / "merges.txt");
  merges_file << "#version: 0.2\n";
  if (!vocab_file || !merges_file) {
    return Status::Error((dir / "vocab.json").string() + ": writing the demo tokenizer failed");
  }
  return Status::Ok();
}

Status GenerateImage(const fs::path& model_dir, const fs::path& output, std::uint64_t seed) {
  SDONNX_RETURN_IF_ERROR(WriteDemoTokenizer(model_dir / "tokenizer"));
  GenerateOptions options;
  options.model_dir = model_dir.string();
  options.prompt = "a watercolor painting of a (lighthouse:1.2) at dusk";
  options.negative_prompt = "blurry";
  options.steps = 8;
  options.seed = seed;
  options.width = 64;
  options.height = 64;
  options.output = output.string();
  options.overwrite = true;
  SDONNX_ASSIGN_OR_RETURN(GenerateResult result, Generate(options));
  char per_step[32];  // Two decimals, as generate prints it.
  std::snprintf(per_step, sizeof(per_step), "%.2f", result.seconds_per_step);
  PrintLine("generated " + output.string() + " (64x64, 8 euler_a steps, " + per_step +
            " s per step)");
  return Status::Ok();
}

// Removes a registered temporary folder on every return, unless its path
// is empty. On SIGINT or SIGTERM the signal watcher removes it instead.
struct TemporaryFolder {
  explicit TemporaryFolder(fs::path folder) : path(std::move(folder)) {}
  TemporaryFolder(const TemporaryFolder&) = delete;
  ~TemporaryFolder() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
    UnregisterTemporary(path.string());
  }
  fs::path path;
};

int RunDemo(const DemoArgs& args) {
  fs::path work = args.work_dir;
  bool remove_after = false;
  if (work.empty()) {
    std::string pattern = (fs::temp_directory_path() / "sdonnx-demo-XXXXXX").string();
    if (CreateRegisteredTemporaryFolder(&pattern) != 0) {
      return ReportError(pattern + ": cannot create a temporary folder: " + std::strerror(errno));
    }
    work = pattern;
    remove_after = true;
  }
  const TemporaryFolder cleanup{remove_after ? work : fs::path()};
  std::error_code ec;
  fs::create_directories(work, ec);
  const fs::path checkpoint = work / "demo-sd1.safetensors";
  const auto layout = Sd1Layout(DemoHyperparameters());
  if (Status s = WriteSyntheticCheckpoint(checkpoint.string(), layout, FillMode::kRandom, args.seed);
      !s.ok()) {
    return ReportError(s.message());
  }
  PrintLine("synthesized " + checkpoint.string() + " (" + std::to_string(layout.size()) +
            " tensors, SD 1.x layout, random weights, " +
            HumanBytes(fs::file_size(checkpoint, ec)) + ")");

  ConvertOptions options;
  options.model_path = checkpoint.string();
  options.output_dir = (work / "onnx").string();
  options.overwrite = true;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) return ReportError(report.status().message());
  std::cout << "detected " << FamilyName(report->spec.family) << " " << report->spec.variant
            << ", prediction " << report->spec.prediction_type << "\n";
  for (const auto& c : report->components) {
    for (const auto& f : c.files) {
      PrintLine("wrote " + f.path + " (" + HumanBytes(f.bytes) + ")");
    }
  }
  Status ran = RunPipeline(*report, options.output_dir, "demo-sd1");
  if (ran.ok()) ran = GenerateImage(options.output_dir, args.output, args.seed);
  if (!ran.ok()) return ReportError(ran.message());
  PrintLine(remove_after ? "demo finished; temporary files removed"
                         : "demo finished; files kept in " + work.string());
  return 0;
}

}  // namespace

void AddDemoCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Synthesize a small SD 1.x checkpoint, convert it and run the ONNX files");
  cmd->add_option("--work-dir", args->work_dir,
                  "Keep the checkpoint and ONNX files here (default: a temporary folder that is "
                  "removed afterwards)");
  cmd->add_option("--seed", args->seed, "Seed of the random weights and of the image")
      ->capture_default_str();
  cmd->add_option("--output", args->output, "Where the generated image goes")
      ->capture_default_str();
  cmd->callback([run, args] { *run = [args] { return RunDemo(*args); }; });
}

}  // namespace sdonnx::cli
