// The Stable Diffusion family of a UNet ONNX graph that carries no sdonnx
// metadata, such as one that diffusers' ONNX export wrote, read from the
// shapes of its initializers.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>

namespace sdonnx {

struct UNetFamilyHint {
  std::string family;  // sd1, sd2, sdxl, sdxl-refiner, or empty when unknown
  std::string basis;   // the shapes or layers that decided it
  // The width of the cross-attention context (the text encoder's output);
  // 0 when no attn2.to_k weight was found.
  std::int64_t context_dim = 0;
};

// Infers the family from the cross-attention context width (768: SD 1.x,
// 1024: SD 2.x, 2048: SDXL base, 1280: SDXL refiner). Other widths, as in
// test models, fall back on the layout: an add_embedding means SDXL, a
// linear proj_in SD 2.x, and a 1x1 convolution proj_in SD 1.x.
UNetFamilyHint InferUNetFamily(const onnx::GraphProto& graph);

}  // namespace sdonnx
