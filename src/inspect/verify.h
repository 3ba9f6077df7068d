// `sdonnx verify`: checks that a checkpoint contains every weight that
// AUTOMATIC1111 and ComfyUI load from a single-file checkpoint of its
// family. Missing components or weights are problems. Things that load but
// are wrong or odd are warnings.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "inspect/checkpoint_inspect.h"
#include "model/shape_check.h"
#include "util/status.h"

namespace sdonnx {

struct VerifyProblem {
  std::string component;  // unet, vae, text_encoder, text_encoder_2
  std::string title;      // "VAE", "text encoder (CLIP ViT-L)", ...
  std::string what;       // "absent", "12 of 230 weights missing", ...
  std::size_t missing_count = 0;
  std::vector<std::string> missing_keys;  // the first few
  // Tensors whose shape does not fit the detected architecture, the first few.
  std::size_t wrong_shape_count = 0;
  std::vector<ShapeMismatch> wrong_shapes;
  // Weights stored as integers or booleans instead of floating point, the
  // first few.
  std::size_t wrong_dtype_count = 0;
  std::vector<DTypeMismatch> wrong_dtypes;
  // The messages AUTOMATIC1111, ComfyUI and diffusers show for the problem.
  std::vector<std::string> loader_messages;
  std::string advice;
};

struct VerifyReport {
  CheckpointSummary summary;
  // "sdonnx-extras" or "sdonnx-extract" for the files sdonnx writes that
  // are not checkpoints, empty for other files. For those two, `problems`
  // has one entry, of component "file", that describes the file.
  std::string file_kind;
  // A one-line reading of the problems as a whole, such as "only the UNet
  // is present"; empty when there is none.
  std::string diagnosis;
  std::vector<VerifyProblem> problems;
  std::vector<std::string> warnings;
  bool ok() const { return problems.empty(); }
};

// Checks the checkpoint at `path`. Files that cannot be read at all (not a
// checkpoint, a rejected pickle) are errors, not reports.
Result<VerifyReport> VerifyCheckpoint(const std::string& path);

nlohmann::json VerifyReportJson(const VerifyReport& report);

}  // namespace sdonnx
