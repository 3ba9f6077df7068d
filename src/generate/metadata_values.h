// Parsing of the sdonnx metadata values that generate reads, with the
// ranges they must be in, so that a damaged or edited file is named with
// its key and value before a model runs. verify applies the same checks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "util/status.h"

namespace sdonnx {

// Ranges of the UNet's metadata values. Released models have a factor of 8,
// 4 or 16 latent channels, and CLIP's 49408 token ids.
inline constexpr std::int64_t kMaxDownsampleFactor = 64;
inline constexpr std::int64_t kMaxLatentChannels = 64;
inline constexpr std::int64_t kMaxTokenId = 49407;
inline constexpr float kMaxScalingFactor = 100;
// Far above any released model (the SD VAE has 512 channels at most).
inline constexpr std::int64_t kMaxFullResolutionChannels = 65536;
// The largest image side and batch that generate accepts.
inline constexpr std::int64_t kMaxStaticSide = 8192;
inline constexpr std::int64_t kMaxStaticBatch = 64;

// An image size in pixels, as sdonnx.static_shape records it.
struct ImageSize {
  std::int64_t width = 0;
  std::int64_t height = 0;
};

// Parses metadata `key` of the file at `path` as an integer from `min` to
// `max`. The error names the file, the key, the value and the range, or
// reports that the key is missing.
Result<std::int64_t> MetadataInteger(const std::string& path, const std::string& key,
                                     const std::map<std::string, std::string>& metadata,
                                     std::int64_t min, std::int64_t max);

// Parses metadata `key` as a finite number above 0 and at most `max`.
Result<float> MetadataPositiveFloat(const std::string& path, const std::string& key,
                                    const std::map<std::string, std::string>& metadata, float max);

// Parses sdonnx.prediction_type: epsilon or v_prediction.
Result<PredictionType> MetadataPredictionType(const std::string& path,
                                              const std::map<std::string, std::string>& metadata);

// Parses metadata `key` as WIDTHxHEIGHT, each a multiple of 8 from 8 to
// kMaxStaticSide.
Result<ImageSize> MetadataImageSize(const std::string& path, const std::string& key,
                                    const std::map<std::string, std::string>& metadata);

// Checks every value above that `metadata` has, and sdonnx.self_attention,
// and returns one message per invalid value. Missing keys are not listed,
// because files of older versions lack some of them.
std::vector<std::string> InvalidGenerateMetadata(
    const std::string& path, const std::map<std::string, std::string>& metadata);

// Returns why a UNet's latent channel count and VAE factor (its metadata)
// do not fit its own `sample` input or the VAE decoder, or "" when they
// fit. Values in range but wrong for the model would otherwise fail in
// ONNX Runtime, or only after every step. `decoder_channels` is the
// channel dimension of the decoder's input, or -1 where it is unknown.
std::string MismatchWithDecoder(const std::string& unet_path, std::int64_t latent_channels,
                                std::int64_t downsample_factor, std::int64_t unet_in_channels,
                                const std::string& decoder_path, std::int64_t decoder_channels,
                                const std::map<std::string, std::string>& decoder_metadata);

// Returns one message per key that generate needs in a UNet's metadata and
// `metadata` lacks. The keys are sdonnx.family, sdonnx.prediction_type and
// sdonnx.vae_scaling_factor. With `with_vae` they include
// sdonnx.vae_downsample_factor and sdonnx.latent_channels, which convert
// writes only when the checkpoint has a VAE. generate rejects a UNet that
// lacks one, so verify does too, whichever version wrote the file.
std::vector<std::string> MissingUNetMetadata(const std::string& path,
                                             const std::map<std::string, std::string>& metadata,
                                             bool with_vae);

}  // namespace sdonnx
