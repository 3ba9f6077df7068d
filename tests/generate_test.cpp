// generate end to end on the tiny fixtures converted by convert, with the
// CLIP tokenizer from the fixtures. The tiny models have random weights, so
// the tests check behaviour (determinism, what is kept, errors), not looks.
#include "generate/generate.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "image/png.h"
#include "runtime/tensorrt_profiles.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::ListFiles;
using testing::TempDir;

constexpr std::int64_t kSize = 32;  // Image size: 16x16 latents with the fixtures' VAE.

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

double MeanAbsDiff(const Image& a, const Image& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    sum += std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]));
  }
  return sum / static_cast<double>(a.pixels.size());
}

double RmsDistance(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(sum / static_cast<double>(a.size()));
}

// Pixels as [1, 3, H, W] in [-1, 1], the VAE encoder's input.
std::vector<float> ImagePixels(const Image& image) {
  const std::size_t plane = static_cast<std::size_t>(image.width * image.height);
  std::vector<float> out(3 * plane);
  for (std::size_t i = 0; i < plane; ++i) {
    for (std::size_t c = 0; c < 3; ++c) out[c * plane + i] = image.pixels[i * 3 + c] / 127.5f - 1;
  }
  return out;
}

// A smooth RGB test picture.
Image Gradient(std::int64_t size) {
  Image image;
  image.width = size;
  image.height = size;
  for (std::int64_t y = 0; y < size; ++y) {
    for (std::int64_t x = 0; x < size; ++x) {
      image.pixels.push_back(static_cast<std::uint8_t>(x * 255 / (size - 1)));
      image.pixels.push_back(static_cast<std::uint8_t>(y * 255 / (size - 1)));
      image.pixels.push_back(128);
    }
  }
  return image;
}

// The left half white (repaint), the right half black (keep), as RGB.
Image LeftHalfMask(std::int64_t size) {
  Image mask;
  mask.width = size;
  mask.height = size;
  for (std::int64_t y = 0; y < size; ++y) {
    for (std::int64_t x = 0; x < size; ++x) {
      const std::uint8_t v = x < size / 2 ? 255 : 0;
      mask.pixels.insert(mask.pixels.end(), {v, v, v});
    }
  }
  return mask;
}

class Generate : public ::testing::Test {
 protected:
  // A failure in SetUpTestSuite makes gtest skip the tests, which ctest
  // counts as passing, so it is recorded and each test's SetUp checks it.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    for (const char* fixture : {"tiny-sd1", "tiny-sd1-inpaint"}) {
      ConvertOptions options;
      options.model_path = Fixture(std::string("tiny/") + fixture + ".safetensors").string();
      options.output_dir = (dir_->path() / fixture).string();
      Result<ConvertReport> report = ConvertCheckpoint(options);
      if (!report.ok()) setup_error_ += report.status().message() + "\n";
    }
    auto init = EncodePng(Gradient(kSize), {});
    auto mask = EncodePng(LeftHalfMask(kSize), {});
    if (!init.ok() || !mask.ok()) setup_error_ += "cannot encode the test images\n";
    if (init.ok()) testing::WriteBytes(dir_->path() / "init.png", *init);
    if (mask.ok()) testing::WriteBytes(dir_->path() / "mask.png", *mask);
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  static GenerateOptions Options(const std::string& output, const std::string& model = "tiny-sd1") {
    GenerateOptions o;
    o.model_dir = (dir_->path() / model).string();
    o.prompt = "a photograph of an (astronaut:1.2) riding a horse";
    o.negative_prompt = "blurry";
    o.steps = 4;
    o.seed = 7;
    o.width = kSize;
    o.height = kSize;
    o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
    o.session.intra_op_threads = 1;
    o.output = (dir_->path() / output).string();
    o.overwrite = true;
    return o;
  }

  static Image Read(const std::string& path) {
    auto image = ReadPng(path);
    if (!image.ok()) throw std::runtime_error(image.status().message());
    return std::move(image).value();
  }

  static TempDir* dir_;
  static std::string setup_error_;
};

TempDir* Generate::dir_ = nullptr;
std::string Generate::setup_error_;

TEST_F(Generate, EverySamplerIsDeterministicPerSeed) {
  for (const char* sampler : {"euler_a", "euler", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "lcm"}) {
    SCOPED_TRACE(sampler);
    GenerateOptions first = Options(std::string(sampler) + "-a.png");
    first.sampler = sampler;
    GenerateOptions again = first;
    again.output = (dir_->path() / (std::string(sampler) + "-b.png")).string();
    GenerateOptions other_seed = first;
    other_seed.seed = 8;
    other_seed.output = (dir_->path() / (std::string(sampler) + "-c.png")).string();
    for (const GenerateOptions* o : {&first, &again, &other_seed}) {
      Result<GenerateResult> result = sdonnx::Generate(*o);
      ASSERT_TRUE(result.ok()) << result.status().message();
    }
    const std::string a = ReadFile(first.output);
    EXPECT_FALSE(a.empty());
    EXPECT_EQ(a, ReadFile(again.output));
    EXPECT_NE(a, ReadFile(other_seed.output));
  }
}

TEST_F(Generate, ParametersChunkReadsBack) {
  GenerateOptions o = Options("parameters.png");
  o.sampler = "dpmpp_2m_karras";
  o.cfg_scale = 5.5f;
  o.clip_skip = 2;
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  auto text = ReadPngText(o.output);
  ASSERT_TRUE(text.ok()) << text.status().message();
  const std::string& parameters = (*text)["parameters"];
  EXPECT_EQ(parameters, result->parameters);
  EXPECT_TRUE(parameters.starts_with(o.prompt + "\nNegative prompt: blurry\n")) << parameters;
  EXPECT_NE(parameters.find("Steps: 4, "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Sampler: DPM++ 2M Karras, "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("CFG scale: 5.5, "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Seed: 7, "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Size: 32x32, "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Model hash: "), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Model: tiny-sd1"), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("Clip skip: 2"), std::string::npos) << parameters;
}

TEST_F(Generate, BatchWritesNumberedDistinctFiles) {
  GenerateOptions o = Options("batch.png");
  o.batch_size = 2;
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  ASSERT_EQ(result->files.size(), 2u);
  EXPECT_EQ(fs::path(result->files[0]).filename(), "batch-1.png");
  EXPECT_EQ(fs::path(result->files[1]).filename(), "batch-2.png");
  EXPECT_NE(ReadFile(result->files[0]), ReadFile(result->files[1]));
  auto second = ReadPngText(result->files[1]);
  ASSERT_TRUE(second.ok());
  EXPECT_NE((*second)["parameters"].find("Seed: 8, "), std::string::npos);
}

// The seed a batch image records makes that image again alone, with the
// samplers that draw noise during steps too.
TEST_F(Generate, BatchImageMatchesItsSeed) {
  for (const char* sampler : {"euler_a", "lcm"}) {
    SCOPED_TRACE(sampler);
    GenerateOptions batch = Options(std::string("replay-") + sampler + ".png");
    batch.sampler = sampler;
    batch.batch_size = 2;
    Result<GenerateResult> both = sdonnx::Generate(batch);
    ASSERT_TRUE(both.ok()) << both.status().message();
    ASSERT_EQ(both->files.size(), 2u);
    for (std::int64_t b = 0; b < 2; ++b) {
      GenerateOptions single = batch;
      single.batch_size = 1;
      single.seed = batch.seed + b;
      single.output = (dir_->path() / (std::string("single-") + sampler + "-" +
                                       std::to_string(b) + ".png")).string();
      ASSERT_TRUE(sdonnx::Generate(single).ok());
      EXPECT_EQ(Read(single.output).pixels, Read(both->files[b]).pixels) << "image " << b + 1;
    }
  }
}

TEST_F(Generate, CfgScaleOneIgnoresNegativePrompt) {
  GenerateOptions a = Options("cfg1-a.png");
  a.cfg_scale = 1.0f;
  GenerateOptions b = a;
  b.negative_prompt = "something else entirely";
  b.output = (dir_->path() / "cfg1-b.png").string();
  testing::WarningLog warnings;
  ASSERT_TRUE(sdonnx::Generate(a).ok());
  ASSERT_TRUE(sdonnx::Generate(b).ok());
  EXPECT_EQ(Read(a.output).pixels, Read(b.output).pixels);
  EXPECT_NE(warnings.text().find("--negative-prompt has no effect with --cfg-scale 1"),
            std::string::npos)
      << warnings.text();
}

// The tiny VAE has random weights and amplifies small latent changes into
// large pixel changes, so closeness is measured on the latents: the result
// of img2img at low strength against the encoded input image.
TEST_F(Generate, Img2ImgAtLowStrengthStaysNearTheInput) {
  auto encoder = OrtModel::Load((dir_->path() / "tiny-sd1" / "vae_encoder_tiny-sd1.onnx").string());
  ASSERT_TRUE(encoder.ok()) << encoder.status().message();
  auto moments = (*encoder)->Run(
      {{"sample", HostTensor::Float({1, 3, kSize, kSize}, ImagePixels(Gradient(kSize)))}});
  ASSERT_TRUE(moments.ok()) << moments.status().message();
  const std::vector<float>& parameters = (*moments)["latent_parameters"].f32;
  std::vector<float> init(parameters.begin(), parameters.begin() + parameters.size() / 2);
  for (float& v : init) v *= 0.18215f;

  GenerateOptions low = Options("img2img-low.png");
  low.init_image = (dir_->path() / "init.png").string();
  low.steps = 50;
  low.strength = 0.05;
  GenerateOptions txt2img = Options("img2img-txt.png");
  Result<GenerateResult> low_result = sdonnx::Generate(low);
  Result<GenerateResult> txt_result = sdonnx::Generate(txt2img);
  ASSERT_TRUE(low_result.ok()) << low_result.status().message();
  ASSERT_TRUE(txt_result.ok()) << txt_result.status().message();
  const double low_distance = RmsDistance(low_result->latents, init);
  const double txt_distance = RmsDistance(txt_result->latents, init);
  EXPECT_LT(low_distance, 0.1 * txt_distance)
      << "strength 0.05: " << low_distance << ", txt2img: " << txt_distance;
}

void ExpectRightHalfKept(const Image& out, const Image& in) {
  for (std::int64_t y = 0; y < kSize; ++y) {
    for (std::int64_t x = kSize / 2; x < kSize; ++x) {
      for (int c = 0; c < 3; ++c) {
        const std::size_t i = static_cast<std::size_t>((y * kSize + x) * 3 + c);
        ASSERT_EQ(out.pixels[i], in.pixels[i]) << "pixel " << x << "," << y;
      }
    }
  }
}

TEST_F(Generate, InpaintingModelKeepsUnmaskedArea) {
  GenerateOptions o = Options("inpaint.png", "tiny-sd1-inpaint");
  o.init_image = (dir_->path() / "init.png").string();
  o.mask = (dir_->path() / "mask.png").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  const Image out = Read(o.output);
  const Image in = Gradient(kSize);
  ExpectRightHalfKept(out, in);
  EXPECT_GT(MeanAbsDiff(out, in), 1.0);  // The left half was repainted.
}

TEST_F(Generate, MaskWithBaseModelKeepsUnmaskedArea) {
  GenerateOptions o = Options("inpaint-base.png");
  o.init_image = (dir_->path() / "init.png").string();
  o.mask = (dir_->path() / "mask.png").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  ExpectRightHalfKept(Read(o.output), Gradient(kSize));
}

// Inpainting UNets of SD 2.x and SDXL, made from their fixtures by widening
// the first convolution to 9 channels with random weights.
TEST_F(Generate, InpaintingModelsOfEveryFamilyKeepUnmaskedArea) {
  for (const std::string fixture : {"tiny-sd2", "tiny-sdxl"}) {
    SCOPED_TRACE(fixture);
    std::uint32_t state = 1;
    const fs::path model = testing::WriteWidenedUNet(
        dir_->path(), fixture + "-inpaint", fixture, 9, [&state](std::size_t) {
          state = state * 1664525u + 1013904223u;
          return static_cast<float>(state >> 8) / 16777216.0f * 0.2f - 0.1f;
        });
    ConvertOptions convert;
    convert.model_path = model.string();
    convert.output_dir = (dir_->path() / (fixture + "-inpaint")).string();
    Result<ConvertReport> report = ConvertCheckpoint(convert);
    ASSERT_TRUE(report.ok()) << report.status().message();
    GenerateOptions o = Options(fixture + "-inpaint.png", fixture + "-inpaint");
    o.init_image = (dir_->path() / "init.png").string();
    o.mask = (dir_->path() / "mask.png").string();
    Result<GenerateResult> result = sdonnx::Generate(o);
    ASSERT_TRUE(result.ok()) << result.status().message();
    const Image out = Read(o.output);
    ExpectRightHalfKept(out, Gradient(kSize));
    EXPECT_GT(MeanAbsDiff(out, Gradient(kSize)), 1.0);
  }
}

TEST_F(Generate, InpaintingModelWithoutMaskIsRejected) {
  GenerateOptions o = Options("no-mask.png", "tiny-sd1-inpaint");
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--mask"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(Generate, SizeNotMultipleOfEightListsAllowedValues) {
  GenerateOptions o = Options("bad-size.png");
  o.width = 36;
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("32 or 40"), std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(Generate, WronglySizedInitImageIsRejected) {
  GenerateOptions o = Options("bad-init.png");
  o.width = 40;
  o.init_image = (dir_->path() / "init.png").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("32x32, expected 40x32"), std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(Generate, UnreadableInitImageIsRejected) {
  testing::WriteBytes(dir_->path() / "broken.png", "not a png at all");
  GenerateOptions o = Options("bad-png.png");
  o.init_image = (dir_->path() / "broken.png").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("broken.png"), std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(Generate, MissingModelFolderIsRejected) {
  GenerateOptions o = Options("missing.png");
  o.model_dir = (dir_->path() / "nothing-here").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("nothing-here"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(Generate, DiffusersFolderIsExplained) {
  GenerateOptions o = Options("diffusers.png");
  o.model_dir = Fixture("foreign/tiny-sd1-diffusers").string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("a diffusers-layout ONNX export"), std::string::npos)
      << result.status().message();
  EXPECT_NE(result.status().message().find("sdonnx rebuild"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.output));

  o.model_dir = Fixture("foreign/tiny-sd1-diffusers/unet").string();
  Result<GenerateResult> component = sdonnx::Generate(o);
  ASSERT_FALSE(component.ok());
  EXPECT_NE(component.status().message().find("contains model.onnx, one component of a "
                                              "diffusers-layout ONNX export"),
            std::string::npos)
      << component.status().message();
  EXPECT_NE(component.status().message().find("tiny-sd1-diffusers -o model.safetensors"),
            std::string::npos)
      << component.status().message();
}

TEST_F(Generate, MissingComponentFileIsNamed) {
  TempDir partial;
  for (const char* file : {"unet_tiny-sd1.onnx", "vae_decoder_tiny-sd1.onnx"}) {
    fs::copy_file(dir_->path() / "tiny-sd1" / file, partial.path() / file);
  }
  GenerateOptions o = Options("partial.png");
  o.model_dir = partial.path().string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("clip_text_tiny-sd1.onnx"), std::string::npos)
      << result.status().message();
}

TEST_F(Generate, ModelWithoutVaeSaysHowToFixIt) {
  TempDir partial;
  for (const char* file : {"unet_tiny-sd1.onnx", "clip_text_tiny-sd1.onnx"}) {
    fs::copy_file(dir_->path() / "tiny-sd1" / file, partial.path() / file);
  }
  GenerateOptions o = Options("no-vae.png");
  o.model_dir = partial.path().string();
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--vae"), std::string::npos)
      << result.status().message();
}

TEST_F(Generate, InvalidOptionsAreRejectedBeforeAnyWork) {
  fs::create_directories(dir_->path() / "folder.png");
  testing::WriteBytes(dir_->path() / "file.txt", "not a folder");
  if (!fs::is_symlink(fs::symlink_status(dir_->path() / "dangling"))) {
    fs::create_directory_symlink(dir_->path() / "gone", dir_->path() / "dangling");
  }
  struct Case {
    const char* what;
    std::function<void(GenerateOptions&)> edit;
    const char* expected;
  };
  const Case cases[] = {
      {"nan cfg", [](GenerateOptions& o) { o.cfg_scale = NAN; },
       "--cfg-scale must be a finite number"},
      {"strength alone", [](GenerateOptions& o) { o.strength = 0.5; }, "pass --init-image"},
      {"huge width", [](GenerateOptions& o) { o.width = 1 << 20; }, "more than the supported"},
      {"huge batch", [](GenerateOptions& o) { o.batch_size = 100000000; }, "use 1 to 64"},
      {"output folder",
       [](GenerateOptions& o) { o.output = (dir_->path() / "folder.png").string(); },
       "is a folder"},
      {"jpeg output", [](GenerateOptions& o) { o.output = (dir_->path() / "x.jpg").string(); },
       "ending in .png"},
      // Missing folders are created, but not inside a regular file.
      {"folder that is a file",
       [](GenerateOptions& o) { o.output = (dir_->path() / "file.txt" / "x.png").string(); },
       "file.txt: exists and is not a folder"},
      {"folder that is a dangling symlink",
       [](GenerateOptions& o) { o.output = (dir_->path() / "dangling" / "x.png").string(); },
       "dangling: is a symlink to "},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    GenerateOptions o = Options(std::string("invalid-") + c.what + ".png");
    c.edit(o);
    Result<GenerateResult> result = sdonnx::Generate(o);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.status().message().find(c.expected), std::string::npos)
        << result.status().message();
  }
}

TEST_F(Generate, InvalidUtf8PromptGivesValidUtf8Parameters) {
  GenerateOptions o = Options("utf8.png");
  o.prompt = "caf\xc3 \xff fox";
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_TRUE(result->parameters.starts_with("caf\xef\xbf\xbd \xef\xbf\xbd fox\n"))
      << result->parameters;
}

TEST_F(Generate, ExistingOutputIsKeptWithoutForce) {
  testing::WriteBytes(dir_->path() / "keep.png", "keep me");
  GenerateOptions o = Options("keep.png");
  o.overwrite = false;
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--force"), std::string::npos);
  EXPECT_EQ(ReadFile(o.output), "keep me");
}

TEST_F(Generate, OutputThatIsTheInitImageIsRejected) {
  const fs::path init = dir_->path() / "own-init.png";
  fs::copy_file(dir_->path() / "init.png", init, fs::copy_options::overwrite_existing);
  const std::string before = ReadFile(init.string());
  GenerateOptions o = Options("own-init.png");
  o.init_image = init.string();
  o.strength = 0.5;
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("is also an input image"), std::string::npos)
      << result.status().message();
  EXPECT_EQ(ReadFile(init.string()), before);
}

TEST_F(Generate, FileSizeLimitLeavesNoTemporaries) {
  TempDir out;
  // sdonnx ignores SIGXFSZ, so writing the PNG past `ulimit -f` fails with EFBIG.
  testing::CommandResult r = testing::RunSdonnx(
      "generate --model " + testing::Quote(dir_->path() / "tiny-sd1") +
          " --prompt fox --steps 1 --width 32 --height 32 --threads 1 --tokenizer " +
          testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output " +
          testing::Quote(out / "fox.png"),
      "ulimit -f 1;");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fox.png: writing"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("file size limit reached"), std::string::npos) << r.output;
  EXPECT_TRUE(testing::ListFiles(out.path()).empty());
}

// Where the weights are widened (at load or by their Cast at each step)
// changes memory and time, never the image. (The tiny weights are all
// small enough to be folded either way; the session test
// CastWeightsWidenPerRunByDefault shows the difference.)
TEST_F(Generate, WidenAtLoadGivesTheSameImage) {
  TempDir out;
  const std::string common =
      "generate --model " + testing::Quote(dir_->path() / "tiny-sd1") +
      " --prompt fox --seed 7 --steps 2 --width 32 --height 32 --threads 1 --tokenizer " +
      testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output ";
  const testing::CommandResult run = testing::RunSdonnx(common + testing::Quote(out / "a.png"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const testing::CommandResult load =
      testing::RunSdonnx(common + testing::Quote(out / "b.png") + " --widen-at-load");
  ASSERT_EQ(load.exit_code, 0) << load.output;
  EXPECT_EQ(Read((out / "a.png").string()).pixels, Read((out / "b.png").string()).pixels);
  // tiny-sd1 keeps its float16 token embedding behind a Cast.
  EXPECT_EQ(load.output.find("has no effect"), std::string::npos) << load.output;
}

// The session cache keeps ONNX Runtime's "all"-level sessions: the same
// image as --graph-optimization all --prepack, built once and then reused.
// (The text encoder's float16 token embedding once made that level abort
// ONNX Runtime.)
TEST_F(Generate, CacheDirMatchesTheAllLevel) {
  TempDir out;
  const std::string common =
      "generate --model " + testing::Quote(dir_->path() / "tiny-sd1") +
      " --prompt fox --seed 7 --steps 2 --width 32 --height 32 --threads 1 --tokenizer " +
      testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output ";
  const std::string cache = " --cache-dir " + testing::Quote(out / "cache");
  const testing::CommandResult all = testing::RunSdonnx(common + testing::Quote(out / "all.png") +
                                                        " --graph-optimization all --prepack");
  ASSERT_EQ(all.exit_code, 0) << all.output;
  const testing::CommandResult build =
      testing::RunSdonnx(common + testing::Quote(out / "build.png") + cache);
  ASSERT_EQ(build.exit_code, 0) << build.output;
  EXPECT_NE(build.output.find("cached optimized sessions of unet_tiny-sd1.onnx, "
                              "clip_text_tiny-sd1.onnx, vae_decoder_tiny-sd1.onnx"),
            std::string::npos)
      << build.output;
  const testing::CommandResult reuse =
      testing::RunSdonnx(common + testing::Quote(out / "reuse.png") + cache);
  ASSERT_EQ(reuse.exit_code, 0) << reuse.output;
  EXPECT_EQ(reuse.output.find("cached optimized sessions"), std::string::npos) << reuse.output;
  const auto pixels = Read((out / "all.png").string()).pixels;
  EXPECT_EQ(Read((out / "build.png").string()).pixels, pixels);
  EXPECT_EQ(Read((out / "reuse.png").string()).pixels, pixels);

  // A rewritten model gets a new entry, and the build removes the old one.
  const fs::path unet = dir_->path() / "tiny-sd1" / "unet_tiny-sd1.onnx";
  const fs::file_time_type unet_time = fs::last_write_time(unet);
  fs::last_write_time(unet, unet_time + std::chrono::seconds(5));
  const testing::CommandResult rebuilt =
      testing::RunSdonnx(common + testing::Quote(out / "rebuilt.png") + cache);
  fs::last_write_time(unet, unet_time);
  ASSERT_EQ(rebuilt.exit_code, 0) << rebuilt.output;
  EXPECT_NE(rebuilt.output.find("cached optimized sessions of unet_tiny-sd1.onnx in"),
            std::string::npos)
      << rebuilt.output;
  EXPECT_NE(rebuilt.output.find("removed 1 cache entry of models that changed or were removed "
                                "since ("),
            std::string::npos)
      << rebuilt.output;
  EXPECT_EQ(Read((out / "rebuilt.png").string()).pixels, pixels);
}

// A build that cannot write its entry (here a file size limit) names the
// cache and what to do, and leaves no temporary folder behind.
TEST_F(Generate, CacheBuildThatCannotWriteIsNamed) {
  TempDir out;
  const testing::CommandResult r = testing::RunSdonnx(
      "generate --model " + testing::Quote(dir_->path() / "tiny-sd1") +
          " --prompt fox --steps 1 --width 32 --height 32 --threads 1 --tokenizer " +
          testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output " +
          testing::Quote(out / "fox.png") + " --cache-dir " + testing::Quote(out / "cache"),
      "ulimit -f 1000;");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("building the session cache entry of unet_tiny-sd1.onnx in " +
                          (out / "cache").string() + " failed"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("or run without it"), std::string::npos) << r.output;
  EXPECT_TRUE(testing::ListFiles(out.path()).empty());
  EXPECT_FALSE(fs::exists(out / "cache"));
}

// The cache checks byte counts only. A damaged entry of the right size
// shows up as NaN, and the error names the entry as a cause.
TEST_F(Generate, NanFromACachedModelNamesTheEntry) {
  TempDir out;
  GenerateOptions o = Options("unused.png");
  o.output = (out / "a.png").string();
  o.steps = 1;
  o.session.cache_dir = (out / "cache").string();
  const std::vector<std::pair<std::string, std::string>> components = {
      {"unet_tiny", "unet produced NaN or Inf"},
      {"clip_text_tiny", "clip_text_tiny-sd1.onnx produced NaN or Inf"}};
  for (const auto& [prefix, message] : components) {
    SCOPED_TRACE(prefix);
    fs::remove_all(out / "cache");
    ASSERT_TRUE(sdonnx::Generate(o).ok());
    fs::path data;
    for (const auto& item : fs::directory_iterator(out / "cache")) {
      if (item.path().filename().string().rfind(prefix, 0) == 0) {
        data = item.path() / "model.onnx.data";
      }
    }
    ASSERT_FALSE(data.empty());
    testing::WriteBytes(data, std::string(fs::file_size(data), '\x7f'));
    Result<GenerateResult> result = sdonnx::Generate(o);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.status().message().find(message), std::string::npos)
        << result.status().message();
    EXPECT_NE(
        result.status().message().find("or the session cache entry " + data.parent_path().string()),
        std::string::npos)
        << result.status().message();
  }
}

TEST_F(Generate, CacheDirConflictsAreNamed) {
  TempDir out;
  const std::string common = "generate --model " + testing::Quote(dir_->path() / "tiny-sd1") +
                             " --prompt fox --steps 1 --width 32 --height 32 --tokenizer " +
                             testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) +
                             " --output " + testing::Quote(out / "fox.png") + " --cache-dir " +
                             testing::Quote(out / "cache");
  const testing::CommandResult prepack = testing::RunSdonnx(common + " --prepack");
  EXPECT_NE(prepack.exit_code, 0);
  EXPECT_NE(prepack.output.find("leave out --graph-optimization and --prepack"), std::string::npos)
      << prepack.output;
  const testing::CommandResult extended =
      testing::RunSdonnx(common + " --graph-optimization extended");
  EXPECT_NE(extended.exit_code, 0);
  EXPECT_NE(extended.output.find("leave out --graph-optimization and --prepack"), std::string::npos)
      << extended.output;
  const testing::CommandResult cuda = testing::RunSdonnx(common + " --provider cuda");
  EXPECT_NE(cuda.exit_code, 0);
  EXPECT_NE(cuda.output.find("leave it out with cuda"), std::string::npos) << cuda.output;
  const testing::CommandResult empty =
      testing::RunSdonnx("generate --model m --prompt p --output " +
                         testing::Quote(out / "fox.png") + " --cache-dir ''");
  EXPECT_NE(empty.exit_code, 0);
  EXPECT_NE(empty.output.find("--cache-dir: an empty value is invalid; give a folder"),
            std::string::npos)
      << empty.output;
  EXPECT_TRUE(testing::ListFiles(out.path()).empty());
  EXPECT_FALSE(std::filesystem::exists(out / "cache"));
}

// Every file records how many weights it widens by a Cast, and
// --widen-at-load warns when an export has none.
TEST_F(Generate, WidenAtLoadWarnsWhereNothingIsNarrow) {
  TempDir work;
  ConvertOptions options;
  options.model_path = testing::NarrowedTinySd1(work.path(), DType::kF16).string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  for (const bool fp32_weights : {false, true}) {
    SCOPED_TRACE(fp32_weights ? "--fp32-weights" : "source weights");
    const fs::path onnx = work / (fp32_weights ? "wide" : "narrow");
    options.output_dir = onnx.string();
    options.fp32_weights = fp32_weights;
    Result<ConvertReport> report = ConvertCheckpoint(options);
    ASSERT_TRUE(report.ok()) << report.status().message();
    const Result<GraphHeader> unet = ReadGraphHeader((onnx / "unet_F16-sd1.onnx").string());
    ASSERT_TRUE(unet.ok());
    ASSERT_TRUE(unet->metadata.contains("sdonnx.cast_weights"));
    EXPECT_EQ(unet->metadata.at("sdonnx.cast_weights") == "0", fp32_weights);
    const testing::CommandResult load = testing::RunSdonnx(
        "generate --model " + testing::Quote(onnx) +
        " --prompt fox --steps 1 --width 32 --height 32 --threads 1 --widen-at-load --tokenizer " +
        testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output " +
        testing::Quote(onnx / "a.png"));
    ASSERT_EQ(load.exit_code, 0) << load.output;
    EXPECT_EQ(
        load.output.find("--widen-at-load has no effect on " + onnx.string()) != std::string::npos,
        fp32_weights)
        << load.output;
  }
  // A damaged count is named instead of silently dropping the warning.
  const fs::path unet = work / "wide" / "unet_F16-sd1.onnx";
  testing::SetOnnxMetadata(unet, "sdonnx.cast_weights", "many");
  const testing::CommandResult damaged = testing::RunSdonnx(
      "generate --model " + testing::Quote(work / "wide") +
      " --prompt fox --steps 1 --width 32 --height 32 --threads 1 --widen-at-load --force "
      "--tokenizer " +
      testing::Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --output " +
      testing::Quote(work / "wide" / "a.png"));
  ASSERT_EQ(damaged.exit_code, 0) << damaged.output;
  EXPECT_NE(damaged.output.find(unet.string() + ": metadata 'sdonnx.cast_weights' is 'many', "
                                                "expected a count of weights"),
            std::string::npos)
      << damaged.output;
}

// A UNet whose metadata was damaged or edited is rejected with the key, the
// value and the expected range, before any division or tensor uses it.
TEST_F(Generate, DamagedUNetMetadataIsNamed) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"sdonnx.vae_downsample_factor", {"0", "-2", "9.5", "1e30", "nan", "65"}},
      {"sdonnx.latent_channels", {"0", "-1", "99999999999", "nan", "4x"}},
      {"sdonnx.text_pad_id", {"-1", "49408", "abc", ""}},
      {"sdonnx.static_shape", {"0x0", "-8x-8", "64x64junk", "64", "64X64"}},
      {"sdonnx.vae_scaling_factor", {"0", "-1", "nan", "inf", "abc", "1000"}},
      {"sdonnx.prediction_type", {"epsilox", ""}},
  };
  for (const auto& [key, values] : cases) {
    for (const std::string& value : values) {
      SCOPED_TRACE(key + " = '" + value + "'");
      TempDir work;
      fs::copy(dir_->path() / "tiny-sd1", work / "onnx");
      const fs::path unet = work / "onnx" / "unet_tiny-sd1.onnx";
      ASSERT_NO_FATAL_FAILURE(testing::SetOnnxMetadata(unet, key, value));
      GenerateOptions o = Options("unused.png");
      o.model_dir = (work / "onnx").string();
      o.output = (work / "out" / "a.png").string();
      o.steps = 1;
      Result<GenerateResult> result = sdonnx::Generate(o);
      ASSERT_FALSE(result.ok());
      EXPECT_NE(result.status().message().find(unet.string() + ": metadata '" + key + "' is '" +
                                               value + "', expected "),
                std::string::npos)
          << result.status().message();
      EXPECT_FALSE(fs::exists(work / "out"));
    }
  }
}

// Values in range but wrong for the model are caught against the VAE
// decoder before the first step, instead of in ONNX Runtime or after all
// steps.
TEST_F(Generate, UNetMetadataThatMisfitsTheDecoderIsNamed) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"sdonnx.latent_channels", "3", "but its input 'sample' has 4 channels, which fits no UNet"},
      {"sdonnx.latent_channels", "2", "takes latents with 4 channels"},
      {"sdonnx.vae_downsample_factor", "4", "records 2"},
  };
  for (const auto& [key, value, message] : cases) {
    SCOPED_TRACE(key + " = " + value);
    TempDir work;
    fs::copy(dir_->path() / "tiny-sd1", work / "onnx");
    const fs::path unet = work / "onnx" / "unet_tiny-sd1.onnx";
    ASSERT_NO_FATAL_FAILURE(testing::SetOnnxMetadata(unet, key, value));
    GenerateOptions o = Options("unused.png");
    o.model_dir = (work / "onnx").string();
    o.output = (work / "out" / "a.png").string();
    o.steps = 1;
    Result<GenerateResult> result = sdonnx::Generate(o);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.status().message().find(unet.string() + ": "), std::string::npos)
        << result.status().message();
    EXPECT_NE(result.status().message().find(message), std::string::npos)
        << result.status().message();
    EXPECT_FALSE(fs::exists(work / "out"));
  }
}

TEST_F(Generate, UnknownProviderOrMissingGpuProviderIsExplained) {
  GenerateOptions o = Options("cuda.png");
  o.session.provider = Provider::kCuda;
  Result<GenerateResult> result = sdonnx::Generate(o);
  const auto available = AvailableProviders();
  if (std::find(available.begin(), available.end(), "CUDAExecutionProvider") != available.end()) {
    GTEST_SKIP() << "this ONNX Runtime build has CUDA";
  }
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("CUDAExecutionProvider"), std::string::npos)
      << result.status().message();
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// Copies a tiny fixture with its YAML into `dir`, applying `edit` to the YAML
// text and replacing the bytes of tensor `poisoned` (if any) with NaNs.
void CopyFixture(const fs::path& dir, const std::string& fixture, const std::string& yaml_extra,
                 const std::string& poisoned) {
  auto source = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  ASSERT_TRUE(source.ok()) << source.status().message();
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<std::uint8_t>> replacements;
  replacements.reserve((*source)->tensors().size());
  for (const TensorInfo& t : (*source)->tensors()) {
    TensorToWrite out{t.name, t.dtype, t.shape, (*source)->Data(t), {}};
    if (t.name == poisoned) {
      ASSERT_EQ(t.dtype, DType::kF32);
      replacements.emplace_back(t.nbytes);
      const float nan = std::nanf("");
      for (std::size_t i = 0; i < t.nbytes; i += 4) {
        std::memcpy(replacements.back().data() + i, &nan, 4);
      }
      out.data = replacements.back();
    }
    tensors.push_back(out);
  }
  Status written = WriteSafetensors((dir / (fixture + ".safetensors")).string(), tensors, {});
  ASSERT_TRUE(written.ok()) << written.message();
  std::string yaml = ReadFile(Fixture("tiny/" + fixture + ".yaml").string());
  const std::string anchor = "    scale_factor: 0.18215\n";
  yaml.replace(yaml.find(anchor), anchor.size(), anchor + yaml_extra);
  testing::WriteBytes(dir / (fixture + ".yaml"), yaml);
}

GenerateOptions SmallRun(const fs::path& model_dir, const fs::path& output) {
  GenerateOptions o;
  o.model_dir = model_dir.string();
  o.prompt = "a red fox";
  o.steps = 3;
  o.seed = 1;
  o.width = 32;
  o.height = 32;
  o.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
  o.output = output.string();
  return o;
}

TEST(GenerateModels, VPredictionModelRunsAndIsRecorded) {
  TempDir dir;
  CopyFixture(dir.path(), "tiny-sd1", "    parameterization: v\n", "");
  ConvertOptions convert;
  convert.model_path = (dir / "tiny-sd1.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  Result<ConvertReport> report = ConvertCheckpoint(convert);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->spec.prediction_type, "v_prediction");
  for (const char* sampler : {"euler", "ddim", "dpmpp_2m"}) {
    GenerateOptions o = SmallRun(dir / "onnx", dir / (std::string(sampler) + ".png"));
    o.sampler = sampler;
    Result<GenerateResult> result = sdonnx::Generate(o);
    ASSERT_TRUE(result.ok()) << sampler << ": " << result.status().message();
  }
}

TEST(GenerateModels, NanFromUNetIsReportedWithComponentAndStep) {
  TempDir dir;
  CopyFixture(dir.path(), "tiny-sd1", "", "model.diffusion_model.out.2.bias");
  ConvertOptions convert;
  convert.model_path = (dir / "tiny-sd1.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  GenerateOptions o = SmallRun(dir / "onnx", dir / "nan.png");
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("unet produced NaN or Inf at step 1 of 3"),
            std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(dir / "nan.png"));
}

TEST(GenerateModels, NanFromVaeDecoderIsReported) {
  TempDir dir;
  CopyFixture(dir.path(), "tiny-sd1", "", "first_stage_model.decoder.conv_out.bias");
  ConvertOptions convert;
  convert.model_path = (dir / "tiny-sd1.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  GenerateOptions o = SmallRun(dir / "onnx", dir / "nan.png");
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("vae_decoder produced NaN or Inf"), std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(dir / "nan.png"));
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// An SD 2.x checkpoint without a config (here: forced with "probe") gets its
// prediction type from running its UNet on the probe input; the decision
// and its basis are stored. The tiny UNet has random weights, so which way
// it goes is not checked.
TEST(GenerateModels, Sd2PredictionProbeIsRecorded) {
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd2v.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  convert.prediction_type = "probe";
  Result<ConvertReport> report = ConvertCheckpoint(convert);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->spec.prediction_basis.starts_with("UNet probe: mean(out - x) = "))
      << report->spec.prediction_basis;
  EXPECT_EQ(ListFiles(dir / "onnx").size(), 5u);  // The probe's files are gone.
  auto unet = OrtModel::Load((dir / "onnx" / "unet_tiny-sd2v.onnx").string());
  ASSERT_TRUE(unet.ok());
  EXPECT_EQ((*unet)->Metadata()["sdonnx.prediction_type_basis"], report->spec.prediction_basis);
}

TEST(GenerateModels, Sd2WithoutHeadConfigNamesTheProblem) {
  TempDir dir;
  fs::copy_file(Fixture("tiny/tiny-sd2.safetensors"), dir / "model.safetensors");
  ConvertOptions convert;
  convert.model_path = (dir / "model.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  Result<ConvertReport> report = ConvertCheckpoint(convert);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("num_head_channels"), std::string::npos)
      << report.status().message();
  EXPECT_TRUE(ListFiles(dir / "onnx").empty());
}

TEST(GenerateModels, Sd2VPredictionFixtureGenerates) {
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd2v.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  Result<ConvertReport> report = ConvertCheckpoint(convert);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->spec.prediction_type, "v_prediction");
  GenerateOptions o = SmallRun(dir / "onnx", dir / "sd2v.png");
  Result<GenerateResult> result = sdonnx::Generate(o);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_TRUE(fs::exists(dir / "sd2v.png"));

  // SD 2.x already takes the penultimate layer; the 2-layer tiny encoder has
  // nothing below it.
  o.clip_skip = 2;
  o.output = (dir / "sd2v-skip2.png").string();
  Result<GenerateResult> skipped = sdonnx::Generate(o);
  ASSERT_FALSE(skipped.ok());
  EXPECT_NE(skipped.status().message().find("--clip-skip 2 is more than"), std::string::npos)
      << skipped.status().message();
  EXPECT_NE(skipped.status().message().find("the largest is 1"), std::string::npos)
      << skipped.status().message();
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

TEST(GenerateModels, SdxlBaseAndRefinerGenerateDeterministically) {
  TempDir dir;
  for (const char* fixture : {"tiny-sdxl", "tiny-sdxl-refiner"}) {
    SCOPED_TRACE(fixture);
    ConvertOptions convert;
    convert.model_path = Fixture(std::string("tiny/") + fixture + ".safetensors").string();
    convert.output_dir = (dir / fixture).string();
    ASSERT_TRUE(ConvertCheckpoint(convert).ok());
    GenerateOptions o = SmallRun(dir / fixture, dir / (std::string(fixture) + "-a.png"));
    o.negative_prompt = "blurry";
    GenerateOptions again = o;
    again.output = (dir / (std::string(fixture) + "-b.png")).string();
    GenerateOptions empty_negative = o;
    empty_negative.negative_prompt = "";
    empty_negative.output = (dir / (std::string(fixture) + "-c.png")).string();
    for (const GenerateOptions* run : {&o, &again, &empty_negative}) {
      Result<GenerateResult> result = sdonnx::Generate(*run);
      ASSERT_TRUE(result.ok()) << result.status().message();
    }
    EXPECT_EQ(ReadFile(o.output), ReadFile(again.output));
    EXPECT_NE(ReadFile(o.output), ReadFile(empty_negative.output));
  }
}

TEST(GenerateModels, RefinerAestheticScoreChangesTheResult) {
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sdxl-refiner.safetensors").string();
  convert.output_dir = (dir / "refiner").string();
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  GenerateOptions o = SmallRun(dir / "refiner", dir / "default.png");
  GenerateOptions other = o;
  other.output = (dir / "other.png").string();
  other.aesthetic_score = 9.0f;
  Result<GenerateResult> a = sdonnx::Generate(o);
  ASSERT_TRUE(a.ok()) << a.status().message();
  Result<GenerateResult> b = sdonnx::Generate(other);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_NE(a->latents, b->latents);
  EXPECT_NE(b->parameters.find("Aesthetic score: 9, Negative aesthetic score: 2.5"),
            std::string::npos)
      << b->parameters;
}

}  // namespace
}  // namespace sdonnx
