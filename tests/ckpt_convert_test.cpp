// convert reads PyTorch .ckpt checkpoints (zip and legacy, with and without
// the state_dict wrapper) exactly like their safetensors source, and
// rejects pickles that reference anything but tensors and containers.
#include <gtest/gtest.h>

#include <cstring>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;

class CkptConvert : public ::testing::TestWithParam<std::string> {};

TEST_P(CkptConvert, UNetMatchesTheSafetensorsReference) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("ckpt/" + GetParam() + ".ckpt").string();
  options.output_dir = (dir / "onnx").string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->components.size(), 4u);

  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  auto unet = OrtModel::Load((dir / "onnx" / ("unet_" + GetParam() + ".onnx")).string());
  ASSERT_TRUE(unet.ok()) << unet.status().message();
  auto out = (*unet)->Run({{"sample", ReadTensor(reference, "unet.sample")},
                           {"timestep", ReadTensor(reference, "unet.timestep")},
                           {"encoder_hidden_states", ReadTensor(reference, "unet.context")}});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_LE(MaxAbsDiff((*out)["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CkptConvert,
                         ::testing::Values("tiny-sd1", "tiny-sd1-nowrap", "tiny-sd1-legacy"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// The tiny text encoder is 16 wide, so without its YAML the head count
// cannot follow the 64-channel rule of the released encoders.
TEST(CkptConvert, NarrowTextEncoderWithoutConfigAsksForIt) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("ckpt/tiny-sd1-legacy.ckpt").string();
  options.output_dir = (dir / "onnx").string();
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("text encoder width 16 is not a multiple of 64"),
            std::string::npos)
      << report.status().message();
  EXPECT_NE(report.status().message().find("--config"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "onnx"));
}

TEST(CkptCheckpoint, TensorsEqualTheSafetensorsSource) {
  auto ckpt = Checkpoint::Open(Fixture("ckpt/tiny-sd1.ckpt").string());
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*ckpt)->format(), "ckpt");
  ASSERT_EQ((*ckpt)->tensors().size(), (*source)->tensors().size());
  for (const TensorInfo& t : (*source)->tensors()) {
    const TensorInfo* c = (*ckpt)->Find(t.name);
    ASSERT_NE(c, nullptr) << t.name;
    EXPECT_EQ(c->dtype, t.dtype) << t.name;
    EXPECT_EQ(c->shape, t.shape) << t.name;
    const auto a = (*ckpt)->Data(*c);
    const auto b = (*source)->Data(t);
    ASSERT_EQ(a.size(), b.size()) << t.name;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << t.name;
  }
}

TEST(CkptCheckpoint, StridedViewsAreCopiedOut) {
  auto ckpt = Checkpoint::Open(Fixture("ckpt/tiny-sd1-shared-storage.ckpt").string());
  auto expected = Checkpoint::Open(Fixture("ckpt/tiny-sd1-shared-storage.expected.safetensors").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
  ASSERT_TRUE(expected.ok());
  for (const TensorInfo& t : (*expected)->tensors()) {
    const TensorInfo* c = (*ckpt)->Find(t.name);
    ASSERT_NE(c, nullptr) << t.name;
    const auto a = (*ckpt)->Data(*c);
    const auto b = (*expected)->Data(t);
    ASSERT_EQ(a.size(), b.size()) << t.name;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << t.name;
  }
  EXPECT_TRUE((*ckpt)->Find("shared.transposed_offset6")->in_memory);
}

TEST(CkptCheckpoint, MaliciousPicklesAreRejectedByTheCli) {
  for (const char* file : {"malicious-os-system", "malicious-eval"}) {
    SCOPED_TRACE(file);
    TempDir out;
    testing::CommandResult r = testing::RunSdonnx(
        "convert " + testing::Quote(Fixture(std::string("ckpt/") + file + ".ckpt")) + " " +
        testing::Quote(out.path()));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.output.find("is not allowed"), std::string::npos) << r.output;
    EXPECT_TRUE(testing::ListFiles(out.path()).empty());
  }
}

}  // namespace
}  // namespace sdonnx
