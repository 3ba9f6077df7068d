// Factories of the concrete samplers, for Sampler::Create. Each expects
// options that Create has already validated, with the spacing filled in.
#pragma once

#include <memory>

#include "sampling/sampler.h"

namespace sdonnx::sampling_internal {

// Creates a kEuler or kEulerAncestral sampler.
std::unique_ptr<Sampler> CreateEulerSampler(const SamplerOptions& options);
// Creates a kDpmpp2m or kDpmpp2mKarras sampler. Fails when the spacing
// repeats a timestep.
Result<std::unique_ptr<Sampler>> CreateDpmSolverSampler(const SamplerOptions& options);
std::unique_ptr<Sampler> CreateDdimSampler(const SamplerOptions& options);
std::unique_ptr<Sampler> CreateLcmSampler(const SamplerOptions& options);

// Returns the first img2img step in the full schedule, as diffusers'
// StableDiffusionImg2ImgPipeline.get_timesteps computes it.
int Img2imgStartIndex(int steps, double strength);

}  // namespace sdonnx::sampling_internal
