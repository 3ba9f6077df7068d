// convert: a single-file checkpoint to one ONNX file per component.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "graph/model_writer.h"
#include "model/model_spec.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr int kDefaultOpset = 17;
inline constexpr int kMinOpset = 14;
inline constexpr int kMaxOpset = 21;

// Fixed input and output shapes for engines that want them (TensorRT).
struct StaticShape {
  std::int64_t width = 0;  // image pixels, a multiple of 8 and of the VAE factor
  std::int64_t height = 0;
  std::int64_t batch = 1;  // images per run; the UNet takes 2 x batch rows (guidance)
};

// ConvertOptions::attention_chunks by default, and the largest accepted.
inline constexpr std::int64_t kDefaultAttentionChunks = 64;
inline constexpr std::int64_t kMaxAttentionChunks = 256;

struct ConvertOptions {
  std::string model_path;
  std::string output_dir;
  std::optional<std::string> config_path;
  std::optional<std::string> prediction_type;  // Overrides detection: epsilon or v_prediction.
  int opset = kDefaultOpset;
  ExternalData external_data = ExternalData::kAuto;
  bool overwrite = false;
  // Convert the UNet's EMA weights (model_ema.*) instead of the main ones.
  // Files that have only EMA weights use them without this.
  bool ema = false;
  // A separate VAE (AUTOMATIC1111's "VAE" files) in the original naming,
  // with or without the first_stage_model. prefix; it replaces the
  // checkpoint's own VAE, or supplies the one it lacks.
  std::optional<std::string> vae_path;
  // Store weights as float16 and compute in float16, with float32 islands
  // for attention scores, normalization statistics and the timestep
  // embedding. Inputs and outputs stay float32.
  bool fp16 = false;
  // Without fp16: store float16 and bfloat16 source weights as float32,
  // widened exactly. The files are twice as large, but ONNX Runtime loads
  // them from the memory map instead of widening every weight at load.
  bool fp32_weights = false;
  // With fp16: convert the SDXL VAE decoder to float16 too. By default it
  // stays float32, because its activations overflow float16.
  bool fp16_sdxl_vae_decoder = false;
  std::optional<StaticShape> static_shape;
  // Write the UNet's and VAE's attention as ONNX Runtime's contrib operator
  // com.microsoft.MultiHeadAttention (flash attention on CPU). Such files
  // load only in ONNX Runtime; the default is standard ai.onnx operators.
  bool ort_attention = false;
  // Query chunks of the UNet's full-resolution self-attention; the VAE
  // gets a quarter. Each chunk's scores are computed and used before the
  // next, so with 64 chunks at 512x512 they take 16 MiB instead of 1 GiB.
  // Query chunks of UNet self-attention at full resolution (the VAE gets a
  // quarter), computed by one Loop node per attention. 1 writes one
  // MatMul-Softmax-MatMul. Unset means kDefaultAttentionChunks.
  // ort_attention ignores it.
  std::optional<std::int64_t> attention_chunks;
};

struct ConvertedComponent {
  std::string component;  // unet, vae_encoder, vae_decoder, clip_text
  std::vector<WrittenFile> files;
  std::string weight_precision;  // "source", "fp16" or "fp32"
  WeightConversion conversion;   // counts of the float16 narrowing
};

struct ConvertReport {
  ModelSpec spec;
  std::string source_sha256;
  // The id that every file of this run names (sdonnx.conversion_id).
  std::string conversion_id;
  // Float32 graphs that store float16 or bfloat16 weights behind a Cast,
  // and those weights' dtypes ("float16", "bfloat16");
  // ConvertOptions::fp32_weights stores them widened instead.
  int float32_graphs_with_narrow_weights = 0;
  std::set<std::string> narrow_weight_dtypes;
  // The weights behind a Cast per component ("unet": 1680), for the note.
  std::map<std::string, int> cast_weights;
  std::vector<ConvertedComponent> components;
  // extras_STEM.safetensors: the source tensors no graph stores and the
  // record that rebuild restores the checkpoint from.
  WrittenFile extras;
};

// Checks a static shape against the VAE factor `f`; the error names the
// nearest valid sizes.
Status ValidateStaticShape(const StaticShape& shape, std::int64_t f);

// Converts every component the checkpoint has. Files are written into a
// staging folder inside the output folder, checked, and moved into place
// only when all of them succeeded; on any error the output folder is left as
// it was. The checkpoint is only ever opened read-only.
Result<ConvertReport> ConvertCheckpoint(const ConvertOptions& options);

}  // namespace sdonnx
