// Self-attention split into query chunks (convert --attention-chunks):
// the chunked graphs compute what the one-piece graphs compute, at latent
// sizes whose sequences are shorter than the chunk count too, and the
// choice is recorded in the metadata.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <string>

#include "convert/convert.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadModel;
using testing::ReadTensor;
using testing::RunModel;
using testing::TempDir;

constexpr double kTolerance = 1e-5;
constexpr std::int64_t kChunks = 64;

void Convert(const std::string& fixture, const TempDir& dir, std::int64_t chunks,
             int opset = kDefaultOpset) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/" + fixture + ".safetensors").string();
  options.output_dir = dir.path().string();
  options.attention_chunks = chunks;
  options.opset = opset;
  Result<ConvertReport> report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
}

int CountOps(const onnx::ModelProto& model, const std::string& op) {
  int count = 0;
  for (const auto& node : model.graph().node()) count += node.op_type() == op ? 1 : 0;
  return count;
}

std::string Metadata(const onnx::ModelProto& model, const std::string& key) {
  for (const auto& prop : model.metadata_props()) {
    if (prop.key() == key) return prop.value();
  }
  return "";
}

// Values in [-1, 1) from a fixed linear congruential sequence.
HostTensor Pattern(std::vector<std::int64_t> shape, std::uint32_t seed) {
  HostTensor t = HostTensor::Float(std::move(shape), {});
  t.f32.resize(static_cast<std::size_t>(t.NumElements()));
  for (float& v : t.f32) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>(seed >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return t;
}

TEST(AttentionChunks, UNetMatchesOnePieceAtEveryLatentSize) {
  TempDir one_piece;
  TempDir chunked;
  Convert("tiny-sd1", one_piece, 1);
  Convert("tiny-sd1", chunked, kChunks);
  const std::string file = "unet_tiny-sd1.onnx";
  EXPECT_EQ(CountOps(ReadModel(one_piece / file), "Loop"), 0);
  EXPECT_GT(CountOps(ReadModel(chunked / file), "Loop"), 0);
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  const HostTensor context = ReadTensor(reference, "unet.context");
  // 8x8 is the reference size (64 rows at full resolution, one per
  // chunk); 4x4 leaves 48 of the 64 chunks empty; 8x12 leaves a last chunk
  // of 33 rows.
  for (const auto& [height, width] : {std::pair{8, 8}, {4, 4}, {8, 12}}) {
    SCOPED_TRACE(std::to_string(height) + "x" + std::to_string(width));
    const std::map<std::string, HostTensor> inputs = {
        {"sample", Pattern({2, 4, height, width}, 7)},
        {"timestep", HostTensor::Float({2}, {10.0f, 500.0f})},
        {"encoder_hidden_states", context}};
    auto expected = RunModel(one_piece / file, inputs);
    auto got = RunModel(chunked / file, inputs);
    EXPECT_LE(MaxAbsDiff(got["out_sample"], expected["out_sample"]), kTolerance);
  }
  auto out = RunModel(chunked / file, {{"sample", ReadTensor(reference, "unet.sample")},
                                       {"timestep", ReadTensor(reference, "unet.timestep")},
                                       {"encoder_hidden_states", context}});
  EXPECT_LE(MaxAbsDiff(out["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
}

// Loop and Pad have new versions in opsets 16 to 21. The chunks use only
// what every version from 14 on accepts.
TEST(AttentionChunks, MatchReferenceAtOpsets18And21) {
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  for (int opset : {18, 21}) {
    SCOPED_TRACE(opset);
    TempDir dir;
    Convert("tiny-sd1", dir, kChunks, opset);
    auto out = RunModel(dir / "unet_tiny-sd1.onnx",
                        {{"sample", ReadTensor(reference, "unet.sample")},
                         {"timestep", ReadTensor(reference, "unet.timestep")},
                         {"encoder_hidden_states", ReadTensor(reference, "unet.context")}});
    EXPECT_LE(MaxAbsDiff(out["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
  }
}

TEST(AttentionChunks, VaeMatchesOnePiece) {
  TempDir one_piece;
  TempDir chunked;
  Convert("tiny-sd2", one_piece, 1);
  Convert("tiny-sd2", chunked, 12);  // the VAE gets a quarter: 3 uneven chunks
  const std::string decoder = "vae_decoder_tiny-sd2.onnx";
  EXPECT_EQ(CountOps(ReadModel(chunked / decoder), "Loop"), 1);
  const std::map<std::string, HostTensor> latent = {
      {"latent_sample", Pattern({1, 4, 16, 16}, 3)}};
  EXPECT_LE(MaxAbsDiff(RunModel(chunked / decoder, latent)["sample"],
                       RunModel(one_piece / decoder, latent)["sample"]),
            kTolerance);
  const std::string encoder = "vae_encoder_tiny-sd2.onnx";
  const std::map<std::string, HostTensor> image = {{"sample", Pattern({1, 3, 24, 40}, 5)}};
  EXPECT_LE(MaxAbsDiff(RunModel(chunked / encoder, image)["latent_parameters"],
                       RunModel(one_piece / encoder, image)["latent_parameters"]),
            kTolerance);
}

TEST(AttentionChunks, RecordedInMetadata) {
  TempDir dir;
  Convert("tiny-sdxl", dir, kChunks);
  auto chunks = [&](const std::string& component) {
    return Metadata(ReadModel(dir / (component + "_tiny-sdxl.onnx")), "sdonnx.attention_chunks");
  };
  EXPECT_EQ(chunks("unet"), std::to_string(kChunks));
  EXPECT_EQ(chunks("vae_decoder"), std::to_string(kChunks / 4));
  EXPECT_EQ(chunks("clip_text"), "");  // causal attention over 77 tokens stays one piece
  TempDir by_default;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sdxl.safetensors").string();
  options.output_dir = by_default.path().string();
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  const onnx::ModelProto unet = ReadModel(by_default / "unet_tiny-sdxl.onnx");
  EXPECT_EQ(Metadata(unet, "sdonnx.attention_chunks"), std::to_string(kDefaultAttentionChunks));
  EXPECT_GT(CountOps(unet, "Loop"), 0);
  TempDir one_piece;
  Convert("tiny-sdxl", one_piece, 1);
  const onnx::ModelProto whole = ReadModel(one_piece / "unet_tiny-sdxl.onnx");
  EXPECT_EQ(Metadata(whole, "sdonnx.attention_chunks"), "");
  EXPECT_EQ(CountOps(whole, "Loop"), 0);
}

// The chunks are one Loop per attention, so the graph does not grow with
// their count.
TEST(AttentionChunks, NodeCountDoesNotGrowWithChunks) {
  TempDir few;
  TempDir many;
  Convert("tiny-sd1", few, kChunks);
  Convert("tiny-sd1", many, kMaxAttentionChunks);
  const std::string file = "unet_tiny-sd1.onnx";
  EXPECT_EQ(ReadModel(few / file).graph().node_size(), ReadModel(many / file).graph().node_size());
}

TEST(AttentionChunks, OutOfRangeIsRejectedBeforeWriting) {
  for (std::int64_t chunks : {std::int64_t{0}, std::int64_t{-3}, kMaxAttentionChunks + 1}) {
    TempDir dir;
    ConvertOptions options;
    options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
    options.output_dir = (dir / "out").string();
    options.attention_chunks = chunks;
    Result<ConvertReport> report = ConvertCheckpoint(options);
    ASSERT_FALSE(report.ok()) << chunks;
    EXPECT_NE(report.status().message().find("--attention-chunks " + std::to_string(chunks)),
              std::string::npos)
        << report.status().message();
    EXPECT_FALSE(std::filesystem::exists(dir / "out"));
  }
}

}  // namespace
}  // namespace sdonnx
