#include "generate/metadata_values.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "generate/memory_estimate.h"

namespace sdonnx {
namespace {

// The text of metadata `key`, or an error naming the file when it is missing.
Result<std::string> MetadataText(const std::string& path, const std::string& key,
                                 const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find(key);
  if (it == metadata.end()) {
    return Status::Error(path + ": metadata '" + key +
                         "' is missing; files written by sdonnx "
                         "convert have it (re-convert the checkpoint)");
  }
  return it->second;
}

Status InvalidMetadata(const std::string& path, const std::string& key, const std::string& value,
                       const std::string& expected) {
  return Status::Error(path + ": metadata '" + key + "' is '" + value + "', expected " + expected +
                       "; the file is damaged or was edited, so convert the checkpoint again");
}

}  // namespace

Result<float> MetadataPositiveFloat(const std::string& path, const std::string& key,
                                    const std::map<std::string, std::string>& metadata, float max) {
  SDONNX_ASSIGN_OR_RETURN(const std::string text, MetadataText(path, key, metadata));
  char expected[64];
  std::snprintf(expected, sizeof(expected), "a number above 0 and at most %g", max);
  float value = 0;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || stop != text.data() + text.size() || !std::isfinite(value) ||
      value <= 0 || value > max) {
    return InvalidMetadata(path, key, text, expected);
  }
  return value;
}

Result<std::int64_t> MetadataInteger(const std::string& path, const std::string& key,
                                     const std::map<std::string, std::string>& metadata,
                                     std::int64_t min, std::int64_t max) {
  SDONNX_ASSIGN_OR_RETURN(const std::string text, MetadataText(path, key, metadata));
  std::int64_t value = 0;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || stop != text.data() + text.size() || value < min || value > max) {
    return InvalidMetadata(path, key, text,
                           "an integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return value;
}

Result<ImageSize> MetadataImageSize(const std::string& path, const std::string& key,
                                    const std::map<std::string, std::string>& metadata) {
  SDONNX_ASSIGN_OR_RETURN(const std::string text, MetadataText(path, key, metadata));
  ImageSize size;
  const char* end = text.data() + text.size();
  const auto [x, width_error] = std::from_chars(text.data(), end, size.width);
  bool valid = width_error == std::errc() && x != end && *x == 'x';
  if (valid) {
    const auto [stop, height_error] = std::from_chars(x + 1, end, size.height);
    valid = height_error == std::errc() && stop == end;
  }
  for (const std::int64_t side : {size.width, size.height}) {
    valid = valid && side >= 8 && side <= kMaxStaticSide && side % 8 == 0;
  }
  if (!valid) {
    return InvalidMetadata(
        path, key, text,
        "WIDTHxHEIGHT with each side a multiple of 8 from 8 to " + std::to_string(kMaxStaticSide));
  }
  return size;
}

Result<PredictionType> MetadataPredictionType(const std::string& path,
                                              const std::map<std::string, std::string>& metadata) {
  SDONNX_ASSIGN_OR_RETURN(const std::string text,
                          MetadataText(path, "sdonnx.prediction_type", metadata));
  Result<PredictionType> prediction = ParsePredictionType(text);
  if (!prediction.ok()) {
    return InvalidMetadata(path, "sdonnx.prediction_type", text, "epsilon or v_prediction");
  }
  return prediction;
}

std::vector<std::string> InvalidGenerateMetadata(
    const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::vector<std::string> problems;
  auto check = [&](const Status& status) {
    if (!status.ok()) problems.push_back(status.message());
  };
  const std::vector<std::pair<const char*, std::pair<std::int64_t, std::int64_t>>> integers = {
      {"sdonnx.vae_downsample_factor", {1, kMaxDownsampleFactor}},
      {"sdonnx.latent_channels", {1, kMaxLatentChannels}},
      {"sdonnx.text_pad_id", {0, kMaxTokenId}},
      {"sdonnx.text_2_pad_id", {0, kMaxTokenId}},
      {"sdonnx.full_resolution_channels", {1, kMaxFullResolutionChannels}},
      {"sdonnx.static_batch", {1, kMaxStaticBatch}},
  };
  for (const auto& [key, range] : integers) {
    if (!metadata.contains(key)) continue;
    check(MetadataInteger(path, key, metadata, range.first, range.second).status());
  }
  if (metadata.contains("sdonnx.vae_scaling_factor")) {
    check(MetadataPositiveFloat(path, "sdonnx.vae_scaling_factor", metadata, kMaxScalingFactor)
              .status());
  }
  if (metadata.contains("sdonnx.static_shape")) {
    check(MetadataImageSize(path, "sdonnx.static_shape", metadata).status());
  }
  if (metadata.contains("sdonnx.prediction_type")) {
    check(MetadataPredictionType(path, metadata).status());
  }
  const auto layout = metadata.find("sdonnx.self_attention");
  if (layout != metadata.end()) {
    check(ParseSelfAttention(layout->second).status().WithContext(path));
  }
  return problems;
}

std::vector<std::string> MissingUNetMetadata(const std::string& path,
                                             const std::map<std::string, std::string>& metadata,
                                             bool with_vae) {
  std::vector<std::string> keys = {"sdonnx.family", "sdonnx.prediction_type",
                                   "sdonnx.vae_scaling_factor"};
  if (with_vae) keys.insert(keys.end(), {"sdonnx.vae_downsample_factor", "sdonnx.latent_channels"});
  std::vector<std::string> problems;
  for (const std::string& key : keys) {
    if (Result<std::string> text = MetadataText(path, key, metadata); !text.ok()) {
      problems.push_back(text.status().message());
    }
  }
  return problems;
}

std::string MismatchWithDecoder(const std::string& unet_path, std::int64_t latent_channels,
                                std::int64_t downsample_factor, std::int64_t unet_in_channels,
                                const std::string& decoder_path, std::int64_t decoder_channels,
                                const std::map<std::string, std::string>& decoder_metadata) {
  const std::string again = "; the file is damaged or was edited, so convert the checkpoint again";
  const std::string latents = std::to_string(latent_channels);
  const std::int64_t in = unet_in_channels;
  const std::int64_t l = latent_channels;
  if (in > 0 && in != l && in != 2 * l && in != 2 * l + 1) {
    return unet_path + ": metadata 'sdonnx.latent_channels' is " + latents +
           ", but its input 'sample' has " + std::to_string(in) +
           " channels, which fits no UNet for " + latents + " latent channels (" + latents + "; " +
           std::to_string(2 * l) + " for instruct-pix2pix; " + std::to_string(2 * l + 1) +
           " for inpainting)" + again;
  }
  const std::string either =
      "; one of the two files is damaged or was edited, so convert the checkpoint again";
  if (decoder_channels > 0 && decoder_channels != l) {
    return unet_path + ": metadata 'sdonnx.latent_channels' is " + latents + ", but " +
           decoder_path + " takes latents with " + std::to_string(decoder_channels) + " channels" +
           either;
  }
  const auto factor = decoder_metadata.find("sdonnx.vae_downsample_factor");
  if (factor != decoder_metadata.end() && factor->second != std::to_string(downsample_factor)) {
    return unet_path + ": metadata 'sdonnx.vae_downsample_factor' is " +
           std::to_string(downsample_factor) + ", but " + decoder_path + " records " +
           factor->second + either;
  }
  return "";
}

}  // namespace sdonnx
