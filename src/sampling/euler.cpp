// Euler and Euler ancestral (diffusers' EulerDiscreteScheduler and
// EulerAncestralDiscreteScheduler): first-order steps of the probability
// flow ODE in sigma, dx/dsigma = (x - x0) / sigma, on latents scaled by
// sqrt(sigma^2 + 1). The ancestral variant steps down further, to
// sigma_down, and adds fresh noise of scale sigma_up back.
#include <algorithm>
#include <cmath>

#include "sampling/sampler_internal.h"

namespace sdonnx::sampling_internal {
namespace {

class EulerSampler final : public Sampler {
 public:
  EulerSampler(const SamplerOptions& options, Schedule schedule)
      : Sampler(options, std::move(schedule)),
        ancestral_(options.kind == SamplerKind::kEulerAncestral),
        epsilon_(options.prediction == PredictionType::kEpsilon) {}

 protected:
  void ScaleModelInputAt(int index, std::span<float> sample) const override {
    // Divides in float32, as diffusers divides a float32 tensor by a float32
    // scalar.
    const float sigma = full_schedule().sigmas[index];
    const float divisor = std::sqrt(sigma * sigma + 1.0f);
    for (float& value : sample) value /= divisor;
  }

  NoiseMix NoiseMixAt(int index) const override {
    return {1.0, static_cast<double>(full_schedule().sigmas[index])};
  }

  void StepAt(int index, std::span<const float> model_output, std::span<float> sample,
              NoiseSource& noise) override {
    const double sigma = full_schedule().sigmas[index];
    const double sigma_next = full_schedule().sigmas[index + 1];
    double sigma_down = sigma_next;
    double sigma_up = 0.0;
    if (ancestral_) {
      const double up_squared =
          sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma);
      sigma_up = std::sqrt(up_squared);
      sigma_down = std::sqrt(std::max(sigma_next * sigma_next - up_squared, 0.0));
      noise_.resize(sample.size());
      noise.Fill(noise_);
    }
    const double dt = sigma_down - sigma;
    const double v_scale = 1.0 / (sigma * sigma + 1.0);
    const double v_output_scale = -sigma / std::sqrt(sigma * sigma + 1.0);

    for (std::size_t i = 0; i < sample.size(); ++i) {
      const double x = sample[i];
      const double output = model_output[i];
      const double denoised = epsilon_ ? x - sigma * output : output * v_output_scale + x * v_scale;
      const double derivative = (x - denoised) / sigma;
      double next = x + derivative * dt;
      if (ancestral_) next += noise_[i] * sigma_up;
      sample[i] = static_cast<float>(next);
    }
  }

 private:
  bool ancestral_;
  bool epsilon_;
  std::vector<float> noise_;
};

}  // namespace

std::unique_ptr<Sampler> CreateEulerSampler(const SamplerOptions& options) {
  const TrainingSchedule& training = TrainingSchedule::StableDiffusion();
  FullSchedule schedule;
  for (double t : SpacedTimesteps(*options.spacing, options.steps)) {
    // diffusers keeps these timesteps in float32 and interpolates the sigma
    // at the float32 value.
    const auto timestep = static_cast<float>(t);
    schedule.timesteps.push_back(timestep);
    schedule.sigmas.push_back(static_cast<float>(training.InterpolateSigma(timestep)));
  }
  schedule.sigmas.push_back(0.0f);

  const float max_sigma = *std::max_element(schedule.sigmas.begin(), schedule.sigmas.end());
  schedule.init_noise_sigma = *options.spacing == Spacing::kLeading
                                  ? std::sqrt(max_sigma * max_sigma + 1.0f)
                                  : max_sigma;
  return std::make_unique<EulerSampler>(options, std::move(schedule));
}

}  // namespace sdonnx::sampling_internal
