// Shape checks that run before conversion, so that a checkpoint whose
// tensors do not fit the detected architecture fails with the tensor's name
// instead of producing a broken ONNX model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/dtype.h"
#include "model/expected_keys.h"
#include "model/model_spec.h"
#include "util/status.h"

namespace sdonnx {

struct ShapeMismatch {
  std::string key;
  std::vector<std::int64_t> expected;
  std::vector<std::int64_t> found;
};

// The tensors of `component` present in `checkpoint` whose shape differs
// from the expected one, in module order. Missing tensors are not listed.
// A VAE attention projection stored as Linear [c, c] (the diffusers layout)
// matches the 1x1 convolution [c, c, 1, 1].
std::vector<ShapeMismatch> FindShapeMismatches(const Checkpoint& checkpoint,
                                               const ExpectedComponent& component);

struct DTypeMismatch {
  std::string key;
  DType found;
};

// The tensors of `component` present in `checkpoint` that are stored as
// integers or booleans instead of floating point, in module order. Missing
// tensors are not listed.
std::vector<DTypeMismatch> FindNonFloatWeights(const Checkpoint& checkpoint,
                                               const ExpectedComponent& component);

// Rejects a UNet whose input channels are not latent (base), 2 x latent
// (instruct-pix2pix) or 2 x latent + 1 (inpainting), where latent is the
// UNet's output channel count.
Status CheckUNetInputChannels(const UNetSpec& unet);

// Checks what convert reads: the UNet's input channels, every tensor shape
// of the UNet, the text encoders and the VAE (from `vae_file` when it is
// given, else from `checkpoint`), and that the VAE's latent channels match
// the UNet's.
Status CheckShapesBeforeConvert(const Checkpoint& checkpoint, const Checkpoint* vae_file,
                                const ModelSpec& spec);

}  // namespace sdonnx
