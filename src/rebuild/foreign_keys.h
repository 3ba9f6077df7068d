// Maps the initializers of ONNX files that diffusers/optimum exported
// (unet/model.onnx, vae_encoder/, vae_decoder/, text_encoder/) back to the
// original checkpoint keys.
//
// Two steps. First each initializer gets its diffusers parameter name.
// Named initializers carry it already. Anonymous ones ("onnx::MatMul_N",
// "onnx::Mul_N", "onnx::Add_N") are resolved through the node that consumes
// them, because torch.onnx names nodes by module scope
// ("/down_blocks.0/resnets.0/norm1/Mul"). The scope gives the module and the
// operator gives the parameter and the transform. A Mul or Add input is a
// GroupNorm scale or shift reshaped from [C] to [C, 1, 1], and a MatMul
// weight is a Linear weight stored transposed as [in, out]. Second, the
// diffusers name becomes the ldm checkpoint key through the inverse of
// diffusers' single-file key conversion.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/onnx_file.h"
#include "rebuild/rebuild.h"
#include "util/status.h"

namespace sdonnx {

enum class WeightTransform { kSame, kReshape, kTranspose };

struct ForeignWeight {
  std::string onnx_name;
  std::string diffusers_name;
  std::string checkpoint_key;
  WeightTransform transform = WeightTransform::kSame;
  std::vector<std::int64_t> checkpoint_shape;
};

struct ForeignComponentMap {
  std::string component;  // unet, vae_encoder, vae_decoder or text_encoder
  std::vector<ForeignWeight> mapped;
  // Initializers whose checkpoint key could not be found, each with why.
  std::vector<std::string> unmapped;
};

// The diffusers component folders that make up an SD 1.x checkpoint.
const std::vector<std::string>& ForeignComponents();

// Maps every initializer of `file`, the model of `component`.
ForeignComponentMap MapForeignComponent(const OnnxFile& file, const std::string& component);

// The bytes of a mapped weight in checkpoint layout: reshaped weights keep
// their bytes, transposed ones are transposed back to [out, in].
std::vector<std::uint8_t> ToCheckpointLayout(const ForeignWeight& weight, const OnnxFile& file);

// Whether `dir` has a diffusers component folder with a model.onnx.
bool IsForeignExportFolder(const std::string& dir);

// Rebuilds what the diffusers export in `dir` holds: every weight the
// graphs use, under its checkpoint key and in the export's dtype. EMA copies
// and non-weight buffers are not in such files and do not come back. A
// missing component or an unmapped initializer is an error unless
// options.allow_partial; the metadata sets sdonnx.rebuild to "foreign" (or
// "partial").
Result<RebuildReport> RebuildForeignExport(const std::string& dir, const RebuildOptions& options);

}  // namespace sdonnx
