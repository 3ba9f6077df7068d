// The estimate of self-attention score memory that generate makes from
// file headers before loading any model.
#include "generate/attention_memory.h"

#include <gtest/gtest.h>

#include <string>

#include "convert/convert.h"
#include "generate/generate.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

fs::path ConvertTiny(const TempDir& dir, bool ort_attention = false) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = (dir / "onnx").string();
  options.ort_attention = ort_attention;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  EXPECT_TRUE(report.ok()) << report.status().message();
  return dir / "onnx";
}

std::string Metadata(const fs::path& path, const std::string& key) {
  const Result<GraphHeader> header = ReadGraphHeader(path.string());
  EXPECT_TRUE(header.ok());
  const auto it = header->metadata.find(key);
  return it == header->metadata.end() ? std::string() : it->second;
}

TEST(AttentionMemory, ParsesEntriesAndRejectsBadOnes) {
  Result<std::vector<SelfAttentionShape>> shapes = ParseSelfAttention("0:8:64,1:8:4,3:20:1");
  ASSERT_TRUE(shapes.ok()) << shapes.status().message();
  ASSERT_EQ(shapes->size(), 3u);
  EXPECT_EQ((*shapes)[1].halvings, 1);
  EXPECT_EQ((*shapes)[1].heads, 8);
  EXPECT_EQ((*shapes)[1].chunks, 4);
  EXPECT_EQ((*shapes)[2].heads, 20);
  EXPECT_TRUE(ParseSelfAttention("")->empty());
  for (const char* bad : {"0:8", "0:8:0", "x:8:1", "0:8:1,", "0:8:1:2", "-1:8:1", "0:8:1 "}) {
    SCOPED_TRACE(bad);
    Result<std::vector<SelfAttentionShape>> parsed = ParseSelfAttention(bad);
    ASSERT_FALSE(parsed.ok());
    EXPECT_NE(parsed.status().message().find("HALVINGS:HEADS:CHUNKS"), std::string::npos);
  }
}

TEST(AttentionMemory, ScoreBytesFollowTheLatentGrid) {
  // 65x65 latents halved once are 33x33 = 1089 tokens; 4 chunks of 273
  // queries; 2 rows of 8 heads; scores and softmax in float32.
  EXPECT_EQ(ScoreBytes({1, 8, 4}, 65, 65, 2), 2ull * 8 * 273 * 1089 * 4 * 2);
  // SD 1.5 at 512x512 with guidance: 4096 tokens in 64 chunks of 64.
  EXPECT_EQ(ScoreBytes({0, 8, 64}, 64, 64, 2), 2ull * 8 * 64 * 4096 * 4 * 2);
}

TEST(AttentionMemory, ConvertRecordsEverySelfAttention) {
  TempDir dir;
  const fs::path onnx = ConvertTiny(dir);
  EXPECT_EQ(Metadata(onnx / "unet_tiny-sd1.onnx", "sdonnx.self_attention"), "0:2:64,1:2:4,2:2:1");
  EXPECT_EQ(Metadata(onnx / "vae_decoder_tiny-sd1.onnx", "sdonnx.self_attention"), "0:1:16");
  EXPECT_EQ(Metadata(onnx / "vae_encoder_tiny-sd1.onnx", "sdonnx.self_attention"), "0:1:16");
  EXPECT_EQ(Metadata(onnx / "clip_text_tiny-sd1.onnx", "sdonnx.self_attention"), "");

  // ONNX Runtime's attention operator never stores the scores.
  TempDir ort;
  const fs::path ort_onnx = ConvertTiny(ort, true);
  EXPECT_EQ(Metadata(ort_onnx / "unet_tiny-sd1.onnx", "sdonnx.self_attention"), "");
}

TEST(AttentionMemory, RunPastTheMemoryIsNamed) {
  TempDir dir;
  const fs::path onnx = ConvertTiny(dir);
  ProfileRequest run;
  run.width = 64;
  run.height = 64;
  run.downsample_factor = 2;
  EXPECT_TRUE(CheckAttentionMemory(onnx, "tiny-sd1", true, run, 1ull << 30).ok());
  EXPECT_TRUE(CheckAttentionMemory(onnx, "tiny-sd1", true, run, 0).ok());
  const Status status = CheckAttentionMemory(onnx, "tiny-sd1", true, run, 1024);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("unet_tiny-sd1.onnx: at 64x64 one query chunk"),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("(2 rows, 2 heads, 64 chunks)"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("more --attention-chunks"), std::string::npos);
}

// At 8192x8192 the tiny UNet's first attention alone needs terabytes, so
// generate fails from the headers, before loading a model: the missing
// text encoder, which a load would report, is not reached.
TEST(AttentionMemory, GenerateFailsBeforeLoading) {
  TempDir dir;
  GenerateOptions options;
  options.model_dir = ConvertTiny(dir).string();
  fs::remove(dir / "onnx" / "clip_text_tiny-sd1.onnx");
  options.prompt = "fox";
  options.width = 8192;
  options.height = 8192;
  options.tokenizer = Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string();
  options.output = (dir / "out" / "big.png").string();
  Result<GenerateResult> result = Generate(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("of memory this machine has"), std::string::npos)
      << result.status().message();
  EXPECT_FALSE(fs::exists(dir / "out"));
}

}  // namespace
}  // namespace sdonnx
