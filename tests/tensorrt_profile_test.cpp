// TensorRT profiles: the min/opt/max shape strings that generate passes to
// ONNX Runtime's TensorRT provider. The bundled ONNX Runtime has no
// TensorRT, so only the strings and the error without it can be tested.
#include <gtest/gtest.h>

#include "convert/convert.h"
#include "generate/generate.h"
#include "runtime/tensorrt_profiles.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

class TensorRt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    for (bool fixed : {false, true}) {
      ConvertOptions options;
      options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
      options.output_dir = (dir_->path() / (fixed ? "static" : "dynamic")).string();
      if (fixed) options.static_shape = StaticShape{64, 48, 1};
      Result<ConvertReport> report = ConvertCheckpoint(options);
      ASSERT_TRUE(report.ok()) << report.status().message();
    }
  }
  static void TearDownTestSuite() { delete dir_; }

  static TensorRtProfile Profile(const std::string& folder, const std::string& component,
                                 const ProfileRequest& request) {
    auto header =
        ReadGraphHeader((dir_->path() / folder / (component + "_tiny-sd1.onnx")).string());
    EXPECT_TRUE(header.ok()) << header.status().message();
    EXPECT_EQ(header->metadata["sdonnx.family"], "sd1");
    auto ranges = ProfileFor(component, header->inputs, request);
    EXPECT_TRUE(ranges.ok()) << ranges.status().message();
    return FormatProfile(*ranges);
  }

  static ProfileRequest Request() {
    ProfileRequest request = DefaultProfileRequest("sd1");
    request.downsample_factor = 2;  // the tiny VAE's factor
    return request;
  }

  static TempDir* dir_;
};

TempDir* TensorRt::dir_ = nullptr;

TEST_F(TensorRt, UNetProfileCoversGuidanceRowsAndChunks) {
  const TensorRtProfile p = Profile("dynamic", "unet", Request());
  EXPECT_EQ(p.min_shapes, "encoder_hidden_states:1x77x16,sample:1x4x128x128,timestep:1");
  EXPECT_EQ(p.opt_shapes, "encoder_hidden_states:2x77x16,sample:2x4x256x256,timestep:1");
  EXPECT_EQ(p.max_shapes, "encoder_hidden_states:8x231x16,sample:8x4x512x512,timestep:8");
}

TEST_F(TensorRt, VaeAndTextProfiles) {
  ProfileRequest request = Request();
  request.width = 768;
  request.batch = 2;
  request.guidance = false;
  const TensorRtProfile decoder = Profile("dynamic", "vae_decoder", request);
  EXPECT_EQ(decoder.min_shapes, "latent_sample:1x4x128x128");
  EXPECT_EQ(decoder.opt_shapes, "latent_sample:1x4x256x384");
  EXPECT_EQ(decoder.max_shapes, "latent_sample:4x4x512x512");
  const TensorRtProfile encoder = Profile("dynamic", "vae_encoder", request);
  EXPECT_EQ(encoder.opt_shapes, "sample:1x3x512x768");
  const TensorRtProfile text = Profile("dynamic", "clip_text", request);
  EXPECT_EQ(text.min_shapes, "input_ids:1x77");
  EXPECT_EQ(text.max_shapes, "input_ids:3x77");
  const TensorRtProfile unet = Profile("dynamic", "unet", request);
  EXPECT_EQ(unet.opt_shapes, "encoder_hidden_states:2x77x16,sample:2x4x256x384,timestep:1");
}

TEST_F(TensorRt, StaticFilesHaveOneShape) {
  const TensorRtProfile p = Profile("static", "unet", Request());
  EXPECT_EQ(p.min_shapes, "encoder_hidden_states:2x77x16,sample:2x4x24x32,timestep:1");
  EXPECT_EQ(p.opt_shapes, p.min_shapes);
  EXPECT_EQ(p.max_shapes, p.min_shapes);
}

// The UNet inputs of the sdonnx contract, with `channels` in 'sample'.
GraphHeader UNetHeader(std::int64_t channels) {
  using Dim = std::variant<std::int64_t, std::string>;
  GraphHeader header;
  header.inputs = {
      {"sample", {Dim("batch"), Dim(channels), Dim("height"), Dim("width")}},
      {"timestep", {Dim("timestep_count")}},
      {"encoder_hidden_states", {Dim("batch"), Dim("sequence"), Dim(std::int64_t{16})}},
  };
  header.metadata["sdonnx.latent_channels"] = "4";
  return header;
}

TEST_F(TensorRt, Pix2PixUNetIsRecognised) {
  EXPECT_TRUE(IsInstructPix2PixUNet(UNetHeader(8)));
  EXPECT_FALSE(IsInstructPix2PixUNet(UNetHeader(4)));
  EXPECT_FALSE(IsInstructPix2PixUNet(UNetHeader(9)));  // inpainting
  GraphHeader sixteen = UNetHeader(8);
  sixteen.metadata["sdonnx.latent_channels"] = "16";
  EXPECT_FALSE(IsInstructPix2PixUNet(sixteen));
  auto converted = ReadGraphHeader((dir_->path() / "dynamic" / "unet_tiny-sd1.onnx").string());
  ASSERT_TRUE(converted.ok()) << converted.status().message();
  EXPECT_FALSE(IsInstructPix2PixUNet(*converted));
}

TEST_F(TensorRt, Pix2PixUNetThreeRowsPerImage) {
  ProfileRequest request = Request();
  request.pix2pix = true;
  request.batch = 2;
  auto ranges = ProfileFor("unet", UNetHeader(8).inputs, request);
  ASSERT_TRUE(ranges.ok()) << ranges.status().message();
  TensorRtProfile p = FormatProfile(*ranges);
  EXPECT_EQ(p.min_shapes, "encoder_hidden_states:1x77x16,sample:1x8x128x128,timestep:1");
  EXPECT_EQ(p.opt_shapes, "encoder_hidden_states:6x77x16,sample:6x8x256x256,timestep:1");
  EXPECT_EQ(p.max_shapes, "encoder_hidden_states:12x231x16,sample:12x8x512x512,timestep:12");

  // Image guidance alone still runs all three rows.
  request.guidance = false;
  request.image_guidance = true;
  EXPECT_EQ(UNetRowsPerImage(request), 3);
  request.image_guidance = false;
  EXPECT_EQ(UNetRowsPerImage(request), 1);
  ranges = ProfileFor("unet", UNetHeader(8).inputs, request);
  ASSERT_TRUE(ranges.ok()) << ranges.status().message();
  EXPECT_EQ(FormatProfile(*ranges).opt_shapes,
            "encoder_hidden_states:2x77x16,sample:2x8x256x256,timestep:1");
}

TEST_F(TensorRt, ImageGuidanceDoesNotChangeOtherUNets) {
  ProfileRequest request = Request();
  request.guidance = false;
  request.image_guidance = true;
  EXPECT_EQ(UNetRowsPerImage(request), 1);
  request.guidance = true;
  EXPECT_EQ(UNetRowsPerImage(request), 2);
}

TEST_F(TensorRt, ProviderOptionKeys) {
  const auto options = TensorRtProviderOptions({"a:1", "a:2", "a:3"});
  ASSERT_EQ(options.size(), 3u);
  EXPECT_EQ(options.at("trt_profile_min_shapes"), "a:1");
  EXPECT_EQ(options.at("trt_profile_opt_shapes"), "a:2");
  EXPECT_EQ(options.at("trt_profile_max_shapes"), "a:3");
  EXPECT_TRUE(TensorRtProviderOptions({}).empty());
}

TEST_F(TensorRt, UnknownDynamicDimensionIsAnError) {
  GraphInput input{"x", {std::string("frames"), std::int64_t{3}}};
  auto ranges = ProfileFor("unet", {input}, Request());
  ASSERT_FALSE(ranges.ok());
  EXPECT_NE(ranges.status().message().find("'frames'"), std::string::npos);
}

TEST_F(TensorRt, GenerateWithoutTheProviderSaysSo) {
  GenerateOptions o;
  o.model_dir = (dir_->path() / "dynamic").string();
  o.prompt = "a fox";
  o.width = o.height = 64;
  o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
  o.session.provider = Provider::kTensorRt;
  o.output = (dir_->path() / "out.png").string();
  Result<GenerateResult> result = Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("TensorrtExecutionProvider"), std::string::npos)
      << result.status().message();
}

// A default conversion runs attention in a Loop. With TensorRT, generate
// warns and names --attention-chunks 1, and is quiet for one piece.
TEST_F(TensorRt, LoopAttentionGetsWarning) {
  const fs::path one_piece = dir_->path() / "one-piece";
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  convert.output_dir = one_piece.string();
  convert.attention_chunks = 1;
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  for (const fs::path& folder : {dir_->path() / "dynamic", one_piece}) {
    SCOPED_TRACE(folder.string());
    GenerateOptions o;
    o.model_dir = folder.string();
    o.prompt = "a fox";
    o.width = o.height = 64;
    o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
    o.session.provider = Provider::kTensorRt;
    o.output = (dir_->path() / "out.png").string();
    testing::WarningLog warnings;
    EXPECT_FALSE(Generate(o).ok());
    const bool warned = warnings.text().find("--attention-chunks 1") != std::string::npos;
    EXPECT_EQ(warned, folder != one_piece) << warnings.text();
  }
}

}  // namespace
}  // namespace sdonnx
