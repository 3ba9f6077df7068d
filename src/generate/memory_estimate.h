// An estimate of the memory that the largest intermediate tensors of a
// generate run need: the self-attention scores and the VAE's layers at full
// image resolution. It is made from file headers before any model is
// loaded, so a run that cannot fit fails at once, not after every step.
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

// The memory a process may use: the machine's physical memory, or the
// lowest memory limit of the control groups the process is in (a
// container's limit), whichever is smaller.
struct MemoryLimit {
  std::uint64_t bytes = 0;  // 0 when unknown
  std::string source;       // "of memory this machine has" or "memory limit in FILE"
};

// Parses a cgroup v2 memory.max or v1 memory.limit_in_bytes file's text:
// "max" and unreadable text give 0 (no limit).
std::uint64_t ParseCgroupMemoryLimit(const std::string& text);

// The lowest memory limit along the cgroup paths named in `proc_cgroup`
// (the text of /proc/self/cgroup), from each path up to the root of the
// hierarchy mounted under `cgroup_root` (/sys/fs/cgroup). 0 when none.
MemoryLimit CgroupMemoryLimit(const std::string& proc_cgroup,
                              const std::filesystem::path& cgroup_root);

// This process's memory limit, as above.
MemoryLimit ProcessMemoryLimit();

// A lower bound on the float32 tensors of the widest full-resolution
// channel count that are alive at once when ONNX Runtime runs a VAE on
// CPU. The SD 1.5 VAE peaked at 3.3 to 4.6 such tensors between 512x512 and
// 1536x1536 (docs/benchmarks.md), so a run refused with 3 cannot fit.
inline constexpr std::int64_t kFullResolutionTensors = 3;

// The bytes of those tensors for an image of `width` x `height` pixels.
std::uint64_t FullResolutionBytes(std::int64_t channels, std::int64_t width, std::int64_t height);

// Reads sdonnx.self_attention and sdonnx.full_resolution_channels from the
// headers of the UNet, the VAE decoder and, with `need_encoder`, the VAE
// encoder of `stem` in `dir`, and fails when the scores or the
// full-resolution tensors of `run` would need more than `memory`. Files
// without the metadata (older exports; --ort-attention stores no scores)
// are skipped, as is everything when `memory.bytes` is 0.
// Components are checked one at a time because generate's sessions share
// one arena (SessionOptions::shared_arena), so the VAE reuses the memory
// the UNet freed.
// NOTE: only these tensors are counted, so the estimate is a lower bound.
// The arena and the other activations add to it: the tiny test model at
// 512x512 (65536 tokens, as its VAE halves the image) peaked at 4.6 GB
// against a 2 GiB estimate, about four score-sized tensors per chunk.
Status CheckRunMemory(const std::filesystem::path& dir, const std::string& stem, bool need_encoder,
                      const ProfileRequest& run, const MemoryLimit& memory);

}  // namespace sdonnx
