// --static-shape WIDTHxHEIGHT --batch-size N: every input and output of
// every file has fixed dimensions, the files run at those shapes, and
// generate runs on them and rejects other sizes.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>

#include "convert/convert.h"
#include "generate/generate.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::TempDir;

// tiny-sd1's VAE downsamples by 2, so 32x32 images have 16x16 latents.
constexpr std::int64_t kSide = 32;
constexpr std::int64_t kBatch = 2;

Result<ConvertReport> ConvertStatic(const std::filesystem::path& out, StaticShape shape) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = out.string();
  options.static_shape = shape;
  return ConvertCheckpoint(options);
}

std::vector<std::vector<std::int64_t>> Shapes(
    const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& values) {
  std::vector<std::vector<std::int64_t>> shapes;
  for (const auto& value : values) {
    std::vector<std::int64_t> dims;
    for (const auto& dim : value.type().tensor_type().shape().dim()) {
      EXPECT_TRUE(dim.has_dim_value()) << value.name() << " has dimension " << dim.dim_param();
      dims.push_back(dim.dim_value());
    }
    shapes.push_back(dims);
  }
  return shapes;
}

std::vector<float> Zeros(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return std::vector<float>(static_cast<std::size_t>(n), 0.1f);
}

TEST(StaticShape, EveryDimensionIsFixedAndRuns) {
  TempDir dir;
  Result<ConvertReport> report = ConvertStatic(dir.path(), {kSide, kSide, kBatch});
  ASSERT_TRUE(report.ok()) << report.status().message();
  const std::map<std::string, std::vector<std::int64_t>> expected_first_input = {
      {"unet", {2 * kBatch, 4, kSide / 2, kSide / 2}},
      {"vae_encoder", {kBatch, 3, kSide, kSide}},
      {"vae_decoder", {kBatch, 4, kSide / 2, kSide / 2}},
      {"clip_text", {kBatch, 77}}};
  for (const ConvertedComponent& component : report->components) {
    SCOPED_TRACE(component.component);
    onnx::ModelProto model;
    std::ifstream in(component.files.front().path, std::ios::binary);
    ASSERT_TRUE(model.ParseFromIstream(&in));
    const auto inputs = Shapes(model.graph().input());
    Shapes(model.graph().output());
    EXPECT_EQ(inputs.front(), expected_first_input.at(component.component));

    auto session = OrtModel::Load(component.files.front().path);
    ASSERT_TRUE(session.ok()) << session.status().message();
    std::map<std::string, HostTensor> feeds;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const std::string& name = model.graph().input(static_cast<int>(i)).name();
      if (name == "input_ids") {
        feeds[name] = HostTensor::Int32(
            inputs[i], std::vector<std::int32_t>(static_cast<std::size_t>(kBatch * 77), 7));
      } else {
        feeds[name] = HostTensor::Float(inputs[i], Zeros(inputs[i]));
      }
    }
    auto outputs = (*session)->Run(feeds);
    ASSERT_TRUE(outputs.ok()) << outputs.status().message();
    EXPECT_EQ((*session)->Metadata()["sdonnx.static_shape"], "32x32");
  }
}

TEST(StaticShape, InvalidSizesAreRejected) {
  TempDir dir;
  Result<ConvertReport> odd = ConvertStatic(dir / "odd", {30, 32, 1});
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("multiple of 8"), std::string::npos)
      << odd.status().message();
  EXPECT_NE(odd.status().message().find("try 24 or 32"), std::string::npos)
      << odd.status().message();
  Result<ConvertReport> no_batch = ConvertStatic(dir / "batch", {32, 32, 0});
  ASSERT_FALSE(no_batch.ok());
  EXPECT_NE(no_batch.status().message().find("--batch-size 0"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "odd"));
}

TEST(StaticShape, GenerateRunsAndRejectsOtherSizes) {
  TempDir dir;
  ASSERT_TRUE(ConvertStatic(dir / "model", {kSide, kSide, kBatch}).ok());
  GenerateOptions o;
  o.model_dir = (dir / "model").string();
  // The prompt and the empty negative prompt are one chunk each, which the
  // text encoder takes padded to its fixed batch of 2.
  o.prompt = "a lighthouse on a cliff at dusk, oil painting";
  o.steps = 2;
  o.seed = 3;
  o.width = kSide;
  o.height = kSide;
  o.batch_size = kBatch;
  o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
  o.session.intra_op_threads = 1;
  o.output = (dir / "out.png").string();
  Result<GenerateResult> result = Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->files.size(), static_cast<std::size_t>(kBatch));

  GenerateOptions wrong_size = o;
  wrong_size.width = 64;
  wrong_size.output = (dir / "wrong.png").string();
  Result<GenerateResult> rejected = Generate(wrong_size);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("--width 32 --height 32 --batch-size 2"),
            std::string::npos)
      << rejected.status().message();

  GenerateOptions long_prompt = o;
  for (int i = 0; i < 10; ++i) long_prompt.prompt += ", waves, clouds, birds, rocks, grass, light";
  long_prompt.output = (dir / "long.png").string();
  rejected = Generate(long_prompt);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("takes 2 chunks"), std::string::npos)
      << rejected.status().message();

  GenerateOptions no_guidance = o;
  no_guidance.cfg_scale = 1.0f;
  no_guidance.output = (dir / "no-guidance.png").string();
  rejected = Generate(no_guidance);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("--cfg-scale"), std::string::npos)
      << rejected.status().message();
}

TEST(StaticShape, CliRejectsMalformedOptions) {
  TempDir dir;
  const std::string model = testing::Quote(Fixture("tiny/tiny-sd1.safetensors"));
  const std::string out = testing::Quote(dir / "out");
  auto shape = testing::RunSdonnx("convert " + model + " " + out + " --static-shape 512");
  EXPECT_NE(shape.exit_code, 0);
  EXPECT_NE(shape.output.find("expected WIDTHxHEIGHT"), std::string::npos) << shape.output;
  auto batch = testing::RunSdonnx("convert " + model + " " + out + " --batch-size 2");
  EXPECT_NE(batch.exit_code, 0);
  EXPECT_NE(batch.output.find("--static-shape"), std::string::npos) << batch.output;
  auto vae = testing::RunSdonnx("convert " + model + " " + out + " --fp16-vae-decoder");
  EXPECT_NE(vae.exit_code, 0);
  EXPECT_NE(vae.output.find("add --fp16"), std::string::npos) << vae.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

}  // namespace
}  // namespace sdonnx
