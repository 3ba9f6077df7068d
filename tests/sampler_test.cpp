// Sampler options, the call contract of Sampler, and behaviour that no
// diffusers fixture covers, checked against values derived by hand or
// against an oracle model that is given the clean latents.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "sampling/sampler.h"

namespace sdonnx {
namespace {

const std::vector<SamplerKind> kAllKinds = {
    SamplerKind::kEulerAncestral, SamplerKind::kEuler,         SamplerKind::kDdim,
    SamplerKind::kDpmpp2m,        SamplerKind::kDpmpp2mKarras, SamplerKind::kLcm};

SamplerOptions Options(SamplerKind kind, int steps, double strength = 1.0,
                       PredictionType prediction = PredictionType::kEpsilon) {
  SamplerOptions options;
  options.kind = kind;
  options.steps = steps;
  options.strength = strength;
  options.prediction = prediction;
  return options;
}

std::unique_ptr<Sampler> Make(const SamplerOptions& options) {
  auto sampler = Sampler::Create(options);
  if (!sampler.ok()) throw std::runtime_error(sampler.status().message());
  return std::move(sampler).value();
}

// The error message of Create, or "" if it succeeds.
std::string CreateError(const SamplerOptions& options) {
  auto sampler = Sampler::Create(options);
  return sampler.ok() ? "" : sampler.status().message();
}

bool Contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

std::vector<float> Gaussian(std::uint64_t seed, std::size_t count) {
  NoiseSource noise(seed);
  std::vector<float> values(count);
  noise.Fill(values);
  return values;
}

// Counts Fill calls per step. The test sets the step before each Step call.
class CountingNoise : public NoiseSource {
 public:
  explicit CountingNoise(int steps) : NoiseSource(1), draws_(steps, 0) {}
  void SetStep(int step) { step_ = step; }
  const std::vector<int>& draws() const { return draws_; }
  void Fill(std::span<float> out) override {
    ++draws_[step_];
    NoiseSource::Fill(out);
  }

 private:
  std::vector<int> draws_;
  int step_ = 0;
};

TEST(Sampler, ParsesEveryKindName) {
  for (const char* name : {"euler_a", "euler", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "lcm"}) {
    auto kind = ParseSamplerKind(name);
    ASSERT_TRUE(kind.ok()) << kind.status().message();
    EXPECT_EQ(SamplerKindName(*kind), name);
  }
}

TEST(Sampler, RejectsUnknownKindAndListsValidNames) {
  auto kind = ParseSamplerKind("k_euler");
  ASSERT_FALSE(kind.ok());
  EXPECT_TRUE(Contains(kind.status().message(), "\"k_euler\"")) << kind.status().message();
  EXPECT_TRUE(Contains(kind.status().message(),
                       "euler_a, euler, ddim, dpmpp_2m, dpmpp_2m_karras, lcm"))
      << kind.status().message();
}

TEST(Sampler, ParsesPredictionTypes) {
  for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction}) {
    auto parsed = ParsePredictionType(PredictionTypeName(prediction));
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    EXPECT_EQ(*parsed, prediction);
  }
}

TEST(Sampler, RejectsUnknownPredictionType) {
  auto parsed = ParsePredictionType("sample");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(Contains(parsed.status().message(), "epsilon, v_prediction"))
      << parsed.status().message();
}

TEST(Sampler, FillsInDefaultSpacing) {
  EXPECT_EQ(Make(Options(SamplerKind::kDdim, 4))->options().spacing, Spacing::kLeading);
  EXPECT_EQ(Make(Options(SamplerKind::kLcm, 4))->options().spacing, Spacing::kLeading);
  EXPECT_EQ(Make(Options(SamplerKind::kEuler, 4))->options().spacing, Spacing::kLinspace);
  EXPECT_EQ(Make(Options(SamplerKind::kDpmpp2m, 4))->options().spacing, Spacing::kLinspace);
}

TEST(Sampler, RejectsStepsBelowOne) {
  for (int steps : {0, -5}) {
    const std::string error = CreateError(Options(SamplerKind::kEuler, steps));
    EXPECT_TRUE(Contains(error, "invalid steps " + std::to_string(steps))) << error;
    EXPECT_TRUE(Contains(error, "expected 1 to 1000")) << error;
  }
}

TEST(Sampler, RejectsStepsAboveTrainingTimesteps) {
  EXPECT_EQ(CreateError(Options(SamplerKind::kEuler, 1000)), "");
  const std::string error = CreateError(Options(SamplerKind::kDdim, 1001));
  EXPECT_TRUE(Contains(error, "invalid steps 1001 for sampler ddim")) << error;
}

TEST(Sampler, LcmRejectsMoreThanFiftySteps) {
  EXPECT_EQ(CreateError(Options(SamplerKind::kLcm, 50)), "");
  const std::string error = CreateError(Options(SamplerKind::kLcm, 51));
  EXPECT_TRUE(Contains(error, "expected 1 to 50")) << error;
}

TEST(Sampler, RejectsStrengthOutsideUnitInterval) {
  const double infinity = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double strength : {0.0, -0.5, 1.5, infinity, nan}) {
    const std::string error = CreateError(Options(SamplerKind::kEuler, 20, strength));
    EXPECT_TRUE(Contains(error, "invalid strength")) << strength << ": " << error;
    EXPECT_TRUE(Contains(error, "(0, 1]")) << strength << ": " << error;
  }
}

TEST(Sampler, RejectsStrengthThatLeavesNoStep) {
  const std::string error = CreateError(Options(SamplerKind::kEuler, 20, 0.04));
  EXPECT_TRUE(Contains(error, "strength 0.04 with 20 steps leaves no step")) << error;
  EXPECT_TRUE(Contains(error, "at least 0.05")) << error;
}

TEST(Sampler, StrengthTruncatesLikePython) {
  struct Case {
    int steps;
    double strength;
    int start;  // steps - int(steps * strength), evaluated in Python
  };
  const Case cases[] = {
      {10, 0.7, 3},    // 10 * 0.7 = 7.000000000000001
      {100, 0.57, 44}, // 100 * 0.57 = 56.99999999999999
      {20, 0.3, 14},  {20, 0.75, 5}, {5, 0.5, 3}, {20, 0.05, 19}, {3, 1.0, 0},
  };
  for (const Case& c : cases) {
    const auto sampler = Make(Options(SamplerKind::kEuler, c.steps, c.strength));
    EXPECT_EQ(sampler->StartIndex(), c.start) << c.steps << " steps, strength " << c.strength;
    EXPECT_EQ(sampler->NumSteps(), c.steps - c.start)
        << c.steps << " steps, strength " << c.strength;
  }
}

TEST(Sampler, Img2imgRunsTailOfFullSchedule) {
  for (SamplerKind kind : kAllKinds) {
    const auto full = Make(Options(kind, 10));
    const auto tail = Make(Options(kind, 10, 0.5));
    const std::vector<float> expected(full->Timesteps().begin() + 5, full->Timesteps().end());
    EXPECT_EQ(tail->Timesteps(), expected) << SamplerKindName(kind);
    if (!full->Sigmas().empty()) {
      const std::vector<float> sigmas(full->Sigmas().begin() + 5, full->Sigmas().end());
      EXPECT_EQ(tail->Sigmas(), sigmas) << SamplerKindName(kind);
    }
  }
}

TEST(Sampler, KarrasAndLcmIgnoreSpacing) {
  for (SamplerKind kind : {SamplerKind::kDpmpp2mKarras, SamplerKind::kLcm}) {
    SamplerOptions options = Options(kind, 8);
    options.spacing = Spacing::kLinspace;
    const std::vector<float> linspace = Make(options)->Timesteps();
    for (Spacing spacing : {Spacing::kLeading, Spacing::kTrailing}) {
      options.spacing = spacing;
      EXPECT_EQ(Make(options)->Timesteps(), linspace)
          << SamplerKindName(kind) << " " << SpacingName(spacing);
    }
  }
}

TEST(Sampler, DdimLinspaceRoundsTiesToEven) {
  SamplerOptions options = Options(SamplerKind::kDdim, 3);
  options.spacing = Spacing::kLinspace;
  // linspace(0, 999, 3) = 0, 499.5, 999.
  EXPECT_EQ(Make(options)->Timesteps(), (std::vector<float>{999, 500, 0}));
}

TEST(Sampler, LcmTakesDistillationTimesteps) {
  // Indices floor(i * 50 / 3) = 0, 16, 33 into 999, 979, ..., 19.
  EXPECT_EQ(Make(Options(SamplerKind::kLcm, 3))->Timesteps(), (std::vector<float>{999, 679, 339}));
}

TEST(Sampler, DpmRejectsSpacingThatRepeatsTimesteps) {
  for (Spacing spacing : {Spacing::kLinspace, Spacing::kLeading}) {
    SamplerOptions options = Options(SamplerKind::kDpmpp2m, 1000);
    options.spacing = spacing;
    const std::string error = CreateError(options);
    EXPECT_TRUE(Contains(error, "repeats timestep")) << SpacingName(spacing) << ": " << error;
  }
  SamplerOptions trailing = Options(SamplerKind::kDpmpp2m, 1000);
  trailing.spacing = Spacing::kTrailing;
  EXPECT_EQ(CreateError(trailing), "");
}

TEST(Sampler, StepRejectsOutOfOrderStep) {
  auto sampler = Make(Options(SamplerKind::kEuler, 4));
  NoiseSource noise(0);
  std::vector<float> sample = {1.0f, 2.0f};
  const std::vector<float> output = {0.5f, 0.5f};
  const Status status = sampler->Step(1, output, sample, noise);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "step 0 is next")) << status.message();
  EXPECT_EQ(sample, (std::vector<float>{1.0f, 2.0f}));
}

TEST(Sampler, StepRejectsRepeatedStep) {
  auto sampler = Make(Options(SamplerKind::kDpmpp2m, 4));
  NoiseSource noise(0);
  std::vector<float> sample = {1.0f, 2.0f};
  const std::vector<float> output = {0.5f, 0.5f};
  ASSERT_TRUE(sampler->Step(0, output, sample, noise).ok());
  const Status status = sampler->Step(0, output, sample, noise);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "step 1 is next")) << status.message();
}

TEST(Sampler, StepRejectsOutOfRangeStep) {
  auto sampler = Make(Options(SamplerKind::kDdim, 4, 0.5));
  NoiseSource noise(0);
  std::vector<float> sample = {1.0f};
  const std::vector<float> output = {0.5f};
  for (int step : {-1, 2}) {
    const Status status = sampler->Step(step, output, sample, noise);
    ASSERT_FALSE(status.ok()) << step;
    EXPECT_TRUE(Contains(status.message(), "steps 0 to 1")) << status.message();
  }
}

TEST(Sampler, StepRejectsMismatchedSizes) {
  auto sampler = Make(Options(SamplerKind::kLcm, 4));
  NoiseSource noise(0);
  std::vector<float> sample = {1.0f, 2.0f};
  const std::vector<float> output = {0.5f, 0.5f, 0.5f};
  const Status status = sampler->Step(0, output, sample, noise);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "model_output has 3 values but sample has 2"))
      << status.message();
  EXPECT_EQ(sample, (std::vector<float>{1.0f, 2.0f}));
}

TEST(Sampler, ScaleModelInputRejectsOutOfRangeStep) {
  auto sampler = Make(Options(SamplerKind::kEuler, 4));
  std::vector<float> sample = {1.0f};
  const Status status = sampler->ScaleModelInput(4, sample);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "steps 0 to 3")) << status.message();
}

TEST(Sampler, AddNoiseRejectsMismatchedSizes) {
  auto sampler = Make(Options(SamplerKind::kEuler, 4));
  const std::vector<float> original = {1.0f, 2.0f};
  const std::vector<float> noise = {1.0f};
  std::vector<float> out(2);
  const Status status = sampler->AddNoise(original, noise, out);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "original has 2 values, noise 1 and out 2"))
      << status.message();
}

TEST(Sampler, EulerScalesModelInputBySigma) {
  for (SamplerKind kind : {SamplerKind::kEuler, SamplerKind::kEulerAncestral}) {
    auto sampler = Make(Options(kind, 4));
    const double sigma = sampler->Sigmas()[1];
    std::vector<float> sample = {2.0f};
    ASSERT_TRUE(sampler->ScaleModelInput(1, sample).ok());
    EXPECT_NEAR(sample[0], 2.0 / std::sqrt(sigma * sigma + 1.0), 1e-6) << SamplerKindName(kind);
  }
}

TEST(Sampler, OtherSamplersLeaveModelInputUnscaled) {
  for (SamplerKind kind : {SamplerKind::kDdim, SamplerKind::kDpmpp2m, SamplerKind::kLcm}) {
    auto sampler = Make(Options(kind, 4));
    std::vector<float> sample = {2.0f, -3.0f};
    ASSERT_TRUE(sampler->ScaleModelInput(2, sample).ok());
    EXPECT_EQ(sample, (std::vector<float>{2.0f, -3.0f})) << SamplerKindName(kind);
    EXPECT_EQ(sampler->InitNoiseSigma(), 1.0f) << SamplerKindName(kind);
  }
}

TEST(Sampler, NoiseDrawsFollowSamplerKind) {
  // img2img with 7 of 10 steps: lcm skips the draw on the schedule's last step.
  const std::vector<std::pair<SamplerKind, std::vector<int>>> cases = {
      {SamplerKind::kEulerAncestral, {1, 1, 1, 1, 1, 1, 1}},
      {SamplerKind::kLcm, {1, 1, 1, 1, 1, 1, 0}},
      {SamplerKind::kEuler, {0, 0, 0, 0, 0, 0, 0}},
      {SamplerKind::kDdim, {0, 0, 0, 0, 0, 0, 0}},
      {SamplerKind::kDpmpp2m, {0, 0, 0, 0, 0, 0, 0}},
  };
  for (const auto& [kind, expected] : cases) {
    auto sampler = Make(Options(kind, 10, 0.7));
    CountingNoise noise(sampler->NumSteps());
    std::vector<float> sample(8, 0.5f);
    const std::vector<float> output(8, 0.1f);
    for (int step = 0; step < sampler->NumSteps(); ++step) {
      noise.SetStep(step);
      ASSERT_TRUE(sampler->Step(step, output, sample, noise).ok());
    }
    EXPECT_EQ(noise.draws(), expected) << SamplerKindName(kind);
  }
}

// The signal and noise coefficients of the variance-preserving form
// x_vp = alpha * x0 + sigma_vp * noise at a step.
struct VpCoefficients {
  double alpha;
  double sigma;
};

VpCoefficients VpAt(const Sampler& sampler, int step) {
  if (sampler.Sigmas().empty()) {
    // DDIM and LCM: alpha^2 is alpha_cumprod at the integer timestep.
    const int t = static_cast<int>(sampler.Timesteps()[step]);
    const double a = TrainingSchedule::StableDiffusion().alpha_cumprod(t);
    return {std::sqrt(a), std::sqrt(1.0 - a)};
  }
  const double sigma = sampler.Sigmas()[step];
  const double alpha = 1.0 / std::sqrt(sigma * sigma + 1.0);
  return {alpha, sigma * alpha};
}

bool UsesScaledLatents(SamplerKind kind) {
  return kind == SamplerKind::kEuler || kind == SamplerKind::kEulerAncestral;
}

// The output of a model that is given the clean latents x0: the exact noise
// (epsilon) or velocity v = alpha * noise - sigma_vp * x0 of `sample`.
std::vector<float> OracleOutput(const Sampler& sampler, int step, std::span<const float> sample,
                                std::span<const float> x0) {
  const VpCoefficients vp = VpAt(sampler, step);
  // Euler latents are x_vp / alpha = x0 + sigma * noise.
  const double to_vp = UsesScaledLatents(sampler.options().kind) ? vp.alpha : 1.0;
  std::vector<float> output(sample.size());
  for (std::size_t i = 0; i < sample.size(); ++i) {
    const double noise = (to_vp * sample[i] - vp.alpha * x0[i]) / vp.sigma;
    const double velocity = vp.alpha * noise - vp.sigma * x0[i];
    output[i] = static_cast<float>(
        sampler.options().prediction == PredictionType::kEpsilon ? noise : velocity);
  }
  return output;
}

// Runs a whole schedule on AddNoise(x0, noise) with the oracle model.
std::vector<float> RunOracle(const SamplerOptions& options, const std::vector<float>& x0,
                             const std::vector<float>& noise) {
  auto sampler = Make(options);
  std::vector<float> sample(x0.size());
  if (!sampler->AddNoise(x0, noise, sample).ok()) throw std::runtime_error("AddNoise failed");
  NoiseSource step_noise(5);
  for (int step = 0; step < sampler->NumSteps(); ++step) {
    const std::vector<float> output = OracleOutput(*sampler, step, sample, x0);
    if (!sampler->Step(step, output, sample, step_noise).ok()) {
      throw std::runtime_error("Step failed");
    }
  }
  return sample;
}

double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

// Each exact solver step keeps the latents on the line x0 + sigma * noise,
// so the last step, to sigma 0, returns x0.
TEST(Sampler, OracleModelReachesCleanLatents) {
  const std::vector<float> x0 = Gaussian(1, 64);
  const std::vector<float> noise = Gaussian(2, 64);
  for (SamplerKind kind : {SamplerKind::kEuler, SamplerKind::kEulerAncestral,
                           SamplerKind::kDpmpp2m, SamplerKind::kDpmpp2mKarras}) {
    for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction}) {
      for (double strength : {1.0, 0.6}) {
        const std::vector<float> result = RunOracle(Options(kind, 12, strength, prediction), x0,
                                                    noise);
        EXPECT_LT(MaxAbsDifference(result, x0), 1e-4)
            << SamplerKindName(kind) << " " << PredictionTypeName(prediction) << " strength "
            << strength;
      }
    }
  }
}

// DDIM with eta 0 keeps the noise fixed and ends at alpha_cumprod[0] =
// 1 - beta_0 = 0.99915 (set_alpha_to_one false), not at x0.
TEST(Sampler, OracleDdimEndsAtFirstTrainingTimestep) {
  const std::vector<float> x0 = Gaussian(1, 64);
  const std::vector<float> noise = Gaussian(2, 64);
  const double a = 1.0 - 0.00085;
  std::vector<float> expected(x0.size());
  for (std::size_t i = 0; i < x0.size(); ++i) {
    expected[i] = static_cast<float>(std::sqrt(a) * x0[i] + std::sqrt(1.0 - a) * noise[i]);
  }
  for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction}) {
    const std::vector<float> result =
        RunOracle(Options(SamplerKind::kDdim, 12, 1.0, prediction), x0, noise);
    EXPECT_LT(MaxAbsDifference(result, expected), 1e-5) << PredictionTypeName(prediction);
  }
}

// LCM does not end at x0, but the two parametrizations of one oracle must
// give the same latents, with the same step noise.
TEST(Sampler, OracleLcmAgreesAcrossPredictionTypes) {
  const std::vector<float> x0 = Gaussian(1, 64);
  const std::vector<float> noise = Gaussian(2, 64);
  const std::vector<float> epsilon = RunOracle(
      Options(SamplerKind::kLcm, 6, 1.0, PredictionType::kEpsilon), x0, noise);
  const std::vector<float> velocity = RunOracle(
      Options(SamplerKind::kLcm, 6, 1.0, PredictionType::kVPrediction), x0, noise);
  EXPECT_LT(MaxAbsDifference(epsilon, velocity), 1e-5);
}

}  // namespace
}  // namespace sdonnx
