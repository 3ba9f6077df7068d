// --ort-attention: UNet and VAE attention written as ONNX Runtime's
// com.microsoft.MultiHeadAttention reproduces the reference outputs like the
// standard-operator graphs do, and the text encoders stay standard.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>

#include "convert/convert.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;
using testing::RunModel;
using testing::ReadModel;

constexpr double kTolerance = 1e-4;

int CountNodes(const onnx::ModelProto& model, const std::string& domain, const std::string& op) {
  int count = 0;
  for (const auto& node : model.graph().node()) {
    if (node.domain() == domain && node.op_type() == op) ++count;
  }
  return count;
}

class OrtAttention : public ::testing::TestWithParam<std::string> {};

TEST_P(OrtAttention, MatchesReference) {
  const std::string fixture = GetParam();
  const auto reference = Fixture("tiny/" + fixture + ".reference.safetensors");
  auto ref = [&](const std::string& name) { return ReadTensor(reference, name); };
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/" + fixture + ".safetensors").string();
  options.output_dir = dir.path().string();
  options.ort_attention = true;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  auto file = [&](const std::string& component) {
    return dir / (component + "_" + fixture + ".onnx");
  };

  const onnx::ModelProto unet_model = ReadModel(file("unet"));
  EXPECT_GT(CountNodes(unet_model, "com.microsoft", "MultiHeadAttention"), 0);
  EXPECT_EQ(CountNodes(unet_model, "", "Softmax"), 0);
  std::map<std::string, HostTensor> inputs = {{"sample", ref("unet.sample")},
                                              {"timestep", ref("unet.timestep")},
                                              {"encoder_hidden_states", ref("unet.context")}};
  if (report->spec.unet.adm_in_channels > 0) {
    inputs["text_embeds"] = ref("unet.text_embeds");
    inputs["time_ids"] = ref("unet.time_ids");
  }
  auto unet = RunModel(file("unet"), inputs);
  EXPECT_LE(MaxAbsDiff(unet["out_sample"], ref("unet.out")), kTolerance);

  EXPECT_GT(CountNodes(ReadModel(file("vae_decoder")), "com.microsoft", "MultiHeadAttention"), 0);
  auto decoded = RunModel(file("vae_decoder"), {{"latent_sample", ref("vae_decoder.latent")}});
  EXPECT_LE(MaxAbsDiff(decoded["sample"], ref("vae_decoder.image")), kTolerance);
  auto encoded = RunModel(file("vae_encoder"), {{"sample", ref("vae_encoder.image")}});
  EXPECT_LE(MaxAbsDiff(encoded["latent_parameters"], ref("vae_encoder.moments")), kTolerance);

  // The text encoders' causal attention keeps standard operators.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("clip_text", 0) != 0) continue;
    const onnx::ModelProto text = ReadModel(entry.path());
    EXPECT_EQ(text.opset_import_size(), 1) << name;
    EXPECT_EQ(CountNodes(text, "com.microsoft", "MultiHeadAttention"), 0) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OrtAttention,
                         ::testing::Values("tiny-sd1", "tiny-sd2", "tiny-sdxl"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(OrtAttention, RecordedInMetadata) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = dir.path().string();
  options.ort_attention = true;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  auto metadata = [&](const std::string& file) {
    std::map<std::string, std::string> values;
    const onnx::ModelProto model = ReadModel(dir / file);
    for (const auto& prop : model.metadata_props()) values[prop.key()] = prop.value();
    return values["sdonnx.attention"];
  };
  EXPECT_EQ(metadata("unet_tiny-sd1.onnx"), "com.microsoft.MultiHeadAttention");
  EXPECT_EQ(metadata("vae_decoder_tiny-sd1.onnx"), "com.microsoft.MultiHeadAttention");
  EXPECT_EQ(metadata("clip_text_tiny-sd1.onnx"), "standard");
}

TEST(OrtAttention, Float16GraphStaysFinite) {
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = dir.path().string();
  options.ort_attention = true;
  options.fp16 = true;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  auto out = RunModel(dir / "unet_tiny-sd1.onnx",
                 {{"sample", ReadTensor(reference, "unet.sample")},
                  {"timestep", ReadTensor(reference, "unet.timestep")},
                  {"encoder_hidden_states", ReadTensor(reference, "unet.context")}});
  const HostTensor expected = ReadTensor(reference, "unet.out");
  for (float v : out["out_sample"].f32) ASSERT_TRUE(std::isfinite(v));
  // The relative bound of the standard float16 UNet (fp16_test.cpp) applies.
  double scale = 0;
  for (float v : expected.f32) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  EXPECT_LE(MaxAbsDiff(out["out_sample"], expected), 0.015 * scale);
}

}  // namespace
}  // namespace sdonnx
