// rebuild: converting a checkpoint and rebuilding it from the
// ONNX files and the extras file gives back every tensor under its key, in
// its dtype and order, with the same bytes and metadata.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "rebuild/rebuild.h"
#include "rebuild/source_digests.h"
#include "rebuild/source_record.h"
#include "test_support.h"
#include "util/sha256.h"
#include "util/xxh3.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::EditMetadata;
using testing::Fixture;
using testing::ListFiles;
using testing::Quote;
using testing::RunSdonnx;
using testing::RebuildFolder;
using testing::TempDir;

Status Convert(const fs::path& model, const fs::path& out, const std::string& config,
               ExternalData external = ExternalData::kAuto, bool ema = false) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  if (!config.empty()) options.config_path = Fixture("tiny/" + config + ".yaml").string();
  options.external_data = external;
  options.ema = ema;
  return ConvertCheckpoint(options).status();
}

// Checks that `rebuilt` has exactly the tensors of `source` (any checkpoint
// format) in the same order, dtypes, shapes and bytes. With
// `same_metadata` it also compares __metadata__.
void ExpectSameTensors(const fs::path& source_path, const fs::path& rebuilt_path,
                       bool same_metadata = true) {
  auto source = Checkpoint::Open(source_path.string());
  auto rebuilt = SafetensorsFile::Open(rebuilt_path.string());
  ASSERT_TRUE(source.ok()) << source.status().message();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  const auto& expected = (*source)->tensors();
  const auto& actual = (*rebuilt)->tensors();
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(actual[i].name, expected[i].name);
    EXPECT_EQ(actual[i].dtype, expected[i].dtype);
    EXPECT_EQ(actual[i].shape, expected[i].shape);
    const auto a = (*rebuilt)->Data(actual[i]);
    const auto b = (*source)->Data(expected[i]);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
  }
  if (same_metadata) EXPECT_EQ((*rebuilt)->metadata(), (*source)->metadata());
}

class RoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(RoundTrip, RebuildGivesTheSourceTensors) {
  TempDir dir;
  const fs::path source = Fixture("tiny/" + GetParam() + ".safetensors");
  ASSERT_TRUE(Convert(source, dir / "onnx", GetParam()).ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->partial);
  EXPECT_TRUE(report->differing_keys.empty());
  EXPECT_TRUE(report->missing_keys.empty());
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
  // The header is the source's too, so the whole file is identical.
  EXPECT_TRUE(report->file_identical);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RoundTrip,
                         ::testing::Values("tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2", "tiny-sd2v",
                                           "tiny-sdxl", "tiny-sdxl-refiner"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(Rebuild, Float16SourceRoundTrips) {
  TempDir dir;
  const fs::path source = testing::NarrowedTinySd1(dir.path(), DType::kF16);
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sd1").ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
  EXPECT_TRUE(report->file_identical);
}

// bfloat16 weights stay bfloat16, and so do the tensors of the bf16.ckpt
// fixture (NaN payloads and negative zero included), carried as extras.
TEST(Rebuild, Bfloat16SourceKeptAsBfloat16) {
  TempDir dir;
  auto bf16 = Checkpoint::Open(Fixture("ckpt/bf16.ckpt").string());
  ASSERT_TRUE(bf16.ok()) << bf16.status().message();
  std::vector<TensorToWrite> extra;
  for (const TensorInfo& t : (*bf16)->tensors()) {
    ASSERT_EQ(t.dtype, DType::kBF16);
    extra.push_back({"bf16_fixture." + t.name, t.dtype, t.shape, (*bf16)->Data(t), {}});
  }
  const fs::path source = testing::NarrowedTinySd1(dir.path(), DType::kBF16, extra);
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sd1").ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
  auto rebuilt = SafetensorsFile::Open((dir / "rebuilt.safetensors").string());
  ASSERT_TRUE(rebuilt.ok());
  const TensorInfo* weight = (*rebuilt)->Find("model.diffusion_model.out.2.weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_EQ(weight->dtype, DType::kBF16);
}

TEST(Rebuild, CkptSourceRoundTrips) {
  TempDir dir;
  const fs::path source = Fixture("ckpt/tiny-sd1.ckpt");
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sd1").ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
  // The tensors equal the safetensors file the .ckpt was saved from, too.
  ExpectSameTensors(Fixture("tiny/tiny-sd1.safetensors"), dir / "rebuilt.safetensors",
                    /*same_metadata=*/false);
}

TEST(Rebuild, EmaConversionRoundTrips) {
  TempDir dir;
  const fs::path source = Fixture("tiny/tiny-sd1.safetensors");
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sd1", ExternalData::kAuto, true).ok());
  auto extras = SafetensorsFile::Open((dir / "onnx" / "extras_tiny-sd1.safetensors").string());
  ASSERT_TRUE(extras.ok()) << extras.status().message();
  // Under --ema the main UNet weights are the ones no graph uses.
  EXPECT_NE((*extras)->Find("model.diffusion_model.input_blocks.0.0.weight"), nullptr);
  EXPECT_EQ((*extras)->Find("model_ema.diffusion_modelinput_blocks00weight"), nullptr);
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
}

// The VAE models then hold another file's weights; the checkpoint's own VAE
// travels in the extras file and comes back from there.
TEST(Rebuild, SeparateVaeConversionRoundTrips) {
  TempDir dir;
  const fs::path source = Fixture("tiny/tiny-sd1.safetensors");
  ConvertOptions options;
  options.model_path = source.string();
  options.output_dir = (dir / "onnx").string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  options.vae_path = Fixture("tiny/tiny-sd1-inpaint.safetensors").string();
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->file_identical);
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
}

TEST(Rebuild, ExternalDataExportRoundTrips) {
  TempDir dir;
  const fs::path source = Fixture("tiny/tiny-sdxl.safetensors");
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sdxl", ExternalData::kAlways).ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  ExpectSameTensors(source, dir / "rebuilt.safetensors");
}

TEST(Rebuild, MissingComponentIsNamedAndNothingWritten) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  fs::remove(dir / "onnx" / "vae_decoder_tiny-sd1.onnx");
  const auto result = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " +
                                Quote(dir / "out" / "rebuilt.safetensors"));
  fs::create_directory(dir / "out");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("component vae_decoder (vae_decoder_tiny-sd1.onnx) is missing"),
            std::string::npos)
      << result.output;
  EXPECT_TRUE(ListFiles(dir / "out").empty());
}

TEST(Rebuild, ForceNeverReplacesAFileOfTheExport) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  const fs::path extras = dir / "onnx" / "extras_tiny-sd1.safetensors";
  const auto before = fs::file_size(extras);
  const auto rebuild = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " + Quote(extras) +
                                 " --force");
  EXPECT_NE(rebuild.exit_code, 0);
  EXPECT_NE(rebuild.output.find("existing file in the export's folder"), std::string::npos)
      << rebuild.output;
  const fs::path unet = dir / "onnx" / "unet_tiny-sd1.onnx";
  const auto extract = RunSdonnx("extract " + Quote(unet) + " " + Quote(unet) + " --force");
  EXPECT_NE(extract.exit_code, 0);
  EXPECT_NE(extract.output.find("existing file in the model's folder"), std::string::npos)
      << extract.output;
  EXPECT_EQ(fs::file_size(extras), before);
}

TEST(Rebuild, AllowPartialWritesAMarkedFile) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  fs::remove(dir / "onnx" / "vae_decoder_tiny-sd1.onnx");
  const auto result = RunSdonnx("rebuild --allow-partial " + Quote(dir / "onnx") + " -o " +
                                Quote(dir / "rebuilt.safetensors"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("PARTIAL"), std::string::npos) << result.output;
  auto rebuilt = SafetensorsFile::Open((dir / "rebuilt.safetensors").string());
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  EXPECT_EQ((*rebuilt)->metadata().at("sdonnx.rebuild"), "partial");
  EXPECT_EQ((*rebuilt)->metadata().at("sdonnx.rebuild_missing_components"), "vae_decoder");
  EXPECT_EQ((*rebuilt)->Find("first_stage_model.decoder.conv_in.weight"), nullptr);
  EXPECT_NE((*rebuilt)->Find("first_stage_model.encoder.conv_in.weight"), nullptr);
}

// Changes one byte of `key`'s weights in the UNet's external data file of
// the tiny-sd1 export in `dir`.
void ChangeUNetWeight(const fs::path& dir, const std::string& key) {
  std::uint64_t offset = 0;
  {
    auto unet = OnnxFile::Open((dir / "unet_tiny-sd1.onnx").string());
    ASSERT_TRUE(unet.ok()) << unet.status().message();
    const OnnxInitializer* init = (*unet)->Find(key);
    ASSERT_NE(init, nullptr);
    offset = init->offset;
  }
  std::fstream data(dir / "unet_tiny-sd1.onnx.data",
                    std::ios::in | std::ios::out | std::ios::binary);
  data.seekp(static_cast<std::streamoff>(offset));
  data.put('\x7f');
}

// Expects `message` to name `key` as the one tensor whose `label` digest
// differs from the record.
void ExpectOneChangedTensor(const std::string& message, const std::string& key,
                            const std::string& label) {
  EXPECT_NE(message.find(key + " (" + label + " digest differs"), std::string::npos) << message;
  EXPECT_NE(message.find("1 tensor differs"), std::string::npos) << message;
}

TEST(Rebuild, ChangedTensorIsListedByKey) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1",
                      ExternalData::kAlways)
                  .ok());
  const std::string key = "model.diffusion_model.out.2.bias";
  ChangeUNetWeight(dir / "onnx", key);
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  ExpectOneChangedTensor(report.status().message(), key, "XXH3-128");
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
}

TEST(Rebuild, ExtrasRecordXxh3DigestPerTensor) {
  TempDir dir;
  const fs::path source = Fixture("tiny/tiny-sd1.safetensors");
  ASSERT_TRUE(Convert(source, dir / "onnx", "tiny-sd1").ok());
  auto extras = SafetensorsFile::Open((dir / "onnx" / "extras_tiny-sd1.safetensors").string());
  ASSERT_TRUE(extras.ok()) << extras.status().message();
  const std::map<std::string, std::string>& metadata = (*extras)->metadata();
  ASSERT_TRUE(metadata.contains(kTensorDigestKey));
  EXPECT_EQ(metadata.at(kTensorDigestKey), "xxh3-128");
  auto checkpoint = Checkpoint::Open(source.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  const auto entries = nlohmann::json::parse(metadata.at("sdonnx.source_tensors"));
  ASSERT_EQ(entries.size(), (*checkpoint)->tensors().size());
  for (const auto& entry : entries) {
    const TensorInfo* t = (*checkpoint)->FindStored(entry[0].get<std::string>());
    ASSERT_NE(t, nullptr) << entry.dump();
    EXPECT_EQ(entry[3].get<std::string>(), Xxh3_128Hex((*checkpoint)->Data(*t))) << t->name;
  }
}

// Converts tiny-sd1 into `out` (weights in external data) and rewrites its
// extras file the way sdonnx wrote it before it recorded the algorithm:
// SHA-256 per tensor and no sdonnx.tensor_digest entry.
void ConvertWithSha256Record(const fs::path& out) {
  const fs::path source = Fixture("tiny/tiny-sd1.safetensors");
  ASSERT_TRUE(Convert(source, out, "tiny-sd1", ExternalData::kAlways).ok());
  auto checkpoint = Checkpoint::Open(source.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EditMetadata(out / "extras_tiny-sd1.safetensors", [&](std::map<std::string, std::string>& m) {
    m.erase(kTensorDigestKey);
    auto entries = nlohmann::json::parse(m.at("sdonnx.source_tensors"));
    for (auto& entry : entries) {
      const TensorInfo* t = (*checkpoint)->FindStored(entry[0].get<std::string>());
      ASSERT_NE(t, nullptr) << entry.dump();
      entry[3] = Sha256Hex((*checkpoint)->Data(*t));
    }
    m["sdonnx.source_tensors"] = entries.dump();
  });
}

TEST(Rebuild, Sha256RecordStillRebuilds) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(ConvertWithSha256Record(dir / "onnx"));
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->tensor_digest, TensorDigest::kSha256);
  EXPECT_TRUE(report->differing_keys.empty());
  EXPECT_TRUE(report->file_identical);
  ExpectSameTensors(Fixture("tiny/tiny-sd1.safetensors"), dir / "rebuilt.safetensors");
}

TEST(Rebuild, Sha256RecordNamesChangedTensor) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(ConvertWithSha256Record(dir / "onnx"));
  const std::string key = "model.diffusion_model.out.2.bias";
  ChangeUNetWeight(dir / "onnx", key);
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  ExpectOneChangedTensor(report.status().message(), key, "SHA-256");
}

TEST(Rebuild, UnknownTensorDigestIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  const fs::path extras = dir / "onnx" / "extras_tiny-sd1.safetensors";
  EditMetadata(extras, [](std::map<std::string, std::string>& m) { m[kTensorDigestKey] = "md5"; });
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find(extras.string()), std::string::npos) << message;
  EXPECT_NE(message.find("'sdonnx.tensor_digest' is 'md5'"), std::string::npos) << message;
  EXPECT_NE(message.find("'xxh3-128'"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
}

TEST(Rebuild, DigestOfWrongLengthIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  // XXH3-128 digests under a record that names SHA-256.
  EditMetadata(dir / "onnx" / "extras_tiny-sd1.safetensors",
               [](std::map<std::string, std::string>& m) { m[kTensorDigestKey] = "sha256"; });
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("SHA-256 digest as 64 lowercase hex digits"),
            std::string::npos)
      << report.status().message();
}

TEST(Rebuild, LossyExportIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  const fs::path path = dir / "onnx" / "clip_text_tiny-sd1.onnx";
  onnx::ModelProto model;
  {
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(model.ParseFromIstream(&in));
  }
  auto* prop = model.add_metadata_props();
  prop->set_key("sdonnx.weight_precision");
  prop->set_value("fp16");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(model.SerializeToOstream(&out));
  }
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("converted to fp16"), std::string::npos)
      << report.status().message();
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
}

TEST(Rebuild, FilesOfTwoExportsAreRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "a", "tiny-sd1").ok());
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd2.safetensors"), dir / "b", "tiny-sd2").ok());
  RebuildOptions options;
  options.inputs = {(dir / "a" / "unet_tiny-sd1.onnx").string(),
                    (dir / "b" / "clip_text_tiny-sd2.onnx").string(),
                    (dir / "a" / "extras_tiny-sd1.safetensors").string()};
  options.output_path = (dir / "rebuilt.safetensors").string();
  auto report = RebuildCheckpoint(options);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("another checkpoint"), std::string::npos)
      << report.status().message();
}

// The error names the subfolder that contains the export.
TEST(Rebuild, ExportInSubfolderIsNamed) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "nest" / "a", "tiny-sd1").ok());
  auto report = RebuildFolder(dir / "nest", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find("contains no .onnx files"), std::string::npos) << message;
  EXPECT_NE(message.find("found one in " + (dir / "nest" / "a").string()), std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
}

TEST(Rebuild, MissingExtrasFileIsNamed) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", "tiny-sd1").ok());
  fs::remove(dir / "onnx" / "extras_tiny-sd1.safetensors");
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("extras_tiny-sd1.safetensors"), std::string::npos)
      << report.status().message();
}

TEST(Rebuild, CommandReportsAnExactRebuild) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd2.safetensors"), dir / "onnx", "tiny-sd2").ok());
  const auto result =
      RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " + Quote(dir / "r.safetensors"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("every tensor matches the XXH3-128 digest"), std::string::npos)
      << result.output;
  const auto again =
      RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " + Quote(dir / "r.safetensors"));
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace sdonnx
