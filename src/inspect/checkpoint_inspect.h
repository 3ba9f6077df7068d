// Checkpoint summaries for `sdonnx inspect` and `sdonnx verify`: the
// format, family and prediction type with their basis, each component with
// its tensor and parameter counts and dtypes, EMA weights, keys that no
// component explains, metadata and warnings.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/sniff.h"
#include "model/expected_keys.h"
#include "model/model_spec.h"
#include "util/status.h"

namespace sdonnx {

struct ComponentSummary {
  std::string name;    // unet, unet_ema, vae, text_encoder, text_encoder_2, other
  std::string title;
  std::string prefix;  // empty for "other"
  std::size_t tensors = 0;
  std::int64_t parameters = 0;
  std::uint64_t bytes = 0;
  std::map<std::string, std::size_t> dtypes;  // dtype name, such as "F16" -> tensor count
};

// A component that is present but lacks some of the weights its detected
// architecture needs.
struct IncompleteComponentSummary {
  std::string name;  // as in ExpectedComponent
  std::string title;
  std::size_t expected_weights = 0;
  std::size_t missing_weights = 0;
  std::vector<std::string> missing_keys;  // the first 10, in module order
};

struct CheckpointSummary {
  std::string path;
  FileFormat format = FileFormat::kUnknown;
  std::uint64_t file_bytes = 0;
  std::unique_ptr<Checkpoint> checkpoint;
  // Absent when detection failed; `detection_error` then says why.
  std::optional<ModelSpec> spec;
  std::string detection_error;
  std::vector<ExpectedComponent> expected;   // from the spec; empty without one
  std::vector<ComponentSummary> components;  // only those with tensors
  std::vector<IncompleteComponentSummary> incomplete;  // from `expected`
  std::size_t tensors = 0;
  std::int64_t parameters = 0;
  // Keys that are neither a weight of an expected component nor a known
  // optional key (extras such as a vision tower, embeddings, LoRA weights).
  std::vector<std::string> extra_keys;
  std::vector<std::string> warnings;
  // For the files sdonnx writes that are not checkpoints, recognised by
  // their metadata: "sdonnx-extras" (convert's extras file) or
  // "sdonnx-extract" (extract's output), what the file is and how to get
  // the checkpoint back. All empty for other files.
  std::string file_kind;
  std::string file_title;
  std::string file_description;
  std::string file_advice;
};

// Opens and summarises the checkpoint at `path`. Only an unreadable file is
// an error; a failed family detection is recorded in the summary.
Result<CheckpointSummary> InspectCheckpoint(const std::string& path);

// The weight keys of `component` that `checkpoint` does not store, in
// module order.
std::vector<std::string> MissingWeights(const Checkpoint& checkpoint,
                                        const ExpectedComponent& component);

// Fills `summary->incomplete` from `summary->expected`.
void FindIncompleteComponents(CheckpointSummary* summary);

// Decides the prediction type of an SD 2.x summary without a config by
// running convert's UNet probe (convert/prediction_probe.h). The probe
// writes about the size of the UNet's weights to a temporary folder under
// the system's temporary folder and removes it. A no-op for other
// summaries.
Status RunPredictionProbe(CheckpointSummary* summary);

// The summary as a JSON object; docs/inspect-verify.md lists its fields.
nlohmann::json CheckpointSummaryJson(const CheckpointSummary& summary);

// "SD 1.x", "SDXL refiner", ... for people.
std::string FamilyTitle(Family family);

}  // namespace sdonnx
