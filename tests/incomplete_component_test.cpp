// Components that lack the key detection used to read them by: a text
// encoder without its token embedding, a VAE without its input convolution
// or its whole encoder. Such a component is present but incomplete, so
// verify lists the missing keys, inspect counts its tensors once, and
// convert fails naming the key. Also the advice that convert, verify and
// inspect give for EMA weights, partial rebuilds, sdonnx's own files and a
// missing SD 2.x config.
#include <gtest/gtest.h>

#include <ostream>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "inspect/checkpoint_inspect.h"
#include "inspect/onnx_inspect.h"
#include "inspect/verify.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;

// Writes tiny fixture `fixture` to `out` without the keys `drop` accepts,
// with `metadata` in place of the fixture's.
void WriteWithout(const std::string& fixture, const fs::path& out,
                  const std::function<bool(const std::string&)>& drop,
                  const std::map<std::string, std::string>& metadata = {}) {
  auto checkpoint = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*checkpoint)->tensors()) {
    if (!drop(t.name)) tensors.push_back({t.name, t.dtype, t.shape, (*checkpoint)->Data(t), {}});
  }
  ASSERT_TRUE(WriteSafetensors(out.string(), tensors, metadata).ok());
}

// Converts DIR/NAME.safetensors into DIR/onnx.
Result<ConvertReport> ConvertIn(const fs::path& dir, const std::string& name,
                                std::optional<std::string> prediction_type = std::nullopt) {
  ConvertOptions options;
  options.model_path = (dir / (name + ".safetensors")).string();
  options.output_dir = (dir / "onnx").string();
  options.prediction_type = std::move(prediction_type);
  return ConvertCheckpoint(options);
}

std::function<bool(const std::string&)> Is(const std::string& key) {
  return [key](const std::string& name) { return name == key; };
}

struct DroppedKey {
  const char* fixture;
  const char* key;        // the key left out, or a prefix ending in '.'
  const char* component;  // the verify problem expected
};

// Names the case in test listings instead of its bytes.
void PrintTo(const DroppedKey& c, std::ostream* out) { *out << c.fixture << " without " << c.key; }

class IncompleteComponent : public ::testing::TestWithParam<DroppedKey> {};

// Each key here was once the one that detection read a component by, so
// leaving it out made the component look absent or the family unknown.
TEST_P(IncompleteComponent, VerifyListsTheMissingKey) {
  const DroppedKey& param = GetParam();
  const std::string dropped = param.key;
  TempDir dir;
  const fs::path file = dir / "cut.safetensors";
  WriteWithout(param.fixture, file, [&dropped](const std::string& name) {
    return dropped.ends_with('.') ? name.starts_with(dropped) : name == dropped;
  });
  Result<VerifyReport> report = VerifyCheckpoint(file.string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_TRUE(report->summary.spec.has_value()) << report->summary.detection_error;
  EXPECT_FALSE(report->ok());
  ASSERT_EQ(report->problems.size(), 1u) << report->problems.front().what;
  const VerifyProblem& problem = report->problems.front();
  EXPECT_EQ(problem.component, param.component);
  ASSERT_FALSE(problem.missing_keys.empty()) << problem.what;
  EXPECT_TRUE(problem.missing_keys.front().starts_with(dropped)) << problem.missing_keys.front();
  EXPECT_TRUE(report->summary.extra_keys.empty()) << report->summary.extra_keys.front();
}

INSTANTIATE_TEST_SUITE_P(
    Keys, IncompleteComponent,
    ::testing::Values(
        DroppedKey{"tiny-sd1", "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                   "text_encoder"},
        DroppedKey{"tiny-sd1", "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
                   "text_encoder"},
        DroppedKey{"tiny-sdxl",
                   "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                   "text_encoder"},
        DroppedKey{"tiny-sdxl", "conditioner.embedders.1.model.token_embedding.weight",
                   "text_encoder_2"},
        DroppedKey{"tiny-sdxl", "conditioner.embedders.1.model.positional_embedding",
                   "text_encoder_2"},
        DroppedKey{"tiny-sdxl-refiner", "conditioner.embedders.0.model.token_embedding.weight",
                   "text_encoder_2"},
        DroppedKey{"tiny-sd2", "cond_stage_model.model.token_embedding.weight", "text_encoder"},
        DroppedKey{"tiny-sd2", "cond_stage_model.model.transformer.resblocks.0.ln_1.weight",
                   "text_encoder"},
        DroppedKey{"tiny-sd1", "first_stage_model.encoder.conv_in.weight", "vae"},
        DroppedKey{"tiny-sd1", "first_stage_model.encoder.", "vae"},
        DroppedKey{"tiny-sd2", "first_stage_model.post_quant_conv.weight", "vae"},
        DroppedKey{"tiny-sdxl", "first_stage_model.decoder.conv_out.weight", "vae"},
        DroppedKey{"tiny-sdxl", "first_stage_model.quant_conv.weight", "vae"},
        DroppedKey{"tiny-sd2", "model.diffusion_model.input_blocks.0.0.weight", "unet"},
        DroppedKey{"tiny-sdxl", "model.diffusion_model.out.2.weight", "unet"},
        DroppedKey{"tiny-sd2", "model.diffusion_model.input_blocks.1.0.out_layers.3.weight",
                   "unet"}));

TEST(IncompleteComponentInspect, TextEncoderIsCountedOnce) {
  TempDir dir;
  WriteWithout("tiny-sd1", dir / "cut.safetensors",
               Is("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"));
  Result<CheckpointSummary> summary = InspectCheckpoint((dir / "cut.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_TRUE(summary->extra_keys.empty());
  for (const ExpectedComponent& c : summary->expected) EXPECT_TRUE(c.present) << c.name;
}

TEST(IncompleteComponentInspect, VaeWithoutEncoderKeepsFamily) {
  TempDir dir;
  WriteWithout("tiny-sd1", dir / "cut.safetensors",
               [](const std::string& key) { return key.starts_with("first_stage_model.encoder."); });
  const testing::CommandResult verify = RunSdonnx("verify " + Quote(dir / "cut.safetensors"));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("family: sd1"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("of 124 weights missing"), std::string::npos) << verify.output;
}

// The text output names each incomplete component with the counts that the
// JSON output and verify give.
TEST(IncompleteComponentInspect, TextAndJsonCountMissingWeights) {
  TempDir dir;
  const fs::path file = dir / "cut.safetensors";
  const std::string dropped = "first_stage_model.decoder.conv_out.";
  WriteWithout("tiny-sd1", file,
               [&dropped](const std::string& key) { return key.starts_with(dropped); });

  Result<CheckpointSummary> summary = InspectCheckpoint(file.string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_EQ(summary->incomplete.size(), 1u);
  const IncompleteComponentSummary& vae = summary->incomplete.front();
  EXPECT_EQ(vae.name, "vae");
  EXPECT_EQ(vae.missing_weights, 2u);
  EXPECT_EQ(vae.missing_keys, (std::vector<std::string>{dropped + "weight", dropped + "bias"}));

  Result<VerifyReport> report = VerifyCheckpoint(file.string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_EQ(report->problems[0].missing_count, vae.missing_weights);
  const std::string counts = std::to_string(vae.missing_weights) + " of " +
                             std::to_string(vae.expected_weights) + " weights missing";
  EXPECT_NE(report->problems[0].what.find(counts), std::string::npos) << report->problems[0].what;

  const testing::CommandResult text = RunSdonnx("inspect " + Quote(file));
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("incomplete: VAE: " + counts + "\n"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("\n    " + dropped + "weight\n"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("  (incomplete)\n"), std::string::npos) << text.output;

  const testing::CommandResult json = RunSdonnx("inspect --json " + Quote(file));
  EXPECT_EQ(json.exit_code, 0) << json.output;
  const nlohmann::json parsed = nlohmann::json::parse(json.output, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << json.output;
  ASSERT_EQ(parsed["incomplete_components"].size(), 1u) << json.output;
  const nlohmann::json& entry = parsed["incomplete_components"][0];
  EXPECT_EQ(entry["name"], "vae");
  EXPECT_EQ(entry["missing_weights"], vae.missing_weights);
  EXPECT_EQ(entry["expected_weights"], vae.expected_weights);
  EXPECT_EQ(entry["missing_keys"][0], dropped + "weight");
}

TEST(IncompleteComponentInspect, CompleteFixtureHasNoIncompleteLine) {
  const testing::CommandResult text =
      RunSdonnx("inspect --no-probe " + Quote(Fixture("tiny/tiny-sdxl.safetensors")));
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_EQ(text.output.find("incomplete"), std::string::npos) << text.output;
  const testing::CommandResult json =
      RunSdonnx("inspect --json --no-probe " + Quote(Fixture("tiny/tiny-sdxl.safetensors")));
  const nlohmann::json parsed = nlohmann::json::parse(json.output, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << json.output;
  EXPECT_EQ(parsed["incomplete_components"], nlohmann::json::array());
}

// A UNet missing more weights than the text output lists shows the count
// of the rest.
TEST(IncompleteComponentInspect, LongListEndsWithCount) {
  TempDir dir;
  const fs::path file = dir / "cut.safetensors";
  WriteWithout("tiny-sd1", file, [](const std::string& key) {
    return key.starts_with("model.diffusion_model.output_blocks.2.1.");
  });
  Result<CheckpointSummary> summary = InspectCheckpoint(file.string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  ASSERT_EQ(summary->incomplete.size(), 1u);
  const IncompleteComponentSummary& unet = summary->incomplete.front();
  ASSERT_GT(unet.missing_weights, 10u);
  EXPECT_EQ(unet.missing_keys.size(), 10u);
  const testing::CommandResult text = RunSdonnx("inspect " + Quote(file));
  EXPECT_NE(text.output.find("incomplete: UNet: " + std::to_string(unet.missing_weights) + " of "),
            std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("    ... and " + std::to_string(unet.missing_weights - 10) + " more"),
            std::string::npos)
      << text.output;
}

TEST(IncompleteComponentConvert, MissingTokenEmbeddingFailsNamingIt) {
  TempDir dir;
  const std::string key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
  WriteWithout("tiny-sd1", dir / "cut.safetensors", Is(key));
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / "cut.yaml");
  Result<ConvertReport> report = ConvertIn(dir.path(), "cut");
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find(key), std::string::npos) << report.status().message();
  EXPECT_TRUE(testing::ListFiles(dir / "onnx").empty());
}

TEST(IncompleteComponentConvert, MissingUNetKeyMentionsEma) {
  TempDir dir;
  WriteWithout("tiny-sd1", dir / "cut.safetensors",
               Is("model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"));
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / "cut.yaml");
  Result<ConvertReport> report = ConvertIn(dir.path(), "cut");
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("--ema"), std::string::npos)
      << report.status().message();
}

TEST(IncompleteComponentVerify, PartialRebuildIsNamed) {
  TempDir dir;
  WriteWithout("tiny-sd1", dir / "partial.safetensors",
               [](const std::string& key) { return key.starts_with("first_stage_model."); },
               {{"sdonnx.rebuild", "partial"},
                {"sdonnx.rebuild_missing_components", "vae_encoder,vae_decoder"}});
  Result<VerifyReport> report = VerifyCheckpoint((dir / "partial.safetensors").string());
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->ok());
  EXPECT_NE(report->diagnosis.find("partial rebuild"), std::string::npos) << report->diagnosis;
  EXPECT_NE(report->diagnosis.find("vae_encoder,vae_decoder"), std::string::npos)
      << report->diagnosis;
  for (const VerifyProblem& p : report->problems) {
    EXPECT_EQ(p.advice.find("download it again"), std::string::npos) << p.advice;
  }
}

// inspect names the extras file of an export and whether rebuild can
// restore the checkpoint from the folder.
TEST(IncompleteComponentInspect, ExtrasFileAndExportFolderAreDescribed) {
  TempDir dir;
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), dir / "m.safetensors");
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / "m.yaml");
  ASSERT_TRUE(ConvertIn(dir.path(), "m").ok());

  const testing::CommandResult extras =
      RunSdonnx("inspect " + Quote(dir / "onnx" / "extras_m.safetensors"));
  EXPECT_EQ(extras.exit_code, 0) << extras.output;
  EXPECT_EQ(extras.output.find("not detected"), std::string::npos) << extras.output;
  EXPECT_NE(extras.output.find("sdonnx rebuild"), std::string::npos) << extras.output;

  Result<OnnxFolderSummary> folder = InspectOnnxFolder((dir / "onnx").string());
  ASSERT_TRUE(folder.ok()) << folder.status().message();
  EXPECT_EQ(folder->extras_file, "extras_m.safetensors");
  EXPECT_TRUE(folder->rebuild_possible) << folder->rebuild;

  fs::remove(dir / "onnx" / "vae_decoder_m.onnx");
  folder = InspectOnnxFolder((dir / "onnx").string());
  ASSERT_TRUE(folder.ok()) << folder.status().message();
  EXPECT_FALSE(folder->rebuild_possible);
  EXPECT_NE(folder->rebuild.find("vae_decoder"), std::string::npos) << folder->rebuild;
}

// The SD 2.x head count is not in the weights, so without a config the
// error asks for one.
TEST(IncompleteComponentConvert, Sd2WithoutConfigAsksForOne) {
  TempDir dir;
  fs::copy_file(Fixture("tiny/tiny-sd2.safetensors"), dir / "m.safetensors");
  Result<ConvertReport> report = ConvertIn(dir.path(), "m", "epsilon");
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("--config FILE.yaml"), std::string::npos)
      << report.status().message();
  EXPECT_NE(report.status().message().find("no config"), std::string::npos)
      << report.status().message();
}

}  // namespace
}  // namespace sdonnx
