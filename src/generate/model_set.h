// The ONNX files of one converted model, found in a folder and loaded into
// ONNX Runtime, with the facts `generate` needs from their metadata.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "runtime/ort_session.h"
#include "runtime/tensorrt_profiles.h"
#include "sampling/sampler.h"
#include "util/status.h"

namespace sdonnx {

struct ModelFacts {
  std::string stem;                  // <stem> of unet_<stem>.onnx
  std::string family;                // sdonnx.family
  std::string variant;               // base, inpaint, instruct-pix2pix
  PredictionType prediction = PredictionType::kEpsilon;
  float scaling_factor = 0.18215f;
  std::int64_t downsample_factor = 8;
  std::int64_t latent_channels = 4;
  std::int64_t unet_in_channels = 4;
  std::string source_sha256;         // of the converted checkpoint
  // The text encoder output that is the UNet's context at clip skip 1, and
  // the id that pads token chunks.
  std::string text_context_output = "last_hidden_state";
  std::int32_t text_pad_id = 49407;
  std::string text_2_context_output;  // SDXL's clip_text_2
  std::int32_t text_2_pad_id = 0;
  // SDXL: the UNet's text_embeds width and time id count; 0 for other families.
  std::int64_t text_embed_dim = 0;
  std::int64_t num_time_ids = 0;
  // Files written with --static-shape: the image size and images per run
  // they are fixed to; 0 when the shapes are dynamic.
  std::int64_t static_width = 0;
  std::int64_t static_height = 0;
  std::int64_t static_batch = 0;
  std::int64_t static_unet_rows = 0;  // the UNet's fixed batch
};

// Checks a request against the fixed shapes of files written with
// --static-shape: the same size and batch, and as many UNet rows per step
// (`unet_rows`: the batch times 2 with guidance, 3 for instruct-pix2pix).
Status CheckStaticShape(const ModelFacts& facts, std::int64_t width, std::int64_t height,
                        std::int64_t batch, std::int64_t unet_rows);

class ModelSet {
 public:
  // Finds unet_<stem>.onnx, the text encoders (clip_text_<stem>.onnx and,
  // for SDXL, clip_text_2_<stem>.onnx) and vae_decoder_<stem>.onnx in `dir`
  // (and vae_encoder_<stem>.onnx when `need_encoder`) and loads them. The
  // folder must hold exactly one such set.
  // With the TensorRT provider, each file gets an optimization profile for
  // the width, height, batch and guidance of `run`, within the family's
  // ranges (see runtime/tensorrt_profiles.h).
  static Result<std::unique_ptr<ModelSet>> Load(const std::string& dir, bool need_encoder,
                                                const SessionOptions& options,
                                                const ProfileRequest& run = {});

  const ModelFacts& facts() const { return facts_; }
  OrtModel& unet() { return *unet_; }
  // Null where the family has no such encoder (the SDXL refiner has only
  // the second).
  OrtModel* text_encoder() { return text_.get(); }
  OrtModel* text_encoder_2() { return text_2_.get(); }
  OrtModel& vae_decoder() { return *decoder_; }
  // Null unless loaded with need_encoder.
  OrtModel* vae_encoder() { return encoder_.get(); }
  // The file names of the models whose session cache entry this load built.
  std::vector<std::string> CacheBuilt() const;
  // The stale cache entries those builds removed, and their bytes.
  std::pair<std::size_t, std::uint64_t> CacheEntriesRemoved() const;

 private:
  ModelFacts facts_;
  std::unique_ptr<OrtModel> unet_, text_, text_2_, decoder_, encoder_;
};

}  // namespace sdonnx
