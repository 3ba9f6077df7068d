// extract: every initializer of an ONNX file, external data included, in a
// safetensors file under its ONNX name, in its stored dtype and bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "rebuild/extract.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;

TEST(Extract, ExternalDataEqualsInitializers) {
  TempDir dir;
  const fs::path source = Fixture("tiny/tiny-sd1.safetensors");
  ConvertOptions convert;
  convert.model_path = source.string();
  convert.output_dir = (dir / "onnx").string();
  convert.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  convert.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  const fs::path model = dir / "onnx" / "unet_tiny-sd1.onnx";
  const auto result =
      RunSdonnx("extract " + Quote(model) + " " + Quote(dir / "unet.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("not a checkpoint"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("checkpoint keys"), std::string::npos) << result.output;

  auto onnx = OnnxFile::Open(model.string());
  auto extracted = SafetensorsFile::Open((dir / "unet.safetensors").string());
  auto checkpoint = Checkpoint::Open(source.string());
  ASSERT_TRUE(onnx.ok()) << onnx.status().message();
  ASSERT_TRUE(extracted.ok()) << extracted.status().message();
  ASSERT_TRUE(checkpoint.ok());
  ASSERT_EQ((*extracted)->tensors().size(), (*onnx)->initializers().size());
  for (const OnnxInitializer& init : (*onnx)->initializers()) {
    SCOPED_TRACE(init.name);
    EXPECT_EQ(init.storage, InitializerStorage::kExternal);
    const TensorInfo* t = (*extracted)->Find(init.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, init.dtype);
    EXPECT_EQ(t->shape, init.dims);
    const auto a = (*extracted)->Data(*t);
    const auto b = (*onnx)->Data(init);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
    // The names are checkpoint keys and the bytes the checkpoint's.
    const TensorInfo* original = (*checkpoint)->FindStored(init.name);
    ASSERT_NE(original, nullptr);
    EXPECT_EQ(std::memcmp(a.data(), (*checkpoint)->Data(*original).data(), a.size()), 0);
  }
  const auto& metadata = (*extracted)->metadata();
  EXPECT_EQ(metadata.at("sdonnx.extract_component"), "unet");
  EXPECT_EQ(metadata.at("sdonnx.extract_made_by_sdonnx"), "true");
  EXPECT_EQ(metadata.at("sdonnx.extract_source_file"), "unet_tiny-sd1.onnx");
  EXPECT_NE(metadata.at("sdonnx.extract").find("not a loadable checkpoint"), std::string::npos);
}

TEST(Extract, ForeignUnetKeepsItsNames) {
  TempDir dir;
  const fs::path model = Fixture("foreign/tiny-sd1-diffusers/unet/model.onnx");
  ExtractOptions options;
  options.onnx_path = model.string();
  options.output_path = (dir / "unet.safetensors").string();
  auto report = ExtractInitializers(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->made_by_sdonnx);
  EXPECT_EQ(report->component, "unet");

  std::ifstream names_file(Fixture("foreign/tiny-sd1-diffusers.names.json"));
  const nlohmann::json names = nlohmann::json::parse(names_file);
  auto extracted = SafetensorsFile::Open(options.output_path);
  ASSERT_TRUE(extracted.ok()) << extracted.status().message();
  const auto& entries = names.at("unet");
  ASSERT_EQ((*extracted)->tensors().size(), entries.size());
  for (const auto& entry : entries) {
    const std::string name = entry.at("onnx").get<std::string>();
    const TensorInfo* t = (*extracted)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, entry.at("onnx_shape").get<std::vector<std::int64_t>>()) << name;
  }
  EXPECT_EQ((*extracted)->metadata().at("sdonnx.extract_made_by_sdonnx"), "false");
}

TEST(Extract, ExistingOutputIsKeptWithoutForce) {
  TempDir dir;
  testing::WriteBytes(dir / "out.safetensors", "keep me");
  const fs::path model = Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx");
  const auto result = RunSdonnx("extract " + Quote(model) + " " + Quote(dir / "out.safetensors"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--force"), std::string::npos) << result.output;
  EXPECT_EQ(fs::file_size(dir / "out.safetensors"), 7u);
  const auto forced =
      RunSdonnx("extract --force " + Quote(model) + " " + Quote(dir / "out.safetensors"));
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
}

// Like convert's --output-dir, extract creates the folders above its output.
TEST(Extract, CreatesMissingOutputFolders) {
  TempDir dir;
  const fs::path model = Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx");
  const fs::path output = dir / "new" / "nested" / "vae.safetensors";
  const auto result = RunSdonnx("extract " + Quote(model) + " -o " + Quote(output));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto extracted = SafetensorsFile::Open(output.string());
  ASSERT_TRUE(extracted.ok()) << extracted.status().message();
  EXPECT_FALSE((*extracted)->tensors().empty());
  EXPECT_EQ(testing::ListFiles(dir / "new" / "nested"), std::vector<std::string>{"vae.safetensors"});
}

// A write that fails after the folders were made removes them again. The
// file name is one the file system rejects (over 255 bytes with the
// temporary name's additions).
TEST(Extract, FailureRemovesCreatedFolders) {
  TempDir dir;
  ExtractOptions options;
  options.onnx_path = Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx").string();
  options.output_path = (dir / "new" / "nested" / (std::string(250, 'a') + ".safetensors")).string();
  auto report = ExtractInitializers(options);
  ASSERT_FALSE(report.ok());
  EXPECT_FALSE(fs::exists(dir / "new"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// A ".." step names an existing folder, which a failed extract must keep.
TEST(Extract, FailureKeepsFolderNamedThroughDotDot) {
  TempDir dir;
  ExtractOptions options;
  options.onnx_path = Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx").string();
  options.output_path = (dir / "new" / ".." / (std::string(250, 'a') + ".safetensors")).string();
  auto report = ExtractInitializers(options);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(fs::is_directory(dir.path()));
  EXPECT_FALSE(fs::exists(dir / "new"));
}

// An unreadable model fails before any folder is made.
TEST(Extract, InvalidModelCreatesNoFolder) {
  TempDir dir;
  testing::WriteBytes(dir / "broken.onnx", "not a model");
  const auto result = RunSdonnx("extract " + Quote(dir / "broken.onnx") + " " +
                                Quote(dir / "new" / "out.safetensors"));
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_FALSE(fs::exists(dir / "new"));
}

TEST(Extract, ParentThatIsAFileFails) {
  TempDir dir;
  testing::WriteBytes(dir / "file", "x");
  ExtractOptions options;
  options.onnx_path = Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx").string();
  options.output_path = (dir / "file" / "sub" / "out.safetensors").string();
  auto report = ExtractInitializers(options);
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find("cannot create the output folder"), std::string::npos) << message;
  EXPECT_NE(message.find("exists and is not a folder"), std::string::npos) << message;
  EXPECT_EQ(testing::ListFiles(dir.path()), std::vector<std::string>{"file"});
}

TEST(Extract, CheckpointInsteadOfModelIsNamed) {
  TempDir dir;
  ExtractOptions options;
  options.onnx_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_path = (dir / "out.safetensors").string();
  auto report = ExtractInitializers(options);
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find("tiny-sd1.safetensors: is a safetensors file, not an ONNX model"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("convert"), std::string::npos) << message;
  EXPECT_TRUE(testing::ListFiles(dir.path()).empty());
}

TEST(Extract, FolderInsteadOfModelIsNamed) {
  TempDir dir;
  ExtractOptions options;
  options.onnx_path = Fixture("foreign/tiny-sd1-diffusers").string();
  options.output_path = (dir / "out.safetensors").string();
  auto report = ExtractInitializers(options);
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find("tiny-sd1-diffusers: is a folder; pass an .onnx file"),
            std::string::npos)
      << message;
  options.onnx_path = Fixture("foreign/tiny-sd1-diffusers/unet").string();
  auto component = ExtractInitializers(options);
  ASSERT_FALSE(component.ok());
  EXPECT_NE(component.status().message().find("pass one of its .onnx files (model.onnx)"),
            std::string::npos)
      << component.status().message();
  EXPECT_TRUE(testing::ListFiles(dir.path()).empty());
}

}  // namespace
}  // namespace sdonnx
