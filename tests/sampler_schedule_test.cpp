// The training schedule and the timestep rules, against formulas evaluated
// in double in the test and against numpy's documented behaviour.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "sampling/schedule.h"

namespace sdonnx {
namespace {

const TrainingSchedule& Training() { return TrainingSchedule::StableDiffusion(); }

double ReferenceBeta(int t) {
  const double start = std::sqrt(0.00085);
  const double end = std::sqrt(0.012);
  const double root = start + t * (end - start) / 999.0;
  return root * root;
}

TEST(Schedule, BetasFollowScaledLinearFormula) {
  for (int t = 0; t < kTrainTimesteps; ++t) {
    const double expected = ReferenceBeta(t);
    ASSERT_NEAR(Training().beta(t), expected, 1e-6 * expected) << "t = " << t;
  }
}

TEST(Schedule, AlphasCumprodIsRunningProduct) {
  double product = 1.0;
  for (int t = 0; t < kTrainTimesteps; ++t) {
    product *= 1.0 - ReferenceBeta(t);
    ASSERT_NEAR(Training().alpha_cumprod(t), product, 1e-5 * product) << "t = " << t;
  }
}

TEST(Schedule, SigmasFollowAlphasCumprod) {
  for (int t = 0; t < kTrainTimesteps; ++t) {
    const double a = Training().alpha_cumprod(t);
    const double expected = std::sqrt((1.0 - a) / a);
    ASSERT_NEAR(Training().sigma(t), expected, 1e-6 * expected) << "t = " << t;
  }
}

TEST(Schedule, SigmaRangeMatchesStableDiffusion) {
  // sigma_0 = sqrt(beta_0 / (1 - beta_0)). diffusers, and this schedule,
  // compute 1 - alpha_cumprod in float32, where 1 - 0.99915 keeps only about
  // 4 significant digits, so sigma_0 is 1.3e-5 off in relative terms.
  const double sigma_min = std::sqrt(0.00085 / (1.0 - 0.00085));
  EXPECT_NEAR(Training().sigma(0), sigma_min, 3e-5 * sigma_min);
  // 14.6146 is the sigma_max that SD front ends print.
  EXPECT_NEAR(Training().sigma(kTrainTimesteps - 1), 14.6146, 1e-4);
}

TEST(Schedule, InterpolateSigmaIsLinearBetweenTimesteps) {
  const double expected = 0.75 * Training().sigma(10) + 0.25 * Training().sigma(11);
  EXPECT_NEAR(Training().InterpolateSigma(10.25), expected, 1e-7);
  EXPECT_EQ(Training().InterpolateSigma(500.0), Training().sigma(500));
}

TEST(Schedule, InterpolateSigmaClampsOutsideRange) {
  EXPECT_EQ(Training().InterpolateSigma(-3.0), Training().sigma(0));
  EXPECT_EQ(Training().InterpolateSigma(1200.0), Training().sigma(kTrainTimesteps - 1));
}

TEST(Schedule, SigmaToTimestepInvertsTrainingSigmas) {
  for (int t : {0, 1, 250, 500, 998, 999}) {
    EXPECT_NEAR(Training().SigmaToTimestep(Training().sigma(t)), t, 1e-3) << "t = " << t;
  }
}

TEST(Schedule, SigmaToTimestepInterpolatesInLogSigma) {
  const double geometric_mean = std::sqrt(static_cast<double>(Training().sigma(10)) *
                                          static_cast<double>(Training().sigma(11)));
  EXPECT_NEAR(Training().SigmaToTimestep(geometric_mean), 10.5, 1e-3);
}

TEST(Schedule, SigmaToTimestepClampsOutsideRange) {
  EXPECT_EQ(Training().SigmaToTimestep(100.0), kTrainTimesteps - 1);
  EXPECT_EQ(Training().SigmaToTimestep(1e-3), 0.0);
}

TEST(Schedule, RoundHalfToEvenMatchesNumpyRound) {
  EXPECT_EQ(RoundHalfToEven(0.5), 0.0);
  EXPECT_EQ(RoundHalfToEven(1.5), 2.0);
  EXPECT_EQ(RoundHalfToEven(2.5), 2.0);
  EXPECT_EQ(RoundHalfToEven(499.5), 500.0);
  EXPECT_EQ(RoundHalfToEven(-1.5), -2.0);
  EXPECT_EQ(RoundHalfToEven(2.4999), 2.0);
  EXPECT_EQ(RoundHalfToEven(2.5001), 3.0);
}

TEST(Schedule, LinspaceMatchesNumpyLinspace) {
  EXPECT_EQ(Linspace(0.0, 999.0, 5, true), (std::vector<double>{0.0, 249.75, 499.5, 749.25, 999.0}));
  EXPECT_EQ(Linspace(0.0, 50.0, 4, false), (std::vector<double>{0.0, 12.5, 25.0, 37.5}));
  EXPECT_EQ(Linspace(3.0, 7.0, 1, true), (std::vector<double>{3.0}));
}

TEST(Schedule, SpacedTimestepsFollowDiffusersRules) {
  EXPECT_EQ(SpacedTimesteps(Spacing::kLinspace, 4), (std::vector<double>{999, 666, 333, 0}));
  EXPECT_EQ(SpacedTimesteps(Spacing::kLeading, 4), (std::vector<double>{751, 501, 251, 1}));
  EXPECT_EQ(SpacedTimesteps(Spacing::kTrailing, 4), (std::vector<double>{999, 749, 499, 249}));
  // 1000, 666.67, 333.33 rounded, minus 1.
  EXPECT_EQ(SpacedTimesteps(Spacing::kTrailing, 3), (std::vector<double>{999, 666, 332}));
  // 1000 - 62.5 i: 937.5 rounds to 938 and 812.5 to 812 (ties to even).
  const std::vector<double> sixteen = SpacedTimesteps(Spacing::kTrailing, 16);
  EXPECT_EQ(sixteen[1], 937.0);
  EXPECT_EQ(sixteen[3], 811.0);
}

TEST(Schedule, TrailingGivesRequestedStepCount) {
  // numpy.arange(1000, 0, -1000 / 61) has 62 elements, so diffusers would
  // run an extra step at timestep -1.
  const std::vector<double> timesteps = TrailingTimesteps(61);
  ASSERT_EQ(timesteps.size(), 61u);
  EXPECT_EQ(timesteps.back(), 15.0);  // round(1000 - 60 * 1000 / 61) - 1
}

// Karras sigmas are evenly spaced in sigma^(1/7).
TEST(Schedule, KarrasSigmasEvenlySpaced) {
  const std::vector<double> sigmas = KarrasSigmas(0.03, 14.6, 6);
  ASSERT_EQ(sigmas.size(), 6u);
  EXPECT_NEAR(sigmas.front(), 14.6, 1e-12);
  EXPECT_NEAR(sigmas.back(), 0.03, 1e-12);
  const double step = (std::pow(0.03, 1.0 / 7.0) - std::pow(14.6, 1.0 / 7.0)) / 5.0;
  for (std::size_t i = 1; i < sigmas.size(); ++i) {
    EXPECT_NEAR(std::pow(sigmas[i], 1.0 / 7.0) - std::pow(sigmas[i - 1], 1.0 / 7.0), step, 1e-12)
        << "i = " << i;
  }
}

TEST(Schedule, ParsesSpacingNames) {
  for (Spacing spacing : {Spacing::kLinspace, Spacing::kLeading, Spacing::kTrailing}) {
    auto parsed = ParseSpacing(SpacingName(spacing));
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    EXPECT_EQ(*parsed, spacing);
  }
}

TEST(Schedule, RejectsUnknownSpacing) {
  auto parsed = ParseSpacing("karras");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("\"karras\""), std::string::npos);
  EXPECT_NE(parsed.status().message().find("linspace, leading, trailing"), std::string::npos);
}

}  // namespace
}  // namespace sdonnx
