// Which text encoder output becomes the UNet's context, per family and
// --clip-skip.
#include "generate/conditioning.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "convert/convert.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::MaxAbsDiff;
using testing::TempDir;

// One 77-token chunk of start, a few tokens, end and padding, unweighted.
PromptChunk PlainChunk() {
  PromptChunk chunk;
  chunk.ids = {49406, 320, 1929, 539, 550, 49407};
  chunk.ids.resize(77, 49407);
  chunk.weights.assign(77, 1.0f);
  return chunk;
}

// SDXL's context is the penultimate layer's raw output (hidden_states.K),
// not the normed last layer.
TEST(Conditioning, SdxlContextIsThePenultimateRawLayer) {
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sdxl.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  Result<ConvertReport> report = ConvertCheckpoint(convert);
  ASSERT_TRUE(report.ok()) << report.status().message();
  ASSERT_EQ(report->spec.text_context_output, "hidden_states.1");
  auto encoder = OrtModel::Load((dir / "onnx" / "clip_text_tiny-sdxl.onnx").string());
  ASSERT_TRUE(encoder.ok()) << encoder.status().message();

  Result<std::string> output = ClipSkipOutput(**encoder, "hidden_states.1", 1);
  ASSERT_TRUE(output.ok()) << output.status().message();
  EXPECT_EQ(*output, "hidden_states.1");
  const PromptChunk chunk = PlainChunk();
  Result<HostTensor> context = EncodePrompt(**encoder, {chunk}, "hidden_states.1", 1);
  ASSERT_TRUE(context.ok()) << context.status().message();
  auto direct = (*encoder)->Run({{"input_ids", HostTensor::Int32({1, 77}, chunk.ids)}});
  ASSERT_TRUE(direct.ok()) << direct.status().message();
  EXPECT_EQ(MaxAbsDiff(*context, (*direct)["hidden_states.1"]), 0.0);
  EXPECT_GT(MaxAbsDiff(*context, (*direct)["last_hidden_state"]), 0.0);

  // The 2-layer encoder has no layer below the penultimate but the embeddings.
  Result<std::string> deeper = ClipSkipOutput(**encoder, "hidden_states.1", 2);
  ASSERT_FALSE(deeper.ok());
  EXPECT_NE(deeper.status().message().find("the largest is 1"), std::string::npos)
      << deeper.status().message();
}

TEST(Conditioning, ClipSkipCountsFromTheDefaultLayer) {
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  convert.output_dir = (dir / "onnx").string();
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  auto encoder = OrtModel::Load((dir / "onnx" / "clip_text_tiny-sd1.onnx").string());
  ASSERT_TRUE(encoder.ok()) << encoder.status().message();
  EXPECT_EQ(*ClipSkipOutput(**encoder, "last_hidden_state", 1), "last_hidden_state");
  EXPECT_EQ(*ClipSkipOutput(**encoder, "last_hidden_state", 2), "clip_skip_2");
  EXPECT_EQ(*ClipSkipOutput(**encoder, "hidden_states.2", 2), "hidden_states.1");
  EXPECT_FALSE(ClipSkipOutput(**encoder, "last_hidden_state", 3).ok());
}

}  // namespace
}  // namespace sdonnx
