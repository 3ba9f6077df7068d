// Convert and verify reject checkpoints whose tensor shapes do not fit the
// detected architecture, naming the tensor and both shapes, before any
// output file is written. Each case changes one tensor of a tiny fixture.
#include <gtest/gtest.h>

#include <ostream>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "inspect/verify.h"
#include "model/expected_keys.h"
#include "model/shape_check.h"
#include "networks/unet.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

using Shape = std::vector<std::int64_t>;

// Copies tiny fixture `fixture` to DIR/model.safetensors (with its YAML)
// with each tensor of `replaced` stored as zeros of the given shape.
fs::path WriteWithShapes(const fs::path& dir, const std::string& fixture,
                         const std::map<std::string, Shape>& replaced) {
  auto source = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  if (!source.ok()) throw std::runtime_error(source.status().message());
  std::vector<std::vector<std::uint8_t>> storage;
  storage.reserve(replaced.size());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*source)->tensors()) {
    auto change = replaced.find(t.name);
    if (change == replaced.end()) {
      tensors.push_back({t.name, t.dtype, t.shape, (*source)->Data(t), {}});
      continue;
    }
    std::size_t elements = 1;
    for (std::int64_t d : change->second) elements *= static_cast<std::size_t>(d);
    storage.emplace_back(elements * sizeof(float), 0);
    tensors.push_back({t.name, DType::kF32, change->second,
                       {storage.back().data(), storage.back().size()}, {}});
  }
  const fs::path path = dir / "model.safetensors";
  Status written = WriteSafetensors(path.string(), tensors, {});
  if (!written.ok()) throw std::runtime_error(written.message());
  fs::copy_file(Fixture("tiny/" + fixture + ".yaml"), dir / "model.yaml");
  return path;
}

Status Convert(const fs::path& model, const fs::path& out,
               const std::optional<fs::path>& vae = std::nullopt) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  if (vae) options.vae_path = vae->string();
  return ConvertCheckpoint(options).status();
}

bool IsEmptyOrAbsent(const fs::path& dir) {
  std::error_code ec;
  return !fs::exists(dir, ec) || fs::is_empty(dir, ec);
}

struct Mutation {
  const char* name;
  const char* fixture;
  const char* key;
  Shape wrong;
  Shape right;
};

void PrintTo(const Mutation& m, std::ostream* out) { *out << m.name; }

std::string CaseName(const ::testing::TestParamInfo<Mutation>& info) { return info.param.name; }

class ShapeMutation : public ::testing::TestWithParam<Mutation> {};

TEST_P(ShapeMutation, ConvertRejectsBeforeWriting) {
  const Mutation& m = GetParam();
  TempDir dir;
  const fs::path model = WriteWithShapes(dir.path(), m.fixture, {{m.key, m.wrong}});
  const Status status = Convert(model, dir / "onnx");
  ASSERT_FALSE(status.ok());
  const std::string& message = status.message();
  EXPECT_NE(message.find(std::string("'") + m.key + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("has shape " + ShapeText(m.wrong)), std::string::npos) << message;
  EXPECT_NE(message.find("needs " + ShapeText(m.right)), std::string::npos) << message;
  EXPECT_NE(message.find("download it again"), std::string::npos) << message;
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

TEST_P(ShapeMutation, VerifyReportsTheTensor) {
  const Mutation& m = GetParam();
  TempDir dir;
  const fs::path model = WriteWithShapes(dir.path(), m.fixture, {{m.key, m.wrong}});
  Result<VerifyReport> report = VerifyCheckpoint(model.string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->ok());
  bool found = false;
  for (const VerifyProblem& problem : report->problems) {
    // A width that family detection reads is reported by detection itself.
    if (problem.what.find("'" + std::string(m.key) + "' has shape " + ShapeText(m.wrong) +
                          ", but the text encoder detected from the other tensors needs " +
                          ShapeText(m.right)) != std::string::npos) {
      found = true;
    }
    for (const ShapeMismatch& mismatch : problem.wrong_shapes) {
      if (mismatch.key != m.key) continue;
      found = true;
      EXPECT_EQ(ShapeText(mismatch.found), ShapeText(m.wrong));
      EXPECT_EQ(ShapeText(mismatch.expected), ShapeText(m.right));
      EXPECT_NE(problem.what.find(m.key), std::string::npos) << problem.what;
    }
  }
  EXPECT_TRUE(found) << "no wrong-shape problem names " << m.key;
}

const char* const kUNet = "model.diffusion_model.";
const std::string kTransformer = std::string(kUNet) + "input_blocks.1.1.transformer_blocks.0.";

INSTANTIATE_TEST_SUITE_P(
    Catalogue, ShapeMutation,
    ::testing::Values(
        Mutation{"ConvKernel1x1", "tiny-sd1",
                 "model.diffusion_model.middle_block.0.in_layers.2.weight", {64, 64, 1, 1},
                 {64, 64, 3, 3}},
        Mutation{"ShortConvBias", "tiny-sd1",
                 "model.diffusion_model.input_blocks.1.0.in_layers.2.bias", {16}, {32}},
        Mutation{"WrongToQ", "tiny-sd1",
                 "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                 {16, 32}, {32, 32}},
        Mutation{"VaeDecoderConvBias", "tiny-sd1",
                 "first_stage_model.decoder.mid.block_1.conv1.bias", {32}, {64}},
        Mutation{"TransposedLinear", "tiny-sd1",
                 "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.weight",
                 {128, 32}, {32, 128}},
        Mutation{"GroupNormSize", "tiny-sd1", "model.diffusion_model.middle_block.0.in_layers.0.weight",
                 {32}, {64}},
        Mutation{"VaeGroupNormSize", "tiny-sd2", "first_stage_model.decoder.mid.block_1.norm1.weight",
                 {32}, {64}},
        Mutation{"TimeEmbeddingWidth", "tiny-sd1",
                 "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight", {32, 64}, {32, 128}},
        Mutation{"ClipTokenEmbeddingWidth", "tiny-sd1",
                 "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                 {49408, 8}, {49408, 16}},
        Mutation{"ClipMlpWidth", "tiny-sdxl",
                 "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                 {48, 16}, {64, 16}},
        Mutation{"OpenClipInProjWeight", "tiny-sd2",
                 "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", {32, 16},
                 {48, 16}},
        Mutation{"OpenClipTextProjection", "tiny-sdxl", "conditioner.embedders.1.model.text_projection",
                 {16, 8}, {16, 16}},
        // The output convolution's weight and bias both give the latent
        // channels; the damaged one of the two is reported.
        Mutation{"UNetOutputConvChannels", "tiny-sd1", "model.diffusion_model.out.2.weight",
                 {3, 32, 3, 3}, {4, 32, 3, 3}},
        Mutation{"UNetOutputConvHalfChannels", "tiny-sd2", "model.diffusion_model.out.2.weight",
                 {2, 32, 3, 3}, {4, 32, 3, 3}},
        Mutation{"UNetOutputConvBias", "tiny-sdxl", "model.diffusion_model.out.2.bias", {3}, {4}},
        Mutation{"InpaintUNetOutputConvChannels", "tiny-sd1-inpaint",
                 "model.diffusion_model.out.2.weight", {9, 32, 3, 3}, {4, 32, 3, 3}}),
    CaseName);

// A damaged output convolution weight once set the latent channel count,
// so the intact bias was reported instead of the weight.
TEST(ShapeCheck, DamagedOutputConvBlamesWeightOnly) {
  TempDir dir;
  const std::string weight = "model.diffusion_model.out.2.weight";
  const fs::path model = WriteWithShapes(dir.path(), "tiny-sd1", {{weight, {3, 32, 3, 3}}});
  Result<VerifyReport> report = VerifyCheckpoint(model.string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_EQ(report->problems.size(), 1u) << report->problems.front().what;
  const VerifyProblem& problem = report->problems.front();
  EXPECT_EQ(problem.component, "unet");
  ASSERT_EQ(problem.wrong_shapes.size(), 1u);
  EXPECT_EQ(problem.wrong_shapes[0].key, weight);
  EXPECT_EQ(problem.what.find("out.2.bias"), std::string::npos) << problem.what;
  ASSERT_TRUE(report->summary.spec.has_value());
  EXPECT_EQ(report->summary.spec->unet.out_channels, 4);
  EXPECT_EQ(report->summary.spec->variant, "base");
}

// A weight of 2 output channels fits the 4 input channels too (as an
// instruct-pix2pix UNet with 2 latent channels would). Without a VAE to
// decide, the 4 latent channels of every SD family do.
TEST(ShapeCheck, UNetOnlyOutputConvBlamesWeight) {
  TempDir dir;
  const std::string weight = "model.diffusion_model.out.2.weight";
  const fs::path model = WriteWithShapes(dir.path(), "tiny-sd1", {{weight, {2, 32, 3, 3}}});
  auto checkpoint = Checkpoint::Open(model.string());
  ASSERT_TRUE(checkpoint.ok());
  std::vector<TensorToWrite> unet;
  for (const TensorInfo& t : (*checkpoint)->tensors()) {
    if (t.name.starts_with(kUNetPrefix)) {
      unet.push_back({t.name, t.dtype, t.shape, (*checkpoint)->Data(t), {}});
    }
  }
  ASSERT_TRUE(WriteSafetensors((dir / "unet.safetensors").string(), unet, {}).ok());
  Result<VerifyReport> report = VerifyCheckpoint((dir / "unet.safetensors").string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  bool weight_reported = false;
  for (const VerifyProblem& problem : report->problems) {
    for (const ShapeMismatch& mismatch : problem.wrong_shapes) {
      EXPECT_NE(mismatch.key, "model.diffusion_model.out.2.bias");
      if (mismatch.key == weight) weight_reported = true;
    }
  }
  EXPECT_TRUE(weight_reported);
}

TEST(ShapeCheck, TinyFixturesPass) {
  for (const char* name : {"tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2", "tiny-sd2v", "tiny-sdxl",
                           "tiny-sdxl-refiner"}) {
    auto checkpoint = Checkpoint::Open(Fixture(std::string("tiny/") + name + ".safetensors").string());
    ASSERT_TRUE(checkpoint.ok()) << name;
    auto spec = DetectModel(**checkpoint, std::nullopt);
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status().message();
    const Status status = CheckShapesBeforeConvert(**checkpoint, nullptr, *spec);
    EXPECT_TRUE(status.ok()) << name << ": " << status.message();
    for (const ExpectedComponent& component : ExpectedComponents(**checkpoint, *spec)) {
      EXPECT_EQ(component.shapes.size(), component.required.size()) << name << " " << component.name;
      EXPECT_TRUE(FindShapeMismatches(**checkpoint, component).empty())
          << name << " " << component.name;
    }
  }
}

TEST(ShapeCheck, DepthUNetChannelsRejected) {
  TempDir dir;
  const fs::path model =
      testing::WriteWidenedUNet(dir.path(), "depth", "tiny-sd1", 5, [](std::size_t) { return 0.f; });
  const Status status = Convert(model, dir / "onnx");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("UNet takes 5 input channels; sdonnx supports 4 (base), 8 "
                                  "(instruct-pix2pix) and 9 (inpainting)"),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("SD 2 depth model"), std::string::npos) << status.message();
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

TEST(ShapeCheck, SevenChannelUNetRejected) {
  TempDir dir;
  const fs::path model =
      testing::WriteWidenedUNet(dir.path(), "seven", "tiny-sd1", 7, [](std::size_t) { return 0.f; });
  const Status status = Convert(model, dir / "onnx");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("UNet takes 7 input channels"), std::string::npos)
      << status.message();
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

// A consistent VAE with 16 latent channels, as SD 3 and Flux use.
fs::path WriteSixteenChannelVae(const fs::path& dir) {
  const fs::path sub = dir / "vae";
  fs::create_directories(sub);
  const std::string p = "first_stage_model.";
  const fs::path path = WriteWithShapes(sub, "tiny-sd1",
                                        {{p + "encoder.conv_out.weight", {32, 64, 3, 3}},
                                         {p + "encoder.conv_out.bias", {32}},
                                         {p + "quant_conv.weight", {32, 32, 1, 1}},
                                         {p + "quant_conv.bias", {32}},
                                         {p + "post_quant_conv.weight", {16, 16, 1, 1}},
                                         {p + "post_quant_conv.bias", {16}},
                                         {p + "decoder.conv_in.weight", {64, 16, 3, 3}}});
  return path;
}

TEST(ShapeCheck, SixteenLatentChannelVaeRejected) {
  TempDir dir;
  const fs::path vae = WriteSixteenChannelVae(dir.path());
  const Status status = Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", vae);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("the VAE has 16 latent channels"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("works on 4"), std::string::npos) << status.message();
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

TEST(ShapeCheck, SeparateVaeShapesChecked) {
  TempDir dir;
  const fs::path sub = dir / "vae";
  fs::create_directories(sub);
  const std::string key = "first_stage_model.decoder.mid.block_1.conv1.bias";
  const fs::path vae = WriteWithShapes(sub, "tiny-sd1", {{key, {32}}});
  const Status status = Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", vae);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("'" + key + "' has shape [32]"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find(vae.string()), std::string::npos) << status.message();
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

TEST(ShapeCheck, OwnSixteenChannelVaeRejected) {
  TempDir dir;
  const fs::path model = WriteSixteenChannelVae(dir.path());
  const Status status = Convert(model, dir / "onnx");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("the VAE has 16 latent channels"), std::string::npos)
      << status.message();
  EXPECT_TRUE(IsEmptyOrAbsent(dir / "onnx"));
}

// The checkpoint's own VAE has 16 latent channels and --vae replaces it
// with a 4-channel one: the notes describe the VAE that is converted.
TEST(ShapeCheck, NotesDescribeTheSeparateVae) {
  TempDir dir;
  const fs::path model = WriteSixteenChannelVae(dir.path());
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = (dir / "onnx").string();
  options.vae_path = Fixture("tiny/tiny-sd1.safetensors").string();
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  std::vector<std::string> vae_notes;
  for (const std::string& note : report->spec.notes) {
    if (note.starts_with("vae: ch ")) vae_notes.push_back(note);
  }
  ASSERT_EQ(vae_notes.size(), 1u);
  EXPECT_TRUE(vae_notes[0].ends_with("latent channels 4")) << vae_notes[0];
}

}  // namespace
}  // namespace sdonnx
