// Text conditioning: a prompt's token chunks through the text encoder, with
// AUTOMATIC1111's emphasis weights, into the UNet's cross-attention context.
#pragma once

#include <vector>

#include "runtime/ort_session.h"
#include "text/prompt.h"
#include "util/status.h"

namespace sdonnx {

// Runs every 77-token chunk through `text_encoder` in one batch and returns
// the context [1, 77 x chunks, width]. `context_output` is the model's
// context at clip skip 1 (last_hidden_state, or clip_skip_2 for SD 2.x);
// each further clip skip step moves one layer down. Each chunk's hidden
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

}  // namespace sdonnx
