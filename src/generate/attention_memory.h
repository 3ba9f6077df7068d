// An estimate, made from file headers before any model is loaded, of the
// memory that the self-attention scores of a generate run need, so that a
// run that cannot fit fails at once instead of after loading and a step.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/tensorrt_profiles.h"
#include "util/status.h"

namespace sdonnx {

// One self-attention of a network, as metadata sdonnx.self_attention
// records it: `heads` heads over the latent grid halved `halvings` times
// (each side rounded up), with the queries in `chunks` chunks.
struct SelfAttentionShape {
  int halvings = 0;
  std::int64_t heads = 1;
  std::int64_t chunks = 1;
};

// Parses "HALVINGS:HEADS:CHUNKS" entries joined by commas; "" gives none.
Result<std::vector<SelfAttentionShape>> ParseSelfAttention(const std::string& text);

// The bytes of one query chunk's float32 scores and of the softmax of
// them, which exist at the same time, for `rows` batch rows over a latent
// grid of `latent_height` x `latent_width`.
std::uint64_t ScoreBytes(const SelfAttentionShape& shape, std::int64_t latent_height,
                         std::int64_t latent_width, std::int64_t rows);

// The machine's physical memory in bytes (0 when unknown).
// NOTE: a cgroup or container memory limit below it is not read.
std::uint64_t PhysicalMemoryBytes();

// Reads sdonnx.self_attention from the headers of the UNet, the VAE
// decoder and, with `need_encoder`, the VAE encoder of `stem` in `dir`,
// and fails when the scores of `run` would need more than `memory_bytes`.
// Files without the metadata (older exports, --ort-attention) are skipped,
// as is everything when `memory_bytes` is 0.
Status CheckAttentionMemory(const std::filesystem::path& dir, const std::string& stem,
                            bool need_encoder, const ProfileRequest& run,
                            std::uint64_t memory_bytes);

}  // namespace sdonnx
