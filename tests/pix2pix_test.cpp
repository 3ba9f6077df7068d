// generate on instruct-pix2pix models (8-channel UNet), made from tiny-sd1 by
// widening the UNet's first convolution to take the init image's latent.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "convert/convert.h"
#include "generate/generate.h"
#include "image/png.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

constexpr std::int64_t kSize = 32;
void ConvertTo(const fs::path& model, const fs::path& out) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) throw std::runtime_error(report.status().message());
}

Image Picture(std::uint8_t shift) {
  Image image;
  image.width = kSize;
  image.height = kSize;
  for (std::int64_t y = 0; y < kSize; ++y) {
    for (std::int64_t x = 0; x < kSize; ++x) {
      image.pixels.push_back(static_cast<std::uint8_t>(x * 8 + shift));
      image.pixels.push_back(static_cast<std::uint8_t>(y * 8));
      image.pixels.push_back(static_cast<std::uint8_t>(255 - x * 4 - shift));
    }
  }
  return image;
}

void WritePicture(const fs::path& path, std::uint8_t shift) {
  auto png = EncodePng(Picture(shift), {});
  if (!png.ok()) throw std::runtime_error(png.status().message());
  testing::WriteBytes(path, *png);
}

GenerateOptions BaseOptions(const fs::path& model_dir, const fs::path& output) {
  GenerateOptions o;
  o.model_dir = model_dir.string();
  o.prompt = "turn the sky into a sunset";
  o.negative_prompt = "blurry";
  o.steps = 3;
  o.seed = 11;
  o.width = kSize;
  o.height = kSize;
  o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
  o.session.intra_op_threads = 1;
  o.output = output.string();
  o.overwrite = true;
  return o;
}

double RelativeRms(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double diff = 0;
  double norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff / norm);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class Pix2Pix : public ::testing::Test {
 protected:
  // A failure here would make gtest skip the tests, which ctest counts as
  // passing; so it is recorded and each test asserts on it.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    try {
      MakeModels();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void MakeModels() {
    ConvertTo(testing::WriteWidenedUNet(dir_->path(), "zero-weights", "tiny-sd1", 8,
                                        [](std::size_t) { return 0.0f; }),
              dir_->path() / "zero");
    std::mt19937 random(5);
    std::normal_distribution<float> normal(0.0f, 0.2f);
    ConvertTo(testing::WriteWidenedUNet(dir_->path(), "random-weights", "tiny-sd1", 8,
                                        [&](std::size_t) { return normal(random); }),
              dir_->path() / "random");
    ConvertTo(Fixture("tiny/tiny-sd1.safetensors"), dir_->path() / "base");
    WritePicture(dir_->path() / "a.png", 0);
    WritePicture(dir_->path() / "b.png", 60);
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  static GenerateOptions Edit(const std::string& model, const std::string& output,
                              const std::string& picture = "a.png") {
    GenerateOptions o = BaseOptions(dir_->path() / model, dir_->path() / output);
    o.init_image = (dir_->path() / picture).string();
    return o;
  }

  static TempDir* dir_;
  static std::string setup_error_;
};

TempDir* Pix2Pix::dir_ = nullptr;
std::string Pix2Pix::setup_error_;

// With zero weights on the image channels the image changes nothing, so the
// image-guidance term vanishes and the result is the base model's txt2img:
// this pins down the row order and the guidance formula.
TEST_F(Pix2Pix, ImageBlindModelEqualsTxt2Img) {
  Result<GenerateResult> edit = Generate(Edit("zero", "zero.png"));
  ASSERT_TRUE(edit.ok()) << edit.status().message();
  Result<GenerateResult> plain = Generate(BaseOptions(dir_->path() / "base", dir_->path() / "base.png"));
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_LE(RelativeRms(edit->latents, plain->latents), 1e-4);
}

TEST_F(Pix2Pix, InitImageAndImageScaleSteerTheResult) {
  Result<GenerateResult> a = Generate(Edit("random", "a-out.png"));
  ASSERT_TRUE(a.ok()) << a.status().message();
  Result<GenerateResult> again = Generate(Edit("random", "a-again.png"));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(ReadFile(dir_->path() / "a-out.png"), ReadFile(dir_->path() / "a-again.png"));

  Result<GenerateResult> b = Generate(Edit("random", "b-out.png", "b.png"));
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_GT(RelativeRms(a->latents, b->latents), 1e-3);

  GenerateOptions stronger = Edit("random", "strong.png");
  stronger.image_cfg_scale = 3.0f;
  Result<GenerateResult> strong = Generate(stronger);
  ASSERT_TRUE(strong.ok()) << strong.status().message();
  EXPECT_GT(RelativeRms(a->latents, strong->latents), 1e-3);
  EXPECT_NE(a->parameters.find("Image CFG scale: 1.5"), std::string::npos) << a->parameters;
  EXPECT_EQ(a->parameters.find("Denoising strength"), std::string::npos) << a->parameters;
}

TEST_F(Pix2Pix, GuidanceOffRunsOneRowPerImage) {
  GenerateOptions o = Edit("random", "single.png");
  o.cfg_scale = 1.0f;
  o.image_cfg_scale = 1.0f;
  Result<GenerateResult> result = Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  for (float v : result->latents) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(Pix2Pix, WrongOptionsAreExplained) {
  struct Case {
    std::function<void(GenerateOptions&)> change;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](GenerateOptions& o) { o.init_image.reset(); }, "pass --init-image"},
      {[](GenerateOptions& o) { o.mask = (dir_->path() / "a.png").string(); }, "takes no --mask"},
      {[](GenerateOptions& o) { o.strength = 0.5; }, "--strength does not apply"},
      {[](GenerateOptions& o) { o.image_cfg_scale = NAN; }, "--image-cfg-scale must be"},
  };
  for (const Case& c : cases) {
    GenerateOptions o = Edit("random", "rejected.png");
    c.change(o);
    Result<GenerateResult> result = Generate(o);
    ASSERT_FALSE(result.ok()) << c.expected;
    EXPECT_NE(result.status().message().find(c.expected), std::string::npos)
        << result.status().message();
    EXPECT_FALSE(fs::exists(dir_->path() / "rejected.png"));
  }
}

}  // namespace
}  // namespace sdonnx
