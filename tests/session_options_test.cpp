// ONNX Runtime session settings (graph optimization level, weight
// prepacking) change load time and memory, never the result.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "convert/convert.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;

TEST(SessionOptions, EveryLevelAndPrepackMatchReference) {
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  convert.output_dir = dir.path().string();
  convert.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  const std::map<std::string, HostTensor> inputs = {
      {"sample", ReadTensor(reference, "unet.sample")},
      {"timestep", ReadTensor(reference, "unet.timestep")},
      {"encoder_hidden_states", ReadTensor(reference, "unet.context")}};
  for (const char* level : {"all", "extended", "basic", "disabled"}) {
    for (const bool prepack : {true, false}) {
      SCOPED_TRACE(std::string(level) + (prepack ? " with prepacking" : " without prepacking"));
      SessionOptions options;
      options.intra_op_threads = 1;
      options.optimization = *ParseGraphOptimization(level);
      options.prepack_weights = prepack;
      auto unet = OrtModel::Load((dir / "unet_tiny-sd1.onnx").string(), options);
      ASSERT_TRUE(unet.ok()) << unet.status().message();
      auto out = (*unet)->Run(inputs);
      ASSERT_TRUE(out.ok()) << out.status().message();
      EXPECT_LE(MaxAbsDiff((*out)["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
    }
  }
}

TEST(SessionOptions, UnknownLevelIsRejected) {
  Result<GraphOptimization> level = ParseGraphOptimization("fast");
  ASSERT_FALSE(level.ok());
  EXPECT_NE(level.status().message().find("'fast'"), std::string::npos);
  EXPECT_NE(level.status().message().find("all, extended, basic or disabled"), std::string::npos);
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

TEST(OrtErrors, AllocationFailureGetsSizeAndAdvice) {
  const std::string advice = OrtAllocationAdvice(
      "Non-zero status code returned while running MatMul node. Name:'/MatMul_0' Status "
      "Message: bfc_arena.cc:359 Failed to allocate memory for requested buffer of size "
      "4398046511104\n");
  EXPECT_NE(advice.find("4096.0 GiB"), std::string::npos) << advice;
  EXPECT_NE(advice.find("smaller image size"), std::string::npos) << advice;
  EXPECT_EQ(OrtAllocationAdvice("Invalid input name: sample"), "");
}

}  // namespace
}  // namespace sdonnx
