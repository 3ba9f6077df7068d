// Parity: each converted component, run in ONNX Runtime, reproduces the
// outputs that the original implementation computed for the tiny fixtures
// (tiny/*.reference.safetensors), within 1e-4 max abs error, at every
// supported opset.
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

std::map<std::string, HostTensor> RunModel(const std::string& path,
                                           const std::map<std::string, HostTensor>& inputs) {
  auto model = OrtModel::Load(path);
  if (!model.ok()) throw std::runtime_error(model.status().message());
  auto outputs = (*model)->Run(inputs);
  if (!outputs.ok()) throw std::runtime_error(outputs.status().message());
  return std::move(outputs).value();
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
  auto out = RunModel(c.File("unet"), {{"sample", Ref("unet.sample")},
                                       {"timestep", Ref("unet.timestep")},
                                       {"encoder_hidden_states", Ref("unet.context")}});
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

TEST_P(Parity, TextEncoderMatchesReference) {
  const Converted& c = ConvertOnce(fixture(), opset());
  auto out = RunModel(c.File("clip_text"), {{"input_ids", Ref("text.input_ids")}});
  const ModelSpec& spec = c.report.spec;
  const std::int64_t layers = spec.text ? spec.text->layers : spec.open_clip->layers;
  EXPECT_LE(MaxAbsDiff(out["last_hidden_state"], Ref("text.last_hidden_state")), kTolerance);
  EXPECT_LE(MaxAbsDiff(out["hidden_states." + std::to_string(layers - 1)],
                       Ref("text.penultimate_hidden_state")),
            kTolerance);
  // OpenCLIP's reference pooled output is projected by text_projection.
  const std::string pooled = spec.open_clip ? "text_embeds" : "pooler_output";
  EXPECT_LE(MaxAbsDiff(out[pooled], Ref("text.pooled")), kTolerance);
  EXPECT_LE(MaxAbsDiff(out[spec.text_context_output], Ref("text.context")), kTolerance);
}

// clip_skip_2 is final_layer_norm(penultimate); the expected value is
// computed here from the reference penultimate state and the checkpoint's
// final_layer_norm weights.
TEST_P(Parity, ClipSkipTwoIsFinalNormOfPenultimate) {
  const Converted& c = ConvertOnce(fixture(), opset());
  auto out = RunModel(c.File("clip_text"), {{"input_ids", Ref("text.input_ids")}});
  const ModelSpec& spec = c.report.spec;
  const std::string prefix =
      spec.text ? spec.text->prefix + "final_layer_norm." : spec.open_clip->prefix + "ln_final.";
  const auto checkpoint = Fixture("tiny/" + fixture() + ".safetensors");
  const HostTensor gamma = ReadTensor(checkpoint, prefix + "weight");
  const HostTensor beta = ReadTensor(checkpoint, prefix + "bias");
  HostTensor expected = Ref("text.penultimate_hidden_state");
  const std::size_t width = gamma.f32.size();
  for (std::size_t row = 0; row < expected.f32.size() / width; ++row) {
    float* x = expected.f32.data() + row * width;
    double mean = 0, variance = 0;
    for (std::size_t i = 0; i < width; ++i) mean += x[i];
    mean /= static_cast<double>(width);
    for (std::size_t i = 0; i < width; ++i) variance += (x[i] - mean) * (x[i] - mean);
    variance /= static_cast<double>(width);
    for (std::size_t i = 0; i < width; ++i) {
      x[i] = static_cast<float>((x[i] - mean) / std::sqrt(variance + 1e-5) * gamma.f32[i] +
                                beta.f32[i]);
    }
  }
  EXPECT_LE(MaxAbsDiff(out["clip_skip_2"], expected), kTolerance);
}

TEST_P(Parity, EveryFilePassesTheCheckerAndRecordsMetadata) {
  const Converted& c = ConvertOnce(fixture(), opset());
  ASSERT_EQ(c.report.components.size(), 4u);
  for (const ConvertedComponent& component : c.report.components) {
    const std::string path = component.files.front().path;
    Status checked = CheckModelFile(path);
    EXPECT_TRUE(checked.ok()) << checked.message();
    auto model = OrtModel::Load(path);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto metadata = (*model)->Metadata();
    EXPECT_EQ(metadata["sdonnx.family"], fixture().starts_with("tiny-sd2") ? "sd2" : "sd1")
        << path;
    EXPECT_EQ(metadata["sdonnx.prediction_type"],
              fixture() == "tiny-sd2v" ? "v_prediction" : "epsilon")
        << path;
    EXPECT_EQ(metadata["sdonnx.vae_scaling_factor"], "0.182150") << path;
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
                                                              "tiny-sd2", "tiny-sd2v"),
                                            ::testing::Values(14, 15, 16, 17)),
                         ParamName);

}  // namespace
}  // namespace sdonnx
