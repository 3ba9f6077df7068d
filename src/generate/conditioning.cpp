#include "generate/conditioning.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace sdonnx {

namespace fs = std::filesystem;

namespace {

// Returns the largest N of the outputs named `prefix`N, or 0.
int LargestIndex(const std::vector<std::string>& names, const std::string& prefix) {
  int largest = 0;
  for (const std::string& name : names) {
    if (name.starts_with(prefix)) {
      largest = std::max(largest, std::atoi(name.c_str() + prefix.size()));
    }
  }
  return largest;
}

}  // namespace

Result<std::string> ClipSkipOutput(const OrtModel& text_encoder, const std::string& context_output,
                                   int clip_skip) {
  const auto names = text_encoder.OutputNames();
  const auto fail = [&](int largest) {
    return Status::Error("--clip-skip " + std::to_string(clip_skip) + " is more than " +
                         text_encoder.path() + " supports: the largest is " +
                         std::to_string(std::max(1, largest)) + " for this text encoder");
  };
  const std::string raw = "hidden_states.";
  if (context_output.starts_with(raw)) {
    // SDXL: a layer's output before the final layer norm; each skip steps
    // one layer down, and hidden_states.0 (the embeddings) is never used.
    const int base = std::atoi(context_output.c_str() + raw.size());
    const int index = base - (clip_skip - 1);
    const std::string output = raw + std::to_string(index);
    if (index < 1 || std::find(names.begin(), names.end(), output) == names.end()) {
      return fail(std::min(base, LargestIndex(names, raw)));
    }
    return output;
  }
  int base_skip = 1;
  if (context_output.starts_with("clip_skip_")) {
    base_skip = std::atoi(context_output.c_str() + std::strlen("clip_skip_"));
  }
  const int effective_skip = base_skip + clip_skip - 1;
  if (effective_skip <= 1) return std::string("last_hidden_state");
  const std::string output = "clip_skip_" + std::to_string(effective_skip);
  if (std::find(names.begin(), names.end(), output) == names.end()) {
    return fail(std::max(1, LargestIndex(names, "clip_skip_")) - base_skip + 1);
  }
  return output;
}

Status CheckFinite(std::span<const float> values, const std::string& component,
                   const OrtModel& model, int step, int total) {
  for (float v : values) {
    if (!std::isfinite(v)) {
      std::string where =
          step > 0 ? " at step " + std::to_string(step) + " of " + std::to_string(total) : "";
      // The cache checks byte counts only, so a damaged entry of the right
      // size shows up here.
      const std::string cached =
          model.cached_path().empty()
              ? ""
              : ", or the session cache entry " +
                    fs::path(model.cached_path()).parent_path().string() +
                    " it was loaded from is damaged (remove that folder to build it again)";
      return Status::Error(component + " produced NaN or Inf" + where +
                           "; the model's weights may be broken, or an fp16 model overflowed "
                           "(try the fp32 conversion)" +
                           cached);
    }
  }
  return Status::Ok();
}

Result<HostTensor> EncodePrompt(OrtModel& text_encoder, const std::vector<PromptChunk>& chunks,
                                const std::string& context_output, int clip_skip,
                                HostTensor* pooled) {
  if (chunks.empty()) return Status::Error("the prompt produced no token chunks");
  const auto length = static_cast<std::int64_t>(chunks.front().ids.size());
  std::vector<std::int32_t> ids;
  for (const PromptChunk& chunk : chunks) ids.insert(ids.end(), chunk.ids.begin(), chunk.ids.end());
  const auto count = static_cast<std::int64_t>(chunks.size());

  SDONNX_ASSIGN_OR_RETURN(const std::string output,
                          ClipSkipOutput(text_encoder, context_output, clip_skip));
  std::vector<std::string> requested = {output};
  if (pooled != nullptr) requested.push_back("text_embeds");
  SDONNX_ASSIGN_OR_RETURN(auto outputs,
                          text_encoder.RunInFixedBatches(
                              {{"input_ids", HostTensor::Int32({count, length}, ids)}}, requested));
  if (pooled != nullptr) {
    const HostTensor& embeds = outputs["text_embeds"];
    const auto width = embeds.shape.back();
    *pooled = HostTensor::Float(
        {1, width}, std::vector<float>(embeds.f32.begin(), embeds.f32.begin() + width));
  }
  HostTensor states = std::move(outputs[output]);
  const std::string component = fs::path(text_encoder.path()).filename().string();
  SDONNX_RETURN_IF_ERROR(CheckFinite(states.f32, component, text_encoder, 0, 0));
  if (pooled != nullptr)
    SDONNX_RETURN_IF_ERROR(CheckFinite(pooled->f32, component, text_encoder, 0, 0));
  if (states.shape.size() != 3 || states.shape[0] != count || states.shape[1] != length) {
    return Status::Error(text_encoder.path() + ": output '" + output + "' has an unexpected shape");
  }
  const std::int64_t width = states.shape[2];
  const std::size_t chunk_size = static_cast<std::size_t>(length * width);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    float* z = states.f32.data() + c * chunk_size;
    double before = 0;
    double after = 0;
    for (std::size_t i = 0; i < chunk_size; ++i) before += z[i];
    for (std::int64_t t = 0; t < length; ++t) {
      const float weight = chunks[c].weights[static_cast<std::size_t>(t)];
      for (std::int64_t k = 0; k < width; ++k) z[t * width + k] *= weight;
    }
    for (std::size_t i = 0; i < chunk_size; ++i) after += z[i];
    if (after != 0.0) {
      const auto scale = static_cast<float>(before / after);
      for (std::size_t i = 0; i < chunk_size; ++i) z[i] *= scale;
    }
  }
  states.shape = {1, count * length, width};
  return states;
}

HostTensor JoinContexts(const HostTensor& first, const HostTensor& second) {
  const std::int64_t a = first.shape[2];
  const std::int64_t b = second.shape[2];
  const std::size_t rows = first.f32.size() / static_cast<std::size_t>(a);
  std::vector<float> joined;
  joined.reserve(first.f32.size() + second.f32.size());
  for (std::size_t row = 0; row < rows; ++row) {
    joined.insert(joined.end(), first.f32.begin() + static_cast<long>(row * a),
                  first.f32.begin() + static_cast<long>((row + 1) * a));
    joined.insert(joined.end(), second.f32.begin() + static_cast<long>(row * b),
                  second.f32.begin() + static_cast<long>((row + 1) * b));
  }
  return HostTensor::Float({first.shape[0], first.shape[1], a + b}, std::move(joined));
}

}  // namespace sdonnx
