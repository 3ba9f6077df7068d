// Detection reads the architecture from keys and shapes. Full-size layouts
// are synthesized from the manifests as sparse files: a real header, with
// zeros (holes) for data.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "formats/checkpoint.h"
#include "model/model_spec.h"
#include "model/synthesize.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::TempDir;

Result<ModelSpec> DetectManifest(const TempDir& dir, const std::string& manifest) {
  SDONNX_ASSIGN_OR_RETURN(auto tensors, ReadManifest(Fixture("manifests/" + manifest).string()));
  const std::string path = (dir.path() / (manifest + ".safetensors")).string();
  SDONNX_RETURN_IF_ERROR(WriteSyntheticCheckpoint(path, tensors, FillMode::kZeros, 0));
  SDONNX_ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(path));
  return DetectModel(*checkpoint, std::nullopt);
}

void ExpectSd15Shapes(const ModelSpec& spec) {
  EXPECT_EQ(spec.family, Family::kSD1);
  EXPECT_EQ(spec.prediction_type, "epsilon");
  EXPECT_EQ(spec.unet.model_channels, 320);
  EXPECT_EQ(spec.unet.channel_mult, (std::vector<std::int64_t>{1, 2, 4, 4}));
  EXPECT_EQ(spec.unet.num_res_blocks, 2);
  EXPECT_EQ(spec.unet.transformer_depth, (std::vector<std::int64_t>{1, 1, 1, 0}));
  EXPECT_EQ(spec.unet.middle_transformer_depth, 1);
  EXPECT_EQ(spec.unet.context_dim, 768);
  EXPECT_FALSE(spec.unet.linear_projection);
  EXPECT_EQ(spec.unet.out_channels, 4);
  ASSERT_TRUE(spec.vae.has_value());
  EXPECT_EQ(spec.vae->downsample_factor, 8);
  EXPECT_EQ(spec.vae->latent_channels, 4);
  EXPECT_EQ(spec.vae->base_channels, 128);
  ASSERT_TRUE(spec.text.has_value());
  EXPECT_EQ(spec.text->width, 768);
  EXPECT_EQ(spec.text->layers, 12);
  EXPECT_EQ(spec.text->vocab_size, 49408);
  EXPECT_EQ(spec.text->context_length, 77);
}

TEST(Detect, Sd15ManifestIsSd1WithRealHyperparameters) {
  TempDir dir;
  Result<ModelSpec> spec = DetectManifest(dir, "sd15.tsv");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  ExpectSd15Shapes(*spec);
  EXPECT_EQ(spec->unet.in_channels, 4);
  EXPECT_EQ(spec->variant, "base");
}

TEST(Detect, Sd15InpaintManifestHasNineInputChannels) {
  TempDir dir;
  Result<ModelSpec> spec = DetectManifest(dir, "sd15-inpaint.tsv");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  ExpectSd15Shapes(*spec);
  EXPECT_EQ(spec->unet.in_channels, 9);
  EXPECT_EQ(spec->variant, "inpaint");
}

TEST(Detect, TinyFixtureHyperparametersComeFromShapesAndYaml) {
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  Result<ModelSpec> spec = DetectModel(**checkpoint, std::nullopt);
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->unet.model_channels, 32);
  EXPECT_EQ(spec->unet.channel_mult, (std::vector<std::int64_t>{1, 1, 2}));
  EXPECT_EQ(spec->unet.num_res_blocks, 1);
  EXPECT_EQ(spec->unet.context_dim, 16);
  EXPECT_EQ(spec->unet.num_heads, 2);  // From tiny-sd1.yaml beside the checkpoint.
  ASSERT_TRUE(spec->config_path.has_value());
  EXPECT_EQ(spec->vae->downsample_factor, 2);
  EXPECT_EQ(spec->text->heads, 2);
  EXPECT_EQ(spec->text->layers, 2);
}

TEST(Detect, ExplicitConfigThatDoesNotExistIsAnError) {
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  TempDir dir;
  Result<ModelSpec> spec = DetectModel(**checkpoint, (dir.path() / "missing.yaml").string());
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("missing.yaml"), std::string::npos);
}

TEST(Detect, Sd21ManifestIsSd2WithOpenClip) {
  TempDir dir;
  Result<ModelSpec> spec = DetectManifest(dir, "sd21.tsv");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->family, Family::kSD2);
  EXPECT_EQ(spec->unet.model_channels, 320);
  EXPECT_EQ(spec->unet.context_dim, 1024);
  EXPECT_TRUE(spec->unet.linear_projection);
  EXPECT_EQ(spec->unet.num_head_channels, 64);
  EXPECT_EQ(spec->unet.channel_mult, (std::vector<std::int64_t>{1, 2, 4, 4}));
  ASSERT_TRUE(spec->open_clip.has_value());
  EXPECT_FALSE(spec->text.has_value());
  EXPECT_EQ(spec->open_clip->width, 1024);
  EXPECT_EQ(spec->open_clip->layers, 24);
  EXPECT_EQ(spec->text_context_output, "clip_skip_2");
  EXPECT_EQ(spec->text_pad_id, 0);
  EXPECT_TRUE(spec->needs_prediction_probe());
}

TEST(Detect, SdxlBaseManifestHasTwoEncodersAndSixTimeIds) {
  TempDir dir;
  Result<ModelSpec> spec = DetectManifest(dir, "sdxl-base.tsv");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->family, Family::kSDXL);
  EXPECT_EQ(spec->unet.model_channels, 320);
  EXPECT_EQ(spec->unet.channel_mult, (std::vector<std::int64_t>{1, 2, 4}));
  EXPECT_EQ(spec->unet.transformer_depth, (std::vector<std::int64_t>{0, 2, 10}));
  EXPECT_EQ(spec->unet.middle_transformer_depth, 10);
  EXPECT_EQ(spec->unet.context_dim, 2048);
  EXPECT_EQ(spec->unet.adm_in_channels, 2816);
  EXPECT_EQ(spec->unet.text_embed_dim, 1280);
  EXPECT_EQ(spec->unet.num_time_ids, 6);
  ASSERT_TRUE(spec->text.has_value());
  EXPECT_EQ(spec->text->width, 768);
  ASSERT_TRUE(spec->open_clip.has_value());
  EXPECT_EQ(spec->open_clip->width, 1280);
  EXPECT_EQ(spec->open_clip->layers, 32);
  EXPECT_TRUE(spec->open_clip->has_projection);
  EXPECT_EQ(spec->open_clip_component, "clip_text_2");
  EXPECT_EQ(spec->text_context_output, "hidden_states.11");
  EXPECT_EQ(spec->text_2_context_output, "hidden_states.31");
  EXPECT_FLOAT_EQ(spec->vae_scaling_factor, 0.13025f);
}

TEST(Detect, SdxlRefinerManifestIsNotTakenForBase) {
  TempDir dir;
  Result<ModelSpec> spec = DetectManifest(dir, "sdxl-refiner.tsv");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->family, Family::kSDXLRefiner);
  EXPECT_EQ(spec->unet.model_channels, 384);
  EXPECT_EQ(spec->unet.adm_in_channels, 2560);
  EXPECT_EQ(spec->unet.text_embed_dim, 1280);
  EXPECT_EQ(spec->unet.num_time_ids, 5);
  EXPECT_EQ(spec->unet.context_dim, 1280);
  EXPECT_FALSE(spec->text.has_value());
  ASSERT_TRUE(spec->open_clip.has_value());
  EXPECT_EQ(spec->open_clip->width, 1280);
}

TEST(Detect, PredictionTypeFlagOverridesConfig) {
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd2v.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  Result<ModelSpec> spec = DetectModel(**checkpoint, std::nullopt, "epsilon");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->prediction_type, "epsilon");
  EXPECT_EQ(spec->prediction_basis, "--prediction-type");
  Result<ModelSpec> from_config = DetectModel(**checkpoint, std::nullopt);
  ASSERT_TRUE(from_config.ok());
  EXPECT_EQ(from_config->prediction_type, "v_prediction");
  EXPECT_FALSE(from_config->needs_prediction_probe());
}

// The synthesizer used by the demo and the benchmarks produces exactly the
// keys and shapes of the real SD 1.5 file.
TEST(Synthesize, Sd1LayoutWithSd15HyperparametersMatchesTheManifest) {
  auto manifest = ReadManifest(Fixture("manifests/sd15.tsv").string());
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  auto layout = Sd1Layout(Sd1Hyperparameters{});
  std::set<std::string> expected, actual;
  for (const auto& t : *manifest) {
    std::string shape;
    for (auto d : t.shape) shape += std::to_string(d) + "x";
    expected.insert(t.name + " " + shape);
  }
  for (const auto& t : layout) {
    std::string shape;
    for (auto d : t.shape) shape += std::to_string(d) + "x";
    actual.insert(t.name + " " + shape);
  }
  std::vector<std::string> missing, extra;
  std::set_difference(expected.begin(), expected.end(), actual.begin(), actual.end(),
                      std::back_inserter(missing));
  std::set_difference(actual.begin(), actual.end(), expected.begin(), expected.end(),
                      std::back_inserter(extra));
  EXPECT_TRUE(missing.empty()) << "first missing: " << (missing.empty() ? "" : missing.front());
  EXPECT_TRUE(extra.empty()) << "first extra: " << (extra.empty() ? "" : extra.front());
}

}  // namespace
}  // namespace sdonnx
