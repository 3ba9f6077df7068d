// `inspect` on checkpoints, ONNX files and folders, in the library and
// through the sdonnx program (text and JSON), and `verify`'s exit codes.
#include <gtest/gtest.h>

#include <ostream>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "inspect/checkpoint_inspect.h"
#include "inspect/onnx_inspect.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CommandResult;
using testing::Fixture;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;
using testing::WriteBytes;

std::vector<std::string> ComponentNames(const CheckpointSummary& summary) {
  std::vector<std::string> names;
  for (const ComponentSummary& c : summary.components) names.push_back(c.name);
  return names;
}

// The JSON object at the start of `output` (stdout, then stderr).
json ParseJsonOutput(const std::string& output) {
  const std::size_t end = output.find("\n}\n");
  return json::parse(output.substr(0, end == std::string::npos ? output.size() : end + 2),
                     nullptr, false);
}

TEST(Inspect, Sd1FixtureHasEveryComponentAndEma) {
  auto summary = InspectCheckpoint(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_TRUE(summary->spec.has_value()) << summary->detection_error;
  EXPECT_EQ(summary->spec->family, Family::kSD1);
  EXPECT_EQ(summary->format, FileFormat::kSafetensors);
  EXPECT_EQ(ComponentNames(*summary),
            (std::vector<std::string>{"unet", "unet_ema", "vae", "text_encoder", "other"}));
  std::int64_t parameters = 0;
  for (const ComponentSummary& c : summary->components) parameters += c.parameters;
  EXPECT_EQ(parameters, summary->parameters);
  EXPECT_EQ(summary->tensors, 823u);
  // The token embedding is the file's one F16 tensor.
  const ComponentSummary& text = summary->components[3];
  EXPECT_EQ(text.dtypes.at("F16"), 1u);
  EXPECT_TRUE(summary->extra_keys.empty());
  EXPECT_TRUE(summary->warnings.empty());
}

struct TinyFixtureCase {
  const char* file;
  Family family;
  const char* variant;
};

void PrintTo(const TinyFixtureCase& c, std::ostream* out) { *out << c.file; }

class InspectTinyFixture : public ::testing::TestWithParam<TinyFixtureCase> {};

TEST_P(InspectTinyFixture, FamilyAndNoMissingComponent) {
  const TinyFixtureCase& c = GetParam();
  auto summary = InspectCheckpoint(Fixture(std::string("tiny/") + c.file).string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_TRUE(summary->spec.has_value()) << summary->detection_error;
  EXPECT_EQ(summary->spec->family, c.family);
  EXPECT_EQ(summary->spec->variant, c.variant);
  for (const ExpectedComponent& component : summary->expected) {
    EXPECT_TRUE(component.present) << component.name;
  }
  const json out = CheckpointSummaryJson(*summary);
  EXPECT_EQ(out["family"], FamilyName(c.family));
  EXPECT_EQ(out["missing_components"], json::array());
  EXPECT_EQ(out["tensors"], summary->tensors);
}

INSTANTIATE_TEST_SUITE_P(
    Families, InspectTinyFixture,
    ::testing::Values(TinyFixtureCase{"tiny-sd1.safetensors", Family::kSD1, "base"},
                      TinyFixtureCase{"tiny-sd1-inpaint.safetensors", Family::kSD1, "inpaint"},
                      TinyFixtureCase{"tiny-sd2.safetensors", Family::kSD2, "base"},
                      TinyFixtureCase{"tiny-sd2v.safetensors", Family::kSD2, "base"},
                      TinyFixtureCase{"tiny-sdxl.safetensors", Family::kSDXL, "base"},
                      TinyFixtureCase{"tiny-sdxl-refiner.safetensors", Family::kSDXLRefiner,
                                      "base"}));

TEST(Inspect, SdxlFixtureNamesBothTextEncoders) {
  auto summary = InspectCheckpoint(Fixture("tiny/tiny-sdxl.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->spec->family, Family::kSDXL);
  EXPECT_EQ(ComponentNames(*summary), (std::vector<std::string>{"unet", "vae", "text_encoder",
                                                                "text_encoder_2", "other"}));
}

TEST(Inspect, CkptFixtureReportsTorchZip) {
  auto summary = InspectCheckpoint(Fixture("ckpt/tiny-sd1.ckpt").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->format, FileFormat::kTorchZip);
  EXPECT_EQ(summary->tensors, 823u);
}

TEST(Inspect, CheckpointJsonHasDocumentedFields) {
  auto summary = InspectCheckpoint(Fixture("tiny/tiny-sd2v.safetensors").string());
  ASSERT_TRUE(summary.ok());
  const json out = CheckpointSummaryJson(*summary);
  EXPECT_EQ(out["kind"], "checkpoint");
  EXPECT_EQ(out["format"], "safetensors");
  EXPECT_EQ(out["family"], "sd2");
  EXPECT_EQ(out["prediction_type"], "v_prediction");  // from tiny-sd2v.yaml
  EXPECT_EQ(out["missing_components"], json::array());
  EXPECT_EQ(out["ema"], false);
  EXPECT_TRUE(out["components"].contains("unet"));
  EXPECT_TRUE(out["components"]["vae"]["parameters"].get<std::int64_t>() > 0);
  EXPECT_EQ(out["extra_keys"]["count"], 0);
}

TEST(Inspect, ForeignDiffusersFolderIsAFullPipeline) {
  auto folder = InspectOnnxFolder(Fixture("foreign/tiny-sd1-diffusers").string());
  ASSERT_TRUE(folder.ok()) << folder.status().message();
  EXPECT_EQ(folder->files.size(), 4u);
  EXPECT_EQ(folder->present_components,
            (std::vector<std::string>{"unet", "vae_encoder", "vae_decoder", "clip_text"}));
  EXPECT_TRUE(folder->missing_components.empty());
  const auto unet = std::find_if(folder->files.begin(), folder->files.end(),
                                 [](const OnnxFileSummary& f) { return f.component == "unet"; });
  ASSERT_NE(unet, folder->files.end());
  EXPECT_FALSE(unet->made_by_sdonnx);
  EXPECT_EQ(unet->component_basis, "file or folder name");
  EXPECT_EQ(unet->external_data_files, std::vector<std::string>{"weights.pb"});
  EXPECT_TRUE(unet->missing_external_data_files.empty());
  EXPECT_EQ(unet->initializers, 324u);
  EXPECT_EQ(unet->opsets.at(""), 14);
  ASSERT_EQ(unet->inputs.size(), 3u);
  EXPECT_EQ(unet->inputs[0].name, "sample");
}

TEST(Inspect, ExternalDataOutsideFolderIsUnsafe) {
  TempDir dir;
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  onnx::TensorProto* weight = model.mutable_graph()->add_initializer();
  weight->set_name("w");
  weight->set_data_type(onnx::TensorProto_DataType_FLOAT);
  weight->add_dims(4);
  weight->set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
  onnx::StringStringEntryProto* location = weight->add_external_data();
  location->set_key("location");
  location->set_value("../../etc/passwd");
  WriteBytes(dir / "model.onnx", model.SerializeAsString());

  auto summary = InspectOnnxFile((dir / "model.onnx").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->unsafe_external_data_files, std::vector<std::string>{"../../etc/passwd"});
  EXPECT_TRUE(summary->missing_external_data_files.empty());
  EXPECT_EQ(summary->parameters, 4);
  EXPECT_EQ(summary->component, "unknown");
}

TEST(Inspect, ConvertedFolderThroughTheProgram) {
  TempDir out;
  CommandResult convert = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sdxl-refiner.safetensors")) +
                                    " " + Quote(out.path()));
  ASSERT_EQ(convert.exit_code, 0) << convert.output;
  fs::remove(out / "vae_encoder_tiny-sdxl-refiner.onnx");

  CommandResult r = RunSdonnx("inspect --json " + Quote(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json parsed = ParseJsonOutput(r.output);
  ASSERT_FALSE(parsed.is_discarded()) << r.output;
  EXPECT_EQ(parsed["kind"], "onnx-folder");
  EXPECT_EQ(parsed["family"], "sdxl-refiner");
  EXPECT_EQ(parsed["missing_components"], json::array({"vae_encoder"}));
  EXPECT_EQ(parsed["files"].size(), 3u);
  EXPECT_EQ(parsed["files"][0]["made_by_sdonnx"], true);

  CommandResult text = RunSdonnx("inspect " + Quote(out / "unet_tiny-sdxl-refiner.onnx"));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("component: unet (metadata sdonnx.component)"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("time_ids F32 [batch, 5]"), std::string::npos) << text.output;
}

TEST(Inspect, ProgramPrintsCheckpointText) {
  CommandResult r = RunSdonnx("inspect " + Quote(Fixture("ckpt/tiny-sd1-legacy.ckpt")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PyTorch legacy checkpoint"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("family: sd1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("EMA weights: yes"), std::string::npos) << r.output;
}

TEST(Inspect, ProgramNamesGitLfsPointer) {
  TempDir dir;
  WriteBytes(dir / "model.safetensors",
             "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 10\n");
  CommandResult r = RunSdonnx("inspect --json " + Quote(dir / "model.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  const json parsed = ParseJsonOutput(r.output);
  ASSERT_FALSE(parsed.is_discarded()) << r.output;
  EXPECT_EQ(parsed["format"], "git-lfs-pointer");
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
}

TEST(Inspect, VerifyExitCodes) {
  CommandResult good = RunSdonnx("verify " + Quote(Fixture("tiny/tiny-sdxl.safetensors")));
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("OK: "), std::string::npos) << good.output;

  CommandResult bad = RunSdonnx("verify " + Quote(Fixture("ckpt/malicious-eval.ckpt")));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("builtins.eval"), std::string::npos) << bad.output;

  CommandResult partial = RunSdonnx("verify --json " +
                                    Quote(Fixture("ckpt/tiny-sd1-shared-storage.ckpt")));
  EXPECT_EQ(partial.exit_code, 1) << partial.output;
  const json parsed = ParseJsonOutput(partial.output);
  ASSERT_FALSE(parsed.is_discarded()) << partial.output;
  EXPECT_EQ(parsed["ok"], false);
  EXPECT_EQ(parsed["problems"][0]["component"], "unet");
}

}  // namespace
}  // namespace sdonnx
