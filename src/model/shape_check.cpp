#include "model/shape_check.h"

namespace sdonnx {
namespace {

// diffusers stores the VAE attention projections as Linear weights, which
// the VAE graph reshapes to the same matrix.
bool IsSqueezedPointwiseConv(const std::string& key, const std::vector<std::int64_t>& expected,
                             const std::vector<std::int64_t>& found) {
  return key.find(".mid.attn_1.") != std::string::npos && expected.size() == 4 &&
         expected[2] == 1 && expected[3] == 1 && found.size() == 2 &&
         found[0] == expected[0] && found[1] == expected[1];
}

Status CheckComponent(const Checkpoint& checkpoint, const ExpectedComponent& component) {
  const std::vector<ShapeMismatch> mismatches = FindShapeMismatches(checkpoint, component);
  if (mismatches.empty()) return Status::Ok();
  const ShapeMismatch& first = mismatches.front();
  std::string message = checkpoint.path() + ": tensor '" + first.key + "' has shape " +
                        ShapeText(first.found) + ", but the " + component.title +
                        " detected from the other tensors needs " + ShapeText(first.expected);
  if (mismatches.size() > 1) {
    message += " (" + std::to_string(mismatches.size() - 1) + " more tensors of the " +
               component.title + " differ too)";
  }
  return Status::Error(message +
                       "; the file is damaged or was edited: download it again or use the "
                       "original checkpoint");
}

}  // namespace

std::vector<ShapeMismatch> FindShapeMismatches(const Checkpoint& checkpoint,
                                               const ExpectedComponent& component) {
  std::vector<ShapeMismatch> mismatches;
  for (std::size_t i = 0; i < component.required.size() && i < component.shapes.size(); ++i) {
    const std::string& key = component.required[i];
    const TensorInfo* tensor = checkpoint.Find(key);
    if (tensor == nullptr) continue;
    const std::vector<std::int64_t>& expected = component.shapes[i];
    if (tensor->shape == expected || IsSqueezedPointwiseConv(key, expected, tensor->shape)) {
      continue;
    }
    mismatches.push_back({key, expected, tensor->shape});
  }
  return mismatches;
}

std::vector<DTypeMismatch> FindNonFloatWeights(const Checkpoint& checkpoint,
                                               const ExpectedComponent& component) {
  std::vector<DTypeMismatch> mismatches;
  for (const std::string& key : component.required) {
    const TensorInfo* tensor = checkpoint.Find(key);
    if (tensor != nullptr && !IsFloating(tensor->dtype)) {
      mismatches.push_back({key, tensor->dtype});
    }
  }
  return mismatches;
}

Status CheckUNetInputChannels(const UNetSpec& unet) {
  const std::int64_t latent = unet.out_channels;
  const std::int64_t in = unet.in_channels;
  if (in == latent || in == 2 * latent || in == 2 * latent + 1) return Status::Ok();
  std::string message = "UNet takes " + std::to_string(in) + " input channels; sdonnx supports " +
                        std::to_string(latent) + " (base), " + std::to_string(2 * latent) +
                        " (instruct-pix2pix) and " + std::to_string(2 * latent + 1) +
                        " (inpainting) for its " + std::to_string(latent) + " latent channels";
  if (latent == 4 && in == 5) {
    message += "; a 5-channel UNet is probably an SD 2 depth model, which is not supported";
  } else if (latent == 4 && in == 7) {
    message += "; a 7-channel UNet is probably the SD 2 x4 upscaler, which is not supported";
  } else {
    message += "; this UNet variant is not supported";
  }
  return Status::Error(message);
}

Status CheckShapesBeforeConvert(const Checkpoint& checkpoint, const Checkpoint* vae_file,
                                const ModelSpec& spec) {
  SDONNX_RETURN_IF_ERROR(
      CheckUNetInputChannels(spec.unet).WithContext(checkpoint.path()));
  for (const ExpectedComponent& component : ExpectedComponents(checkpoint, spec)) {
    if (!component.present || (component.name == "vae" && vae_file != nullptr)) continue;
    SDONNX_RETURN_IF_ERROR(CheckComponent(checkpoint, component));
  }
  if (!spec.vae) return Status::Ok();
  if (vae_file != nullptr) {
    SDONNX_RETURN_IF_ERROR(CheckComponent(*vae_file, ExpectedVae(*vae_file, *spec.vae)));
  }
  if (spec.vae->latent_channels != spec.unet.out_channels) {
    const std::string source = vae_file != nullptr ? vae_file->path() : checkpoint.path();
    return Status::Error(source + ": the VAE has " + std::to_string(spec.vae->latent_channels) +
                         " latent channels, but the UNet of " + checkpoint.path() + " works on " +
                         std::to_string(spec.unet.out_channels) +
                         " (its output channels); use a VAE made for this model family");
  }
  return Status::Ok();
}

}  // namespace sdonnx
