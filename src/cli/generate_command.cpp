#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <charconv>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <random>

#include "cli/commands.h"
#include "generate/generate.h"

namespace sdonnx::cli {
namespace {

// The largest --seed: image b of a batch gets seed + b, so seeds are
// unsigned 64-bit inside, but the option is a signed one so that -1 means
// a random seed.
constexpr std::int64_t kMaxSeed = std::numeric_limits<std::int64_t>::max();

// Accepts -1 and 0 to kMaxSeed. CLI11's own conversion would clamp or wrap
// a larger number silently.
CLI::Validator SeedValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (std::string not_integer = IntegerValidator()(text); !not_integer.empty()) {
          return not_integer;
        }
        std::int64_t value = 0;
        const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error == std::errc::result_out_of_range || value < -1) {
          return "Value " + text + " is out of range; seeds go from 0 to " +
                 std::to_string(kMaxSeed) + ", and -1 picks one at random";
        }
        return "";
      },
      "INT");
}

struct GenerateArgs {
  GenerateOptions options;
  std::int64_t seed = -1;
  double strength = 0.75;
  bool strength_given = false;
  std::string provider = "cpu";
  std::string init_image;
  std::string mask;
  std::string tokenizer;
  bool prepack = false;
  bool widen_at_load = false;
  std::string graph_optimization = "extended";
  bool graph_optimization_given = false;
  std::string cache_dir;
};

// A one-line progress bar on stderr, redrawn after each step.
void DrawProgress(int step, int total, double seconds) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? step * kWidth / total : kWidth;
  const double rate = seconds > 0 ? step / seconds : 0.0;
  std::fprintf(stderr, "\r[%.*s%*s] %d/%d  %.2f it/s", filled,
               "##############################", kWidth - filled, "", step, total, rate);
  if (step == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int RunGenerate(GenerateArgs& args) {
  GenerateOptions& options = args.options;
  if (args.seed < -1) {
    return ReportError("--seed " + std::to_string(args.seed) +
                       " is invalid; use -1 for a random seed or 0 and up");
  }
  // Image b of a batch records seed + b, which --seed must accept again.
  // (--batch-size itself is checked later.)
  const std::int64_t later_images = std::max<std::int64_t>(options.batch_size, 1) - 1;
  if (args.seed > kMaxSeed - later_images) {
    return ReportError("--seed " + std::to_string(args.seed) + " with --batch-size " +
                       std::to_string(options.batch_size) + " gives the last image seed " +
                       std::to_string(static_cast<std::uint64_t>(args.seed) +
                                      static_cast<std::uint64_t>(later_images)) +
                       ", past the largest seed " + std::to_string(kMaxSeed) +
                       "; use a smaller seed");
  }
  if (args.seed < 0) {
    std::random_device device;
    options.seed = (static_cast<std::uint64_t>(device()) << 32 | device()) & 0xffffffffull;
  } else {
    options.seed = static_cast<std::uint64_t>(args.seed);
  }
  if (args.strength_given) options.strength = args.strength;
  if (!args.init_image.empty()) options.init_image = args.init_image;
  if (!args.mask.empty()) options.mask = args.mask;
  if (!args.tokenizer.empty()) options.tokenizer = args.tokenizer;
  Result<Provider> provider = ParseProvider(args.provider);
  if (!provider.ok()) return ReportError(provider.status().message());
  options.session.provider = *provider;
  options.session.prepack_weights = args.prepack;
  options.session.widen_weights_at_load = args.widen_at_load;
  Result<GraphOptimization> optimization = ParseGraphOptimization(args.graph_optimization);
  if (!optimization.ok()) return ReportError(optimization.status().message());
  options.session.optimization = *optimization;
  if (!args.cache_dir.empty()) {
    if (*provider == Provider::kCuda) {
      return ReportError(
          "--cache-dir works with --provider cpu (optimized sessions) and "
          "tensorrt (engines); leave it out with cuda");
    }
    if (*provider == Provider::kCpu && (args.prepack || args.graph_optimization_given)) {
      return ReportError(
          "--cache-dir already optimizes at the 'all' level with prepacked "
          "weights; leave out --graph-optimization and --prepack");
    }
    options.session.cache_dir = args.cache_dir;
  }

  StepCallback on_step;
  if (::isatty(STDERR_FILENO)) on_step = DrawProgress;
  Result<GenerateResult> result = Generate(options, on_step);
  if (!result.ok()) return ReportError(result.status().message());
  for (const std::string& file : result->files) PrintLine("wrote " + file);
  if (!result->cache_built.empty()) {
    std::string names;
    for (const std::string& name : result->cache_built) names += (names.empty() ? "" : ", ") + name;
    PrintLine("cached optimized sessions of " + names + " in " + args.cache_dir +
              "; later runs load them from there");
  }
  if (result->cache_entries_removed > 0) {
    PrintLine("removed " + std::to_string(result->cache_entries_removed) + " cache " +
              (result->cache_entries_removed == 1 ? "entry" : "entries") +
              " of models that changed or were removed since (" +
              HumanBytes(result->cache_bytes_freed) + " freed)");
  }
  std::printf("seed %llu, %.2f s per step, models loaded in %.1f s\n",
              static_cast<unsigned long long>(options.seed), result->seconds_per_step,
              result->load_seconds);
  return 0;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<GenerateArgs>();
  GenerateOptions& o = args->options;
  CLI::App* cmd = app.add_subcommand("generate", "Generate images with converted ONNX models");
  cmd->add_option("--model", o.model_dir, "Folder with the files sdonnx convert wrote")
      ->required();
  cmd->add_option("--prompt", o.prompt, "What to draw (AUTOMATIC1111 emphasis syntax)")
      ->required();
  cmd->add_option("--negative-prompt", o.negative_prompt, "What to avoid");
  cmd->add_option("--steps", o.steps, "Sampling steps")
      ->transform(IntegerValidator())
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--cfg-scale", o.cfg_scale, "Classifier-free guidance scale; 1 disables it")
      ->capture_default_str();
  cmd->add_option("--sampler", o.sampler,
                  "euler_a, euler, ddim, dpmpp_2m, dpmpp_2m_karras or lcm")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed; -1 picks one at random")
      ->transform(SeedValidator())
      ->capture_default_str();
  // The upper bounds repeat generate's own, so that a number past 64 bits is
  // named as typed instead of as the largest int64 CLI11 clamps it to.
  cmd->add_option("--width", o.width, "Image width, a multiple of 8")
      ->transform(IntegerValidator())
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{8192}))
      ->capture_default_str();
  cmd->add_option("--height", o.height, "Image height, a multiple of 8")
      ->transform(IntegerValidator())
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{8192}))
      ->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Images per run; files are numbered")
      ->transform(IntegerValidator())
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{64}))
      ->capture_default_str();
  cmd->add_option("--clip-skip", o.clip_skip, "Text encoder layers to skip from the end, 1 = none")
      ->transform(IntegerValidator())
      ->capture_default_str();
  cmd->add_option("--init-image", args->init_image, "PNG to start from (img2img)");
  cmd->add_option("--strength", args->strength,
                  "How much of the init image to repaint: 0.75 by default, 1.0 with --mask")
      ->check(CLI::Range(0.0, 1.0))
      ->each([args](const std::string&) { args->strength_given = true; });
  cmd->add_option("--mask", args->mask, "PNG mask, white where to repaint (inpainting)");
  cmd->add_option("--aesthetic-score", o.aesthetic_score,
                  "SDXL refiner: the aesthetic score the prompt asks for (default 6)");
  cmd->add_option("--negative-aesthetic-score", o.negative_aesthetic_score,
                  "SDXL refiner: the aesthetic score of the negative prompt (default 2.5)");
  cmd->add_option("--image-cfg-scale", o.image_cfg_scale,
                  "instruct-pix2pix: how closely to follow --init-image; 1 disables it "
                  "(default 1.5)");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "CLIP tokenizer: bpe_simple_vocab_16e6.txt.gz, or a folder with it or with "
                  "vocab.json and merges.txt");
  cmd->add_option("--threads", o.session.intra_op_threads,
                  "CPU threads; 0 lets ONNX Runtime "
                  "choose")
      ->transform(IntegerValidator())
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd->add_option("--graph-optimization", args->graph_optimization,
                  "ONNX Runtime's graph optimizations: extended, all (adds CPU convolution "
                  "layouts that copy every convolution weight at load), basic or disabled")
      ->check(CLI::IsMember({"all", "extended", "basic", "disabled"}))
      ->each([args](const std::string&) { args->graph_optimization_given = true; })
      ->capture_default_str();
  cmd->add_flag("--prepack", args->prepack,
                "Let ONNX Runtime repack weights at load: copies of the weights in memory "
                "instead of the memory-mapped .onnx.data files");
  cmd->add_flag("--widen-at-load", args->widen_at_load,
                "Widen the float16 weights of float32 models once at load: faster steps "
                "(about 2 s per 512x512 SDXL step on a CPU), but a float32 copy of them in "
                "memory and a slower load (fp16 SDXL: 20-35 s and 10 GB); by default each "
                "weight's Cast widens it at every step");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Folder for sessions built once: on the CPU, each model optimized at the "
                  "'all' level with prepacked weights (the first run builds them, about 35 s "
                  "and 4.5 GB for the SD 1.5 UNet; later runs map them, steps about 10% "
                  "faster); with tensorrt, the engines");
  cmd->add_option("--provider", args->provider, "cpu, cuda or tensorrt")->capture_default_str();
  cmd->add_option("--output", o.output, "Output PNG")->required();
  cmd->add_flag("--force", o.overwrite, "Overwrite existing output files");
  cmd->callback([run, args] { *run = [args] { return RunGenerate(*args); }; });
}

}  // namespace sdonnx::cli
