// Folders whose files come from different convert runs: conversion ids in
// the metadata and the external data header, and what generate, the ONNX
// reader and inspect do with a mix.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>
#include <iterator>

#include "convert/convert.h"
#include "formats/conversion_id.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "generate/model_set.h"
#include "inspect/onnx_inspect.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::ReadModel;
using testing::TempDir;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string Metadata(const onnx::ModelProto& model, const std::string& key) {
  for (const auto& entry : model.metadata_props()) {
    if (entry.key() == key) return entry.value();
  }
  return "";
}

// `chunks` 1 gives a run whose graphs differ from the default's while its
// weights, and so its data files, have the same size.
Result<ConvertReport> Convert(const fs::path& out, ExternalData external, bool fp16 = false,
                              const std::string& fixture = "tiny-sd1",
                              std::optional<std::int64_t> chunks = std::nullopt) {
  ConvertOptions options;
  options.attention_chunks = chunks;
  options.model_path = Fixture("tiny/" + fixture + ".safetensors").string();
  options.output_dir = out.string();
  options.external_data = external;
  options.fp16 = fp16;
  return ConvertCheckpoint(options);
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteModel(const fs::path& path, const onnx::ModelProto& model) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(model.SerializeToOstream(&out)) << path;
}

// Rewrites every .onnx file in `dir` as an older sdonnx wrote it: without
// a conversion id or data length in the metadata, and with the external
// data file's header cut off and the offsets moved down to match.
void RemoveConversionIds(const fs::path& dir) {
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".onnx") continue;
    onnx::ModelProto model = ReadModel(entry.path());
    auto* props = model.mutable_metadata_props();
    for (int i = props->size() - 1; i >= 0; --i) {
      const std::string& key = props->Get(i).key();
      if (key == kConversionIdKey || key == kExternalDataBytesKey) props->DeleteSubrange(i, 1);
    }
    bool external = false;
    for (auto& init : *model.mutable_graph()->mutable_initializer()) {
      for (auto& field : *init.mutable_external_data()) {
        if (field.key() != "offset") continue;
        external = true;
        field.set_value(std::to_string(std::stoull(field.value()) - kDataHeaderBytes));
      }
    }
    ASSERT_NO_FATAL_FAILURE(WriteModel(entry.path(), model));
    if (external) {
      const fs::path data = entry.path().string() + ".data";
      testing::WriteBytes(data, ReadAll(data).substr(kDataHeaderBytes));
    }
  }
}

Result<std::unique_ptr<ModelSet>> LoadSet(const fs::path& dir) {
  return ModelSet::Load(dir.string(), /*need_encoder=*/true, SessionOptions{});
}

TEST(MixedExport, EveryFileNamesTheRunsId) {
  TempDir dir;
  Result<ConvertReport> report = Convert(dir.path(), ExternalData::kAlways);
  ASSERT_TRUE(report.ok()) << report.status().message();
  const std::string& id = report->conversion_id;
  ASSERT_EQ(id.size(), 32u);
  for (const ConvertedComponent& c : report->components) {
    const fs::path onnx = c.files.front().path;
    const onnx::ModelProto model = ReadModel(onnx);
    EXPECT_EQ(Metadata(model, kConversionIdKey), id) << onnx;
    const fs::path data = onnx.string() + ".data";
    EXPECT_EQ(Metadata(model, kExternalDataBytesKey), std::to_string(fs::file_size(data)));
    const std::string bytes = ReadAll(data);
    Result<std::optional<std::string>> header = ReadDataFileHeader(
        {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, data.string());
    ASSERT_TRUE(header.ok()) << header.status().message();
    EXPECT_EQ(header->value_or(""), id) << data;
    for (const auto& init : model.graph().initializer()) {
      for (const auto& field : init.external_data()) {
        if (field.key() != "offset") continue;
        EXPECT_GE(std::stoull(field.value()), kDataHeaderBytes) << init.name();
        EXPECT_EQ(std::stoull(field.value()) % 4096, 0u) << init.name();
      }
    }
  }
  Result<std::unique_ptr<SafetensorsFile>> extras = SafetensorsFile::Open(report->extras.path);
  ASSERT_TRUE(extras.ok()) << extras.status().message();
  EXPECT_EQ((*extras)->metadata().at(kConversionIdKey), id);
  EXPECT_NE(Convert(dir / "other", ExternalData::kNever)->conversion_id, id);

  Result<std::unique_ptr<ModelSet>> set = LoadSet(dir.path());
  EXPECT_TRUE(set.ok()) << set.status().message();
}

// The id comes from the source's hash and the settings, so a repeated
// conversion writes the same bytes.
TEST(MixedExport, SameRunTwiceWritesSameBytes) {
  TempDir dir;
  Result<ConvertReport> first = Convert(dir / "first", ExternalData::kAlways);
  Result<ConvertReport> second = Convert(dir / "second", ExternalData::kAlways);
  ASSERT_TRUE(first.ok()) << first.status().message();
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_EQ(first->conversion_id, second->conversion_id);
  for (const fs::directory_entry& entry : fs::directory_iterator(dir / "first")) {
    const fs::path name = entry.path().filename();
    EXPECT_EQ(ReadAll(entry.path()), ReadAll(dir / "second" / name)) << name;
  }
}

TEST(MixedExport, GenerateRejectsMixedConversionIds) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kNever).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kNever, false, "tiny-sd1", 1).ok());
  fs::copy_file(dir / "new" / "vae_decoder_tiny-sd1.onnx", dir / "old" / "vae_decoder_tiny-sd1.onnx",
                fs::copy_options::overwrite_existing);

  Result<std::unique_ptr<ModelSet>> set = LoadSet(dir / "old");
  ASSERT_FALSE(set.ok());
  const std::string message = set.status().message();
  EXPECT_TRUE(Contains(message, "different convert runs")) << message;
  EXPECT_TRUE(Contains(message, "vae_decoder_tiny-sd1.onnx")) << message;
  EXPECT_TRUE(Contains(message, "unet_tiny-sd1.onnx")) << message;
  EXPECT_TRUE(Contains(message, "convert the checkpoint again")) << message;

  Result<OnnxFolderSummary> summary = InspectOnnxFolder((dir / "old").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_EQ(summary->problems.size(), 1u);
  EXPECT_TRUE(Contains(summary->problems[0], "2 different convert runs")) << summary->problems[0];
  EXPECT_FALSE(summary->rebuild_possible);
  EXPECT_TRUE(Contains(summary->rebuild, "cannot restore")) << summary->rebuild;
}

// The ids are compared before any model is loaded: here loading the UNet
// would fail on its missing data file, but the mix is reported first.
TEST(MixedExport, GenerateComparesIdsBeforeLoading) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kAlways).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kAlways, false, "tiny-sd1", 1).ok());
  fs::remove(dir / "old" / "unet_tiny-sd1.onnx.data");
  for (const char* name : {"vae_decoder_tiny-sd1.onnx", "vae_decoder_tiny-sd1.onnx.data"}) {
    fs::copy_file(dir / "new" / name, dir / "old" / name, fs::copy_options::overwrite_existing);
  }
  Result<std::unique_ptr<ModelSet>> set = LoadSet(dir / "old");
  ASSERT_FALSE(set.ok());
  const std::string message = set.status().message();
  EXPECT_TRUE(Contains(message, "different convert runs")) << message;
  EXPECT_FALSE(Contains(message, ".onnx.data")) << message;
}

// A new .onnx paired with another run's data file of the same size: the
// offsets fit, so only the header distinguishes the runs.
TEST(MixedExport, OtherRunsDataOfSameSizeIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kAlways).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kAlways, false, "tiny-sd1", 1).ok());
  const fs::path data = dir / "new" / "unet_tiny-sd1.onnx.data";
  ASSERT_EQ(fs::file_size(data), fs::file_size(dir / "old" / "unet_tiny-sd1.onnx.data"));
  fs::copy_file(dir / "old" / "unet_tiny-sd1.onnx.data", data,
                fs::copy_options::overwrite_existing);

  Result<std::unique_ptr<OnnxFile>> opened = OnnxFile::Open((dir / "new" / "unet_tiny-sd1.onnx").string());
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.status().message(), data.string() + ": written by the conversion"))
      << opened.status().message();
  Result<std::unique_ptr<ModelSet>> set = LoadSet(dir / "new");
  ASSERT_FALSE(set.ok());
  EXPECT_TRUE(Contains(set.status().message(), "convert the checkpoint again"))
      << set.status().message();

  Result<OnnxFolderSummary> summary = InspectOnnxFolder((dir / "new").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  bool flagged = false;
  for (const OnnxFileSummary& file : summary->files) {
    for (const std::string& problem : file.problems) flagged |= Contains(problem, data.string());
  }
  EXPECT_TRUE(flagged);
}

// A float16 graph paired with the float32 data of an older run: the data
// file is longer than the graph needs, so only the header and the recorded
// length catch it.
TEST(MixedExport, OtherRunsLongerDataIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kAlways).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kAlways, /*fp16=*/true).ok());
  const fs::path data = dir / "new" / "unet_tiny-sd1.onnx.data";
  ASSERT_GT(fs::file_size(dir / "old" / "unet_tiny-sd1.onnx.data"), fs::file_size(data));
  fs::copy_file(dir / "old" / "unet_tiny-sd1.onnx.data", data,
                fs::copy_options::overwrite_existing);

  Result<std::unique_ptr<OnnxFile>> opened = OnnxFile::Open((dir / "new" / "unet_tiny-sd1.onnx").string());
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.status().message(), "different conversions"))
      << opened.status().message();
  EXPECT_FALSE(LoadSet(dir / "new").ok());
}

TEST(MixedExport, LongerDataOfSameRunIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir.path(), ExternalData::kAlways).ok());
  const fs::path data = dir / "unet_tiny-sd1.onnx.data";
  const std::uint64_t size = fs::file_size(data);
  fs::resize_file(data, size + 4096);

  Result<std::unique_ptr<OnnxFile>> opened = OnnxFile::Open((dir / "unet_tiny-sd1.onnx").string());
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.status().message(), "expects exactly " + std::to_string(size)))
      << opened.status().message();
}

TEST(MixedExport, ExportsWithoutIdsStillLoad) {
  for (ExternalData external : {ExternalData::kNever, ExternalData::kAlways}) {
    TempDir dir;
    ASSERT_TRUE(Convert(dir.path(), external).ok());
    ASSERT_NO_FATAL_FAILURE(RemoveConversionIds(dir.path()));
    testing::EditMetadata(dir / "extras_tiny-sd1.safetensors",
                          [](std::map<std::string, std::string>& m) { m.erase(kConversionIdKey); });

    Result<std::unique_ptr<OnnxFile>> opened = OnnxFile::Open((dir / "unet_tiny-sd1.onnx").string());
    EXPECT_TRUE(opened.ok()) << opened.status().message();
    Result<std::unique_ptr<ModelSet>> set = LoadSet(dir.path());
    EXPECT_TRUE(set.ok()) << set.status().message();
    Result<OnnxFolderSummary> summary = InspectOnnxFolder(dir.path().string());
    ASSERT_TRUE(summary.ok()) << summary.status().message();
    EXPECT_TRUE(summary->problems.empty()) << summary->problems.front();
    EXPECT_TRUE(summary->rebuild_possible) << summary->rebuild;
  }
}

// An old .onnx without an id paired with a new data file, whose header
// would be read as tensor bytes.
TEST(MixedExport, NewDataUnderOldModelIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kAlways).ok());
  ASSERT_NO_FATAL_FAILURE(RemoveConversionIds(dir / "old"));
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kAlways, false, "tiny-sd1", 1).ok());
  fs::copy_file(dir / "new" / "unet_tiny-sd1.onnx.data", dir / "old" / "unet_tiny-sd1.onnx.data",
                fs::copy_options::overwrite_existing);
  Result<std::unique_ptr<OnnxFile>> opened = OnnxFile::Open((dir / "old" / "unet_tiny-sd1.onnx").string());
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.status().message(), "names no conversion id"))
      << opened.status().message();
}

TEST(Inspect, MixedSourcesCannotBeRebuilt) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "sd1", ExternalData::kNever).ok());
  ASSERT_TRUE(Convert(dir / "inpaint", ExternalData::kNever, false, "tiny-sd1-inpaint").ok());
  fs::copy_file(dir / "inpaint" / "vae_decoder_tiny-sd1-inpaint.onnx",
                dir / "sd1" / "vae_decoder_tiny-sd1.onnx", fs::copy_options::overwrite_existing);

  Result<OnnxFolderSummary> summary = InspectOnnxFolder((dir / "sd1").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_FALSE(summary->rebuild_possible);
  EXPECT_TRUE(Contains(summary->rebuild, "cannot restore the checkpoint")) << summary->rebuild;
  EXPECT_TRUE(Contains(summary->rebuild, "2 different checkpoints")) << summary->rebuild;
  EXPECT_TRUE(Contains(summary->rebuild, "into a folder of its own")) << summary->rebuild;
  EXPECT_TRUE(summary->several_checkpoints);
  EXPECT_FALSE(summary->problems.empty());

  testing::CommandResult r = testing::RunSdonnx("inspect --json " + testing::Quote(dir / "sd1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "\"rebuild_possible\": false")) << r.output;

  // Converting again cannot separate two checkpoints, so verify does not
  // suggest it.
  testing::CommandResult verified = testing::RunSdonnx("verify " + testing::Quote(dir / "sd1"));
  EXPECT_EQ(verified.exit_code, 1) << verified.output;
  EXPECT_TRUE(Contains(verified.output, "keep the export of each checkpoint in a folder of its "
                                        "own"))
      << verified.output;
  EXPECT_FALSE(Contains(verified.output, "--force")) << verified.output;
}

TEST(Inspect, TruncatedOnnxInFolderIsListedAsProblem) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir.path(), ExternalData::kNever).ok());
  const fs::path text = dir / "clip_text_tiny-sd1.onnx";
  fs::resize_file(text, fs::file_size(text) / 2);

  Result<OnnxFolderSummary> summary = InspectOnnxFolder(dir.path().string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->files.size(), 3u);
  ASSERT_EQ(summary->problems.size(), 1u);
  EXPECT_TRUE(Contains(summary->problems[0], text.string())) << summary->problems[0];

  testing::CommandResult r = testing::RunSdonnx("inspect " + testing::Quote(dir.path()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "problem: " + text.string())) << r.output;
  EXPECT_TRUE(Contains(r.output, "unet_tiny-sd1.onnx")) << r.output;
}

// verify on an export folder: OK for a complete export, FAILED with the
// reason for a mixed folder and for a missing data file.
TEST(VerifyFolder, CompleteExportPasses) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "onnx", ExternalData::kAlways).ok());
  const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "OK: every component is present")) << r.output;
  const auto json = testing::RunSdonnx("verify --json " + testing::Quote(dir / "onnx"));
  EXPECT_EQ(json.exit_code, 0) << json.output;
  EXPECT_TRUE(Contains(json.output, "\"ok\": true")) << json.output;
}

TEST(VerifyFolder, MixedExportFails) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kNever).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kNever, false, "tiny-sd1", 1).ok());
  fs::copy_file(dir / "new" / "vae_decoder_tiny-sd1.onnx", dir / "old" / "vae_decoder_tiny-sd1.onnx",
                fs::copy_options::overwrite_existing);
  const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "old"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "different convert runs")) << r.output;
  EXPECT_TRUE(Contains(r.output, "FAILED")) << r.output;
}

TEST(VerifyFolder, MissingDataFileFails) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "onnx", ExternalData::kAlways).ok());
  fs::remove(dir / "onnx" / "unet_tiny-sd1.onnx.data");
  const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "onnx"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "unet_tiny-sd1.onnx.data")) << r.output;
  EXPECT_TRUE(Contains(r.output, "rebuild: cannot restore the checkpoint")) << r.output;
  const auto json = testing::RunSdonnx("verify --json " + testing::Quote(dir / "onnx"));
  EXPECT_EQ(json.exit_code, 1) << json.output;
  EXPECT_TRUE(Contains(json.output, "\"ok\": false")) << json.output;
}

// Metadata values that generate rejects make verify fail too, with the
// same message; the weights are intact, so rebuild still can restore.
TEST(VerifyFolder, MetadataGenerateRejectsFails) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"unet_tiny-sd1.onnx", "sdonnx.vae_downsample_factor"},
      {"unet_tiny-sd1.onnx", "sdonnx.self_attention"},
      {"vae_decoder_tiny-sd1.onnx", "sdonnx.full_resolution_channels"},
      {"unet_tiny-sd1.onnx", "sdonnx.static_batch"},
      {"unet_tiny-sd1.onnx", "sdonnx.static_shape"},
      {"unet_tiny-sd1.onnx", "sdonnx.prediction_type"},
  };
  for (const auto& [file, key] : cases) {
    SCOPED_TRACE(key);
    TempDir dir;
    ASSERT_TRUE(Convert(dir / "onnx", ExternalData::kNever).ok());
    ASSERT_NO_FATAL_FAILURE(testing::SetOnnxMetadata(dir / "onnx" / file, key, "0"));
    const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "onnx"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, file + ": metadata")) << r.output;
    EXPECT_TRUE(Contains(r.output, key)) << r.output;
    EXPECT_TRUE(Contains(r.output, "rebuild: can restore")) << r.output;
  }
}

// A UNet without a key that generate needs fails verify with the key named,
// because generate rejects it whichever version wrote it.
TEST(VerifyFolder, MissingUNetKeyFails) {
  for (const std::string key : {"sdonnx.prediction_type", "sdonnx.vae_scaling_factor",
                                "sdonnx.vae_downsample_factor", "sdonnx.latent_channels"}) {
    SCOPED_TRACE(key);
    TempDir dir;
    ASSERT_TRUE(Convert(dir / "onnx", ExternalData::kNever).ok());
    ASSERT_NO_FATAL_FAILURE(testing::RemoveOnnxMetadata(dir / "onnx" / "unet_tiny-sd1.onnx", key));
    const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "onnx"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, "unet_tiny-sd1.onnx: metadata '" + key + "' is missing"))
        << r.output;
  }
}

// Values in range but wrong for the model fail verify as they fail
// generate: checked against the UNet's input and the VAE decoder.
TEST(VerifyFolder, UNetMetadataThatMisfitsTheDecoderFails) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"sdonnx.latent_channels", "3", "but its input 'sample' has 4 channels"},
      {"sdonnx.latent_channels", "2", "takes latents with 4 channels"},
      {"sdonnx.vae_downsample_factor", "4", "records 2"},
  };
  for (const auto& [key, value, message] : cases) {
    SCOPED_TRACE(key + " = " + value);
    TempDir dir;
    ASSERT_TRUE(Convert(dir / "onnx", ExternalData::kNever).ok());
    ASSERT_NO_FATAL_FAILURE(
        testing::SetOnnxMetadata(dir / "onnx" / "unet_tiny-sd1.onnx", key, value));
    const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "onnx"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, "unet_tiny-sd1.onnx: metadata '" + key + "' is " + value))
        << r.output;
    EXPECT_TRUE(Contains(r.output, message)) << r.output;
  }
}

// A data file of another run with the same size: only its header shows
// the mix, and the rebuild line of inspect and verify reports it.
TEST(VerifyFolder, OtherRunsDataBlocksRebuild) {
  TempDir dir;
  ASSERT_TRUE(Convert(dir / "old", ExternalData::kAlways).ok());
  ASSERT_TRUE(Convert(dir / "new", ExternalData::kAlways, false, "tiny-sd1", 1).ok());
  fs::copy_file(dir / "new" / "unet_tiny-sd1.onnx.data", dir / "old" / "unet_tiny-sd1.onnx.data",
                fs::copy_options::overwrite_existing);
  Result<OnnxFolderSummary> summary = InspectOnnxFolder((dir / "old").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_FALSE(summary->rebuild_possible);
  EXPECT_TRUE(Contains(summary->rebuild, "written by the conversion")) << summary->rebuild;
  const auto r = testing::RunSdonnx("verify " + testing::Quote(dir / "old"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "rebuild: cannot restore")) << r.output;
}

TEST(VerifyFolder, UnreadableInputGivesJsonError) {
  TempDir dir;
  fs::create_directories(dir / "empty");
  const auto r = testing::RunSdonnx("verify --json " + testing::Quote(dir / "empty"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "\"kind\": \"error\"")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\"ok\": false")) << r.output;
}

}  // namespace
}  // namespace sdonnx
