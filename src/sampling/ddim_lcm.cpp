// DDIM (diffusers' DDIMScheduler, eta 0) and LCM (LCMScheduler). Both work
// on unscaled latents x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise, where a_t is
// alpha_cumprod at integer timestep t, and both first predict x0 from the
// model output.
#include <cmath>

#include "sampling/sampler_internal.h"

namespace sdonnx::sampling_internal {
namespace {

// LCMScheduler defaults: the distillation schedule has 50 steps, and the
// boundary condition uses sigma_data 0.5 and timestep_scaling 10.
constexpr int kLcmOriginalSteps = 50;
constexpr double kLcmSigmaData = 0.5;
constexpr double kLcmTimestepScaling = 10.0;

int TimestepAt(const FullSchedule& schedule, int index) {
  return static_cast<int>(schedule.timesteps[index]);
}

// x0 and the noise the model output implies, at alpha_cumprod `a`.
struct Prediction {
  double x0;
  double noise;
};

Prediction Predict(bool epsilon, double a, double x, double output) {
  const double sqrt_a = std::sqrt(a);
  const double sqrt_b = std::sqrt(1.0 - a);
  if (epsilon) return {(x - sqrt_b * output) / sqrt_a, output};
  return {sqrt_a * x - sqrt_b * output, sqrt_a * output + sqrt_b * x};
}

NoiseMix AlphaNoiseMix(const FullSchedule& schedule, int index) {
  const double a = TrainingSchedule::StableDiffusion().alpha_cumprod(TimestepAt(schedule, index));
  return {std::sqrt(a), std::sqrt(1.0 - a)};
}

class DdimSampler final : public Sampler {
 public:
  DdimSampler(const SamplerOptions& options, Schedule schedule)
      : Sampler(options, std::move(schedule)),
        epsilon_(options.prediction == PredictionType::kEpsilon) {}

 protected:
  NoiseMix NoiseMixAt(int index) const override { return AlphaNoiseMix(full_schedule(), index); }

  void StepAt(int index, std::span<const float> model_output, std::span<float> sample,
              NoiseSource& /*noise*/) override {
    const TrainingSchedule& training = TrainingSchedule::StableDiffusion();
    const int t = TimestepAt(full_schedule(), index);
    // diffusers steps back by 1000 / steps whatever the spacing, and past
    // timestep 0 uses alpha_cumprod[0] (set_alpha_to_one false).
    const int previous_t = t - kTrainTimesteps / options().steps;
    const double a = training.alpha_cumprod(t);
    const double a_previous = training.alpha_cumprod(previous_t >= 0 ? previous_t : 0);
    const double sqrt_a_previous = std::sqrt(a_previous);
    const double sqrt_b_previous = std::sqrt(1.0 - a_previous);

    for (std::size_t i = 0; i < sample.size(); ++i) {
      const Prediction p = Predict(epsilon_, a, sample[i], model_output[i]);
      sample[i] = static_cast<float>(sqrt_a_previous * p.x0 + sqrt_b_previous * p.noise);
    }
  }

 private:
  bool epsilon_;
};

class LcmSampler final : public Sampler {
 public:
  LcmSampler(const SamplerOptions& options, Schedule schedule)
      : Sampler(options, std::move(schedule)),
        epsilon_(options.prediction == PredictionType::kEpsilon) {}

 protected:
  NoiseMix NoiseMixAt(int index) const override { return AlphaNoiseMix(full_schedule(), index); }

  void StepAt(int index, std::span<const float> model_output, std::span<float> sample,
              NoiseSource& noise) override {
    const TrainingSchedule& training = TrainingSchedule::StableDiffusion();
    const int count = static_cast<int>(full_schedule().timesteps.size());
    const int t = TimestepAt(full_schedule(), index);
    const double a = training.alpha_cumprod(t);

    // Consistency-model boundary condition: denoised = c_skip x + c_out x0,
    // with c_skip -> 1 and c_out -> 0 as t -> 0.
    const double scaled_t = t * kLcmTimestepScaling;
    const double sigma_data_squared = kLcmSigmaData * kLcmSigmaData;
    const double c_skip = sigma_data_squared / (scaled_t * scaled_t + sigma_data_squared);
    const double c_out = scaled_t / std::sqrt(scaled_t * scaled_t + sigma_data_squared);

    // The last step of the schedule returns the denoised latents. Every
    // other step noises them again to the next timestep.
    const bool last = index == count - 1;
    double sqrt_a_next = 0.0;
    double sqrt_b_next = 0.0;
    if (!last) {
      const double a_next = training.alpha_cumprod(TimestepAt(full_schedule(), index + 1));
      sqrt_a_next = std::sqrt(a_next);
      sqrt_b_next = std::sqrt(1.0 - a_next);
      noise_.resize(sample.size());
      noise.Fill(noise_);
    }

    for (std::size_t i = 0; i < sample.size(); ++i) {
      const double x = sample[i];
      const double denoised = c_out * Predict(epsilon_, a, x, model_output[i]).x0 + c_skip * x;
      const double next = last ? denoised : sqrt_a_next * denoised + sqrt_b_next * noise_[i];
      sample[i] = static_cast<float>(next);
    }
  }

 private:
  bool epsilon_;
  std::vector<float> noise_;
};

}  // namespace

std::unique_ptr<Sampler> CreateDdimSampler(const SamplerOptions& options) {
  FullSchedule schedule;
  for (double t : SpacedTimesteps(*options.spacing, options.steps)) {
    schedule.timesteps.push_back(static_cast<float>(RoundHalfToEven(t)));
  }
  return std::make_unique<DdimSampler>(options, std::move(schedule));
}

std::unique_ptr<Sampler> CreateLcmSampler(const SamplerOptions& options) {
  // The distillation timesteps are 999, 979, ..., 19 (every 20th,
  // descending). `steps` of them are taken, at indices floor(i * 50 / steps).
  constexpr int kStride = kTrainTimesteps / kLcmOriginalSteps;
  FullSchedule schedule;
  const std::vector<double> positions =
      Linspace(0.0, kLcmOriginalSteps, options.steps, /*endpoint=*/false);
  for (double position : positions) {
    const int k = static_cast<int>(std::floor(position));
    schedule.timesteps.push_back(static_cast<float>((kLcmOriginalSteps - k) * kStride - 1));
  }
  return std::make_unique<LcmSampler>(options, std::move(schedule));
}

}  // namespace sdonnx::sampling_internal
