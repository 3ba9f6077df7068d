// The Stable Diffusion training noise schedule and the rules that pick the
// inference timesteps from it, as diffusers v0.35.2 computes them.
//
// Training schedule ("scaled_linear", 1000 steps):
//   beta_t           = linspace(sqrt(0.00085), sqrt(0.012), 1000)[t]^2
//   alpha_cumprod_t  = prod_{s <= t} (1 - beta_s)
//   sigma_t          = sqrt((1 - alpha_cumprod_t) / alpha_cumprod_t)
// Values are float32 and rounded the way diffusers' torch/numpy code rounds
// them, so timesteps and sigmas derived from them agree with diffusers' own.
#pragma once

#include <string_view>
#include <vector>

#include "util/status.h"

namespace sdonnx {

inline constexpr int kTrainTimesteps = 1000;

// Rule that spreads the inference timesteps over the training timesteps.
// The names follow diffusers' `timestep_spacing` values.
enum class Spacing { kLinspace, kLeading, kTrailing };

// Parses "linspace", "leading" or "trailing".
Result<Spacing> ParseSpacing(std::string_view name);
std::string_view SpacingName(Spacing spacing);

class TrainingSchedule {
 public:
  // The SD schedule, computed on first use.
  static const TrainingSchedule& StableDiffusion();

  float beta(int t) const { return betas_[t]; }
  float alpha_cumprod(int t) const { return alphas_cumprod_[t]; }
  float sigma(int t) const { return sigmas_[t]; }

  // Returns sigma at a fractional timestep, interpolated linearly between
  // training timesteps (numpy.interp over sigma_0 .. sigma_999, clamped at
  // both ends).
  double InterpolateSigma(double t) const;

  // Returns the fractional timestep whose sigma is `sigma`, interpolating
  // linearly in log sigma between neighbouring training timesteps and
  // clamped to [0, 999] (diffusers' `_sigma_to_t`).
  double SigmaToTimestep(double sigma) const;

 private:
  TrainingSchedule();

  std::vector<float> betas_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> sigmas_;
  std::vector<float> log_sigmas_;
};

// Returns numpy.linspace(start, stop, num, endpoint) as numpy computes it
// in float64: `num` values from `start`, with `stop` only when `endpoint`.
std::vector<double> Linspace(double start, double stop, int num, bool endpoint);

// Rounds to the nearest integer with ties to even, as numpy.round does.
double RoundHalfToEven(double x);

// Returns `steps` descending timesteps for DDIM, Euler and Euler ancestral:
//   linspace: linspace(0, 999, steps), not rounded
//   leading:  (steps - 1 - i) * (1000 / steps) + 1, integer division
//   trailing: round(1000 - i * 1000 / steps) - 1
std::vector<double> SpacedTimesteps(Spacing spacing, int steps);

// Returns the trailing timesteps alone. DPM-Solver++ uses them too.
std::vector<double> TrailingTimesteps(int steps);

// Returns the sigmas of Karras et al. (2022) as diffusers'
// `_convert_to_karras` computes them: `steps` values from sigma_max down to
// sigma_min, evenly spaced in sigma^(1/7).
std::vector<double> KarrasSigmas(double sigma_min, double sigma_max, int steps);

}  // namespace sdonnx
