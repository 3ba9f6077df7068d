// DPM-Solver++ 2M (diffusers' DPMSolverMultistepScheduler with
// algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint",
// lower_order_final, final_sigmas_type "zero"). It works on unscaled
// variance-preserving latents x = alpha * x0 + sigma_vp * noise, with
// alpha = 1 / sqrt(sigma^2 + 1) and sigma_vp = sigma * alpha, and steps in
// lambda = log(alpha / sigma_vp) using the model's x0 prediction.
#include <algorithm>
#include <cmath>
#include <string>

#include "sampling/sampler_internal.h"

namespace sdonnx::sampling_internal {
namespace {

struct AlphaSigma {
  double alpha;
  double sigma;  // sigma_vp
};

AlphaSigma ToAlphaSigma(double sigma) {
  const double alpha = 1.0 / std::sqrt(sigma * sigma + 1.0);
  return {alpha, sigma * alpha};
}

double Lambda(const AlphaSigma& point) { return std::log(point.alpha) - std::log(point.sigma); }

class DpmSolverSampler final : public Sampler {
 public:
  DpmSolverSampler(const SamplerOptions& options, Schedule schedule)
      : Sampler(options, std::move(schedule)),
        epsilon_(options.prediction == PredictionType::kEpsilon) {}

 protected:
  NoiseMix NoiseMixAt(int index) const override {
    const AlphaSigma point = ToAlphaSigma(full_schedule().sigmas[index]);
    return {point.alpha, point.sigma};
  }

  void StepAt(int index, std::span<const float> model_output, std::span<float> sample,
              NoiseSource& /*noise*/) override {
    const std::vector<float>& sigmas = full_schedule().sigmas;
    const AlphaSigma current = ToAlphaSigma(sigmas[index]);

    denoised_.resize(sample.size());
    for (std::size_t i = 0; i < sample.size(); ++i) {
      const double x = sample[i];
      const double output = model_output[i];
      denoised_[i] = static_cast<float>(epsilon_ ? (x - current.sigma * output) / current.alpha
                                                 : current.alpha * x - current.sigma * output);
    }

    if (sigmas[index + 1] == 0.0f) {
      // The last step of the schedule ends at sigma 0. diffusers takes it
      // first order, and that update with sigma_next = 0 is exactly x0.
      // Copying x0 avoids evaluating log(0).
      std::copy(denoised_.begin(), denoised_.end(), sample.begin());
    } else {
      const AlphaSigma next = ToAlphaSigma(sigmas[index + 1]);
      const double h = Lambda(next) - Lambda(current);
      const double sample_scale = next.sigma / current.sigma;
      const double denoised_scale = -next.alpha * std::expm1(-h);
      // Second order needs the previous step's x0, so the first step that
      // runs is first order.
      const bool second_order = steps_taken_ > 0;
      double correction_scale = 0.0;
      if (second_order) {
        const double h_previous = Lambda(current) - Lambda(ToAlphaSigma(sigmas[index - 1]));
        correction_scale = 0.5 * denoised_scale * h / h_previous;
      }
      for (std::size_t i = 0; i < sample.size(); ++i) {
        const double x0 = denoised_[i];
        double next_x = sample_scale * sample[i] + denoised_scale * x0;
        if (second_order) next_x += correction_scale * (x0 - previous_denoised_[i]);
        sample[i] = static_cast<float>(next_x);
      }
    }

    previous_denoised_.swap(denoised_);
    ++steps_taken_;
  }

 private:
  bool epsilon_;
  int steps_taken_ = 0;
  // x0 predictions, float32 as diffusers keeps them.
  std::vector<float> denoised_;
  std::vector<float> previous_denoised_;
};

// diffusers' timesteps for DPM-Solver++ without Karras sigmas. linspace and
// leading divide the range into steps + 1 parts and drop the last point.
std::vector<double> DpmTimesteps(Spacing spacing, int steps) {
  std::vector<double> timesteps;
  switch (spacing) {
    case Spacing::kLinspace: {
      const std::vector<double> points =
          Linspace(0.0, kTrainTimesteps - 1, steps + 1, /*endpoint=*/true);
      for (int i = steps; i >= 1; --i) timesteps.push_back(RoundHalfToEven(points[i]));
      break;
    }
    case Spacing::kLeading: {
      const int ratio = kTrainTimesteps / (steps + 1);
      for (int i = steps; i >= 1; --i) timesteps.push_back(i * ratio + 1.0);
      break;
    }
    case Spacing::kTrailing:
      timesteps = TrailingTimesteps(steps);
      break;
  }
  return timesteps;
}

}  // namespace

Result<std::unique_ptr<Sampler>> CreateDpmSolverSampler(const SamplerOptions& options) {
  const TrainingSchedule& training = TrainingSchedule::StableDiffusion();
  FullSchedule schedule;
  if (options.kind == SamplerKind::kDpmpp2mKarras) {
    // Karras sigmas span the whole training range whatever the spacing, and
    // each timestep is the rounded timestep of its sigma. Small sigmas can share
    // a timestep, which the solver tolerates because it steps in sigma.
    const std::vector<double> karras =
        KarrasSigmas(training.sigma(0), training.sigma(kTrainTimesteps - 1), options.steps);
    for (double sigma : karras) {
      schedule.timesteps.push_back(
          static_cast<float>(RoundHalfToEven(training.SigmaToTimestep(sigma))));
      schedule.sigmas.push_back(static_cast<float>(sigma));
    }
  } else {
    const std::vector<double> timesteps = DpmTimesteps(*options.spacing, options.steps);
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      if (i > 0 && timesteps[i] >= timesteps[i - 1]) {
        return Status::Error(
            "dpmpp_2m with " + std::to_string(options.steps) + " steps and " +
            std::string(SpacingName(*options.spacing)) + " spacing repeats timestep " +
            std::to_string(static_cast<int>(timesteps[i])) +
            ", which makes a solver step zero; use at most 999 steps or trailing spacing");
      }
      schedule.timesteps.push_back(static_cast<float>(timesteps[i]));
      schedule.sigmas.push_back(training.sigma(static_cast<int>(timesteps[i])));
    }
  }
  schedule.sigmas.push_back(0.0f);
  return std::unique_ptr<Sampler>(
      std::make_unique<DpmSolverSampler>(options, std::move(schedule)));
}

}  // namespace sdonnx::sampling_internal
