#include "sampling/sampler.h"

#include <algorithm>
#include <sstream>
#include <string>

#include "sampling/sampler_internal.h"

namespace sdonnx {
namespace {

// LCMScheduler's `original_inference_steps`: its timesteps are a subset of
// the 50 of the distillation schedule, so it cannot run more steps.
constexpr int kLcmMaxSteps = 50;

std::string FormatNumber(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

Status ValidateOptions(const SamplerOptions& options) {
  const std::string name(SamplerKindName(options.kind));
  const int max_steps = options.kind == SamplerKind::kLcm ? kLcmMaxSteps : kTrainTimesteps;
  if (options.steps < 1 || options.steps > max_steps) {
    std::string message = "invalid steps " + std::to_string(options.steps) + " for sampler " +
                          name + ": expected 1 to " + std::to_string(max_steps);
    if (options.kind == SamplerKind::kLcm) {
      message += ", because lcm picks its timesteps from a 50-step distillation schedule";
    }
    return Status::Error(message);
  }
  // Written so that NaN fails too.
  if (!(options.strength > 0.0 && options.strength <= 1.0)) {
    return Status::Error("invalid strength " + FormatNumber(options.strength) +
                         ": expected a value in (0, 1], where 1 starts from pure noise and "
                         "smaller values keep more of the input image");
  }
  const int start = sampling_internal::Img2imgStartIndex(options.steps, options.strength);
  if (start >= options.steps) {
    return Status::Error("strength " + FormatNumber(options.strength) + " with " +
                         std::to_string(options.steps) + " steps leaves no step to run (int(" +
                         std::to_string(options.steps) + " * " +
                         FormatNumber(options.strength) + ") = 0); use a strength of at least " +
                         FormatNumber(1.0 / options.steps) + " or more steps");
  }
  return Status::Ok();
}

}  // namespace

namespace sampling_internal {

int Img2imgStartIndex(int steps, double strength) {
  const int steps_to_run = std::min(static_cast<int>(steps * strength), steps);
  return std::max(steps - steps_to_run, 0);
}

}  // namespace sampling_internal

Result<SamplerKind> ParseSamplerKind(std::string_view name) {
  for (SamplerKind kind : {SamplerKind::kEulerAncestral, SamplerKind::kEuler, SamplerKind::kDdim,
                           SamplerKind::kDpmpp2m, SamplerKind::kDpmpp2mKarras, SamplerKind::kLcm}) {
    if (name == SamplerKindName(kind)) return kind;
  }
  return Status::Error("unknown sampler \"" + std::string(name) +
                       "\"; valid samplers: euler_a, euler, ddim, dpmpp_2m, dpmpp_2m_karras, lcm");
}

std::string_view SamplerKindName(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::kEulerAncestral:
      return "euler_a";
    case SamplerKind::kEuler:
      return "euler";
    case SamplerKind::kDdim:
      return "ddim";
    case SamplerKind::kDpmpp2m:
      return "dpmpp_2m";
    case SamplerKind::kDpmpp2mKarras:
      return "dpmpp_2m_karras";
    case SamplerKind::kLcm:
      return "lcm";
  }
  return "unknown";
}

Result<PredictionType> ParsePredictionType(std::string_view name) {
  if (name == "epsilon") return PredictionType::kEpsilon;
  if (name == "v_prediction") return PredictionType::kVPrediction;
  return Status::Error("unknown prediction type \"" + std::string(name) +
                       "\"; valid prediction types: epsilon, v_prediction");
}

std::string_view PredictionTypeName(PredictionType prediction) {
  return prediction == PredictionType::kEpsilon ? "epsilon" : "v_prediction";
}

Spacing DefaultSpacing(SamplerKind kind) {
  if (kind == SamplerKind::kDdim || kind == SamplerKind::kLcm) return Spacing::kLeading;
  return Spacing::kLinspace;
}

Result<std::unique_ptr<Sampler>> Sampler::Create(const SamplerOptions& options) {
  SDONNX_RETURN_IF_ERROR(ValidateOptions(options));
  SamplerOptions resolved = options;
  if (!resolved.spacing.has_value()) resolved.spacing = DefaultSpacing(options.kind);

  switch (resolved.kind) {
    case SamplerKind::kEulerAncestral:
    case SamplerKind::kEuler:
      return sampling_internal::CreateEulerSampler(resolved);
    case SamplerKind::kDpmpp2m:
    case SamplerKind::kDpmpp2mKarras:
      return sampling_internal::CreateDpmSolverSampler(resolved);
    case SamplerKind::kDdim:
      return sampling_internal::CreateDdimSampler(resolved);
    case SamplerKind::kLcm:
      return sampling_internal::CreateLcmSampler(resolved);
  }
  return Status::Error("unsupported sampler kind " +
                       std::to_string(static_cast<int>(resolved.kind)));
}

Sampler::Sampler(const SamplerOptions& options, Schedule schedule)
    : options_(options),
      full_(std::move(schedule)),
      start_index_(sampling_internal::Img2imgStartIndex(options.steps, options.strength)),
      init_noise_sigma_(full_.init_noise_sigma) {
  timesteps_.assign(full_.timesteps.begin() + start_index_, full_.timesteps.end());
  if (!full_.sigmas.empty()) {
    sigmas_.assign(full_.sigmas.begin() + start_index_, full_.sigmas.end());
  }
}

void Sampler::ScaleModelInputAt(int /*index*/, std::span<float> /*sample*/) const {}

Status Sampler::ScaleModelInput(int step, std::span<float> sample) const {
  if (step < 0 || step >= NumSteps()) {
    return Status::Error("ScaleModelInput: step " + std::to_string(step) +
                         " is out of range; this sampler runs steps 0 to " +
                         std::to_string(NumSteps() - 1));
  }
  ScaleModelInputAt(start_index_ + step, sample);
  return Status::Ok();
}

Status Sampler::Step(int step, std::span<const float> model_output, std::span<float> sample,
                     NoiseSource& noise) {
  if (step < 0 || step >= NumSteps()) {
    return Status::Error("Step: step " + std::to_string(step) +
                         " is out of range; this sampler runs steps 0 to " +
                         std::to_string(NumSteps() - 1) + ", each once");
  }
  if (step != next_step_) {
    return Status::Error("Step: step " + std::to_string(step) + " was requested but step " +
                         std::to_string(next_step_) +
                         " is next; call Step once per step, in order from 0");
  }
  if (model_output.size() != sample.size()) {
    return Status::Error("Step: model_output has " + std::to_string(model_output.size()) +
                         " values but sample has " + std::to_string(sample.size()) +
                         "; both must hold the same latent batch");
  }
  StepAt(start_index_ + step, model_output, sample, noise);
  ++next_step_;
  return Status::Ok();
}

Status Sampler::AddNoise(std::span<const float> original, std::span<const float> noise,
                         std::span<float> out) const {
  if (noise.size() != original.size() || out.size() != original.size()) {
    return Status::Error("AddNoise: original has " + std::to_string(original.size()) +
                         " values, noise " + std::to_string(noise.size()) + " and out " +
                         std::to_string(out.size()) + "; all three must be the same size");
  }
  const NoiseMix mix = NoiseMixAt(start_index_);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<float>(mix.signal * original[i] + mix.noise * noise[i]);
  }
  return Status::Ok();
}

}  // namespace sdonnx
