// Synthetic checkpoints in the real SD 1.x single-file key layout, for the
// built-in demo, tests and benchmarks: the key and shape list of any
// hyperparameters, and manifests (key, dtype, shape lists) read from TSV.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "util/status.h"

namespace sdonnx {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
};

struct Sd1Hyperparameters {
  // UNet (ldm openaimodel.UNetModel)
  std::int64_t in_channels = 4;
  std::int64_t out_channels = 4;
  std::int64_t model_channels = 320;
  std::vector<std::int64_t> channel_mult = {1, 2, 4, 4};
  std::int64_t num_res_blocks = 2;
  std::vector<std::int64_t> attention_levels = {0, 1, 2};
  std::int64_t transformer_depth = 1;
  std::int64_t context_dim = 768;
  // VAE (ldm AutoencoderKL)
  std::int64_t vae_ch = 128;
  std::vector<std::int64_t> vae_ch_mult = {1, 2, 4, 4};
  std::int64_t vae_num_res_blocks = 2;
  std::int64_t z_channels = 4;
  // Text encoder (Hugging Face CLIPTextModel)
  std::int64_t vocab_size = 49408;
  std::int64_t context_length = 77;
  std::int64_t text_width = 768;
  std::int64_t text_layers = 12;
  std::int64_t text_mlp_width = 3072;
};

// Every key of an SD 1.x checkpoint with these hyperparameters, the
// position_ids buffer and the 12 schedule buffers included, in F32.
std::vector<TensorSpec> Sd1Layout(const Sd1Hyperparameters& h);

// Small hyperparameters for the built-in demo: a model that converts and
// runs in seconds.
Sd1Hyperparameters DemoHyperparameters();

// Reads a manifest: one `key<TAB>dtype<TAB>shape` line per tensor, shape as
// `320x4x3x3` or `scalar`.
Result<std::vector<TensorSpec>> ReadManifest(const std::string& path);

enum class FillMode { kZeros, kRandom };

// Writes a safetensors checkpoint with the given tensors. kZeros leaves the
// data as sparse holes; kRandom fills weights with seeded values of a
// plausible scale (norm weights 1, biases small) and position_ids with 0..n-1.
Status WriteSyntheticCheckpoint(const std::string& path, const std::vector<TensorSpec>& tensors,
                                FillMode fill, std::uint64_t seed);

}  // namespace sdonnx
