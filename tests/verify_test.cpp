// `verify`: complete checkpoints pass, and files with missing components or
// weights fail with the messages AUTOMATIC1111 and ComfyUI show. Test files
// are written from the tiny fixtures with some tensors left out or changed.
#include <gtest/gtest.h>

#include <ostream>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <functional>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "inspect/verify.h"
#include "model/expected_keys.h"
#include "model/shape_check.h"
#include "model/synthesize.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

// Writes the tensors of `source` that `keep` accepts to `out`; `change` may
// replace a tensor's dtype and bytes.
void WriteSubset(const fs::path& source, const fs::path& out,
                 const std::function<bool(const std::string&)>& keep,
                 const std::function<void(TensorToWrite*, std::vector<std::uint8_t>*)>& change =
                     nullptr) {
  auto checkpoint = Checkpoint::Open(source.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<std::uint8_t>> owned;
  owned.reserve((*checkpoint)->tensors().size());
  for (const TensorInfo& t : (*checkpoint)->tensors()) {
    if (!keep(t.name)) continue;
    TensorToWrite w{t.name, t.dtype, t.shape, (*checkpoint)->Data(t), nullptr};
    if (change) {
      owned.emplace_back();
      change(&w, &owned.back());
      if (!owned.back().empty()) w.data = owned.back();
    }
    tensors.push_back(std::move(w));
  }
  ASSERT_TRUE(WriteSafetensors(out.string(), tensors, {}).ok());
}

VerifyReport Verify(const fs::path& path) {
  Result<VerifyReport> report = VerifyCheckpoint(path.string());
  EXPECT_TRUE(report.ok()) << report.status().message();
  return report.ok() ? std::move(report).value() : VerifyReport{};
}

const VerifyProblem* ProblemOf(const VerifyReport& report, const std::string& component) {
  for (const VerifyProblem& p : report.problems) {
    if (p.component == component) return &p;
  }
  return nullptr;
}

bool AnyMessageHas(const VerifyProblem& problem, const std::string& text) {
  return std::any_of(problem.loader_messages.begin(), problem.loader_messages.end(),
                     [&](const std::string& m) { return m.find(text) != std::string::npos; });
}

std::string Problems(const VerifyReport& report) {
  std::string out;
  for (const VerifyProblem& p : report.problems) out += p.title + ": " + p.what + "\n";
  return out;
}

class VerifyTinyFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(VerifyTinyFixture, CompleteFixturePasses) {
  const VerifyReport report = Verify(Fixture(std::string("tiny/tiny-") + GetParam() + ".safetensors"));
  EXPECT_TRUE(report.ok()) << Problems(report);
  EXPECT_TRUE(report.summary.extra_keys.empty()) << report.summary.extra_keys.front();
}

INSTANTIATE_TEST_SUITE_P(Families, VerifyTinyFixture,
                         ::testing::Values("sd1", "sd1-inpaint", "sd2", "sd2v", "sdxl",
                                           "sdxl-refiner"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(Verify, CkptFixturesPass) {
  for (const char* name : {"tiny-sd1.ckpt", "tiny-sd1-nowrap.ckpt", "tiny-sd1-legacy.ckpt"}) {
    const VerifyReport report = Verify(Fixture(std::string("ckpt/") + name));
    EXPECT_TRUE(report.ok()) << name << ": " << Problems(report);
  }
}

TEST(Verify, MaliciousCkptIsRejected) {
  Result<VerifyReport> report = VerifyCheckpoint(Fixture("ckpt/malicious-os-system.ckpt").string());
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("os.system"), std::string::npos)
      << report.status().message();
}

TEST(Verify, UNetOnlyExtractFails) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "unet.safetensors",
              [](const std::string& key) { return key.starts_with(kUNetPrefix); });
  const VerifyReport report = Verify(dir / "unet.safetensors");
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.problems.size(), 2u) << Problems(report);
  const VerifyProblem* text = ProblemOf(report, "text_encoder");
  ASSERT_NE(text, nullptr);
  EXPECT_TRUE(AnyMessageHas(*text, "Failed to load CLIPTextModel"));
  EXPECT_TRUE(AnyMessageHas(*text, "no CLIP/text encoder weights in checkpoint"));
  const VerifyProblem* vae = ProblemOf(report, "vae");
  ASSERT_NE(vae, nullptr);
  EXPECT_TRUE(AnyMessageHas(*vae, "No VAE weights detected"));
  EXPECT_NE(report.diagnosis.find("only the UNet"), std::string::npos) << report.diagnosis;
}

TEST(Verify, ProgramPrintsUNetOnlyProblems) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sdxl.safetensors"), dir / "unet.safetensors",
              [](const std::string& key) { return key.starts_with(kUNetPrefix); });
  testing::CommandResult r = testing::RunSdonnx("verify " + testing::Quote(dir / "unet.safetensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("missing: VAE: absent"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("missing: text encoder 1 (CLIP ViT-L): absent"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("missing: text encoder 2 (OpenCLIP ViT-bigG): absent"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("diagnosis: this file holds only the UNet"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("FAILED: "), std::string::npos) << r.output;
}

// Without text encoders, the SDXL base and refiner UNets are told apart by
// their label_emb input and context widths.
TEST(Verify, UNetOnlySdxlKeepsItsFamily) {
  TempDir dir;
  for (const auto& [name, family] : {std::pair{"sdxl", Family::kSDXL},
                                     std::pair{"sdxl-refiner", Family::kSDXLRefiner}}) {
    const fs::path path = dir / (std::string(name) + ".safetensors");
    WriteSubset(Fixture(std::string("tiny/tiny-") + name + ".safetensors"), path,
                [](const std::string& key) { return key.starts_with(kUNetPrefix); });
    const VerifyReport report = Verify(path);
    ASSERT_TRUE(report.summary.spec.has_value()) << name;
    EXPECT_EQ(report.summary.spec->family, family) << name;
  }
}

TEST(Verify, ComfyClipNamesFailForA1111) {
  TempDir dir;
  const std::string original = "cond_stage_model.transformer.";
  WriteSubset(
      Fixture("tiny/tiny-sd1.safetensors"), dir / "renamed.safetensors",
      [](const std::string&) { return true; },
      [&](TensorToWrite* t, std::vector<std::uint8_t>*) {
        if (t->name.starts_with(original)) {
          t->name = "clip_l.transformer." + t->name.substr(original.size());
        }
      });
  const VerifyReport report = Verify(dir / "renamed.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "text_encoder");
  EXPECT_NE(report.problems[0].what.find("stored under clip_l.transformer.text_model.*"),
            std::string::npos)
      << report.problems[0].what;
  EXPECT_TRUE(report.summary.extra_keys.empty()) << report.summary.extra_keys.front();
  ASSERT_GE(report.summary.components.size(), 4u);
  EXPECT_EQ(report.summary.components[3].name, "text_encoder");
  EXPECT_EQ(report.summary.components[3].tensors, 37u);
}

TEST(Verify, MissingTextEncoderFails) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd2.safetensors"), dir / "no-text.safetensors",
              [](const std::string& key) { return !key.starts_with("cond_stage_model."); });
  const VerifyReport report = Verify(dir / "no-text.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "text_encoder");
  EXPECT_TRUE(AnyMessageHas(report.problems[0], "clip input is invalid"));
  EXPECT_TRUE(report.diagnosis.empty());
}

TEST(Verify, MissingSecondSdxlEncoderNamesIt) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sdxl.safetensors"), dir / "one-text.safetensors",
              [](const std::string& key) { return !key.starts_with("conditioner.embedders.1."); });
  const VerifyReport report = Verify(dir / "one-text.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "text_encoder_2");
  EXPECT_TRUE(AnyMessageHas(report.problems[0], "CLIPTextModelWithProjection"));
}

TEST(Verify, MissingVaeFails) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "no-vae.safetensors",
              [](const std::string& key) { return !key.starts_with(kVaePrefix); });
  const VerifyReport report = Verify(dir / "no-vae.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "vae");
  EXPECT_TRUE(AnyMessageHas(report.problems[0], "VAE is invalid: None"));
  EXPECT_TRUE(AnyMessageHas(report.problems[0], "SD VAE"));
}

TEST(Verify, MissingUNetWeightIsListed) {
  TempDir dir;
  const std::string dropped = "model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "cut.safetensors",
              [&](const std::string& key) { return key != dropped; });
  const VerifyReport report = Verify(dir / "cut.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "unet");
  EXPECT_EQ(report.problems[0].missing_count, 1u);
  EXPECT_EQ(report.problems[0].missing_keys, std::vector<std::string>{dropped});
}

TEST(Verify, MissingTextLayerOfClipFails) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "cut.safetensors",
              [](const std::string& key) { return key.find("encoder.layers.1.mlp") == std::string::npos; });
  const VerifyReport report = Verify(dir / "cut.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "text_encoder");
  EXPECT_EQ(report.problems[0].missing_count, 4u);
}

TEST(Verify, NoUNetFailsWithComfyMessage) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "vae.safetensors",
              [](const std::string& key) { return key.starts_with(kVaePrefix); });
  const VerifyReport report = Verify(dir / "vae.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "unet");
  EXPECT_TRUE(AnyMessageHas(report.problems[0], "Could not detect model type"));
  // The file is the VAE alone, so the advice names how to use one.
  EXPECT_NE(report.problems[0].what.find("standalone VAE"), std::string::npos)
      << report.problems[0].what;
  EXPECT_NE(report.problems[0].advice.find("--vae"), std::string::npos)
      << report.problems[0].advice;
}

TEST(Verify, VaeWithoutOutputConvNamesVae) {
  TempDir dir;
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "cut.safetensors",
              [](const std::string& key) {
                return !key.starts_with("first_stage_model.decoder.conv_out.");
              });
  const VerifyReport report = Verify(dir / "cut.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "vae");
  EXPECT_NE(report.problems[0].what.find("decoder.conv_out.weight"), std::string::npos)
      << report.problems[0].what;
}

TEST(Verify, VaeMissingNormListsIt) {
  TempDir dir;
  const std::string dropped = "first_stage_model.encoder.down.1.block.0.norm1.bias";
  WriteSubset(Fixture("tiny/tiny-sd1.safetensors"), dir / "cut.safetensors",
              [&](const std::string& key) { return key != dropped; });
  const VerifyReport report = Verify(dir / "cut.safetensors");
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_EQ(report.problems[0].component, "vae");
  EXPECT_EQ(report.problems[0].missing_keys, std::vector<std::string>{dropped});
}

TEST(Verify, FloatPositionIdsPassWithWarning) {
  TempDir dir;
  WriteSubset(
      Fixture("tiny/tiny-sd1.safetensors"), dir / "float-ids.safetensors",
      [](const std::string&) { return true; },
      [](TensorToWrite* t, std::vector<std::uint8_t>* bytes) {
        if (!t->name.ends_with("position_ids")) return;
        const std::int64_t n = t->shape.back();
        bytes->resize(4 * n);
        for (std::int64_t i = 0; i < n; ++i) {
          // 75.99999 for the last position, as some merges store it.
          const float v = i + 1 == n ? static_cast<float>(i) - 0.00001f : static_cast<float>(i);
          std::memcpy(bytes->data() + 4 * i, &v, 4);
        }
        t->dtype = DType::kF32;
      });
  const VerifyReport report = Verify(dir / "float-ids.safetensors");
  EXPECT_TRUE(report.ok()) << Problems(report);
  ASSERT_EQ(report.warnings.size(), 2u);
  EXPECT_NE(report.warnings[0].find("is F32 instead of I64"), std::string::npos);
  EXPECT_NE(report.warnings[1].find("at index 76"), std::string::npos) << report.warnings[1];
}

TEST(Verify, Sd2PrunedTextLayerOnlyWarns) {
  TempDir dir;
  // The config beside the file states the full layer count (2).
  fs::copy_file(Fixture("tiny/tiny-sd2.yaml"), dir / "pruned.yaml");
  WriteSubset(Fixture("tiny/tiny-sd2.safetensors"), dir / "pruned.safetensors",
              [](const std::string& key) {
                return key.find("transformer.resblocks.1.") == std::string::npos;
              });
  const VerifyReport report = Verify(dir / "pruned.safetensors");
  EXPECT_TRUE(report.ok()) << Problems(report);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("resblocks.1.*) is absent"), std::string::npos)
      << report.warnings[0];
}

TEST(Verify, TrailingBytesPassWithWarning) {
  TempDir dir;
  const fs::path path = dir / "trailing.safetensors";
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), path);
  fs::resize_file(path, fs::file_size(path) + 100);
  const VerifyReport report = Verify(path);
  EXPECT_TRUE(report.ok()) << Problems(report);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("100 trailing bytes"), std::string::npos) << report.warnings[0];
}

TEST(Verify, ExtraKeysPassWithWarning) {
  TempDir dir;
  const fs::path path = dir / "extra.safetensors";
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*checkpoint)->tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape, (*checkpoint)->Data(t), nullptr});
  }
  tensors.push_back({"cond_stage_model.transformer.vision_model.post_layernorm.weight",
                     DType::kF32, {4}, {}, nullptr});
  ASSERT_TRUE(WriteSafetensors(path.string(), tensors, {}).ok());
  const VerifyReport report = Verify(path);
  EXPECT_TRUE(report.ok()) << Problems(report);
  EXPECT_EQ(report.summary.extra_keys,
            std::vector<std::string>{"cond_stage_model.transformer.vision_model.post_layernorm.weight"});
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("belong to no component"), std::string::npos);
}

// Copies tiny fixture `fixture` to `out` with tensor `key` replaced by
// zeros of `dtype` and the same shape.
void WriteWithDType(const std::string& fixture, const fs::path& out, const std::string& key,
                    DType dtype) {
  WriteSubset(
      Fixture("tiny/" + fixture + ".safetensors"), out, [](const std::string&) { return true; },
      [&](TensorToWrite* t, std::vector<std::uint8_t>* bytes) {
        if (t->name != key) return;
        std::size_t elements = 1;
        for (std::int64_t d : t->shape) elements *= static_cast<std::size_t>(d);
        bytes->assign(elements * DTypeSize(dtype), 0);
        t->dtype = dtype;
      });
}

struct DTypeCase {
  const char* name;
  const char* fixture;
  const char* key;
  DType dtype;
  const char* component;
};

void PrintTo(const DTypeCase& c, std::ostream* out) { *out << c.name; }

class VerifyWrongDType : public ::testing::TestWithParam<DTypeCase> {};

// PyTorch converts integer and boolean tensors when it loads them, so such
// a file loads. verify must still fail it and name the tensor and its dtype.
TEST_P(VerifyWrongDType, ReportsTheTensor) {
  const DTypeCase& c = GetParam();
  TempDir dir;
  const std::string key = c.key;
  WriteWithDType(c.fixture, dir / "model.safetensors", key, c.dtype);
  const VerifyReport report = Verify(dir / "model.safetensors");
  EXPECT_FALSE(report.ok());
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  const VerifyProblem& problem = report.problems.front();
  EXPECT_EQ(problem.component, c.component);
  EXPECT_EQ(problem.wrong_dtype_count, 1u);
  ASSERT_EQ(problem.wrong_dtypes.size(), 1u);
  EXPECT_EQ(problem.wrong_dtypes[0].key, key);
  EXPECT_EQ(problem.wrong_dtypes[0].found, c.dtype);
  const std::string expected_what = "'" + key + "' is " + std::string(DTypeName(c.dtype)) +
                                    " instead of F32, F16 or BF16";
  EXPECT_NE(problem.what.find(expected_what), std::string::npos) << problem.what;
  EXPECT_EQ(problem.missing_count, 0u);
  EXPECT_EQ(problem.wrong_shape_count, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Catalogue, VerifyWrongDType,
    ::testing::Values(
        DTypeCase{"UNetConvI64", "tiny-sd1",
                  "model.diffusion_model.input_blocks.1.0.in_layers.2.weight", DType::kI64,
                  "unet"},
        DTypeCase{"UNetOutputConvU8", "tiny-sdxl", "model.diffusion_model.out.2.weight",
                  DType::kU8, "unet"},
        DTypeCase{"VaeBiasBool", "tiny-sd2", "first_stage_model.decoder.mid.block_1.conv1.bias",
                  DType::kBool, "vae"},
        DTypeCase{"ClipNormI32", "tiny-sd1",
                  "cond_stage_model.transformer.text_model.final_layer_norm.weight", DType::kI32,
                  "text_encoder"},
        DTypeCase{"OpenClipLayerI8", "tiny-sdxl",
                  "conditioner.embedders.1.model.transformer.resblocks.0.ln_1.weight",
                  DType::kI8, "text_encoder_2"},
        DTypeCase{"TokenEmbeddingI16", "tiny-sd2", "cond_stage_model.model.token_embedding.weight",
                  DType::kI16, "text_encoder"}),
    [](const ::testing::TestParamInfo<DTypeCase>& info) { return std::string(info.param.name); });

TEST(VerifyDType, MixedFloatDTypesPass) {
  TempDir dir;
  const std::string key = "model.diffusion_model.out.2.weight";
  WriteWithDType("tiny-sd1", dir / "bf16.safetensors", key, DType::kBF16);
  const VerifyReport report = Verify(dir / "bf16.safetensors");
  EXPECT_TRUE(report.ok()) << Problems(report);
  EXPECT_TRUE(report.warnings.empty()) << report.warnings.front();
}

TEST(VerifyDType, F64WeightsPassWithWarning) {
  TempDir dir;
  const std::string key = "first_stage_model.decoder.conv_out.weight";
  WriteWithDType("tiny-sd1", dir / "f64.safetensors", key, DType::kF64);
  const VerifyReport report = Verify(dir / "f64.safetensors");
  EXPECT_TRUE(report.ok()) << Problems(report);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("VAE: 1 of "), std::string::npos) << report.warnings[0];
  EXPECT_NE(report.warnings[0].find("weights are F64 (first: '" + key + "')"), std::string::npos)
      << report.warnings[0];
}

// position_ids is an int64 buffer in real files, not a weight.
TEST(VerifyDType, IntegerPositionIdsPass) {
  const VerifyReport report = Verify(Fixture("tiny/tiny-sdxl.safetensors"));
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sdxl.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  const TensorInfo* ids = (*checkpoint)->Find(
      "conditioner.embedders.0.transformer.text_model.embeddings.position_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, DType::kI64);
  EXPECT_TRUE(report.ok()) << Problems(report);
}

TEST(VerifyDType, ProgramPrintsWrongDType) {
  TempDir dir;
  const std::string key = "first_stage_model.encoder.conv_in.weight";
  WriteWithDType("tiny-sd1", dir / "int.safetensors", key, DType::kI64);
  const testing::CommandResult text =
      testing::RunSdonnx("verify " + testing::Quote(dir / "int.safetensors"));
  EXPECT_EQ(text.exit_code, 1) << text.output;
  EXPECT_NE(text.output.find("wrong dtype: VAE: 1 of "), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("    " + key + ": I64 instead of F32, F16 or BF16"),
            std::string::npos)
      << text.output;

  const testing::CommandResult json =
      testing::RunSdonnx("verify --json " + testing::Quote(dir / "int.safetensors"));
  EXPECT_EQ(json.exit_code, 1) << json.output;
  const nlohmann::json parsed = nlohmann::json::parse(json.output, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << json.output;
  ASSERT_EQ(parsed["problems"].size(), 1u) << json.output;
  const nlohmann::json& problem = parsed["problems"][0];
  EXPECT_EQ(problem["component"], "vae");
  EXPECT_EQ(problem["wrong_dtype_count"], 1);
  ASSERT_EQ(problem["wrong_dtypes"].size(), 1u);
  EXPECT_EQ(problem["wrong_dtypes"][0]["key"], key);
  EXPECT_EQ(problem["wrong_dtypes"][0]["found"], "I64");
  EXPECT_EQ(problem["wrong_dtypes"][0]["expected"],
            (std::vector<std::string>{"F32", "F16", "BF16"}));
}

// sdonnx reads no float8 tensor, so verify stops with an error that names
// the tensor and its dtype instead of passing the file.
TEST(VerifyDType, Float8FileFailsNamingTheTensor) {
  TempDir dir;
  const std::string key = "model.diffusion_model.out.2.weight";
  WriteWithDType("tiny-sd1", dir / "u8.safetensors", key, DType::kU8);
  // Relabels the U8 tensor as float8, which has the same element size.
  std::ifstream in(dir / "u8.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  header[key]["dtype"] = "F8_E4M3";
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t new_size = text.size();
  std::memcpy(out.data(), &new_size, 8);
  out += text + bytes.substr(8 + header_size);
  testing::WriteBytes(dir / "f8.safetensors", out);

  Result<VerifyReport> report = VerifyCheckpoint((dir / "f8.safetensors").string());
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_NE(message.find("'" + key + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("F8_E4M3"), std::string::npos) << message;
  EXPECT_NE(message.find("float8"), std::string::npos) << message;
  const testing::CommandResult program =
      testing::RunSdonnx("verify " + testing::Quote(dir / "f8.safetensors"));
  EXPECT_EQ(program.exit_code, 1) << program.output;
  EXPECT_EQ(program.output.find("OK: "), std::string::npos) << program.output;
}

// The key sets and shapes derived from the hyperparameters are exactly the
// real full-size layouts: every weight of a manifest is expected with its
// shape, every expected key is in the manifest, and the rest are known
// optional keys.
class ExpectedKeysManifest : public ::testing::TestWithParam<const char*> {};

TEST_P(ExpectedKeysManifest, MatchesTheRealLayout) {
  TempDir dir;
  auto tensors = ReadManifest(Fixture(std::string("manifests/") + GetParam() + ".tsv").string());
  ASSERT_TRUE(tensors.ok()) << tensors.status().message();
  const fs::path path = dir / "model.safetensors";
  ASSERT_TRUE(WriteSyntheticCheckpoint(path.string(), *tensors, FillMode::kZeros, 0).ok());
  auto checkpoint = Checkpoint::Open(path.string());
  ASSERT_TRUE(checkpoint.ok());
  auto spec = DetectModel(**checkpoint, std::nullopt);
  ASSERT_TRUE(spec.ok()) << spec.status().message();

  std::map<std::string, std::vector<std::int64_t>> expected;
  for (const ExpectedComponent& c : ExpectedComponents(**checkpoint, *spec)) {
    EXPECT_TRUE(c.present) << c.name;
    ASSERT_EQ(c.shapes.size(), c.required.size()) << c.name;
    for (std::size_t i = 0; i < c.required.size(); ++i) {
      EXPECT_TRUE(expected.emplace(c.required[i], c.shapes[i]).second) << c.required[i];
    }
  }
  std::set<std::string> in_manifest;
  for (const TensorSpec& t : *tensors) {
    in_manifest.insert(t.name);
    if (expected.contains(t.name)) {
      EXPECT_EQ(ShapeText(expected[t.name]), ShapeText(t.shape)) << "shape of " << t.name;
    }
    if (!expected.contains(t.name)) {
      EXPECT_TRUE(IsKnownOptionalKey(t.name, spec->family)) << "unexplained: " << t.name;
    }
  }
  for (const auto& [key, shape] : expected) EXPECT_TRUE(in_manifest.contains(key)) << key;
}

INSTANTIATE_TEST_SUITE_P(Layouts, ExpectedKeysManifest,
                         ::testing::Values("sd15", "sd15-inpaint", "sd21", "sdxl-base",
                                           "sdxl-refiner"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace sdonnx
