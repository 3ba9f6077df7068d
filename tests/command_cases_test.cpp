// A catalogue of inputs that inspect, verify, extract and rebuild once
// handled badly, one case each. The cases cover control characters from a
// file, EMA and extras diagnoses, JSON for rejected inputs, edited source
// headers, unclear or doubled messages, the family of foreign exports, the
// SD 2.x prediction probe and truncated external data.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "inspect/checkpoint_inspect.h"
#include "inspect/onnx_inspect.h"
#include "inspect/verify.h"
#include "model/expected_keys.h"
#include "rebuild/rebuild.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CommandResult;
using testing::Fixture;
using testing::ListFiles;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;
using testing::WriteBytes;

// A key and metadata that would clear the screen and forge output lines if
// printed raw.
const std::string kHostileText = "\x1b[2Jforged\nwarning: all good\r";

// Writes the tensors of `source` that `keep` accepts to `out`, plus `extra`
// one-element F32 tensors, with `metadata`.
void WriteCopy(const fs::path& source, const fs::path& out,
               const std::function<bool(const std::string&)>& keep,
               const std::vector<std::string>& extra = {},
               const std::map<std::string, std::string>& metadata = {}) {
  auto checkpoint = Checkpoint::Open(source.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*checkpoint)->tensors()) {
    if (keep(t.name)) tensors.push_back({t.name, t.dtype, t.shape, (*checkpoint)->Data(t), {}});
  }
  static const float kZero = 0;
  for (const std::string& name : extra) {
    tensors.push_back({name, DType::kF32, {1},
                       {reinterpret_cast<const std::uint8_t*>(&kZero), sizeof(kZero)}, {}});
  }
  ASSERT_TRUE(WriteSafetensors(out.string(), tensors, metadata).ok());
}

bool KeepAll(const std::string&) { return true; }

Status ConvertTo(const fs::path& model, const fs::path& out) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  return ConvertCheckpoint(options).status();
}

// A zip archive with one empty stored record, readme.txt, and its central
// directory: a valid zip that is not a torch checkpoint.
std::string ZipWithoutDataPkl() {
  std::string local("PK\x03\x04\x0a\x00\x00\x00\x00\x00", 10);
  local += std::string(16, '\0') + std::string("\x0a\x00\x00\x00", 4) + "readme.txt";
  std::string central("PK\x01\x02\x0a\x00\x0a\x00\x00\x00\x00\x00", 12);
  central += std::string(16, '\0') + std::string("\x0a\x00", 2) + std::string(16, '\0') +
             "readme.txt";
  std::string end("PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00", 12);
  end += std::string(1, static_cast<char>(central.size())) + std::string(3, '\0');
  end += std::string(1, static_cast<char>(local.size())) + std::string(5, '\0');
  return local + central + end;
}

// The JSON object at the start of `output` (stdout, then stderr).
json ParseJsonOutput(const std::string& output) {
  const std::size_t end = output.find("\n}\n");
  return json::parse(output.substr(0, end == std::string::npos ? output.size() : end + 2),
                     nullptr, false);
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Raw control characters are absent, no output line was forged, and the
// escaped form is present.
void ExpectEscaped(const CommandResult& r) {
  EXPECT_FALSE(Contains(r.output, "\x1b")) << r.output;
  EXPECT_FALSE(Contains(r.output, "\r")) << r.output;
  EXPECT_FALSE(Contains(r.output, "\nwarning: all good")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\\x1b[2Jforged\\x0awarning: all good\\x0d")) << r.output;
}

TEST(Inspect, HostileKeysAreEscaped) {
  TempDir dir;
  const fs::path file = dir / "hostile.safetensors";
  WriteCopy(Fixture("tiny/tiny-sd1.safetensors"), file, KeepAll,
            {"cond_stage_model.extra" + kHostileText}, {{"title" + kHostileText, kHostileText}});

  ExpectEscaped(RunSdonnx("inspect " + Quote(file)));
  CommandResult verify = RunSdonnx("verify " + Quote(file));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  ExpectEscaped(verify);

  // JSON escapes them itself, and the strings round-trip unchanged.
  CommandResult r = RunSdonnx("inspect --json " + Quote(file));
  EXPECT_FALSE(Contains(r.output, "\x1b")) << r.output;
  const json parsed = ParseJsonOutput(r.output);
  ASSERT_FALSE(parsed.is_discarded()) << r.output;
  EXPECT_EQ(parsed["metadata"]["title" + kHostileText], kHostileText);
  EXPECT_EQ(parsed["extra_keys"]["first"][0], "cond_stage_model.extra" + kHostileText);
}

TEST(Rebuild, HostileFileNamesAreEscaped) {
  TempDir dir;
  const std::string stem = "model" + kHostileText;
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), dir / (stem + ".safetensors"));
  ASSERT_TRUE(ConvertTo(dir / (stem + ".safetensors"), dir / "onnx").ok());

  CommandResult rebuild = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " +
                                    Quote(dir / "rebuilt.safetensors"));
  EXPECT_EQ(rebuild.exit_code, 0) << rebuild.output;
  ExpectEscaped(rebuild);
  CommandResult extract = RunSdonnx("extract " + Quote(dir / "onnx" / ("unet_" + stem + ".onnx")) +
                                    " " + Quote(dir / "unet.safetensors"));
  EXPECT_EQ(extract.exit_code, 0) << extract.output;
  EXPECT_FALSE(Contains(extract.output, "\x1b")) << extract.output;
  ExpectEscaped(RunSdonnx("inspect " + Quote(dir / "onnx")));
}

TEST(Inspect, InvalidUtf8KeepsJsonValid) {
  TempDir dir;
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  model.mutable_graph()->set_name("g");
  onnx::StringStringEntryProto* entry = model.add_metadata_props();
  entry->set_key("note");
  entry->set_value("bad \xff byte");
  WriteBytes(dir / "model.onnx", model.SerializeAsString());

  CommandResult r = RunSdonnx("inspect --json " + Quote(dir / "model.onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const json parsed = ParseJsonOutput(r.output);
  ASSERT_FALSE(parsed.is_discarded()) << r.output;
  EXPECT_EQ(parsed["metadata"]["note"], "bad \xef\xbf\xbd byte");  // U+FFFD
}

TEST(Verify, MissingUNetKeyWithEmaIsNamed) {
  TempDir dir;
  const std::string missing = "model.diffusion_model.input_blocks.0.0.weight";
  WriteCopy(Fixture("tiny/tiny-sd1.safetensors"), dir / "model.safetensors",
            [&missing](const std::string& key) { return key != missing; });
  Result<VerifyReport> report = VerifyCheckpoint((dir / "model.safetensors").string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_EQ(report->problems.size(), 1u);
  const VerifyProblem& problem = report->problems[0];
  EXPECT_EQ(problem.component, "unet");
  EXPECT_EQ(problem.missing_count, 1u);
  EXPECT_EQ(problem.missing_keys, std::vector<std::string>{missing});
  EXPECT_TRUE(Contains(problem.what, "1 of ")) << problem.what;
  EXPECT_FALSE(Contains(problem.what, "EMA")) << problem.what;
  EXPECT_TRUE(Contains(problem.advice, "--ema")) << problem.advice;
}

TEST(Verify, OnlyEmaWeightsSuggestEmaFlag) {
  TempDir dir;
  WriteCopy(Fixture("tiny/tiny-sd1.safetensors"), dir / "model.safetensors",
            [](const std::string& key) { return !key.starts_with(kUNetPrefix); });
  Result<VerifyReport> report = VerifyCheckpoint((dir / "model.safetensors").string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_FALSE(report->problems.empty());
  const VerifyProblem& problem = report->problems[0];
  EXPECT_EQ(problem.component, "unet");
  EXPECT_TRUE(Contains(problem.what, "only EMA weights")) << problem.what;
  EXPECT_TRUE(Contains(problem.advice, "sdonnx convert --ema")) << problem.advice;
}

TEST(Verify, ExtrasFileIsRecognised) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir.path()).ok());
  const fs::path extras = dir / "extras_tiny-sd1.safetensors";
  Result<VerifyReport> report = VerifyCheckpoint(extras.string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_kind, "sdonnx-extras");
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_EQ(report->problems[0].component, "file");
  EXPECT_TRUE(Contains(report->problems[0].what, "tiny-sd1.safetensors"));

  CommandResult r = RunSdonnx("verify " + Quote(extras));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "sdonnx rebuild FOLDER -o OUT.safetensors")) << r.output;
  EXPECT_FALSE(Contains(r.output, "missing: ")) << r.output;
}

TEST(Verify, ExtractOutputIsRecognised) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  CommandResult extract = RunSdonnx("extract " + Quote(dir / "onnx" / "vae_decoder_tiny-sd1.onnx") +
                                    " " + Quote(dir / "vae.safetensors"));
  ASSERT_EQ(extract.exit_code, 0) << extract.output;
  Result<VerifyReport> report = VerifyCheckpoint((dir / "vae.safetensors").string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->file_kind, "sdonnx-extract");
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_TRUE(Contains(report->problems[0].what, "vae_decoder")) << report->problems[0].what;
  EXPECT_TRUE(Contains(report->problems[0].advice, "sdonnx rebuild"));
}

// An extract of the UNet still shows a family from its keys; the text output
// must name the file as an extract all the same.
TEST(Inspect, UNetExtractNamesFileKind) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  CommandResult extract = RunSdonnx("extract " + Quote(dir / "onnx" / "unet_tiny-sd1.onnx") +
                                    " " + Quote(dir / "unet.safetensors"));
  ASSERT_EQ(extract.exit_code, 0) << extract.output;
  CommandResult r = RunSdonnx("inspect " + Quote(dir / "unet.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "file kind: sdonnx extract")) << r.output;
  EXPECT_TRUE(Contains(r.output, "family: sd1")) << r.output;
}

struct RejectedInput {
  const char* label;
  const char* name;
  const char* format;
  const char* error;
};

void PrintTo(const RejectedInput& input, std::ostream* out) { *out << input.name; }

class InspectRejectedInput : public ::testing::TestWithParam<RejectedInput> {};

TEST_P(InspectRejectedInput, JsonNamesFormatAndError) {
  TempDir dir;
  const RejectedInput& c = GetParam();
  fs::path path = dir / c.name;
  if (std::string(c.name) == "malicious.ckpt") {
    path = Fixture("ckpt/malicious-os-system.ckpt");
  } else if (std::string(c.name) == "notes.zip") {
    WriteBytes(path, ZipWithoutDataPkl());
  } else {
    // The first 200 bytes of a real ONNX file.
    ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
    auto mapped = MappedFile::Open((dir / "onnx" / "unet_tiny-sd1.onnx").string());
    ASSERT_TRUE(mapped.ok());
    const auto bytes = (*mapped)->bytes().first(200);
    WriteBytes(path, std::string(bytes.begin(), bytes.end()));
  }
  CommandResult r = RunSdonnx("inspect --json " + Quote(path));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const json parsed = ParseJsonOutput(r.output);
  ASSERT_TRUE(parsed.is_object()) << r.output;
  EXPECT_EQ(parsed["path"], path.string());
  EXPECT_EQ(parsed["format"], c.format);
  ASSERT_TRUE(parsed["error"].is_string()) << r.output;
  EXPECT_TRUE(Contains(parsed["error"], c.error)) << parsed["error"];
  EXPECT_TRUE(Contains(r.output, "error: ")) << r.output;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, InspectRejectedInput,
    ::testing::Values(RejectedInput{"MaliciousCkpt", "malicious.ckpt", "torch-zip", "os.system"},
                      RejectedInput{"ZipWithoutDataPkl", "notes.zip", "zip", "no data.pkl record"},
                      RejectedInput{"TruncatedOnnx", "truncated.onnx", "onnx", "truncated"}),
    [](const auto& info) { return std::string(info.param.label); });

// Rewrites the extras file in `dir` with `change` applied to its metadata.
void EditExtras(const fs::path& dir,
                const std::function<void(std::map<std::string, std::string>*)>& change) {
  const fs::path path = dir / "extras_tiny-sd1.safetensors";
  std::vector<std::uint8_t> bytes;
  std::map<std::string, std::string> metadata;
  std::vector<TensorToWrite> tensors;
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().message();
  metadata = (*file)->metadata();
  std::vector<std::vector<std::uint8_t>> copies;
  copies.reserve((*file)->tensors().size());
  for (const TensorInfo& t : (*file)->tensors()) {
    const auto data = (*file)->Data(t);
    copies.emplace_back(data.begin(), data.end());
    tensors.push_back({t.name, t.dtype, t.shape, copies.back(), {}});
  }
  file->reset();
  change(&metadata);
  ASSERT_TRUE(WriteSafetensors(path.string(), tensors, metadata).ok());
}

struct HeaderEdit {
  const char* name;
  std::function<void(std::map<std::string, std::string>*)> change;
  const char* error;
};

void PrintTo(const HeaderEdit& edit, std::ostream* out) { *out << edit.name; }

class RebuildEditedHeader : public ::testing::TestWithParam<HeaderEdit> {};

TEST_P(RebuildEditedHeader, WritesNothing) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  EditExtras(dir / "onnx", GetParam().change);
  RebuildOptions options;
  options.inputs = {(dir / "onnx").string()};
  options.output_path = (dir / "out.safetensors").string();
  Result<RebuildReport> report = RebuildCheckpoint(options);
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_TRUE(Contains(message, "extras_tiny-sd1.safetensors: the recorded source header"))
      << message;
  EXPECT_TRUE(Contains(message, GetParam().error)) << message;
  EXPECT_EQ(ListFiles(dir.path()), std::vector<std::string>{"onnx"});  // No temporary left.
}

// Moves the data offsets of the header's last tensor by `shift` bytes.
std::function<void(std::map<std::string, std::string>*)> ShiftLastTensor(std::uint64_t shift) {
  return [shift](std::map<std::string, std::string>* metadata) {
    json header = json::parse((*metadata)["sdonnx.source_header"]);
    std::string last;
    for (const auto& [key, value] : header.items()) {
      if (key != "__metadata__") last = key;
    }
    json& offsets = header[last]["data_offsets"];
    offsets = {offsets[0].get<std::uint64_t>() + shift, offsets[1].get<std::uint64_t>() + shift};
    (*metadata)["sdonnx.source_header"] = header.dump();
  };
}

INSTANTIATE_TEST_SUITE_P(
    Edits, RebuildEditedHeader,
    ::testing::Values(
        HeaderEdit{"InvalidJson",
                   [](auto* m) { (*m)["sdonnx.source_header"].resize(100); },
                   "it is not valid JSON"},
        HeaderEdit{"GapPastSourceSize", ShiftLastTensor(1'000'000'000'000),
                   "but the source had"},
        HeaderEdit{"GapWithoutSourceSize",
                   [](auto* m) {
                     m->erase("sdonnx.source_bytes");
                     ShiftLastTensor(1'000'000'000'000)(m);
                   },
                   "bytes of gaps between tensors"},
        HeaderEdit{"SourceSizeTooSmall", [](auto* m) { (*m)["sdonnx.source_bytes"] = "12"; },
                   "but the source had 12"},
        HeaderEdit{"WrongDtype",
                   [](auto* m) {
                     json header = json::parse((*m)["sdonnx.source_header"]);
                     header["alphas_cumprod"]["dtype"] = "F64";
                     (*m)["sdonnx.source_header"] = header.dump();
                   },
                   "has dtype \"F64\""},
        HeaderEdit{"Overlap",
                   [](auto* m) {
                     json header = json::parse((*m)["sdonnx.source_header"]);
                     for (auto& [key, value] : header.items()) {
                       if (key == "__metadata__") continue;
                       json& offsets = value["data_offsets"];
                       const std::uint64_t size =
                           offsets[1].get<std::uint64_t>() - offsets[0].get<std::uint64_t>();
                       offsets = {1, 1 + size};
                     }
                     (*m)["sdonnx.source_header"] = header.dump();
                   },
                   "overlaps the tensor before it"},
        HeaderEdit{"OtherMetadata",
                   [](auto* m) {
                     json header = json::parse((*m)["sdonnx.source_header"]);
                     header["__metadata__"] = {{"edited", "yes"}};
                     (*m)["sdonnx.source_header"] = header.dump();
                   },
                   "its __metadata__ differs"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Rebuild, SameFolderTwiceIsNamed) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  CommandResult r = RunSdonnx("rebuild " + Quote(dir / "onnx") + " " + Quote(dir / "onnx") +
                              " -o " + Quote(dir / "out.safetensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "given twice")) << r.output;
  EXPECT_FALSE(Contains(r.output, "not found")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
}

TEST(Rebuild, MissingOutputIsPlainError) {
  TempDir dir;
  CommandResult r = RunSdonnx("rebuild " + Quote(dir.path()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "error: no output file; give the checkpoint to write with -o"))
      << r.output;
}

TEST(Rebuild, FolderOutputIsRejected) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  fs::create_directories(dir / "out");
  for (const char* force : {"", " --force"}) {
    CommandResult r = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " + Quote(dir / "out") +
                                force);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, "out: is a folder; give the path of the checkpoint file"))
        << r.output;
  }
  EXPECT_TRUE(ListFiles(dir / "out").empty());
}

TEST(Extract, FolderOutputIsRejected) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  fs::create_directories(dir / "out");
  for (const char* force : {"", " --force"}) {
    CommandResult r = RunSdonnx("extract " + Quote(dir / "onnx" / "unet_tiny-sd1.onnx") + " " +
                                Quote(dir / "out") + force);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, "out: is a folder; give the path of the .safetensors file"))
        << r.output;
    EXPECT_FALSE(Contains(r.output, "--force")) << r.output;
  }
  EXPECT_TRUE(ListFiles(dir / "out").empty());
}

// Counts the occurrences of `part` in `text`.
std::size_t Count(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) {
    ++count;
  }
  return count;
}

TEST(Verify, ZipMessageIsNotDoubled) {
  TempDir dir;
  WriteBytes(dir / "notes.zip", ZipWithoutDataPkl());
  CommandResult r = RunSdonnx("verify " + Quote(dir / "notes.zip"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(Count(r.output, "data.pkl"), 1u) << r.output;
  EXPECT_EQ(Count(r.output, "not a PyTorch checkpoint"), 1u) << r.output;
}

TEST(Rebuild, SizeLimitNamesPathOnce) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  const fs::path rebuilt = dir / "rebuilt.safetensors";
  CommandResult r = testing::RunCommand("ulimit -f 100 && " SDONNX_BINARY " rebuild " +
                                        Quote(dir / "onnx") + " -o " + Quote(rebuilt) + " 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "file size limit")) << r.output;
  EXPECT_EQ(Count(r.output, rebuilt.string()), 1u) << r.output;

  const fs::path extracted = dir / "unet.safetensors";
  CommandResult e = testing::RunCommand("ulimit -f 100 && " SDONNX_BINARY " extract " +
                                        Quote(dir / "onnx" / "unet_tiny-sd1.onnx") + " " +
                                        Quote(extracted) + " 2>&1");
  EXPECT_EQ(e.exit_code, 1) << e.output;
  EXPECT_TRUE(Contains(e.output, "file size limit")) << e.output;
  EXPECT_EQ(Count(e.output, extracted.string()), 1u) << e.output;
  EXPECT_EQ(ListFiles(dir.path()), std::vector<std::string>{"onnx"});  // No temporary left.
}

TEST(Inspect, ForeignFolderFamilyFromLayout) {
  auto folder = InspectOnnxFolder(Fixture("foreign/tiny-sd1-diffusers").string());
  ASSERT_TRUE(folder.ok()) << folder.status().message();
  EXPECT_EQ(folder->family, "sd1");
  // The tiny UNet's context width (16) is no released model's, so the
  // layout decides.
  EXPECT_TRUE(Contains(folder->family_basis, "proj_in is a 1x1 convolution"))
      << folder->family_basis;
  EXPECT_TRUE(Contains(folder->family_basis, "context width 16")) << folder->family_basis;

  CommandResult r = RunSdonnx("inspect " + Quote(Fixture("foreign/tiny-sd1-diffusers")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "family: sd1 (UNet layout")) << r.output;
  EXPECT_FALSE(Contains(r.output, "family: unknown")) << r.output;
}

// For the released models the context width decides. Each graph here is a
// diffusers-style UNet whose only clue is an anonymous attn2.to_k weight
// stored as [in, out].
TEST(Inspect, UNetContextWidthGivesFamily) {
  const std::vector<std::pair<std::int64_t, std::string>> cases = {
      {768, "sd1"}, {1024, "sd2"}, {2048, "sdxl"}, {1280, "sdxl-refiner"}};
  for (const auto& [width, family] : cases) {
    TempDir dir;
    fs::create_directories(dir / "unet");
    onnx::ModelProto model;
    model.set_ir_version(8);
    model.add_opset_import()->set_version(17);
    onnx::GraphProto* graph = model.mutable_graph();
    onnx::TensorProto* weight = graph->add_initializer();
    weight->set_name("onnx::MatMul_1");
    weight->set_data_type(onnx::TensorProto_DataType_FLOAT);
    weight->add_dims(width);
    weight->add_dims(0);
    onnx::NodeProto* node = graph->add_node();
    node->set_name("/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_k/MatMul");
    node->set_op_type("MatMul");
    node->add_input("encoder_hidden_states");
    node->add_input("onnx::MatMul_1");
    node->add_output("k");
    WriteBytes(dir / "unet" / "model.onnx", model.SerializeAsString());

    auto folder = InspectOnnxFolder(dir.path().string());
    ASSERT_TRUE(folder.ok()) << folder.status().message();
    EXPECT_EQ(folder->family, family) << width;
    EXPECT_TRUE(Contains(folder->family_basis, "context width " + std::to_string(width)))
        << folder->family_basis;
  }
}

TEST(Inspect, Sd2WithoutConfigRunsProbe) {
  auto summary = InspectCheckpoint(Fixture("tiny/tiny-sd2v.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_TRUE(summary->spec.has_value());
  // The tiny UNet's heads come from its YAML, so the spec is detected with
  // it, then put into the state DetectModel leaves without a config.
  summary->spec->prediction_basis = "SD 2.x without a config: decided by a UNet probe";
  ASSERT_TRUE(summary->spec->needs_prediction_probe());
  const Status probe = RunPredictionProbe(&*summary);
  ASSERT_TRUE(probe.ok()) << probe.message();
  EXPECT_TRUE(summary->spec->prediction_basis.starts_with("UNet probe: mean(out - x) = "))
      << summary->spec->prediction_basis;
  EXPECT_FALSE(summary->spec->needs_prediction_probe());
  const json out = CheckpointSummaryJson(*summary);
  EXPECT_TRUE(out["prediction_type"] == "epsilon" || out["prediction_type"] == "v_prediction")
      << out["prediction_type"];
}

TEST(Inspect, FailedProbeIsAWarning) {
  // Without its YAML, the tiny SD 2.x UNet cannot be built (its 32 channels
  // do not split into 64-channel heads), which convert reports as an error.
  TempDir dir;
  fs::copy_file(Fixture("tiny/tiny-sd2.safetensors"), dir / "model.safetensors");
  CommandResult r = RunSdonnx("inspect " + Quote(dir / "model.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "undecided (the UNet probe failed")) << r.output;
  EXPECT_TRUE(Contains(r.output, "warning: the SD 2.x prediction type probe failed")) << r.output;

  CommandResult skipped = RunSdonnx("inspect --no-probe " + Quote(dir / "model.safetensors"));
  EXPECT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_TRUE(Contains(skipped.output, "undecided (--no-probe")) << skipped.output;
  EXPECT_FALSE(Contains(skipped.output, "probe failed")) << skipped.output;
}

TEST(Inspect, TruncatedExternalDataIsFlagged) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = dir.path().string();
  options.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  const fs::path data = dir / "unet_tiny-sd1.onnx.data";
  const std::uint64_t size = fs::file_size(data);
  fs::resize_file(data, 1000);

  auto summary = InspectOnnxFile((dir / "unet_tiny-sd1.onnx").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_EQ(summary->truncated_external_data_files.size(), 1u);
  EXPECT_EQ(summary->truncated_external_data_files[0].location, "unet_tiny-sd1.onnx.data");
  EXPECT_EQ(summary->truncated_external_data_files[0].expected_bytes, size);
  EXPECT_EQ(summary->truncated_external_data_files[0].actual_bytes, 1000u);
  ASSERT_EQ(summary->warnings.size(), 1u);
  EXPECT_TRUE(Contains(summary->warnings[0], data.string())) << summary->warnings[0];

  CommandResult r = RunSdonnx("inspect " + Quote(dir / "unet_tiny-sd1.onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "external data: unet_tiny-sd1.onnx.data (truncated)"))
      << r.output;
  EXPECT_TRUE(Contains(r.output, "needs " + std::to_string(size) + " bytes, but it has 1000") ||
              Contains(r.output, "need " + std::to_string(size) + " bytes, but it has 1000"))
      << r.output;
}

// Converts the tiny SD 1.x fixture into `dir` with every UNet weight in
// unet_tiny-sd1.onnx.data.
void ConvertWithExternalData(const fs::path& dir) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = dir.string();
  options.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
}

TEST(Inspect, SymlinkedExternalDataIsFlagged) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(ConvertWithExternalData(dir / "models"));
  const fs::path data = dir / "models" / "unet_tiny-sd1.onnx.data";
  fs::rename(data, dir / "elsewhere.data");
  fs::create_symlink(dir / "elsewhere.data", data);

  auto summary = InspectOnnxFile((dir / "models" / "unet_tiny-sd1.onnx").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->symlinked_external_data_files,
            std::vector<std::string>{"unet_tiny-sd1.onnx.data"});
  ASSERT_EQ(summary->warnings.size(), 1u);
  EXPECT_TRUE(Contains(summary->warnings[0], "passes through the symlink " + data.string()))
      << summary->warnings[0];

  CommandResult r = RunSdonnx("inspect " + Quote(dir / "models" / "unet_tiny-sd1.onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "external data: unet_tiny-sd1.onnx.data (a symlink)")) << r.output;
  EXPECT_TRUE(Contains(r.output, "warning: ")) << r.output;
}

// generate checks external data before ONNX Runtime loads a model, so the
// error names the file, the initializer and the byte counts instead of
// quoting ONNX Runtime's source.
TEST(GenerateModels, TruncatedExternalDataIsNamed) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(ConvertWithExternalData(dir.path()));
  const fs::path data = dir / "unet_tiny-sd1.onnx.data";
  fs::resize_file(data, 1000);
  CommandResult r = RunSdonnx("generate --model " + Quote(dir.path()) +
                              " --prompt fox --steps 1 --width 32 --height 32 --tokenizer " +
                              Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output " +
                              Quote(dir / "fox.png"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "unet_tiny-sd1.onnx: initializer '")) << r.output;
  EXPECT_TRUE(Contains(r.output, data.string() + ", which has only 1000 bytes")) << r.output;
  EXPECT_FALSE(Contains(r.output, "onnxruntime")) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(dir / "fox.png"));
}

// rebuild --allow-partial sums up the left-out tensors per part of the
// checkpoint instead of printing one line for each.
TEST(Rebuild, PartialRunSummarizesLeftOutTensors) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  fs::remove(dir / "onnx" / "vae_decoder_tiny-sd1.onnx");
  fs::remove(dir / "onnx" / "vae_encoder_tiny-sd1.onnx");
  CommandResult r = RunSdonnx("rebuild --allow-partial " + Quote(dir / "onnx") + " -o " +
                              Quote(dir / "partial.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::size_t at = r.output.find("missing, left out: vae (first_stage_model.*): ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string line = r.output.substr(at, r.output.find('\n', at) - at);
  EXPECT_TRUE(std::regex_search(line, std::regex(R"(: [0-9]+ tensors: first_stage_model\.[^,]+, )"
                                                 R"([^,]+, [^,]+ and [0-9]+ more$)")))
      << line;
  // The partial warning, the source, five components, one line for the
  // 124 missing VAE tensors, and the written file.
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 9) << r.output;
}

// Weights stored inside the model stay in the memory map: the parsed model
// has no raw_data, and Data() still gives every initializer's bytes.
TEST(Rebuild, InlineWeightsAreNotCopied) {
  TempDir dir;
  ASSERT_TRUE(ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir.path()).ok());
  auto model = OnnxFile::Open((dir / "vae_decoder_tiny-sd1.onnx").string());
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(source.ok());
  ASSERT_FALSE((*model)->initializers().empty());
  for (int i = 0; i < (*model)->model().graph().initializer_size(); ++i) {
    EXPECT_FALSE((*model)->model().graph().initializer(i).has_raw_data());
  }
  for (const OnnxInitializer& init : (*model)->initializers()) {
    SCOPED_TRACE(init.name);
    EXPECT_EQ(init.storage, InitializerStorage::kRawData);
    const TensorInfo* expected = (*source)->FindStored(init.name);
    ASSERT_NE(expected, nullptr);
    const auto a = (*model)->Data(init);
    const auto b = (*source)->Data(*expected);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  }
}

}  // namespace
}  // namespace sdonnx
