// Parity: each converted component, run in ONNX Runtime, reproduces the
// outputs that the original implementation computed for the tiny fixtures
// (tiny/*.reference.safetensors), within 1e-4 max abs error, at opsets 14
// to 18 and 21; opset_test.cpp covers 19 and 20.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <tuple>

#include "convert/convert.h"
#include "model/model_spec.h"
#include "graph/model_writer.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;
using testing::RunModel;

constexpr double kTolerance = 1e-4;

struct Converted {
  std::unique_ptr<TempDir> dir;
  ConvertReport report;
  std::string stem;

  std::string File(const std::string& component) const {
    return (dir->path() / (component + "_" + stem + ".onnx")).string();
  }
};

// Converts each (fixture, opset) pair once per test run.
const Converted& ConvertOnce(const std::string& fixture, int opset) {
  static std::map<std::pair<std::string, int>, Converted> cache;
  auto key = std::make_pair(fixture, opset);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Converted converted;
  converted.dir = std::make_unique<TempDir>();
  converted.stem = fixture;
  ConvertOptions options;
  options.model_path = Fixture("tiny/" + fixture + ".safetensors").string();
  options.output_dir = converted.dir->path().string();
  options.opset = opset;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) throw std::runtime_error(report.status().message());
  converted.report = std::move(report).value();
  return cache.emplace(key, std::move(converted)).first->second;
}

class Parity : public ::testing::TestWithParam<std::tuple<std::string, int>> {
 protected:
  const std::string& fixture() const { return std::get<0>(GetParam()); }
  int opset() const { return std::get<1>(GetParam()); }
  std::filesystem::path Reference() const {
    return Fixture("tiny/" + fixture() + ".reference.safetensors");
  }
  HostTensor Ref(const std::string& name) const { return ReadTensor(Reference(), name); }
};

TEST_P(Parity, UNetMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  std::map<std::string, HostTensor> inputs = {{"sample", Ref("unet.sample")},
                                              {"timestep", Ref("unet.timestep")},
                                              {"encoder_hidden_states", Ref("unet.context")}};
  if (c.report.spec.unet.adm_in_channels > 0) {
    inputs["text_embeds"] = Ref("unet.text_embeds");
    inputs["time_ids"] = Ref("unet.time_ids");
  }
  auto out = RunModel(c.File("unet"), inputs);
  EXPECT_LE(MaxAbsDiff(out["out_sample"], Ref("unet.out")), kTolerance);
}

TEST_P(Parity, VaeEncoderMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  auto out = RunModel(c.File("vae_encoder"), {{"sample", Ref("vae_encoder.image")}});
  EXPECT_LE(MaxAbsDiff(out["latent_parameters"], Ref("vae_encoder.moments")), kTolerance);
}

TEST_P(Parity, VaeDecoderMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  auto out = RunModel(c.File("vae_decoder"), {{"latent_sample", Ref("vae_decoder.latent")}});
  EXPECT_LE(MaxAbsDiff(out["sample"], Ref("vae_decoder.image")), kTolerance);
}

// One text encoder of a fixture: the prefix of its reference tensors, its
// file, and its checkpoint key prefix and final norm.
struct TextEncoderCase {
  std::string reference;  // "text", "text0" or "text1"
  std::string component;  // "clip_text" or "clip_text_2"
  std::string final_norm;
  std::int64_t layers = 0;
  bool projected = false;  // The reference pooled output is projected (OpenCLIP).
};

std::vector<TextEncoderCase> TextEncoders(const ModelSpec& spec) {
  const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
  std::vector<TextEncoderCase> cases;
  if (spec.text) {
    cases.push_back({sdxl ? "text0" : "text", "clip_text", spec.text->prefix + "final_layer_norm.",
                     spec.text->layers, false});
  }
  if (spec.open_clip) {
    std::string reference = "text";
    if (spec.family == Family::kSDXL) reference = "text1";
    if (spec.family == Family::kSDXLRefiner) reference = "text0";
    cases.push_back({reference, spec.open_clip_component, spec.open_clip->prefix + "ln_final.",
                     spec.open_clip->layers, spec.open_clip->has_projection});
  }
  return cases;
}

// Applies a layer norm with the checkpoint's weights under `prefix` to every
// row of `x`, in double precision.
HostTensor LayerNormReference(HostTensor x, const std::filesystem::path& checkpoint,
                              const std::string& prefix) {
  const HostTensor gamma = ReadTensor(checkpoint, prefix + "weight");
  const HostTensor beta = ReadTensor(checkpoint, prefix + "bias");
  const std::size_t width = gamma.f32.size();
  for (std::size_t row = 0; row < x.f32.size() / width; ++row) {
    float* v = x.f32.data() + row * width;
    double mean = 0, variance = 0;
    for (std::size_t i = 0; i < width; ++i) mean += v[i];
    mean /= static_cast<double>(width);
    for (std::size_t i = 0; i < width; ++i) variance += (v[i] - mean) * (v[i] - mean);
    variance /= static_cast<double>(width);
    for (std::size_t i = 0; i < width; ++i) {
      v[i] = static_cast<float>((v[i] - mean) / std::sqrt(variance + 1e-5) * gamma.f32[i] +
                                beta.f32[i]);
    }
  }
  return x;
}

TEST_P(Parity, TextEncoderMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  const auto cases = TextEncoders(c.report.spec);
  ASSERT_FALSE(cases.empty());
  for (const TextEncoderCase& t : cases) {
    SCOPED_TRACE(t.component);
    auto out = RunModel(c.File(t.component), {{"input_ids", Ref(t.reference + ".input_ids")}});
    EXPECT_LE(MaxAbsDiff(out["last_hidden_state"], Ref(t.reference + ".last_hidden_state")),
              kTolerance);
    EXPECT_LE(MaxAbsDiff(out["hidden_states." + std::to_string(t.layers - 1)],
                         Ref(t.reference + ".penultimate_hidden_state")),
              kTolerance);
    const std::string pooled = t.projected ? "text_embeds" : "pooler_output";
    EXPECT_LE(MaxAbsDiff(out[pooled], Ref(t.reference + ".pooled")), kTolerance);
  }
}

// The UNet's context: one encoder's context output (SD 1.x, SD 2.x), or
// the encoders' outputs joined along the last axis (SDXL).
TEST_P(Parity, TextContextMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  const ModelSpec& spec = c.report.spec;
  const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
  std::vector<HostTensor> parts;
  for (const TextEncoderCase& t : TextEncoders(spec)) {
    const std::string output =
        t.component == "clip_text" ? spec.text_context_output : spec.text_2_context_output;
    const std::string& name = output.empty() ? spec.text_context_output : output;
    auto out = RunModel(c.File(t.component), {{"input_ids", Ref(t.reference + ".input_ids")}});
    parts.push_back(out[name]);
  }
  ASSERT_FALSE(parts.empty());
  HostTensor context = parts.front();
  if (parts.size() == 2) {
    const std::int64_t a = parts[0].shape[2];
    const std::int64_t b = parts[1].shape[2];
    context.shape[2] = a + b;
    context.f32.clear();
    for (std::size_t row = 0; row < parts[0].f32.size() / a; ++row) {
      context.f32.insert(context.f32.end(), parts[0].f32.begin() + row * a,
                         parts[0].f32.begin() + (row + 1) * a);
      context.f32.insert(context.f32.end(), parts[1].f32.begin() + row * b,
                         parts[1].f32.begin() + (row + 1) * b);
    }
  }
  EXPECT_LE(MaxAbsDiff(context, Ref(sdxl ? "cond.crossattn" : "text.context")), kTolerance);
}

// clip_skip_2 is the final norm of the penultimate layer; the expected value
// is computed here from the reference penultimate state and the
// checkpoint's norm weights.
TEST_P(Parity, ClipSkipTwoIsFinalNormOfPenultimate) {
  const Converted& c = ConvertOnce(fixture(), opset());
  const auto checkpoint = Fixture("tiny/" + fixture() + ".safetensors");
  for (const TextEncoderCase& t : TextEncoders(c.report.spec)) {
    SCOPED_TRACE(t.component);
    auto out = RunModel(c.File(t.component), {{"input_ids", Ref(t.reference + ".input_ids")}});
    const HostTensor expected = LayerNormReference(
        Ref(t.reference + ".penultimate_hidden_state"), checkpoint, t.final_norm);
    EXPECT_LE(MaxAbsDiff(out["clip_skip_2"], expected), kTolerance);
  }
}

TEST_P(Parity, EveryFilePassesTheCheckerAndRecordsMetadata) {
  const Converted& c = ConvertOnce(fixture(), opset());
  ASSERT_EQ(c.report.components.size(), fixture() == "tiny-sdxl" ? 5u : 4u);
  const bool sdxl = fixture().starts_with("tiny-sdxl");
  std::string family = "sd1";
  if (fixture().starts_with("tiny-sd2")) family = "sd2";
  if (sdxl) family = fixture() == "tiny-sdxl" ? "sdxl" : "sdxl-refiner";
  for (const ConvertedComponent& component : c.report.components) {
    const std::string path = component.files.front().path;
    Status checked = CheckModelFile(path);
    EXPECT_TRUE(checked.ok()) << checked.message();
    auto model = OrtModel::Load(path);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto metadata = (*model)->Metadata();
    EXPECT_EQ(metadata["sdonnx.family"], family) << path;
    EXPECT_EQ(metadata["sdonnx.prediction_type"],
              fixture() == "tiny-sd2v" ? "v_prediction" : "epsilon")
        << path;
    EXPECT_EQ(metadata["sdonnx.vae_scaling_factor"], sdxl ? "0.130250" : "0.182150") << path;
    EXPECT_EQ(metadata["sdonnx.source_file"], fixture() + ".safetensors") << path;
    EXPECT_EQ(metadata["sdonnx.source_sha256"].size(), 64u) << path;
    EXPECT_EQ(metadata["sdonnx.component"], component.component) << path;
    EXPECT_FALSE(metadata["sdonnx.version"].empty()) << path;
  }
}

std::string ParamName(const ::testing::TestParamInfo<std::tuple<std::string, int>>& info) {
  std::string name = std::get<0>(info.param) + "_opset" + std::to_string(std::get<1>(info.param));
  for (char& ch : name) {
    if (ch == '-') ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(TinyFixtures, Parity,
                         ::testing::Combine(::testing::Values("tiny-sd1", "tiny-sd1-inpaint",
                                                              "tiny-sd2", "tiny-sd2v", "tiny-sdxl",
                                                              "tiny-sdxl-refiner"),
                                            ::testing::Values(14, 15, 16, 17, 18, 21)),
                         ParamName);

}  // namespace
}  // namespace sdonnx
