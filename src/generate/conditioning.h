// Text conditioning: a prompt's token chunks through the text encoder, with
// AUTOMATIC1111's emphasis weights, into the UNet's cross-attention context.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "runtime/ort_session.h"
#include "text/prompt.h"
#include "util/status.h"

namespace sdonnx {

// The output of `text_encoder` that gives the context at --clip-skip
// `clip_skip`, counted from `context_output`, the model's context at clip
// skip 1: last_hidden_state (SD 1.x), clip_skip_2 (SD 2.x) or a raw
// hidden_states.K (SDXL). Each further step moves one layer down; past the
// encoder's depth the error names the largest value.
Result<std::string> ClipSkipOutput(const OrtModel& text_encoder, const std::string& context_output,
                                   int clip_skip);

// Runs every 77-token chunk through `text_encoder` in one batch and returns
// the context [1, 77 x chunks, width], read from ClipSkipOutput. Each chunk's hidden
// states are multiplied by their tokens' weights, then rescaled so that the
// chunk's mean is what it was before weighting (AUTOMATIC1111's emphasis).
//
// With `pooled` set, also returns the first chunk's text_embeds output
// [1, projection_dim] there (SDXL's pooled prompt embedding).
Result<HostTensor> EncodePrompt(OrtModel& text_encoder, const std::vector<PromptChunk>& chunks,
                                const std::string& context_output, int clip_skip,
                                HostTensor* pooled = nullptr);

// Joins contexts [1, S, a] and [1, S, b] into [1, S, a + b].
HostTensor JoinContexts(const HostTensor& first, const HostTensor& second);

// Returns an error when `values`, an output of `model` (named `component`),
// contains NaN or Inf. `step` of `total` places a UNet output; 0 for others.
Status CheckFinite(std::span<const float> values, const std::string& component,
                   const OrtModel& model, int step, int total);

}  // namespace sdonnx
