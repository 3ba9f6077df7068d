// --fp16: every tiny fixture converted to float16 runs in ONNX Runtime's CPU
// provider with float32 inputs and outputs, gives no NaN or infinity, and
// stays within the tolerance that docs/onnx-contract.md states of the
// float32 reference outputs.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>

#include "convert/convert.h"
#include "rebuild/rebuild.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::ReadTensor;
using testing::TempDir;
using testing::RunModel;

// max |fp16 - reference| / max |reference|, per output. The measured worst
// case over the fixtures is listed in docs/onnx-contract.md; these bounds
// leave about 3x margin over it.
constexpr double kUNetTolerance = 0.015;
constexpr double kVaeTolerance = 0.005;
constexpr double kTextTolerance = 0.012;

double RelativeError(const HostTensor& actual, const HostTensor& reference) {
  double worst = 0, scale = 0;
  if (actual.f32.size() != reference.f32.size()) return INFINITY;
  for (std::size_t i = 0; i < actual.f32.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(actual.f32[i]) - reference.f32[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(reference.f32[i])));
  }
  return scale > 0 ? worst / scale : worst;
}

bool AllFinite(const HostTensor& t) {
  for (float v : t.f32) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

struct Converted {
  std::unique_ptr<TempDir> dir;
  ConvertReport report;
  std::string File(const std::string& component, const std::string& stem) const {
    return (dir->path() / (component + "_" + stem + ".onnx")).string();
  }
};

const Converted& ConvertFp16Once(const std::string& fixture) {
  static std::map<std::string, Converted> cache;
  auto it = cache.find(fixture);
  if (it != cache.end()) return it->second;
  Converted converted;
  converted.dir = std::make_unique<TempDir>();
  ConvertOptions options;
  options.model_path = Fixture("tiny/" + fixture + ".safetensors").string();
  options.output_dir = converted.dir->path().string();
  options.fp16 = true;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) throw std::runtime_error(report.status().message());
  converted.report = std::move(report).value();
  return cache.emplace(fixture, std::move(converted)).first->second;
}

class Fp16 : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& fixture() const { return GetParam(); }
  HostTensor Ref(const std::string& name) const {
    return ReadTensor(Fixture("tiny/" + fixture() + ".reference.safetensors"), name);
  }
  bool sdxl() const { return fixture().starts_with("tiny-sdxl"); }
  // Checks one output against its reference and records the error.
  void Expect(const std::string& what, const HostTensor& actual, const HostTensor& reference,
              double tolerance) const {
    EXPECT_TRUE(AllFinite(actual)) << what << " has NaN or infinite values";
    const double error = RelativeError(actual, reference);
    RecordProperty(what, std::to_string(error));
    EXPECT_LE(error, tolerance) << what;
  }
};

TEST_P(Fp16, UNetStaysNearReference) {
  const Converted& c = ConvertFp16Once(fixture());
  std::map<std::string, HostTensor> inputs = {{"sample", Ref("unet.sample")},
                                              {"timestep", Ref("unet.timestep")},
                                              {"encoder_hidden_states", Ref("unet.context")}};
  if (c.report.spec.unet.adm_in_channels > 0) {
    inputs["text_embeds"] = Ref("unet.text_embeds");
    inputs["time_ids"] = Ref("unet.time_ids");
  }
  auto out = RunModel(c.File("unet", fixture()), inputs);
  Expect("unet", out["out_sample"], Ref("unet.out"), kUNetTolerance);
}

TEST_P(Fp16, VaeStaysNearReference) {
  const Converted& c = ConvertFp16Once(fixture());
  auto encoded = RunModel(c.File("vae_encoder", fixture()), {{"sample", Ref("vae_encoder.image")}});
  Expect("vae_encoder", encoded["latent_parameters"], Ref("vae_encoder.moments"), kVaeTolerance);
  auto decoded =
      RunModel(c.File("vae_decoder", fixture()), {{"latent_sample", Ref("vae_decoder.latent")}});
  Expect("vae_decoder", decoded["sample"], Ref("vae_decoder.image"), kVaeTolerance);
}

TEST_P(Fp16, TextEncodersStayNearReference) {
  const Converted& c = ConvertFp16Once(fixture());
  const ModelSpec& spec = c.report.spec;
  std::vector<std::pair<std::string, std::string>> encoders;  // component, reference prefix
  if (spec.text) encoders.emplace_back("clip_text", sdxl() ? "text0" : "text");
  if (spec.open_clip) {
    std::string reference = "text";
    if (spec.family == Family::kSDXL) reference = "text1";
    if (spec.family == Family::kSDXLRefiner) reference = "text0";
    encoders.emplace_back(spec.open_clip_component, reference);
  }
  ASSERT_FALSE(encoders.empty());
  for (const auto& [component, reference] : encoders) {
    auto out =
        RunModel(c.File(component, fixture()), {{"input_ids", Ref(reference + ".input_ids")}});
    Expect(component, out["last_hidden_state"], Ref(reference + ".last_hidden_state"),
           kTextTolerance);
    for (const auto& [name, tensor] : out) {
      EXPECT_TRUE(AllFinite(tensor)) << component << " output " << name;
    }
  }
}

TEST_P(Fp16, WeightsAreFloat16UnderCheckpointKeys) {
  const Converted& c = ConvertFp16Once(fixture());
  for (const ConvertedComponent& component : c.report.components) {
    SCOPED_TRACE(component.component);
    const bool kept_float32 = sdxl() && component.component == "vae_decoder";
    EXPECT_EQ(component.weight_precision, kept_float32 ? "source" : "fp16");
    auto model = OrtModel::Load(component.files.front().path);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto metadata = (*model)->Metadata();
    EXPECT_EQ(metadata["sdonnx.weight_precision"], kept_float32 ? "source" : "fp16");
    EXPECT_EQ(metadata["sdonnx.compute_precision"], kept_float32 ? "fp32" : "fp16");

    onnx::ModelProto proto;
    std::ifstream in(component.files.front().path, std::ios::binary);
    ASSERT_TRUE(proto.ParseFromIstream(&in));
    ASSERT_GT(proto.graph().initializer_size(), 0);
    for (const auto& init : proto.graph().initializer()) {
      if (!kept_float32) EXPECT_EQ(init.data_type(), onnx::TensorProto_DataType_FLOAT16) << init.name();
      EXPECT_TRUE(init.name().find('.') != std::string::npos) << init.name();
    }
    for (const auto& value : proto.graph().input()) {
      if (value.name() == "input_ids") continue;
      EXPECT_EQ(value.type().tensor_type().elem_type(), onnx::TensorProto_DataType_FLOAT)
          << value.name();
    }
    for (const auto& value : proto.graph().output()) {
      EXPECT_EQ(value.type().tensor_type().elem_type(), onnx::TensorProto_DataType_FLOAT)
          << value.name();
    }
  }
}

// External data contains the narrowed bytes: lengths and offsets follow the
// float16 size, and the file passes the checker by path.
TEST(Fp16Files, ExternalDataAndForcedSdxlDecoder) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = (dir / "sd1").string();
  options.fp16 = true;
  options.external_data = ExternalData::kAlways;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  auto unet = OrtModel::Load((dir / "sd1" / "unet_tiny-sd1.onnx").string());
  ASSERT_TRUE(unet.ok()) << unet.status().message();
  auto out = (*unet)->Run({{"sample", ReadTensor(reference, "unet.sample")},
                           {"timestep", ReadTensor(reference, "unet.timestep")},
                           {"encoder_hidden_states", ReadTensor(reference, "unet.context")}});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_LE(RelativeError((*out)["out_sample"], ReadTensor(reference, "unet.out")), kUNetTolerance);
  onnx::ModelProto proto;
  std::ifstream in(dir / "sd1" / "unet_tiny-sd1.onnx", std::ios::binary);
  ASSERT_TRUE(proto.ParseFromIstream(&in));
  for (const auto& init : proto.graph().initializer()) {
    std::int64_t elements = 1;
    for (auto d : init.dims()) elements *= d;
    std::string length;
    for (const auto& entry : init.external_data()) {
      if (entry.key() == "length") length = entry.value();
    }
    EXPECT_EQ(length, std::to_string(elements * 2)) << init.name();
  }

  options.model_path = Fixture("tiny/tiny-sdxl.safetensors").string();
  options.output_dir = (dir / "sdxl").string();
  options.external_data = ExternalData::kAuto;
  options.fp16_sdxl_vae_decoder = true;
  report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  const auto sdxl_reference = Fixture("tiny/tiny-sdxl.reference.safetensors");
  auto decoder = OrtModel::Load((dir / "sdxl" / "vae_decoder_tiny-sdxl.onnx").string());
  ASSERT_TRUE(decoder.ok()) << decoder.status().message();
  EXPECT_EQ((*decoder)->Metadata()["sdonnx.weight_precision"], "fp16");
  auto decoded =
      (*decoder)->Run({{"latent_sample", ReadTensor(sdxl_reference, "vae_decoder.latent")}});
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_TRUE(AllFinite((*decoded)["sample"]));
  EXPECT_LE(RelativeError((*decoded)["sample"], ReadTensor(sdxl_reference, "vae_decoder.image")),
            kVaeTolerance);
}

// rebuild restores checkpoints byte for byte, which float16 weights cannot.
TEST(Fp16Files, RebuildIsRejected) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = (dir / "onnx").string();
  options.fp16 = true;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  RebuildOptions rebuild;
  rebuild.inputs = {(dir / "onnx").string()};
  rebuild.output_path = (dir / "rebuilt.safetensors").string();
  Result<RebuildReport> report = RebuildCheckpoint(rebuild);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("sdonnx.weight_precision"), std::string::npos)
      << report.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir / "rebuilt.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(TinyFixtures, Fp16,
                         ::testing::Values("tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2", "tiny-sdxl",
                                           "tiny-sdxl-refiner"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace sdonnx
