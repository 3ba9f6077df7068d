// The estimate of the memory of the largest intermediate tensors that
// generate makes from file headers before loading any model.
#include "generate/memory_estimate.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>
#include <limits>
#include <optional>
#include <string>

#include "convert/convert.h"
#include "generate/generate.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

fs::path ConvertTiny(const TempDir& dir, bool ort_attention = false,
                     std::optional<std::int64_t> attention_chunks = std::nullopt) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = (dir / "onnx").string();
  options.ort_attention = ort_attention;
  options.attention_chunks = attention_chunks;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  EXPECT_TRUE(report.ok()) << report.status().message();
  return dir / "onnx";
}

constexpr const char* kMachine = "of memory this machine has";

// A 64x64 run of the tiny models, whose VAE halves the image once.
ProfileRequest TinyRun() {
  ProfileRequest run;
  run.width = 64;
  run.height = 64;
  run.downsample_factor = 2;
  return run;
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
  const ProfileRequest run = TinyRun();
  const std::string machine = kMachine;
  EXPECT_TRUE(CheckRunMemory(onnx, "tiny-sd1", true, run, {1ull << 30, machine}).ok());
  EXPECT_TRUE(CheckRunMemory(onnx, "tiny-sd1", true, run, {0, machine}).ok());
  const Status status = CheckRunMemory(onnx, "tiny-sd1", true, run, {200000, machine});
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("unet_tiny-sd1.onnx: at 64x64 one query chunk"),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("(2 rows, 2 heads, 64 chunks)"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("more --attention-chunks"), std::string::npos);
}

TEST(MemoryEstimate, VaeLayersAtFullResolutionAreCounted) {
  TempDir dir;
  const fs::path onnx = ConvertTiny(dir);
  // The tiny VAE's top level is 32 channels wide; the decoder's first
  // block there takes the 64 channels of the level below.
  EXPECT_EQ(Metadata(onnx / "vae_decoder_tiny-sd1.onnx", "sdonnx.full_resolution_channels"), "64");
  EXPECT_EQ(Metadata(onnx / "vae_encoder_tiny-sd1.onnx", "sdonnx.full_resolution_channels"), "32");
  EXPECT_EQ(Metadata(onnx / "unet_tiny-sd1.onnx", "sdonnx.full_resolution_channels"), "");
  EXPECT_EQ(FullResolutionBytes(256, 1024, 1024), 1024ull * 1024 * 256 * 4 * 3);

  // At 64x64 every self-attention needs 512 KiB, the decoder's layers 3 MiB.
  const ProfileRequest run = TinyRun();
  const std::string machine = kMachine;
  EXPECT_TRUE(CheckRunMemory(onnx, "tiny-sd1", true, run, {3ull << 20, machine}).ok());
  const Status status = CheckRunMemory(onnx, "tiny-sd1", false, run, {1ull << 20, machine});
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("vae_decoder_tiny-sd1.onnx: at 64x64 its layers at full image "
                                  "resolution need at least 3.0 MiB (3 float32 tensors of 64 "
                                  "channels at once), more than the 1.0 MiB of memory this "
                                  "machine has; use a smaller --width and --height"),
            std::string::npos)
      << status.message();
}

// With 256 chunks the VAE has its maximum of 64, so more chunks are not
// advised for it, only for the UNet.
TEST(MemoryEstimate, ChunkAdviceOnlyWhereMoreHelp) {
  TempDir dir;
  const fs::path onnx = ConvertTiny(dir, false, 256);
  EXPECT_EQ(Metadata(onnx / "vae_decoder_tiny-sd1.onnx", "sdonnx.self_attention"), "0:1:64");
  // At 64x64 without guidance the UNet's scores need 64 KiB, the VAE's 128 KiB.
  ProfileRequest run = TinyRun();
  run.guidance = false;
  const Status status = CheckRunMemory(onnx, "tiny-sd1", false, run, {100000, kMachine});
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("vae_decoder_tiny-sd1.onnx: at 64x64 one query chunk"),
            std::string::npos)
      << status.message();
  EXPECT_EQ(status.message().find("--attention-chunks"), std::string::npos) << status.message();

  TempDir fewer;
  const fs::path few_chunks = ConvertTiny(fewer, false, 16);
  const Status unet = CheckRunMemory(few_chunks, "tiny-sd1", false, run, {100000, kMachine});
  ASSERT_FALSE(unet.ok());
  EXPECT_NE(unet.message().find("more --attention-chunks"), std::string::npos) << unet.message();

  // Where even 256 chunks could not fit, they are not advised.
  const Status hopeless = CheckRunMemory(few_chunks, "tiny-sd1", false, run, {1000, kMachine});
  ASSERT_FALSE(hopeless.ok());
  EXPECT_EQ(hopeless.message().find("--attention-chunks"), std::string::npos) << hopeless.message();
}

TEST(MemoryEstimate, AbsurdValuesDoNotWrap) {
  EXPECT_EQ(FullResolutionBytes(std::numeric_limits<std::int64_t>::max(), 8192, 8192),
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(ScoreBytes({0, 4096, 1}, 8192, 8192, std::int64_t{1} << 40),
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_FALSE(ParseSelfAttention("0:4611686018427387904:1").ok());
  EXPECT_FALSE(ParseSelfAttention("0:8:4611686018427387904").ok());
}

TEST(MemoryEstimate, DamagedChannelCountIsNamed) {
  TempDir dir;
  const fs::path onnx = ConvertTiny(dir);
  ASSERT_NO_FATAL_FAILURE(testing::SetOnnxMetadata(onnx / "vae_decoder_tiny-sd1.onnx",
                                                   "sdonnx.full_resolution_channels", "-3"));
  ProfileRequest run;
  const Status status = CheckRunMemory(onnx, "tiny-sd1", false, run, {1ull << 40, kMachine});
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("vae_decoder_tiny-sd1.onnx: metadata "
                                  "'sdonnx.full_resolution_channels' is '-3', expected an integer "
                                  "from 1 to 65536"),
            std::string::npos)
      << status.message();
}

TEST(MemoryEstimate, ContainerLimitIsRead) {
  EXPECT_EQ(ParseCgroupMemoryLimit("4294967296\n"), 4294967296ull);
  EXPECT_EQ(ParseCgroupMemoryLimit("max\n"), 0u);
  EXPECT_EQ(ParseCgroupMemoryLimit(""), 0u);
  EXPECT_EQ(ParseCgroupMemoryLimit("12x"), 0u);

  // A v2 hierarchy with a limit on the parent of the process's group and
  // none on the group itself, and a v1 memory hierarchy with a lower one.
  TempDir root;
  auto write = [&](const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
  };
  write(root / "box" / "memory.max", "8589934592\n");
  write(root / "box" / "job" / "memory.max", "max\n");
  MemoryLimit v2 = CgroupMemoryLimit("0::/box/job\n", root.path());
  EXPECT_EQ(v2.bytes, 8589934592ull);
  EXPECT_EQ(v2.source, "memory limit in " + (root / "box" / "memory.max").string());

  write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n");
  write(root / "memory" / "box" / "memory.limit_in_bytes", "4294967296\n");
  MemoryLimit both =
      CgroupMemoryLimit("4:cpu,memory:/box\n2:pids:/other\n0::/box/job\n", root.path());
  EXPECT_EQ(both.bytes, 4294967296ull);
  EXPECT_EQ(CgroupMemoryLimit("4:pids:/box\n", root.path()).bytes, 0u);
  EXPECT_EQ(CgroupMemoryLimit("garbage", root.path()).bytes, 0u);

  const MemoryLimit process = ProcessMemoryLimit();
  EXPECT_GT(process.bytes, 0u);

  // The message names the limit that was exceeded.
  const fs::path onnx = ConvertTiny(root);
  const ProfileRequest run = TinyRun();
  const Status status = CheckRunMemory(onnx, "tiny-sd1", false, run, {1024, both.source});
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("memory limit in " +
                                  (root / "memory" / "box" / "memory.limit_in_bytes").string()),
            std::string::npos)
      << status.message();
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
