// sdonnx_compare_models: runs two files of the same sdonnx component, such as
// the --fp16 and the float32 conversion of one checkpoint, on the same
// deterministic inputs in ONNX Runtime's CPU provider. For each output it
// prints the largest absolute difference, that divided by the reference's
// largest magnitude, and the NaN and infinite values in each file's output.
//
//   sdonnx_compare_models TEST.onnx REFERENCE.onnx [OPTION ...]
//
// Options:
//   --threads=N       intra-op threads (default 2)
//   --batch=N         rows of every input (default 1)
//   --size=N          image side in pixels for vae_encoder (default 256),
//                     latent side for vae_decoder (32) and unet (16)
//   --prompt=TEXT     text encoder prompt of row 1; rows 2 and later alternate
//                     between the empty prompt and this one
//   --tokenizer=PATH  CLIP BPE merges file or tokenizer folder (default:
//                     $SDONNX_TOKENIZER); without one, fixed ids stand in
//                     for the prompt's tokens
//
// The component and its input contract (docs/onnx-contract.md) are read from
// the file's `sdonnx.component` metadata.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "runtime/ort_session.h"
#include "text/clip_tokenizer.h"
#include "text/prompt.h"

namespace {

using sdonnx::HostTensor;
using Inputs = std::map<std::string, HostTensor>;

constexpr const char* kDefaultPrompt =
    "a photograph of an astronaut riding a horse on the moon, highly detailed, 8k";

struct Options {
  std::string test;
  std::string reference;
  int threads = 2;
  std::int64_t batch = 1;
  std::int64_t size = 0;  // 0: the component's default
  std::string prompt = kDefaultPrompt;
  std::optional<std::string> tokenizer;
};

// Returns false on an unknown option, a value that is not a number, or other
// than two file names. It prints an error for the first two cases.
bool ParseOptions(int argc, char** argv, Options* o) try {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* prefix) -> std::optional<std::string> {
      const std::string p = prefix;
      if (arg.rfind(p, 0) != 0) return std::nullopt;
      return arg.substr(p.size());
    };
    if (auto v = value("--threads=")) {
      o->threads = std::stoi(*v);
    } else if (auto v = value("--batch=")) {
      o->batch = std::stoll(*v);
    } else if (auto v = value("--size=")) {
      o->size = std::stoll(*v);
    } else if (auto v = value("--prompt=")) {
      o->prompt = *v;
    } else if (auto v = value("--tokenizer=")) {
      o->tokenizer = *v;
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "error: unknown option %s\n", arg.c_str());
      return false;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2 || o->batch < 1 || o->size < 0 || o->threads < 1) return false;
  o->test = positional[0];
  o->reference = positional[1];
  return true;
} catch (const std::logic_error& e) {  // std::stoi and std::stoll
  std::fprintf(stderr, "error: an option's value is not a number (%s)\n", e.what());
  return false;
}

std::string MetadataValue(const sdonnx::OrtModel& model, const std::string& key) {
  const auto metadata = model.Metadata();
  auto it = metadata.find(key);
  return it == metadata.end() ? std::string() : it->second;
}

// Values with mean 0 and variance 1 (uniform in [-sqrt(3), sqrt(3)]) times
// `scale`, the same on every platform for a given seed.
std::vector<float> Noise(std::int64_t count, std::uint32_t seed, float scale) {
  std::mt19937 generator(seed);
  std::vector<float> values(static_cast<std::size_t>(count));
  for (float& v : values) {
    const double unit = (generator() + 0.5) / 4294967296.0;
    v = static_cast<float>((2 * unit - 1) * 1.7320508 * scale);
  }
  return values;
}

// A smooth image in [-0.9, 0.9]: a different diagonal wave per channel.
std::vector<float> Image(std::int64_t batch, std::int64_t size) {
  std::vector<float> pixels;
  pixels.reserve(static_cast<std::size_t>(batch * 3 * size * size));
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t c = 0; c < 3; ++c) {
      for (std::int64_t y = 0; y < size; ++y) {
        for (std::int64_t x = 0; x < size; ++x) {
          pixels.push_back(0.9f * std::sin(0.05f * (c + 1) * x + 0.03f * (n + 1) * y + c));
        }
      }
    }
  }
  return pixels;
}

// Rows of 77 ids: the prompt's first chunk, then alternately the empty
// prompt's and the prompt's, padded with the file's padding id.
sdonnx::Result<HostTensor> TokenIds(const sdonnx::OrtModel& model, const Options& o) {
  const bool second = MetadataValue(model, "sdonnx.component") == "clip_text_2";
  const std::string pad_text =
      MetadataValue(model, second ? "sdonnx.text_2_pad_id" : "sdonnx.text_pad_id");
  const std::int32_t pad = pad_text.empty() ? sdonnx::kClipPadId : std::stoi(pad_text);

  std::vector<std::int32_t> prompt_tokens;
  auto path = sdonnx::FindTokenizer(o.tokenizer, "");
  if (path.ok()) {
    SDONNX_ASSIGN_OR_RETURN(sdonnx::ClipTokenizer tokenizer, sdonnx::ClipTokenizer::Load(*path));
    prompt_tokens = tokenizer.Encode(o.prompt);
    std::printf("tokenizer: %s, %zu prompt tokens\n", path->c_str(), prompt_tokens.size());
  } else if (o.tokenizer) {
    return path.status();
  } else {
    for (std::int32_t i = 0; i < 16; ++i) prompt_tokens.push_back(320 + 997 * i);
    std::printf("no tokenizer (set --tokenizer or $%s): 16 fixed ids stand for the prompt\n",
                sdonnx::kTokenizerEnvironmentVariable);
  }
  prompt_tokens.resize(std::min(prompt_tokens.size(), sdonnx::kChunkTokens));

  std::vector<std::int32_t> ids;
  for (std::int64_t row = 0; row < o.batch; ++row) {
    std::vector<std::int32_t> chunk = {sdonnx::kClipStartOfText};
    if (row % 2 == 0) chunk.insert(chunk.end(), prompt_tokens.begin(), prompt_tokens.end());
    chunk.push_back(sdonnx::kClipEndOfText);
    chunk.resize(sdonnx::kChunkLength, pad);
    ids.insert(ids.end(), chunk.begin(), chunk.end());
  }
  return HostTensor::Int32({o.batch, static_cast<std::int64_t>(sdonnx::kChunkLength)}, ids);
}

// The UNet's inputs: noise latents at t = 999 with a noise context, and for
// SDXL pooled text noise and the time ids of an unscaled, uncropped image.
sdonnx::Result<Inputs> UNetInputs(const sdonnx::OrtModel& model, std::int64_t batch,
                                  std::int64_t side) {
  SDONNX_ASSIGN_OR_RETURN(auto sample_shape, model.InputShape("sample"));
  SDONNX_ASSIGN_OR_RETURN(auto context_shape, model.InputShape("encoder_hidden_states"));
  const std::int64_t channels = sample_shape[1];
  const std::int64_t width = context_shape[2];
  Inputs inputs = {
      {"sample", HostTensor::Float({batch, channels, side, side},
                                   Noise(batch * channels * side * side, 1, 1.0f))},
      {"timestep", HostTensor::Float({1}, {999.0f})},
      {"encoder_hidden_states",
       HostTensor::Float({batch, 77, width}, Noise(batch * 77 * width, 2, 1.0f))},
  };
  auto pooled_shape = model.InputShape("text_embeds");
  auto time_ids_shape = model.InputShape("time_ids");
  if (pooled_shape.ok() && time_ids_shape.ok()) {
    const std::int64_t pooled = (*pooled_shape)[1];
    const float pixels = 8.0f * side;
    std::vector<float> row = {pixels, pixels, 0.0f, 0.0f, pixels, pixels};
    if ((*time_ids_shape)[1] == 5) row = {pixels, pixels, 0.0f, 0.0f, 6.0f};  // aesthetic score
    std::vector<float> time_ids;
    for (std::int64_t n = 0; n < batch; ++n)
      time_ids.insert(time_ids.end(), row.begin(), row.end());
    inputs["text_embeds"] = HostTensor::Float({batch, pooled}, Noise(batch * pooled, 3, 1.0f));
    inputs["time_ids"] =
        HostTensor::Float({batch, static_cast<std::int64_t>(row.size())}, time_ids);
  }
  return inputs;
}

sdonnx::Result<Inputs> MakeInputs(const sdonnx::OrtModel& model, const Options& o) {
  const std::string component = MetadataValue(model, "sdonnx.component");
  const std::int64_t batch = o.batch;
  if (component == "vae_encoder") {
    const std::int64_t side = o.size > 0 ? o.size : 256;
    std::printf("inputs: sample [%lld, 3, %lld, %lld]\n", static_cast<long long>(batch),
                static_cast<long long>(side), static_cast<long long>(side));
    return Inputs{{"sample", HostTensor::Float({batch, 3, side, side}, Image(batch, side))}};
  }
  if (component == "vae_decoder") {
    const std::int64_t side = o.size > 0 ? o.size : 32;
    SDONNX_ASSIGN_OR_RETURN(auto shape, model.InputShape("latent_sample"));
    const std::string factor_text = MetadataValue(model, "sdonnx.vae_scaling_factor");
    const float factor = factor_text.empty() ? 0.18215f : std::stof(factor_text);
    const std::int64_t channels = shape[1];
    std::printf("inputs: latent_sample [%lld, %lld, %lld, %lld], unit noise / %g\n",
                static_cast<long long>(batch), static_cast<long long>(channels),
                static_cast<long long>(side), static_cast<long long>(side), factor);
    return Inputs{{"latent_sample",
                   HostTensor::Float({batch, channels, side, side},
                                     Noise(batch * channels * side * side, 4, 1.0f / factor))}};
  }
  if (component == "clip_text" || component == "clip_text_2") {
    SDONNX_ASSIGN_OR_RETURN(HostTensor ids, TokenIds(model, o));
    return Inputs{{"input_ids", std::move(ids)}};
  }
  if (component == "unet") {
    const std::int64_t side = o.size > 0 ? o.size : 16;
    std::printf("inputs: %lld x %lld latents, batch %lld\n", static_cast<long long>(side),
                static_cast<long long>(side), static_cast<long long>(batch));
    return UNetInputs(model, batch, side);
  }
  return sdonnx::Status::Error(model.path() + ": metadata 'sdonnx.component' is '" + component +
                               "', expected vae_encoder, vae_decoder, clip_text, clip_text_2 or "
                               "unet; compare only files written by sdonnx convert");
}

struct RunResult {
  std::string component;
  std::vector<std::string> output_names;
  std::map<std::string, HostTensor> outputs;
};

// Loads `path`, checks that its component is `component` (any when empty)
// and runs it on `inputs`, or when that is null on inputs made for the file,
// which are stored in `made`.
sdonnx::Result<RunResult> LoadAndRun(const std::string& path, const std::string& component,
                                     const Inputs* inputs, const Options& o, Inputs* made) {
  sdonnx::SessionOptions session;
  session.intra_op_threads = o.threads;
  auto start = std::chrono::steady_clock::now();
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<sdonnx::OrtModel> model,
                          sdonnx::OrtModel::Load(path, session));
  const double load_seconds = sdonnx::bench::SecondsSince(start);
  const std::string found = MetadataValue(*model, "sdonnx.component");
  if (!component.empty() && found != component) {
    return sdonnx::Status::Error(path + ": component is '" + found + "', expected '" + component +
                                 "' as in the first file; compare two files of one component");
  }
  if (inputs == nullptr) {
    SDONNX_ASSIGN_OR_RETURN(*made, MakeInputs(*model, o));
    inputs = made;
  }
  start = std::chrono::steady_clock::now();
  RunResult result;
  result.component = found;
  SDONNX_ASSIGN_OR_RETURN(result.outputs, model->Run(*inputs));
  result.output_names = model->OutputNames();
  std::printf("%s: %s, compute precision %s, load %.1f s, run %.1f s\n", path.c_str(),
              found.c_str(), MetadataValue(*model, "sdonnx.compute_precision").c_str(),
              load_seconds, sdonnx::bench::SecondsSince(start));
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: %s TEST.onnx REFERENCE.onnx [--threads=N] [--batch=N] [--size=N] "
                 "[--prompt=TEXT] [--tokenizer=PATH]\n",
                 argv[0]);
    return 2;
  }
  Inputs inputs;
  auto test = LoadAndRun(o.test, "", nullptr, o, &inputs);
  if (!test.ok()) {
    std::fprintf(stderr, "error: %s\n", test.status().message().c_str());
    return 1;
  }
  auto reference = LoadAndRun(o.reference, test->component, &inputs, o, nullptr);
  if (!reference.ok()) {
    std::fprintf(stderr, "error: %s\n", reference.status().message().c_str());
    return 1;
  }

  std::printf("%-24s %12s %12s  %s\n", "output", "max abs", "relative",
              "not finite (test / reference)");
  double worst = 0;
  std::size_t not_finite = 0;
  for (const std::string& name : reference->output_names) {
    const HostTensor& expected = reference->outputs.at(name);
    auto actual = test->outputs.find(name);
    if (actual == test->outputs.end()) {
      std::fprintf(stderr, "error: %s has no output '%s', which %s has\n", o.test.c_str(),
                   name.c_str(), o.reference.c_str());
      return 1;
    }
    if (actual->second.shape != expected.shape) {
      std::fprintf(stderr, "error: output '%s' has another shape in %s than in %s\n", name.c_str(),
                   o.test.c_str(), o.reference.c_str());
      return 1;
    }
    const sdonnx::bench::Difference d =
        sdonnx::bench::CompareFloats(actual->second.f32, expected.f32);
    std::printf("%-24s %12.4g %12.4g  %zu / %zu\n", name.c_str(), d.max_abs, d.Relative(),
                d.not_finite, d.reference_not_finite);
    worst = std::max(worst, d.Relative());
    not_finite += d.not_finite + d.reference_not_finite;
  }
  std::printf("worst relative difference %.4g, %zu values not finite in all\n", worst, not_finite);
  return 0;
}
