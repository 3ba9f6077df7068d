#include "sampling/schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace sdonnx {

Result<Spacing> ParseSpacing(std::string_view name) {
  if (name == "linspace") return Spacing::kLinspace;
  if (name == "leading") return Spacing::kLeading;
  if (name == "trailing") return Spacing::kTrailing;
  return Status::Error("unknown timestep spacing \"" + std::string(name) +
                       "\"; valid spacings: linspace, leading, trailing");
}

std::string_view SpacingName(Spacing spacing) {
  switch (spacing) {
    case Spacing::kLinspace:
      return "linspace";
    case Spacing::kLeading:
      return "leading";
    case Spacing::kTrailing:
      return "trailing";
  }
  return "unknown";
}

const TrainingSchedule& TrainingSchedule::StableDiffusion() {
  static const TrainingSchedule schedule;
  return schedule;
}

TrainingSchedule::TrainingSchedule()
    : betas_(kTrainTimesteps),
      alphas_cumprod_(kTrainTimesteps),
      sigmas_(kTrainTimesteps),
      log_sigmas_(kTrainTimesteps) {
  // torch.linspace in float32: the first half counts up from the start, the
  // second half down from the end, so both ends are exact.
  const auto start = static_cast<float>(std::sqrt(0.00085));
  const auto end = static_cast<float>(std::sqrt(0.012));
  const float step = (end - start) / static_cast<float>(kTrainTimesteps - 1);
  // torch.cumprod on the CPU accumulates float32 input in double.
  double cumprod = 1.0;
  for (int t = 0; t < kTrainTimesteps; ++t) {
    const float root_beta = t < kTrainTimesteps / 2
                                ? start + step * static_cast<float>(t)
                                : end - step * static_cast<float>(kTrainTimesteps - 1 - t);
    betas_[t] = root_beta * root_beta;
    cumprod *= static_cast<double>(1.0f - betas_[t]);
    const auto alpha_cumprod = static_cast<float>(cumprod);
    alphas_cumprod_[t] = alpha_cumprod;
    sigmas_[t] = std::sqrt((1.0f - alpha_cumprod) / alpha_cumprod);
    log_sigmas_[t] = std::log(sigmas_[t]);
  }
}

double TrainingSchedule::InterpolateSigma(double t) const {
  if (t <= 0.0) return sigmas_.front();
  if (t >= kTrainTimesteps - 1) return sigmas_.back();
  const int low = static_cast<int>(std::floor(t));
  if (t == low) return sigmas_[low];
  const double slope = static_cast<double>(sigmas_[low + 1]) - sigmas_[low];
  return slope * (t - low) + sigmas_[low];
}

double TrainingSchedule::SigmaToTimestep(double sigma) const {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // The last training timestep whose log sigma is <= log_sigma (0 if none),
  // kept below 999 so that `low + 1` exists.
  int low = 0;
  for (int t = 0; t < kTrainTimesteps; ++t) {
    if (log_sigma - log_sigmas_[t] >= 0.0) low = t;
  }
  low = std::min(low, kTrainTimesteps - 2);
  const double low_log = log_sigmas_[low];
  const double high_log = log_sigmas_[low + 1];
  const double weight = std::clamp((low_log - log_sigma) / (low_log - high_log), 0.0, 1.0);
  return (1.0 - weight) * low + weight * (low + 1);
}

std::vector<double> Linspace(double start, double stop, int num, bool endpoint) {
  std::vector<double> values(static_cast<std::size_t>(std::max(num, 0)));
  const int divisions = endpoint ? num - 1 : num;
  const double delta = stop - start;
  const double step = divisions > 0 ? delta / divisions : delta;
  for (int i = 0; i < num; ++i) values[i] = i * step + start;
  if (endpoint && num > 1) values.back() = stop;
  return values;
}

double RoundHalfToEven(double x) {
  const double floor_x = std::floor(x);
  const double fraction = x - floor_x;
  if (fraction > 0.5) return floor_x + 1.0;
  if (fraction < 0.5) return floor_x;
  return std::fmod(floor_x, 2.0) == 0.0 ? floor_x : floor_x + 1.0;
}

std::vector<double> TrailingTimesteps(int steps) {
  // diffusers evaluates numpy.arange(1000, 0, -1000 / steps). numpy's arange
  // fills start + i * delta with delta = (start + step) - start, mirrored
  // here. NOTE: numpy sizes that array as ceil(1000 / (1000 / steps)), which
  // rounds up to steps + 1 for some counts (61 is the first), and diffusers
  // then runs an extra step at timestep -1. This function always returns
  // `steps` timesteps.
  const double start = kTrainTimesteps;
  const double delta = (start - kTrainTimesteps / static_cast<double>(steps)) - start;
  std::vector<double> timesteps(steps);
  for (int i = 0; i < steps; ++i) timesteps[i] = RoundHalfToEven(start + i * delta) - 1.0;
  return timesteps;
}

std::vector<double> SpacedTimesteps(Spacing spacing, int steps) {
  std::vector<double> timesteps;
  switch (spacing) {
    case Spacing::kLinspace:
      timesteps = Linspace(0.0, kTrainTimesteps - 1, steps, /*endpoint=*/true);
      std::reverse(timesteps.begin(), timesteps.end());
      break;
    case Spacing::kLeading: {
      const int ratio = kTrainTimesteps / steps;
      for (int i = steps - 1; i >= 0; --i) timesteps.push_back(i * ratio + 1.0);
      break;
    }
    case Spacing::kTrailing:
      timesteps = TrailingTimesteps(steps);
      break;
  }
  return timesteps;
}

std::vector<double> KarrasSigmas(double sigma_min, double sigma_max, int steps) {
  constexpr double kRho = 7.0;
  const double min_inv_rho = std::pow(sigma_min, 1.0 / kRho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / kRho);
  std::vector<double> sigmas;
  for (double ramp : Linspace(0.0, 1.0, steps, /*endpoint=*/true)) {
    sigmas.push_back(std::pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), kRho));
  }
  return sigmas;
}

}  // namespace sdonnx
