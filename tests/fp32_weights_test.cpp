// convert --fp32-weights: float16 and bfloat16 source weights are stored
// widened to float32, so ONNX Runtime maps them instead of widening each
// at load. The models compute exactly what the default export computes,
// and rebuild narrows the weights back to the source's bytes.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <fstream>
#include <set>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "rebuild/rebuild.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::ListFiles;
using testing::MaxAbsDiff;
using testing::NarrowedTinySd1;
using testing::ReadModel;
using testing::ReadTensor;
using testing::RunModel;
using testing::RebuildFolder;
using testing::TempDir;

Result<ConvertReport> Convert(const fs::path& model, const fs::path& out, bool fp32_weights,
                              ExternalData external = ExternalData::kAuto) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  options.fp32_weights = fp32_weights;
  options.external_data = external;
  return ConvertCheckpoint(options);
}

// The element types of the initializers of `model` and the names of the
// initializers that feed a Cast node.
std::set<int> InitializerTypes(const onnx::ModelProto& model) {
  std::set<int> types;
  for (const auto& init : model.graph().initializer()) types.insert(init.data_type());
  return types;
}

std::set<std::string> CastInitializers(const onnx::ModelProto& model) {
  std::set<std::string> names;
  for (const auto& init : model.graph().initializer()) names.insert(init.name());
  std::set<std::string> cast;
  for (const auto& node : model.graph().node()) {
    if (node.op_type() == "Cast" && names.count(node.input(0)) > 0) cast.insert(node.input(0));
  }
  return cast;
}

std::string Metadata(const onnx::ModelProto& model, const std::string& key) {
  for (const auto& entry : model.metadata_props()) {
    if (entry.key() == key) return entry.value();
  }
  return "";
}

class Fp32Weights : public ::testing::TestWithParam<DType> {};

TEST_P(Fp32Weights, StoresFloat32AndComputesTheSame) {
  TempDir dir;
  const fs::path source = NarrowedTinySd1(dir.path(), GetParam());
  ASSERT_TRUE(Convert(source, dir / "default", false).ok());
  ASSERT_TRUE(Convert(source, dir / "wide", true).ok());
  const fs::path stem = source.stem();

  for (const char* component : {"unet", "vae_encoder", "vae_decoder", "clip_text"}) {
    SCOPED_TRACE(component);
    const std::string name = std::string(component) + "_" + stem.string() + ".onnx";
    const onnx::ModelProto wide = ReadModel(dir / "wide" / name);
    const onnx::ModelProto narrow = ReadModel(dir / "default" / name);
    EXPECT_EQ(InitializerTypes(wide), std::set<int>{onnx::TensorProto_DataType_FLOAT});
    EXPECT_TRUE(CastInitializers(wide).empty());
    EXPECT_FALSE(CastInitializers(narrow).empty());
    EXPECT_EQ(Metadata(wide, "sdonnx.weight_precision"), "fp32");
    EXPECT_EQ(Metadata(narrow, "sdonnx.weight_precision"), "source");
    EXPECT_NE(Metadata(wide, "sdonnx.conversion_id"), Metadata(narrow, "sdonnx.conversion_id"));
  }

  const fs::path reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  const std::map<std::string, HostTensor> unet_inputs = {
      {"sample", ReadTensor(reference, "unet.sample")},
      {"timestep", ReadTensor(reference, "unet.timestep")},
      {"encoder_hidden_states", ReadTensor(reference, "unet.context")}};
  const std::string unet = "unet_" + stem.string() + ".onnx";
  auto wide_out = RunModel(dir / "wide" / unet, unet_inputs);
  auto narrow_out = RunModel(dir / "default" / unet, unet_inputs);
  EXPECT_EQ(MaxAbsDiff(wide_out["out_sample"], narrow_out["out_sample"]), 0.0);

  const std::string decoder = "vae_decoder_" + stem.string() + ".onnx";
  const std::map<std::string, HostTensor> latent = {
      {"latent_sample", ReadTensor(reference, "vae_decoder.latent")}};
  EXPECT_EQ(MaxAbsDiff(RunModel(dir / "wide" / decoder, latent)["sample"],
                       RunModel(dir / "default" / decoder, latent)["sample"]),
            0.0);
}

TEST_P(Fp32Weights, RebuildNarrowsBackToTheSourceBytes) {
  TempDir dir;
  const fs::path source = NarrowedTinySd1(dir.path(), GetParam());
  for (ExternalData external : {ExternalData::kNever, ExternalData::kAlways}) {
    const std::string name = external == ExternalData::kNever ? "inline" : "external";
    SCOPED_TRACE(name);
    ASSERT_TRUE(Convert(source, dir / name, true, external).ok());
    auto report = RebuildFolder(dir / name, dir / (name + ".safetensors"));
    ASSERT_TRUE(report.ok()) << report.status().message();
    EXPECT_TRUE(report->file_identical);
    EXPECT_FALSE(report->partial);
    std::ifstream a(source, std::ios::binary), b(dir / (name + ".safetensors"), std::ios::binary);
    EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {},
                           std::istreambuf_iterator<char>(b), {}));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Fp32Weights, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// A widened weight changed to a value that float16 cannot hold is named,
// and nothing is written.
TEST(Fp32WeightsRebuild, InexactValueIsNamed) {
  TempDir dir;
  const fs::path source = NarrowedTinySd1(dir.path(), DType::kF16);
  ASSERT_TRUE(Convert(source, dir / "onnx", true, ExternalData::kNever).ok());
  const fs::path unet = dir / "onnx" / "unet_F16-sd1.onnx";
  onnx::ModelProto model = ReadModel(unet);
  const std::string key = "model.diffusion_model.out.2.bias";
  bool edited = false;
  for (auto& init : *model.mutable_graph()->mutable_initializer()) {
    if (init.name() != key) continue;
    ASSERT_TRUE(init.has_raw_data());
    const float inexact = 0.1f;  // the nearest float16 is 0.0999755859375
    std::memcpy(init.mutable_raw_data()->data(), &inexact, 4);
    edited = true;
  }
  ASSERT_TRUE(edited);
  {
    std::ofstream out(unet, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(model.SerializeToOstream(&out));
  }
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find(key), std::string::npos) << message;
  EXPECT_NE(message.find("not exact F16 values"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
}

// The CLI output names the load cost of the default for a float16 source,
// and what --fp32-weights did.
TEST(Fp32WeightsOptions, CommandNamesTheChoice) {
  TempDir dir;
  const fs::path source = NarrowedTinySd1(dir.path(), DType::kF16);
  const std::string config = " --config " + testing::Quote(Fixture("tiny/tiny-sd1.yaml"));
  const auto narrow = testing::RunSdonnx("convert " + testing::Quote(source) + " " +
                                         testing::Quote(dir / "narrow") + config);
  EXPECT_EQ(narrow.exit_code, 0) << narrow.output;
  EXPECT_NE(narrow.output.find("note: float32 models keep float16 weights of the source ("),
            std::string::npos)
      << narrow.output;
  EXPECT_NE(narrow.output.find("unet "), std::string::npos) << narrow.output;
  EXPECT_NE(narrow.output.find("generate --widen-at-load"), std::string::npos) << narrow.output;
  EXPECT_NE(narrow.output.find("or with --fp16 for float16 compute"), std::string::npos)
      << narrow.output;
  // With --fp16 only the SDXL VAE decoder stays float32 with float16
  // weights, and the note does not suggest the option already given.
  const auto sdxl = testing::RunSdonnx("convert " +
                                       testing::Quote(Fixture("tiny/tiny-sdxl.safetensors")) +
                                       " " + testing::Quote(dir / "sdxl") + " --fp16");
  EXPECT_EQ(sdxl.exit_code, 0) << sdxl.output;
  EXPECT_NE(sdxl.output.find("note: float32 models keep float16 weights of the source "
                             "(vae_decoder "),
            std::string::npos)
      << sdxl.output;
  EXPECT_EQ(sdxl.output.find("or with --fp16"), std::string::npos) << sdxl.output;
  // tiny-sd1 keeps only its token embedding in float16, which costs little,
  // so the UNet's step cost is not quoted.
  const auto embedding =
      testing::RunSdonnx("convert " + testing::Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                         testing::Quote(dir / "embedding"));
  EXPECT_EQ(embedding.exit_code, 0) << embedding.output;
  EXPECT_NE(embedding.output.find("(clip_text 1)"), std::string::npos) << embedding.output;
  EXPECT_EQ(embedding.output.find("SDXL UNet"), std::string::npos) << embedding.output;
  const auto wide = testing::RunSdonnx("convert " + testing::Quote(source) + " " +
                                       testing::Quote(dir / "wide") + config + " --fp32-weights");
  EXPECT_EQ(wide.exit_code, 0) << wide.output;
  EXPECT_NE(wide.output.find("tensors widened to float32 (exact)"), std::string::npos)
      << wide.output;
  EXPECT_EQ(wide.output.find("note:"), std::string::npos) << wide.output;
  const auto both = testing::RunSdonnx("convert " + testing::Quote(source) + " " +
                                       testing::Quote(dir / "both") + " --fp16 --fp32-weights");
  EXPECT_EQ(both.exit_code, 1) << both.output;
  EXPECT_FALSE(fs::exists(dir / "both"));
}

TEST(Fp32WeightsOptions, Fp16IsRejectedBeforeWriting) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = (dir / "out").string();
  options.fp16 = true;
  options.fp32_weights = true;
  auto report = ConvertCheckpoint(options);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("--fp32-weights and --fp16"), std::string::npos)
      << report.status().message();
  EXPECT_TRUE(ListFiles(dir.path()).empty());
}

}  // namespace
}  // namespace sdonnx
