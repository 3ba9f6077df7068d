// Real-world key variations of single-file checkpoints, each made from a
// tiny fixture by renaming, dropping or rewriting keys.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <regex>
#include <tuple>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "inspect/checkpoint_inspect.h"
#include "inspect/verify.h"
#include "model/model_spec.h"
#include "runtime/ort_session.h"
#include "test_support.h"
#include "util/log.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;

constexpr double kTolerance = 1e-4;

// Returns the new name of a key, or nullopt to drop it.
using KeyEdit = std::function<std::optional<std::string>(const std::string&)>;

// Writes `fixture` with `edit` applied to every key into `dir`, with the
// fixture's YAML beside it, and returns the new checkpoint's path.
fs::path Rewrite(const fs::path& dir, const std::string& fixture, const KeyEdit& edit,
                 const std::map<std::string, TensorToWrite>& replacements = {}) {
  auto source = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  if (!source.ok()) throw std::runtime_error(source.status().message());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*source)->tensors()) {
    auto replaced = replacements.find(t.name);
    if (replaced != replacements.end()) {
      tensors.push_back(replaced->second);
      continue;
    }
    std::optional<std::string> name = edit(t.name);
    if (name) tensors.push_back({*name, t.dtype, t.shape, (*source)->Data(t), {}});
  }
  const fs::path path = dir / "model.safetensors";
  Status written = WriteSafetensors(path.string(), tensors, {});
  if (!written.ok()) throw std::runtime_error(written.message());
  fs::copy_file(Fixture("tiny/" + fixture + ".yaml"), dir / "model.yaml");
  return path;
}

Result<ConvertReport> Convert(const fs::path& model, const fs::path& out, bool ema = false,
                              const std::optional<fs::path>& vae = std::nullopt) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  options.ema = ema;
  if (vae) options.vae_path = vae->string();
  return ConvertCheckpoint(options);
}

std::optional<std::string> DropVae(const std::string& key) {
  return key.starts_with("first_stage_model.") ? std::nullopt : std::optional<std::string>(key);
}

HostTensor RunUNet(const fs::path& file, const std::string& fixture) {
  const auto reference = Fixture("tiny/" + fixture + ".reference.safetensors");
  auto model = OrtModel::Load(file.string());
  if (!model.ok()) throw std::runtime_error(model.status().message());
  auto out = (*model)->Run({{"sample", ReadTensor(reference, "unet.sample")},
                            {"timestep", ReadTensor(reference, "unet.timestep")},
                            {"encoder_hidden_states", ReadTensor(reference, "unet.context")}});
  if (!out.ok()) throw std::runtime_error(out.status().message());
  return (*out)["out_sample"];
}

const auto kReference = [] { return Fixture("tiny/tiny-sd1.reference.safetensors"); };

TEST(KeyVariations, EmaFlagConvertsTheEmaWeights) {
  TempDir dir;
  Result<ConvertReport> report =
      Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", /*ema=*/true);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->spec.ema_unet);
  const fs::path unet = dir / "onnx" / "unet_tiny-sd1.onnx";
  EXPECT_LE(MaxAbsDiff(RunUNet(unet, "tiny-sd1"), ReadTensor(kReference(), "unet_ema.out")),
            kTolerance);
  auto model = OrtModel::Load(unet.string());
  ASSERT_TRUE(model.ok());
  EXPECT_EQ((*model)->Metadata()["sdonnx.unet_weights"], "ema");
}

TEST(KeyVariations, EmaOnlyFileUsesEmaWithoutTheFlag) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", [](const std::string& key) {
    return key.starts_with("model.diffusion_model.") ? std::nullopt
                                                     : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->spec.ema_unet);
  EXPECT_LE(MaxAbsDiff(RunUNet(dir / "onnx" / "unet_model.onnx", "tiny-sd1"),
                       ReadTensor(kReference(), "unet_ema.out")),
            kTolerance);
}

TEST(KeyVariations, EmaFlagWithoutEmaWeightsIsRejected) {
  TempDir dir;
  Result<ConvertReport> report =
      Convert(Fixture("tiny/tiny-sd1-inpaint.safetensors"), dir / "onnx", /*ema=*/true);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("no EMA UNet weights"), std::string::npos)
      << report.status().message();
}

TEST(KeyVariations, MainWeightsAreTheDefault) {
  TempDir dir;
  Result<ConvertReport> report = Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->spec.ema_unet);
  EXPECT_LE(MaxAbsDiff(RunUNet(dir / "onnx" / "unet_tiny-sd1.onnx", "tiny-sd1"),
                       ReadTensor(kReference(), "unet.out")),
            kTolerance);
}

TEST(KeyVariations, TextEncoderWithoutTextModelLevelConverts) {
  TempDir dir;
  const std::string from = "cond_stage_model.transformer.text_model.";
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", [&](const std::string& key) {
    if (!key.starts_with(from)) return std::optional<std::string>(key);
    return std::optional<std::string>("cond_stage_model.transformer." + key.substr(from.size()));
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  auto text = OrtModel::Load((dir / "onnx" / "clip_text_model.onnx").string());
  ASSERT_TRUE(text.ok()) << text.status().message();
  auto out = (*text)->Run({{"input_ids", ReadTensor(kReference(), "text.input_ids")}});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_LE(MaxAbsDiff((*out)["last_hidden_state"], ReadTensor(kReference(), "text.last_hidden_state")),
            kTolerance);
}

// Runs clip_text of `onnx_dir` on the reference input of `fixture`'s text
// encoder `reference` ("text" or "text0") and returns the max abs error.
double ClipTextError(const fs::path& file, const std::string& fixture,
                     const std::string& reference) {
  const fs::path expected = Fixture("tiny/" + fixture + ".reference.safetensors");
  auto text = OrtModel::Load(file.string());
  if (!text.ok()) throw std::runtime_error(text.status().message());
  auto out = (*text)->Run({{"input_ids", ReadTensor(expected, reference + ".input_ids")}});
  if (!out.ok()) throw std::runtime_error(out.status().message());
  return MaxAbsDiff((*out)["last_hidden_state"],
                    ReadTensor(expected, reference + ".last_hidden_state"));
}

KeyEdit MovePrefix(const std::string& from, const std::string& to) {
  return [from, to](const std::string& key) {
    if (!key.starts_with(from)) return std::optional<std::string>(key);
    return std::optional<std::string>(to + key.substr(from.size()));
  };
}

bool HasNote(const ModelSpec& spec, const std::string& part) {
  for (const std::string& note : spec.notes) {
    if (note.find(part) != std::string::npos) return true;
  }
  return false;
}

class OtherClipLayouts : public ::testing::TestWithParam<std::string> {};

TEST_P(OtherClipLayouts, Sd1TextEncoderConverts) {
  TempDir dir;
  const fs::path model = Rewrite(
      dir.path(), "tiny-sd1", MovePrefix("cond_stage_model.transformer.text_model.", GetParam()));
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->spec.family, Family::kSD1);
  EXPECT_TRUE(HasNote(report->spec, GetParam().substr(0, GetParam().find('.') + 1)));
  EXPECT_LE(ClipTextError(dir / "onnx" / "clip_text_model.onnx", "tiny-sd1", "text"), kTolerance);
}

TEST_P(OtherClipLayouts, SdxlFirstTextEncoderConverts) {
  TempDir dir;
  const fs::path model =
      Rewrite(dir.path(), "tiny-sdxl",
              MovePrefix("conditioner.embedders.0.transformer.text_model.", GetParam()));
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->spec.family, Family::kSDXL);
  EXPECT_EQ(report->spec.text_context_output, "hidden_states." + std::to_string(report->spec.text->layers - 1));
  EXPECT_LE(ClipTextError(dir / "onnx" / "clip_text_model.onnx", "tiny-sdxl", "text0"),
            kTolerance);
}

INSTANTIATE_TEST_SUITE_P(KeyVariations, OtherClipLayouts,
                         ::testing::Values("cond_stage_model.clip_l.transformer.text_model.",
                                           "clip_l.transformer.text_model.",
                                           "text_encoder.text_model."),
                         [](const auto& info) {
                           std::string name = info.param;
                           name = name.substr(0, name.find(".text_model"));
                           for (char& c : name) {
                             if (c == '.') c = '_';
                           }
                           return name;
                         });

TEST(KeyVariations, HuggingFaceLayoutBigGIsNamedAsUnsupported) {
  TempDir dir;
  const fs::path model =
      Rewrite(dir.path(), "tiny-sdxl",
              MovePrefix("conditioner.embedders.1.model.", "clip_g.transformer.text_model."));
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(HasNote(report->spec, "clip_g.transformer.text_model.* in the Hugging Face layout"));
  EXPECT_FALSE(fs::exists(dir / "onnx" / "clip_text_2_model.onnx"));
}

// tiny-sd1.yaml, like ldm's v1 configs, does not state a parameterization,
// so the file's own marker decides.
TEST(KeyVariations, MarkerKeyWinsOverConfigThatIsSilent) {
  TempDir dir;
  const float empty = 0.0f;
  TensorToWrite marker{"v_pred", DType::kF32, {}, {reinterpret_cast<const std::uint8_t*>(&empty), 4}, {}};
  const fs::path model = Rewrite(
      dir.path(), "tiny-sd1", [](const std::string& k) { return std::optional<std::string>(k); },
      {{"betas", marker}});
  auto checkpoint = Checkpoint::Open(model.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  Result<ModelSpec> spec = DetectModel(**checkpoint, std::nullopt);
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  ASSERT_TRUE(spec->config_path.has_value());
  EXPECT_EQ(spec->prediction_type, "v_prediction");
  EXPECT_EQ(spec->prediction_basis, "marker key v_pred");
}

TEST(KeyVariations, MissingPositionIdsAndScheduleBuffersAreFine) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", [](const std::string& key) {
    const bool buffer = key.find('.') == std::string::npos || key.ends_with("position_ids");
    return buffer ? std::nullopt : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(testing::ListFiles(dir / "onnx").size(), 5u);
}

TEST(KeyVariations, FloatPositionIdsWarnAndAreIgnored) {
  TempDir dir;
  const std::string key = "cond_stage_model.transformer.text_model.embeddings.position_ids";
  std::vector<float> positions(77);
  for (std::size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<float>(i) + 0.25f;
  TensorToWrite replacement{key, DType::kF32, {1, 77},
                            {reinterpret_cast<const std::uint8_t*>(positions.data()),
                             positions.size() * 4},
                            {}};
  const fs::path model = Rewrite(
      dir.path(), "tiny-sd1", [](const std::string& k) { return std::optional<std::string>(k); },
      {{key, replacement}});
  std::vector<std::string> warnings;
  LogSink previous = SetLogSink([&warnings](LogLevel level, const std::string& message) {
    if (level == LogLevel::kWarning) warnings.push_back(message);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  SetLogSink(previous);
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("off by up to 0.25"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("ignored"), std::string::npos) << warnings[0];
}

TEST(KeyVariations, CheckpointWithoutVaeConvertsTheRest) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", DropVae);
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(testing::ListFiles(dir / "onnx"),
            (std::vector<std::string>{"clip_text_model.onnx", "extras_model.safetensors",
                                      "unet_model.onnx"}));
  bool noted = false;
  for (const std::string& note : report->spec.notes) noted = noted || note.starts_with("no VAE");
  EXPECT_TRUE(noted);
}

// Writes the VAE of tiny-sd1 alone to `path`, in the original naming
// without the first_stage_model. prefix.
// Writes tiny-sd1's VAE in the original naming, plus the first `stray`
// tensors of its UNet under their checkpoint keys.
void WriteTinyVae(const fs::path& path, std::size_t stray = 0) {
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(source.ok());
  std::vector<TensorToWrite> vae;
  const std::string prefix = "first_stage_model.";
  for (const TensorInfo& t : (*source)->tensors()) {
    if (t.name.starts_with(prefix)) {
      vae.push_back({t.name.substr(prefix.size()), t.dtype, t.shape, (*source)->Data(t), {}});
    } else if (stray > 0 && t.name.starts_with("model.diffusion_model.")) {
      vae.push_back({t.name, t.dtype, t.shape, (*source)->Data(t), {}});
      --stray;
    }
  }
  ASSERT_TRUE(WriteSafetensors(path.string(), vae, {}).ok());
}

TEST(KeyVariations, SeparateVaeFileIsNamedByInspect) {
  TempDir dir;
  WriteTinyVae(dir / "my.vae.safetensors");
  Result<CheckpointSummary> summary = InspectCheckpoint((dir / "my.vae.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->file_kind, "vae");
  EXPECT_NE(summary->file_description.find("the original naming"), std::string::npos)
      << summary->file_description;
  EXPECT_NE(summary->file_advice.find("--vae"), std::string::npos) << summary->file_advice;
  ASSERT_EQ(summary->components.size(), 1u);
  EXPECT_EQ(summary->components[0].name, "vae");
}

// A VAE file with a few keys of another network is still named a VAE, and
// the description names the keys that convert --vae ignores. A file with
// more such keys is reported as a damaged checkpoint.
TEST(KeyVariations, VaeWithStrayKeysIsNamedByInspect) {
  TempDir dir;
  WriteTinyVae(dir / "stray.safetensors", 3);
  Result<CheckpointSummary> summary = InspectCheckpoint((dir / "stray.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->file_kind, "vae");
  EXPECT_NE(summary->file_description.find("no complete UNet"), std::string::npos)
      << summary->file_description;
  EXPECT_NE(summary->file_description.find("it also holds 3 other tensors (first: "
                                           "'model.diffusion_model."),
            std::string::npos)
      << summary->file_description;

  // From four stray keys on, the UNet's input convolution and part of a
  // residual block are enough for model detection, which is then dropped.
  for (const std::size_t stray : {4u, 6u, 12u}) {
    SCOPED_TRACE(stray);
    const fs::path file = dir / ("stray-" + std::to_string(stray) + ".safetensors");
    WriteTinyVae(file, stray);
    summary = InspectCheckpoint(file.string());
    ASSERT_TRUE(summary.ok()) << summary.status().message();
    EXPECT_EQ(summary->file_kind, "vae");
    EXPECT_FALSE(summary->spec.has_value());
    EXPECT_NE(summary->detection_error.find("too few for a UNet"), std::string::npos)
        << summary->detection_error;
    Result<VerifyReport> report = VerifyCheckpoint(file.string());
    ASSERT_TRUE(report.ok()) << report.status().message();
    for (const VerifyProblem& problem : report->problems) {
      EXPECT_EQ(problem.what.find("VAE: absent"), std::string::npos) << problem.what;
    }
  }

  WriteTinyVae(dir / "half.safetensors", 100);
  summary = InspectCheckpoint((dir / "half.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->file_kind, "");
}

TEST(KeyVariations, WholeCheckpointAsVaeNamesWhatIsIgnored) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", DropVae);
  testing::WarningLog warnings;
  Result<ConvertReport> report =
      Convert(model, dir / "onnx", false, Fixture("tiny/tiny-sd1.safetensors"));
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_NE(warnings.text().find("tensors outside the VAE are ignored (first: '"),
            std::string::npos)
      << warnings.text();
}

TEST(KeyVariations, SeparateVaeFileIsUsed) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", DropVae);
  WriteTinyVae(dir / "my.vae.safetensors");

  Result<ConvertReport> report = Convert(model, dir / "onnx", false, dir / "my.vae.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  auto decoder = OrtModel::Load((dir / "onnx" / "vae_decoder_model.onnx").string());
  ASSERT_TRUE(decoder.ok()) << decoder.status().message();
  auto out = (*decoder)->Run({{"latent_sample", ReadTensor(kReference(), "vae_decoder.latent")}});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_LE(MaxAbsDiff((*out)["sample"], ReadTensor(kReference(), "vae_decoder.image")), kTolerance);
  EXPECT_EQ((*decoder)->Metadata()["sdonnx.weights_file"], "my.vae.safetensors");
}

// diffusers' name for an original ldm VAE key, written out here
// independently of the converter's own mapping. `levels` is the number of
// resolution levels (the decoder's are numbered the other way round).
std::string DiffusersVaeName(const std::string& key, int levels) {
  std::smatch m;
  auto block = [](std::string part) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"nin_shortcut.", "conv_shortcut."}, {"norm.", "group_norm."}, {"q.", "to_q."},
             {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}}) {
      if (part.starts_with(from)) return to + part.substr(from.size());
    }
    return part;
  };
  if (std::regex_match(key, m, std::regex(R"(encoder\.down\.(\d+)\.block\.(\d+)\.(.*))"))) {
    return "encoder.down_blocks." + m[1].str() + ".resnets." + m[2].str() + "." + block(m[3]);
  }
  if (std::regex_match(key, m, std::regex(R"(encoder\.down\.(\d+)\.downsample\.(.*))"))) {
    return "encoder.down_blocks." + m[1].str() + ".downsamplers.0." + m[2].str();
  }
  if (std::regex_match(key, m, std::regex(R"(decoder\.up\.(\d+)\.block\.(\d+)\.(.*))"))) {
    return "decoder.up_blocks." + std::to_string(levels - 1 - std::stoi(m[1])) + ".resnets." +
           m[2].str() + "." + block(m[3]);
  }
  if (std::regex_match(key, m, std::regex(R"(decoder\.up\.(\d+)\.upsample\.(.*))"))) {
    return "decoder.up_blocks." + std::to_string(levels - 1 - std::stoi(m[1])) +
           ".upsamplers.0." + m[2].str();
  }
  if (std::regex_match(key, m, std::regex(R"((encoder|decoder)\.mid\.block_(\d)\.(.*))"))) {
    return m[1].str() + ".mid_block.resnets." + std::to_string(std::stoi(m[2]) - 1) + "." +
           block(m[3]);
  }
  if (std::regex_match(key, m, std::regex(R"((encoder|decoder)\.mid\.attn_1\.(.*))"))) {
    return m[1].str() + ".mid_block.attentions.0." + block(m[2]);
  }
  if (std::regex_match(key, m, std::regex(R"((encoder|decoder)\.norm_out\.(.*))"))) {
    return m[1].str() + ".conv_norm_out." + m[2].str();
  }
  return key;
}

TEST(KeyVariations, DiffusersNamedVaeIsUsed) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", DropVae);
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(source.ok());
  std::vector<TensorToWrite> vae;
  const std::string prefix = "first_stage_model.";
  for (const TensorInfo& t : (*source)->tensors()) {
    if (!t.name.starts_with(prefix)) continue;
    const std::string original = t.name.substr(prefix.size());
    std::vector<std::int64_t> shape = t.shape;
    // diffusers stores the attention projections as Linear weights.
    if (original.find(".mid.attn_1.") != std::string::npos && shape.size() == 4) {
      shape = {shape[0], shape[1]};
    }
    vae.push_back({DiffusersVaeName(original, 2), t.dtype, shape, (*source)->Data(t), {}});
  }
  ASSERT_TRUE(WriteSafetensors((dir / "diffusers.safetensors").string(), vae, {}).ok());

  Result<ConvertReport> report = Convert(model, dir / "onnx", false, dir / "diffusers.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  for (const auto& [component, input, output, image] :
       {std::tuple{"vae_decoder", "latent_sample", "sample", "vae_decoder"},
        std::tuple{"vae_encoder", "sample", "latent_parameters", "vae_encoder"}}) {
    SCOPED_TRACE(component);
    auto vae_model =
        OrtModel::Load((dir / "onnx" / (std::string(component) + "_model.onnx")).string());
    ASSERT_TRUE(vae_model.ok()) << vae_model.status().message();
    const std::string in = std::string(image) + (std::string(component) == "vae_decoder"
                                                     ? ".latent"
                                                     : ".image");
    const std::string out = std::string(image) + (std::string(component) == "vae_decoder"
                                                      ? ".image"
                                                      : ".moments");
    auto result = (*vae_model)->Run({{input, ReadTensor(kReference(), in)}});
    ASSERT_TRUE(result.ok()) << result.status().message();
    EXPECT_LE(MaxAbsDiff((*result)[output], ReadTensor(kReference(), out)), kTolerance);
  }

  // inspect names the file's naming, and counts every key as the VAE's.
  Result<CheckpointSummary> summary = InspectCheckpoint((dir / "diffusers.safetensors").string());
  ASSERT_TRUE(summary.ok()) << summary.status().message();
  EXPECT_EQ(summary->file_kind, "vae");
  EXPECT_NE(summary->file_description.find("diffusers' naming"), std::string::npos)
      << summary->file_description;
  ASSERT_EQ(summary->components.size(), 1u);
  EXPECT_EQ(summary->components[0].name, "vae");
  EXPECT_EQ(summary->components[0].tensors, vae.size());
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// SD 2.x never uses the text encoder's last layer, and some files leave it
// out; the UNet's context must stay ln_final of the architecture's
// penultimate layer, which is then the last layer in the file.
TEST(KeyVariations, Sd2WithoutUnusedLastTextLayerKeepsItsContext) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd2", [](const std::string& key) {
    return key.starts_with("cond_stage_model.model.transformer.resblocks.1.")
               ? std::nullopt
               : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->spec.text_context_output, "last_hidden_state");
  const auto reference = Fixture("tiny/tiny-sd2.reference.safetensors");
  auto text = OrtModel::Load((dir / "onnx" / "clip_text_model.onnx").string());
  ASSERT_TRUE(text.ok()) << text.status().message();
  auto out = (*text)->Run({{"input_ids", ReadTensor(reference, "text.input_ids")}});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_LE(MaxAbsDiff((*out)["last_hidden_state"], ReadTensor(reference, "text.context")),
            kTolerance);
}

TEST(KeyVariations, Sd2WithoutTextProjectionConverts) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd2", [](const std::string& key) {
    return key == "cond_stage_model.model.text_projection" ? std::nullopt
                                                            : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->spec.open_clip->has_projection);
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

TEST(KeyVariations, MissingTransformerTensorIsAnError) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", [](const std::string& key) {
    return key == "model.diffusion_model.middle_block.1.proj_in.weight"
               ? std::nullopt
               : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("model.diffusion_model.middle_block.1."),
            std::string::npos)
      << report.status().message();
  EXPECT_TRUE(testing::ListFiles(dir / "onnx").empty());
}

TEST(KeyVariations, MissingOutputBlockIsAnError) {
  TempDir dir;
  const fs::path model = Rewrite(dir.path(), "tiny-sd1", [](const std::string& key) {
    return key.starts_with("model.diffusion_model.output_blocks.5.")
               ? std::nullopt
               : std::optional<std::string>(key);
  });
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("output_blocks.5.0.in_layers.0.weight' is missing"),
            std::string::npos)
      << report.status().message();
}

TEST(KeyVariations, StockConfigWithoutFixtureSectionIsRead) {
  TempDir dir;
  std::string yaml = "model:\n  params:\n    scale_factor: 0.2\n"
                     "    unet_config:\n      params:\n        num_heads: 8\n";
  testing::WriteBytes(dir / "v1-inference.yaml", yaml);
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  Result<ModelSpec> spec = DetectModel(**checkpoint, (dir / "v1-inference.yaml").string());
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_FLOAT_EQ(spec->vae_scaling_factor, 0.2f);
  EXPECT_EQ(spec->unet.num_heads, 8);
}

TEST(KeyVariations, ConfigThatIsAFolderIsAnError) {
  TempDir dir;
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  Result<ModelSpec> spec = DetectModel(**checkpoint, dir.path().string());
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("cannot read the YAML config"), std::string::npos)
      << spec.status().message();
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// bfloat16 weights stay bfloat16 in the file and are widened in the graph;
// ONNX Runtime must be able to run that.
TEST(KeyVariations, Bfloat16WeightsRun) {
  TempDir dir;
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(source.ok());
  const std::string key = "model.diffusion_model.out.2.weight";
  auto values = (*source)->ReadAsFloat(key);
  ASSERT_TRUE(values.ok());
  std::vector<std::uint16_t> bf16(values->size());
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &(*values)[i], 4);
    bf16[i] = static_cast<std::uint16_t>(bits >> 16);  // Truncation keeps the test simple.
  }
  TensorToWrite replacement{key, DType::kBF16, (*source)->Find(key)->shape,
                            {reinterpret_cast<const std::uint8_t*>(bf16.data()), bf16.size() * 2},
                            {}};
  const fs::path model = Rewrite(
      dir.path(), "tiny-sd1", [](const std::string& k) { return std::optional<std::string>(k); },
      {{key, replacement}});
  Result<ConvertReport> report = Convert(model, dir / "onnx");
  ASSERT_TRUE(report.ok()) << report.status().message();
  const HostTensor out = RunUNet(dir / "onnx" / "unet_model.onnx", "tiny-sd1");
  // Truncating one layer's weights to 8 mantissa bits moves the output a little.
  EXPECT_LE(MaxAbsDiff(out, ReadTensor(kReference(), "unet.out")), 0.05);
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// An inpainting UNet (9 input channels) of each family: the fixture's input
// convolution widened with zero weights for the 5 extra channels. Its
// output must then equal the reference whatever those channels hold.
TEST(KeyVariations, NineChannelUNetsOfEveryFamilyConvert) {
  for (const std::string fixture : {"tiny-sd2", "tiny-sdxl"}) {
    SCOPED_TRACE(fixture);
    TempDir dir;
    const fs::path model = testing::WriteWidenedUNet(dir.path(), "model", fixture, 9,
                                                     [](std::size_t) { return 0.0f; });
    Result<ConvertReport> report = Convert(model, dir / "onnx");
    ASSERT_TRUE(report.ok()) << report.status().message();
    EXPECT_EQ(report->spec.variant, "inpaint");

    const auto reference = Fixture("tiny/" + fixture + ".reference.safetensors");
    HostTensor sample = ReadTensor(reference, "unet.sample");
    const std::int64_t batch = sample.shape[0], plane = sample.shape[2] * sample.shape[3];
    std::vector<float> nine;
    for (std::int64_t b = 0; b < batch; ++b) {
      nine.insert(nine.end(), sample.f32.begin() + b * 4 * plane,
                  sample.f32.begin() + (b + 1) * 4 * plane);
      for (std::int64_t i = 0; i < 5 * plane; ++i) nine.push_back(std::sin(0.3f * i));
    }
    std::map<std::string, HostTensor> inputs = {
        {"sample", HostTensor::Float({batch, 9, sample.shape[2], sample.shape[3]}, nine)},
        {"timestep", ReadTensor(reference, "unet.timestep")},
        {"encoder_hidden_states", ReadTensor(reference, "unet.context")}};
    if (fixture == "tiny-sdxl") {
      inputs["text_embeds"] = ReadTensor(reference, "unet.text_embeds");
      inputs["time_ids"] = ReadTensor(reference, "unet.time_ids");
    }
    auto unet = OrtModel::Load((dir / "onnx" / "unet_model.onnx").string());
    ASSERT_TRUE(unet.ok()) << unet.status().message();
    auto result = (*unet)->Run(inputs);
    ASSERT_TRUE(result.ok()) << result.status().message();
    EXPECT_LE(MaxAbsDiff((*result)["out_sample"], ReadTensor(reference, "unet.out")), kTolerance);
  }
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// A checkpoint whose float tensors are stored, in turn, as f16, bf16 and f32,
// and its twin with the same (rounded) values all in f32.
struct MixedPair {
  fs::path mixed;
  fs::path widened;
};

MixedPair WriteMixedPair(const fs::path& dir, const std::string& fixture) {
  auto source = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  if (!source.ok()) throw std::runtime_error(source.status().message());
  std::vector<TensorToWrite> mixed;
  std::vector<TensorToWrite> widened;
  std::vector<std::vector<std::uint8_t>> storage;
  storage.reserve(2 * (*source)->tensors().size());
  std::size_t index = 0;
  for (const TensorInfo& t : (*source)->tensors()) {
    if (!IsFloating(t.dtype)) {
      mixed.push_back({t.name, t.dtype, t.shape, (*source)->Data(t), {}});
      widened.push_back(mixed.back());
      continue;
    }
    auto values = (*source)->ReadAsFloat(t.name);
    if (!values.ok()) throw std::runtime_error(values.status().message());
    const DType dtype = std::array{DType::kF16, DType::kBF16, DType::kF32}[index++ % 3];
    std::vector<std::uint8_t> narrow(values->size() * DTypeSize(dtype));
    std::vector<std::uint8_t> wide(values->size() * 4);
    for (std::size_t i = 0; i < values->size(); ++i) {
      float value = (*values)[i];
      if (dtype == DType::kF16) {
        const std::uint16_t half = FloatToHalf(value);
        std::memcpy(narrow.data() + 2 * i, &half, 2);
        value = HalfToFloat(half);
      } else if (dtype == DType::kBF16) {
        std::uint32_t bits;
        std::memcpy(&bits, &value, 4);
        const auto bf16 = static_cast<std::uint16_t>(bits >> 16);
        std::memcpy(narrow.data() + 2 * i, &bf16, 2);
        value = BFloat16ToFloat(bf16);
      } else {
        std::memcpy(narrow.data() + 4 * i, &value, 4);
      }
      std::memcpy(wide.data() + 4 * i, &value, 4);
    }
    storage.push_back(std::move(narrow));
    mixed.push_back({t.name, dtype, t.shape, storage.back(), {}});
    storage.push_back(std::move(wide));
    widened.push_back({t.name, DType::kF32, t.shape, storage.back(), {}});
  }
  MixedPair pair{dir / "mixed" / "model.safetensors", dir / "widened" / "model.safetensors"};
  for (const auto& [path, tensors] : {std::pair{pair.mixed, &mixed}, {pair.widened, &widened}}) {
    fs::create_directories(path.parent_path());
    Status written = WriteSafetensors(path.string(), *tensors, {});
    if (!written.ok()) throw std::runtime_error(written.message());
    fs::copy_file(Fixture("tiny/" + fixture + ".yaml"), path.parent_path() / "model.yaml");
  }
  return pair;
}

// Every output of every component, for the fixture's reference inputs.
std::map<std::string, HostTensor> RunAll(const fs::path& onnx_dir, const std::string& fixture) {
  const fs::path reference = Fixture("tiny/" + fixture + ".reference.safetensors");
  std::map<std::string, HostTensor> all;
  for (const auto& entry : fs::directory_iterator(onnx_dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".onnx")) continue;  // extras_model.safetensors
    auto model = OrtModel::Load(entry.path().string());
    if (!model.ok()) throw std::runtime_error(model.status().message());
    std::map<std::string, HostTensor> inputs;
    if (name.starts_with("clip_text")) {
      inputs["input_ids"] = ReadTensor(reference, "text.input_ids");
    } else if (name.starts_with("vae_decoder")) {
      inputs["latent_sample"] = ReadTensor(reference, "vae_decoder.latent");
    } else if (name.starts_with("vae_encoder")) {
      inputs["sample"] = ReadTensor(reference, "vae_encoder.image");
    } else {
      continue;  // The UNet is compared in KeyVariations.MixedDtypes* through RunUNet.
    }
    auto out = (*model)->Run(inputs);
    if (!out.ok()) throw std::runtime_error(name + ": " + out.status().message());
    for (auto& [output, tensor] : *out) all[name + ":" + output] = std::move(tensor);
  }
  return all;
}

TEST(KeyVariations, MixedDtypesComputeLikeTheirFloat32Values) {
  TempDir dir;
  const MixedPair pair = WriteMixedPair(dir.path(), "tiny-sd1");
  ASSERT_TRUE(Convert(pair.mixed, dir / "onnx-mixed").ok());
  ASSERT_TRUE(Convert(pair.widened, dir / "onnx-widened").ok());
  const auto mixed = RunAll(dir / "onnx-mixed", "tiny-sd1");
  const auto widened = RunAll(dir / "onnx-widened", "tiny-sd1");
  ASSERT_EQ(mixed.size(), widened.size());
  ASSERT_FALSE(mixed.empty());
  for (const auto& [name, tensor] : mixed) {
    EXPECT_LE(MaxAbsDiff(tensor, widened.at(name)), 1e-6) << name;
  }
  EXPECT_LE(MaxAbsDiff(RunUNet(dir / "onnx-mixed" / "unet_model.onnx", "tiny-sd1"),
                       RunUNet(dir / "onnx-widened" / "unet_model.onnx", "tiny-sd1")),
            1e-6);
}

}  // namespace
}  // namespace sdonnx
