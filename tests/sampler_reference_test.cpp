// Every sampler against the reference vectors that diffusers v0.35.2
// generated (fixtures schedulers/VARIANT.PREDICTION.SPACING.safetensors):
// timesteps, sigmas, initial noise scale, each model input and step of the
// trajectories, the noise draws, and the img2img start.
//
// The fixtures' fake model is 0.1 * model_input + 0.01 * (t / 1000), in
// float32. Ancestral and LCM noise is replayed from the stored tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "sampling/sampler.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;

// Tolerances on max |actual - expected| / (1 + |expected|), an absolute
// error for values near 0 and a relative one for large values. The samplers
// compute in double and round to float32 once, so they differ from
// diffusers by diffusers' own float32 rounding. Schedules, model inputs and
// noised latents are one or two roundings apart (measured up to 3.2e-7).
// Steps lose more where large terms cancel: an Euler ancestral step takes a
// latent of -11.8 to 0.17, which keeps the float32 rounding error of the
// large operands (measured up to 4.5e-6 per step and 6.1e-6 over a whole
// trajectory). The fixtures' README reports a similar gap, 2.2e-5 at values
// up to 55, for its own float64 recomputation.
constexpr double kScheduleTolerance = 1e-6;
constexpr double kStepTolerance = 1e-5;
constexpr double kTrajectoryTolerance = 2e-5;

struct ReferenceFile {
  std::string stem;  // e.g. "euler_ancestral.epsilon.linspace"
  SamplerKind kind;
  PredictionType prediction;
  Spacing spacing;
};

std::vector<ReferenceFile> AllReferenceFiles() {
  struct Variant {
    const char* name;
    SamplerKind kind;
    std::vector<Spacing> spacings;
  };
  const std::vector<Variant> variants = {
      {"ddim", SamplerKind::kDdim, {Spacing::kLeading, Spacing::kTrailing}},
      {"euler", SamplerKind::kEuler, {Spacing::kLinspace, Spacing::kLeading, Spacing::kTrailing}},
      {"euler_ancestral",
       SamplerKind::kEulerAncestral,
       {Spacing::kLinspace, Spacing::kLeading, Spacing::kTrailing}},
      {"dpmpp_2m",
       SamplerKind::kDpmpp2m,
       {Spacing::kLinspace, Spacing::kLeading, Spacing::kTrailing}},
      {"dpmpp_2m_karras", SamplerKind::kDpmpp2mKarras, {Spacing::kLinspace}},
      {"lcm", SamplerKind::kLcm, {Spacing::kLeading}},
  };
  std::vector<ReferenceFile> files;
  for (const Variant& variant : variants) {
    for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction}) {
      for (Spacing spacing : variant.spacings) {
        const std::string stem = std::string(variant.name) + "." +
                                 std::string(PredictionTypeName(prediction)) + "." +
                                 std::string(SpacingName(spacing));
        files.push_back({stem, variant.kind, prediction, spacing});
      }
    }
  }
  return files;
}

// One fixture file, opened once per test run. Lookups throw on a missing
// tensor, which GoogleTest reports as a failure of the running test.
class Reference {
 public:
  static const Reference& Get(const std::string& stem) {
    static std::map<std::string, std::unique_ptr<Reference>> cache;
    std::unique_ptr<Reference>& entry = cache[stem];
    if (entry == nullptr) entry.reset(new Reference(stem));
    return *entry;
  }

  bool Has(const std::string& name) const { return checkpoint_->Has(name); }

  std::vector<float> Floats(const std::string& name) const {
    auto values = checkpoint_->ReadAsFloat(name);
    if (!values.ok()) throw std::runtime_error(values.status().message());
    return *values;
  }

  std::string Metadata(const std::string& key) const {
    const auto& metadata = checkpoint_->metadata();
    auto it = metadata.find(key);
    if (it == metadata.end()) throw std::runtime_error(path_ + ": no metadata key " + key);
    return it->second;
  }

  // Step counts with stored trajectories, from the metadata "1,4,20,50".
  std::vector<int> TrajectorySteps() const {
    std::vector<int> steps;
    std::stringstream list(Metadata("trajectory_steps"));
    std::string item;
    while (std::getline(list, item, ',')) steps.push_back(std::stoi(item));
    return steps;
  }

 private:
  explicit Reference(const std::string& stem)
      : path_(Fixture("schedulers/" + stem + ".safetensors").string()) {
    auto checkpoint = Checkpoint::Open(path_);
    if (!checkpoint.ok()) throw std::runtime_error(checkpoint.status().message());
    checkpoint_ = std::move(checkpoint).value();
  }

  std::string path_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

// The step counts whose schedules every file stores.
const std::vector<int> kScheduleSteps = {1, 4, 20, 50};

std::unique_ptr<Sampler> MakeSampler(const ReferenceFile& file, int steps,
                                     double strength = 1.0) {
  SamplerOptions options;
  options.kind = file.kind;
  options.steps = steps;
  options.prediction = file.prediction;
  options.spacing = file.spacing;
  options.strength = strength;
  auto sampler = Sampler::Create(options);
  if (!sampler.ok()) throw std::runtime_error(sampler.status().message());
  return std::move(sampler).value();
}

std::string Prefix(int steps) { return "steps" + std::to_string(steps) + "."; }

double MaxScaledError(std::span<const float> actual, std::span<const float> expected) {
  if (actual.size() != expected.size()) return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double expected_value = expected[i];
    const double error = std::fabs(actual[i] - expected_value) / (1.0 + std::fabs(expected_value));
    if (std::isnan(error)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, error);
  }
  return worst;
}

std::span<const float> Slice(const std::vector<float>& values, int index, std::size_t size) {
  return std::span<const float>(values).subspan(index * size, size);
}

std::vector<float> FakeModel(std::span<const float> model_input, float timestep) {
  const auto offset = static_cast<float>(0.01 * (static_cast<double>(timestep) / 1000.0));
  std::vector<float> output(model_input.size());
  for (std::size_t i = 0; i < output.size(); ++i) output[i] = model_input[i] * 0.1f + offset;
  return output;
}

// Replays the noise that diffusers drew at each step and counts the draws.
class ReplayNoise : public NoiseSource {
 public:
  ReplayNoise(std::vector<float> noise, std::size_t latent_size, int steps)
      : NoiseSource(0), noise_(std::move(noise)), latent_size_(latent_size), draws_(steps, 0) {}

  void SetStep(int step) { step_ = step; }
  const std::vector<int>& draws() const { return draws_; }

  void Fill(std::span<float> out) override {
    ++draws_[step_];
    if (noise_.empty() || out.size() != latent_size_) {
      throw std::runtime_error("unexpected noise draw of " + std::to_string(out.size()) +
                               " values at step " + std::to_string(step_));
    }
    std::span<const float> stored = Slice(noise_, step_, latent_size_);
    std::copy(stored.begin(), stored.end(), out.begin());
  }

 private:
  std::vector<float> noise_;
  std::size_t latent_size_;
  std::vector<int> draws_;
  int step_ = 0;
};

ReplayNoise MakeReplayNoise(const Reference& reference, int steps, std::size_t latent_size,
                            int count) {
  const std::string name = Prefix(steps) + "noise";
  std::vector<float> noise = reference.Has(name) ? reference.Floats(name) : std::vector<float>();
  return ReplayNoise(std::move(noise), latent_size, count);
}

TEST(SamplerReference, DefaultSpacingMatchesDiffusers) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    EXPECT_EQ(SpacingName(DefaultSpacing(file.kind)), reference.Metadata("default_timestep_spacing"))
        << file.stem;
  }
}

TEST(SamplerReference, TimestepsMatch) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : kScheduleSteps) {
      const std::vector<float> expected = reference.Floats(Prefix(steps) + "timesteps");
      EXPECT_EQ(MakeSampler(file, steps)->Timesteps(), expected) << file.stem << " steps " << steps;
    }
  }
}

TEST(SamplerReference, SigmasMatch) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : kScheduleSteps) {
      const std::string name = Prefix(steps) + "sigmas";
      const std::vector<float> expected = reference.Has(name) ? reference.Floats(name)
                                                              : std::vector<float>();
      EXPECT_LE(MaxScaledError(MakeSampler(file, steps)->Sigmas(), expected), kScheduleTolerance)
          << file.stem << " steps " << steps;
    }
  }
}

TEST(SamplerReference, InitNoiseSigmaMatches) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : kScheduleSteps) {
      const float expected = reference.Floats(Prefix(steps) + "init_noise_sigma").at(0);
      EXPECT_NEAR(MakeSampler(file, steps)->InitNoiseSigma(), expected, 1e-6 * expected)
          << file.stem << " steps " << steps;
    }
  }
}

// Model inputs, from the stored latents before each step.
TEST(SamplerReference, ModelInputMatches) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : reference.TrajectorySteps()) {
      const std::string prefix = Prefix(steps);
      const std::vector<float> init = reference.Floats(prefix + "init_latents");
      const std::vector<float> inputs = reference.Floats(prefix + "model_input");
      const std::vector<float> outputs = reference.Floats(prefix + "prev_sample");
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, steps);
      double worst = 0.0;
      for (int k = 0; k < sampler->NumSteps(); ++k) {
        std::span<const float> before = k == 0 ? init : Slice(outputs, k - 1, init.size());
        std::vector<float> input(before.begin(), before.end());
        ASSERT_TRUE(sampler->ScaleModelInput(k, input).ok());
        worst = std::max(worst, MaxScaledError(input, Slice(inputs, k, init.size())));
      }
      EXPECT_LE(worst, kScheduleTolerance) << file.stem << " steps " << steps;
    }
  }
}

// Each step alone, from the stored latents and model input of that step.
TEST(SamplerReference, StepMatches) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : reference.TrajectorySteps()) {
      const std::string prefix = Prefix(steps);
      const std::vector<float> init = reference.Floats(prefix + "init_latents");
      const std::vector<float> inputs = reference.Floats(prefix + "model_input");
      const std::vector<float> outputs = reference.Floats(prefix + "prev_sample");
      const std::vector<float> timesteps = reference.Floats(prefix + "timesteps");
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, steps);
      ReplayNoise noise = MakeReplayNoise(reference, steps, init.size(), sampler->NumSteps());
      double worst = 0.0;
      for (int k = 0; k < sampler->NumSteps(); ++k) {
        std::span<const float> before = k == 0 ? init : Slice(outputs, k - 1, init.size());
        std::vector<float> sample(before.begin(), before.end());
        const std::vector<float> output = FakeModel(Slice(inputs, k, init.size()), timesteps[k]);
        noise.SetStep(k);
        ASSERT_TRUE(sampler->Step(k, output, sample, noise).ok());
        worst = std::max(worst, MaxScaledError(sample, Slice(outputs, k, init.size())));
      }
      EXPECT_LE(worst, kStepTolerance) << file.stem << " steps " << steps;
    }
  }
}

// The whole loop as a pipeline runs it, from base_latents * InitNoiseSigma.
TEST(SamplerReference, TrajectoryMatches) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : reference.TrajectorySteps()) {
      const std::string prefix = Prefix(steps);
      const std::vector<float> outputs = reference.Floats(prefix + "prev_sample");
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, steps);
      std::vector<float> latents = reference.Floats("base_latents");
      for (float& value : latents) value *= sampler->InitNoiseSigma();
      EXPECT_LE(MaxScaledError(latents, reference.Floats(prefix + "init_latents")),
                kScheduleTolerance)
          << file.stem << " steps " << steps;

      ReplayNoise noise = MakeReplayNoise(reference, steps, latents.size(), sampler->NumSteps());
      double worst = 0.0;
      for (int k = 0; k < sampler->NumSteps(); ++k) {
        std::vector<float> input = latents;
        ASSERT_TRUE(sampler->ScaleModelInput(k, input).ok());
        const std::vector<float> output = FakeModel(input, sampler->Timesteps()[k]);
        noise.SetStep(k);
        ASSERT_TRUE(sampler->Step(k, output, latents, noise).ok());
        worst = std::max(worst, MaxScaledError(latents, Slice(outputs, k, latents.size())));
      }
      EXPECT_LE(worst, kTrajectoryTolerance) << file.stem << " steps " << steps;
    }
  }
}

// Which steps draw noise: every step for euler_a, all but the last for lcm,
// none for the others.
TEST(SamplerReference, NoiseDrawsMatch) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int steps : reference.TrajectorySteps()) {
      const std::string prefix = Prefix(steps);
      const std::vector<float> latents = reference.Floats(prefix + "init_latents");
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, steps);
      std::vector<int> expected(sampler->NumSteps(), 0);
      if (reference.Has(prefix + "noise_drawn")) {
        const std::vector<float> drawn = reference.Floats(prefix + "noise_drawn");
        expected.assign(drawn.begin(), drawn.end());
      }

      ReplayNoise noise = MakeReplayNoise(reference, steps, latents.size(), sampler->NumSteps());
      std::vector<float> sample = latents;
      const std::vector<float> output(latents.size(), 0.0f);
      for (int k = 0; k < sampler->NumSteps(); ++k) {
        noise.SetStep(k);
        ASSERT_TRUE(sampler->Step(k, output, sample, noise).ok());
      }
      EXPECT_EQ(noise.draws(), expected) << file.stem << " steps " << steps;
    }
  }
}

TEST(SamplerReference, Img2imgTimestepsMatch) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    for (int percent : {30, 75, 100}) {
      const std::string prefix = "steps20.img2img.strength" + std::to_string(percent) + ".";
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, 20, percent / 100.0);
      EXPECT_EQ(sampler->Timesteps(), reference.Floats(prefix + "timesteps"))
          << file.stem << " strength " << percent;
      EXPECT_EQ(sampler->StartIndex(), reference.Floats(prefix + "t_start").at(0))
          << file.stem << " strength " << percent;
      EXPECT_EQ(sampler->NumSteps(), reference.Floats(prefix + "num_inference_steps").at(0))
          << file.stem << " strength " << percent;
    }
  }
}

TEST(SamplerReference, Img2imgAddNoiseMatches) {
  for (const ReferenceFile& file : AllReferenceFiles()) {
    const Reference& reference = Reference::Get(file.stem);
    const std::vector<float> original = reference.Floats("base_latents");
    const std::vector<float> noise = reference.Floats("img2img.noise");
    for (int percent : {30, 75, 100}) {
      const std::string prefix = "steps20.img2img.strength" + std::to_string(percent) + ".";
      const std::unique_ptr<Sampler> sampler = MakeSampler(file, 20, percent / 100.0);
      std::vector<float> noisy(original.size());
      ASSERT_TRUE(sampler->AddNoise(original, noise, noisy).ok());
      EXPECT_LE(MaxScaledError(noisy, reference.Floats(prefix + "noisy_latents")),
                kScheduleTolerance)
          << file.stem << " strength " << percent;
    }
  }
}

}  // namespace
}  // namespace sdonnx
