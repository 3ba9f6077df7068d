// The UNet graph accepts any latent size from 8 up, any batch, and a
// timestep of shape [1] or [batch].
#include <gtest/gtest.h>

#include <cmath>

#include "convert/convert.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::TempDir;

class UNetShapes : public ::testing::Test {
 protected:
  // A failure in SetUpTestSuite makes gtest skip the tests, which ctest
  // counts as passing, so it is recorded and each test's SetUp checks it.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ConvertOptions options;
    options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
    options.output_dir = dir_->path().string();
    Result<ConvertReport> report = ConvertCheckpoint(options);
    if (!report.ok()) {
      setup_error_ = report.status().message();
      return;
    }
    auto model = OrtModel::Load((dir_->path() / "unet_tiny-sd1.onnx").string());
    if (!model.ok()) {
      setup_error_ = model.status().message();
      return;
    }
    model_ = std::move(model).value().release();
  }
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }

  static Result<HostTensor> Run(std::int64_t batch, std::int64_t height, std::int64_t width,
                                std::int64_t timesteps) {
    std::vector<float> sample(static_cast<std::size_t>(batch * 4 * height * width));
    for (std::size_t i = 0; i < sample.size(); ++i) sample[i] = std::sin(0.1f * i);
    std::vector<float> context(static_cast<std::size_t>(batch * 77 * 16));
    for (std::size_t i = 0; i < context.size(); ++i) context[i] = std::cos(0.03f * i);
    std::vector<float> t(static_cast<std::size_t>(timesteps), 500.0f);
    SDONNX_ASSIGN_OR_RETURN(
        auto outputs,
        model_->Run({{"sample", HostTensor::Float({batch, 4, height, width}, sample)},
                     {"timestep", HostTensor::Float({timesteps}, t)},
                     {"encoder_hidden_states", HostTensor::Float({batch, 77, 16}, context)}}));
    return std::move(outputs["out_sample"]);
  }

  static TempDir* dir_;
  static OrtModel* model_;
  static std::string setup_error_;
};

TempDir* UNetShapes::dir_ = nullptr;
OrtModel* UNetShapes::model_ = nullptr;
std::string UNetShapes::setup_error_;

struct ShapeCase {
  std::int64_t batch, height, width, timesteps;
};

TEST_F(UNetShapes, RunsAtOddAndNonSquareLatentSizes) {
  const ShapeCase cases[] = {{1, 8, 8, 1},   {1, 12, 10, 1}, {1, 13, 13, 1}, {3, 8, 8, 1},
                             {3, 12, 10, 3}, {3, 13, 13, 1}, {3, 13, 13, 3}, {1, 8, 8, 1}};
  for (const ShapeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "batch " << c.batch << ", latent " << c.height << "x"
                                      << c.width << ", timestep [" << c.timesteps << "]");
    Result<HostTensor> out = Run(c.batch, c.height, c.width, c.timesteps);
    ASSERT_TRUE(out.ok()) << out.status().message();
    EXPECT_EQ(out->shape, (std::vector<std::int64_t>{c.batch, 4, c.height, c.width}));
    for (float v : out->f32) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST_F(UNetShapes, TimestepOfShapeOneBroadcastsLikeRepeatedTimestep) {
  Result<HostTensor> single = Run(3, 12, 10, 1);
  Result<HostTensor> repeated = Run(3, 12, 10, 3);
  ASSERT_TRUE(single.ok()) << single.status().message();
  ASSERT_TRUE(repeated.ok()) << repeated.status().message();
  EXPECT_EQ(single->f32, repeated->f32);
}

TEST_F(UNetShapes, RejectsTimestepCountThatIsNeitherOneNorBatch) {
  Result<HostTensor> out = Run(3, 8, 8, 2);
  EXPECT_FALSE(out.ok());
}

}  // namespace
}  // namespace sdonnx
