#include "generate/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <tuple>

#include "generate/conditioning.h"
#include "generate/model_set.h"
#include "image/png.h"
#include "sampling/noise.h"
#include "sampling/sampler.h"
#include "text/clip_tokenizer.h"
#include "text/prompt.h"
#include "text/unicode.h"
#include "util/atomic_file.h"
#include "util/log.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A bound on --width and --height: the first attention layer of an SD 1.x
// UNet at 8192x8192 already needs far more memory than this tool targets.
constexpr std::int64_t kMaxImageSide = 8192;

// Image b's step noise is the stream of seed + b + kStepNoiseSeedOffset.
// It is apart from its initial noise (seed + b), so that the initial noise
// stays the same whatever the sampler draws.
constexpr std::uint64_t kStepNoiseSeedOffset = 1ull << 32;

// Defaults of the optional settings, as diffusers has them.
constexpr float kImageCfgScale = 1.5f;
constexpr float kAestheticScore = 6.0f;
constexpr float kNegativeAestheticScore = 2.5f;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Everything the sampling loop needs, derived from the options and models.
struct Plan {
  ModelFacts facts;
  SamplerKind sampler = SamplerKind::kEulerAncestral;
  std::int64_t batch = 1;
  std::int64_t latent_height = 0;
  std::int64_t latent_width = 0;
  bool guidance = true;      // cfg_scale != 1: run the negative prompt too.
  bool inpaint_unet = false;  // 9-channel UNet: mask and masked image are inputs.
  // instruct-pix2pix (8-channel UNet): the init image's latent is an input.
  bool pix2pix = false;
  float image_cfg_scale = kImageCfgScale;
  double strength = 1.0;
  // UNet rows per image and step. Regular guidance runs the negative prompt,
  // then the prompt. instruct-pix2pix runs, as diffusers does, the negative
  // prompt without the image, the negative prompt with it, then the prompt
  // with it.
  std::int64_t Copies() const {
    if (!guidance) return 1;
    return pix2pix ? 3 : 2;
  }
  bool NegativeCopy(std::int64_t copy) const { return guidance && copy + 1 < Copies(); }
  bool ImageCopy(std::int64_t copy) const { return !guidance || copy > 0; }
  std::size_t LatentSize() const {
    return static_cast<std::size_t>(facts.latent_channels * latent_height * latent_width);
  }
};

// Pixels of an image as [1, 3, H, W] in [-1, 1].
std::vector<float> ImageToTensor(const Image& image) {
  const std::size_t plane = static_cast<std::size_t>(image.width * image.height);
  std::vector<float> out(3 * plane);
  for (std::size_t i = 0; i < plane; ++i) {
    for (std::size_t c = 0; c < 3; ++c) {
      out[c * plane + i] = image.pixels[i * 3 + c] / 127.5f - 1.0f;
    }
  }
  return out;
}

Image TensorToImage(const float* chw, std::int64_t width, std::int64_t height) {
  Image image;
  image.width = width;
  image.height = height;
  const std::size_t plane = static_cast<std::size_t>(width * height);
  image.pixels.resize(3 * plane);
  for (std::size_t i = 0; i < plane; ++i) {
    for (std::size_t c = 0; c < 3; ++c) {
      const float v = std::clamp((chw[c * plane + i] + 1.0f) * 0.5f, 0.0f, 1.0f);
      image.pixels[i * 3 + c] = static_cast<std::uint8_t>(std::lround(v * 255.0f));
    }
  }
  return image;
}

Result<Image> ReadImageOfSize(const std::string& path, const std::string& what, bool gray,
                              std::int64_t width, std::int64_t height) {
  SDONNX_ASSIGN_OR_RETURN(Image image, ReadPng(path, gray));
  if (image.width != width || image.height != height) {
    return Status::Error(path + ": the " + what + " is " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + ", expected " + std::to_string(width) +
                         "x" + std::to_string(height) + " (--width x --height); resize it or "
                         "pass its size");
  }
  return image;
}

// quant_conv's mean, times the scaling factor: [1, latent_channels, h, w].
Result<std::vector<float>> EncodeToLatent(OrtModel& encoder, const std::vector<float>& pixels,
                                          const GenerateOptions& options, const Plan& plan) {
  SDONNX_ASSIGN_OR_RETURN(
      auto out, encoder.RunInFixedBatches(
                    {{"sample", HostTensor::Float({1, 3, options.height, options.width}, pixels)}},
                    {"latent_parameters"}));
  const HostTensor& moments = out["latent_parameters"];
  SDONNX_RETURN_IF_ERROR(CheckFinite(moments.f32, "vae_encoder", encoder, 0, 0));
  const std::size_t size = plan.LatentSize();
  if (moments.f32.size() != 2 * size) {
    return Status::Error(encoder.path() + ": latent_parameters has " +
                         std::to_string(moments.f32.size()) + " values, expected " +
                         std::to_string(2 * size));
  }
  std::vector<float> latent(moments.f32.begin(), moments.f32.begin() + static_cast<long>(size));
  for (float& v : latent) v *= plan.facts.scaling_factor;
  return latent;
}

// Inputs made from --init-image and --mask.
struct ImageInputs {
  std::vector<float> init_latent;    // [latent_channels, h, w]; empty for txt2img
  std::vector<float> pixels;         // [3, H, W] in [-1, 1], kept for the final overlay
  std::vector<float> mask;           // [H * W], 1 where the image is repainted
  std::vector<float> mask_latent;    // [h * w], the mask at latent resolution
  std::vector<float> masked_latent;  // [latent_channels, h, w], for 9-channel UNets
  // instruct-pix2pix: the init image's latent without the scaling factor,
  // as the original model was trained on.
  std::vector<float> image_latent;
};

struct Contexts {
  HostTensor cond;
  HostTensor uncond;
  // SDXL: the pooled prompt embeddings, the UNet's text_embeds input.
  HostTensor cond_pooled;
  HostTensor uncond_pooled;
};

// Says which given options the model does not use, since they change nothing.
void WarnAboutUnusedOptions(const GenerateOptions& options, const Plan& plan) {
  if (options.image_cfg_scale && !plan.pix2pix) {
    LogWarning("--image-cfg-scale applies to instruct-pix2pix models only; this model ignores it");
  }
  if ((options.aesthetic_score || options.negative_aesthetic_score) &&
      plan.facts.num_time_ids != 5) {
    LogWarning("--aesthetic-score and --negative-aesthetic-score apply to the SDXL refiner "
               "only; this model ignores them");
  }
  if (!plan.guidance && !options.negative_prompt.empty()) {
    LogWarning("--negative-prompt has no effect with --cfg-scale 1, which turns guidance off; "
               "use a larger --cfg-scale for it to count");
  }
}

Status CheckPix2PixOptions(const GenerateOptions& options, const ModelFacts& facts) {
  const std::string what = "this is an instruct-pix2pix model (" +
                           std::to_string(facts.unet_in_channels) + "-channel UNet)";
  if (!options.init_image) {
    return Status::Error(what + ": pass --init-image, the picture to edit, and say the edit in "
                                "--prompt");
  }
  if (options.mask) {
    return Status::Error(what + ": it edits the whole image and takes no --mask");
  }
  if (options.strength) {
    return Status::Error(what + ": it starts from noise, so --strength does not apply; use "
                                "--image-cfg-scale to stay closer to the init image");
  }
  return Status::Ok();
}

Result<Plan> MakePlan(const GenerateOptions& options, const ModelFacts& facts) {
  Plan plan;
  plan.facts = facts;
  SDONNX_ASSIGN_OR_RETURN(plan.sampler, ParseSamplerKind(options.sampler));

  for (auto [name, value] :
       {std::pair{"--cfg-scale", options.cfg_scale},
        {"--image-cfg-scale", options.image_cfg_scale.value_or(kImageCfgScale)},
        {"--aesthetic-score", options.aesthetic_score.value_or(kAestheticScore)},
        {"--negative-aesthetic-score",
         options.negative_aesthetic_score.value_or(kNegativeAestheticScore)}}) {
    if (!std::isfinite(value)) {
      return Status::Error(std::string(name) + " must be a finite number, got " +
                           std::to_string(value));
    }
  }
  if (options.strength && !options.init_image) {
    return Status::Error("--strength applies to img2img and inpainting; pass --init-image too");
  }
  const std::int64_t multiple = std::lcm<std::int64_t>(8, facts.downsample_factor);
  for (auto [name, value] : {std::pair{"width", options.width}, {"height", options.height}}) {
    if (value < multiple || value % multiple != 0) {
      return Status::Error(std::string("--") + name + " " + std::to_string(value) +
                           " is not a positive multiple of " + std::to_string(multiple) +
                           "; nearest allowed values: " + AllowedSizesNear(value, multiple));
    }
  }
  if (options.batch_size < 1 || options.batch_size > 64) {
    return Status::Error("--batch-size " + std::to_string(options.batch_size) +
                         " is out of range; use 1 to 64");
  }
  if (options.clip_skip < 1) {
    return Status::Error("--clip-skip " + std::to_string(options.clip_skip) +
                         " is invalid; use 1 (the last layer) or more");
  }

  plan.pix2pix = facts.unet_in_channels == 2 * facts.latent_channels;
  if (plan.pix2pix) SDONNX_RETURN_IF_ERROR(CheckPix2PixOptions(options, facts));
  plan.inpaint_unet = facts.unet_in_channels == 2 * facts.latent_channels + 1;
  if (plan.inpaint_unet && !options.mask) {
    return Status::Error("this is an inpainting model (" +
                         std::to_string(facts.unet_in_channels) +
                         "-channel UNet); pass --init-image and --mask");
  }
  if (options.mask && !options.init_image) {
    return Status::Error("--mask needs --init-image: the mask marks what to repaint in it");
  }

  plan.strength = options.strength.value_or(options.mask ? 1.0 : 0.75);
  if (!options.init_image || plan.pix2pix) plan.strength = 1.0;
  plan.batch = options.batch_size;
  plan.latent_height = options.height / facts.downsample_factor;
  plan.latent_width = options.width / facts.downsample_factor;
  plan.image_cfg_scale = options.image_cfg_scale.value_or(kImageCfgScale);
  plan.guidance = options.cfg_scale != 1.0f || (plan.pix2pix && plan.image_cfg_scale != 1.0f);
  WarnAboutUnusedOptions(options, plan);
  SDONNX_RETURN_IF_ERROR(CheckStaticShape(facts, options.width, options.height, plan.batch,
                                          plan.Copies() * plan.batch));
  return plan;
}

Result<ImageInputs> PrepareImages(ModelSet& models, const GenerateOptions& options,
                                  const Plan& plan) {
  ImageInputs in;
  if (!options.init_image) return in;
  SDONNX_ASSIGN_OR_RETURN(Image image, ReadImageOfSize(*options.init_image, "init image", false,
                                                       options.width, options.height));
  in.pixels = ImageToTensor(image);
  SDONNX_ASSIGN_OR_RETURN(in.init_latent,
                          EncodeToLatent(*models.vae_encoder(), in.pixels, options, plan));
  if (plan.pix2pix) {
    in.image_latent = in.init_latent;
    for (float& v : in.image_latent) v /= plan.facts.scaling_factor;
    in.init_latent.clear();  // Sampling starts from noise.
  }
  if (!options.mask) return in;

  SDONNX_ASSIGN_OR_RETURN(Image mask, ReadImageOfSize(*options.mask, "mask", true, options.width,
                                                      options.height));
  in.mask.resize(mask.pixels.size());
  for (std::size_t i = 0; i < mask.pixels.size(); ++i) in.mask[i] = mask.pixels[i] >= 128 ? 1 : 0;
  if (std::find(in.mask.begin(), in.mask.end(), 1.0f) == in.mask.end()) {
    LogWarning(*options.mask + ": no pixel is 128 or brighter, so nothing will be repainted");
  }
  const std::int64_t f = plan.facts.downsample_factor;
  for (std::int64_t y = 0; y < plan.latent_height; ++y) {
    for (std::int64_t x = 0; x < plan.latent_width; ++x) {
      in.mask_latent.push_back(in.mask[static_cast<std::size_t>(y * f * options.width + x * f)]);
    }
  }
  if (plan.inpaint_unet) {
    std::vector<float> masked = in.pixels;
    const std::size_t plane = in.mask.size();
    for (std::size_t c = 0; c < 3; ++c) {
      for (std::size_t i = 0; i < plane; ++i) {
        if (in.mask[i] > 0.5f) masked[c * plane + i] = 0.0f;
      }
    }
    SDONNX_ASSIGN_OR_RETURN(in.masked_latent,
                            EncodeToLatent(*models.vae_encoder(), masked, options, plan));
  }
  return in;
}

// One text encoder of the model and what the UNet takes from it.
struct TextEncoder {
  OrtModel* model = nullptr;
  std::string context_output;
  std::int32_t pad_id = 0;
  bool pooled = false;  // Also take text_embeds (SDXL's second encoder).
};

Result<Contexts> EncodePrompts(ModelSet& models, const GenerateOptions& options,
                               const Plan& plan) {
  SDONNX_ASSIGN_OR_RETURN(std::string tokenizer_path,
                          FindTokenizer(options.tokenizer, options.model_dir));
  SDONNX_ASSIGN_OR_RETURN(ClipTokenizer tokenizer, ClipTokenizer::Load(tokenizer_path));
  // Padding with end-of-text (CLIP ViT-L) means this tokenizer's own id.
  auto pad_for = [&tokenizer](std::int32_t pad) {
    return pad == kClipEndOfText ? tokenizer.EndId() : pad;
  };
  const ModelFacts& facts = plan.facts;
  std::vector<TextEncoder> encoders;
  if (models.text_encoder() != nullptr) {
    encoders.push_back({models.text_encoder(), facts.text_context_output,
                        pad_for(facts.text_pad_id), false});
  }
  if (models.text_encoder_2() != nullptr) {
    encoders.push_back({models.text_encoder_2(), facts.text_2_context_output,
                        pad_for(facts.text_2_pad_id), true});
  }
  Contexts contexts;
  for (const TextEncoder& encoder : encoders) {
    std::vector<PromptChunk> cond = TokenizePrompt(tokenizer, options.prompt, encoder.pad_id);
    std::vector<PromptChunk> uncond =
        TokenizePrompt(tokenizer, options.negative_prompt, encoder.pad_id);
    EqualizeChunkCounts(cond, uncond, tokenizer.StartId(), tokenizer.EndId(), encoder.pad_id);
    SDONNX_ASSIGN_OR_RETURN(
        HostTensor c, EncodePrompt(*encoder.model, cond, encoder.context_output, options.clip_skip,
                                   encoder.pooled ? &contexts.cond_pooled : nullptr));
    contexts.cond = contexts.cond.f32.empty() ? c : JoinContexts(contexts.cond, c);
    if (!plan.guidance) continue;
    SDONNX_ASSIGN_OR_RETURN(
        HostTensor u, EncodePrompt(*encoder.model, uncond, encoder.context_output,
                                   options.clip_skip,
                                   encoder.pooled ? &contexts.uncond_pooled : nullptr));
    contexts.uncond = contexts.uncond.f32.empty() ? u : JoinContexts(contexts.uncond, u);
  }
  // SDXL conditions an empty negative prompt on zeros, as diffusers does
  // (force_zeros_for_empty_prompt).
  if (facts.num_time_ids > 0 && plan.guidance && options.negative_prompt.empty()) {
    std::fill(contexts.uncond.f32.begin(), contexts.uncond.f32.end(), 0.0f);
    std::fill(contexts.uncond_pooled.f32.begin(), contexts.uncond_pooled.f32.end(), 0.0f);
  }
  return contexts;
}

// SDXL's time ids: original size, crop top-left and target size (base), or
// original size, crop and an aesthetic score (refiner).
std::vector<float> TimeIds(const GenerateOptions& options, const Plan& plan, bool negative) {
  const auto h = static_cast<float>(options.height);
  const auto w = static_cast<float>(options.width);
  if (plan.facts.num_time_ids == 5) {
    return {h, w, 0, 0,
            negative ? options.negative_aesthetic_score.value_or(kNegativeAestheticScore)
                     : options.aesthetic_score.value_or(kAestheticScore)};
  }
  return {h, w, 0, 0, h, w};
}

// The UNet's inputs for one step: the scaled latents of every image, first
// for the negative prompt and then for the positive one when guidance is on.
std::map<std::string, HostTensor> UNetInputs(const GenerateOptions& options, const Plan& plan,
                                             const Contexts& contexts, const ImageInputs& images,
                                             const std::vector<float>& scaled, float timestep) {
  const std::int64_t copies = plan.Copies();
  const std::int64_t rows = copies * plan.batch;
  const std::size_t latent = plan.LatentSize();
  const std::size_t plane = static_cast<std::size_t>(plan.latent_height * plan.latent_width);
  const std::int64_t channels = plan.facts.unet_in_channels;
  std::vector<float> sample;
  sample.reserve(static_cast<std::size_t>(rows * channels) * plane);
  for (std::int64_t copy = 0; copy < copies; ++copy) {
    for (std::int64_t b = 0; b < plan.batch; ++b) {
      const auto first = scaled.begin() + static_cast<long>(b * latent);
      sample.insert(sample.end(), first, first + static_cast<long>(latent));
      if (plan.inpaint_unet) {
        sample.insert(sample.end(), images.mask_latent.begin(), images.mask_latent.end());
        sample.insert(sample.end(), images.masked_latent.begin(), images.masked_latent.end());
      }
      if (plan.pix2pix && plan.ImageCopy(copy)) {
        sample.insert(sample.end(), images.image_latent.begin(), images.image_latent.end());
      } else if (plan.pix2pix) {
        sample.insert(sample.end(), latent, 0.0f);
      }
    }
  }
  const HostTensor& cond = contexts.cond;
  std::vector<float> context;
  context.reserve(static_cast<std::size_t>(rows) * cond.f32.size());
  for (std::int64_t copy = 0; copy < copies; ++copy) {
    const HostTensor& source = plan.NegativeCopy(copy) ? contexts.uncond : cond;
    for (std::int64_t b = 0; b < plan.batch; ++b) {
      context.insert(context.end(), source.f32.begin(), source.f32.end());
    }
  }
  std::map<std::string, HostTensor> inputs = {
      {"sample", HostTensor::Float({rows, channels, plan.latent_height, plan.latent_width},
                                   std::move(sample))},
      {"timestep", HostTensor::Float({1}, {timestep})},
      {"encoder_hidden_states",
       HostTensor::Float({rows, cond.shape[1], cond.shape[2]}, std::move(context))}};
  if (plan.facts.num_time_ids > 0) {
    std::vector<float> embeds;
    std::vector<float> time_ids;
    for (std::int64_t copy = 0; copy < copies; ++copy) {
      const bool negative = plan.NegativeCopy(copy);
      const HostTensor& pooled = negative ? contexts.uncond_pooled : contexts.cond_pooled;
      const std::vector<float> ids = TimeIds(options, plan, negative);
      for (std::int64_t b = 0; b < plan.batch; ++b) {
        embeds.insert(embeds.end(), pooled.f32.begin(), pooled.f32.end());
        time_ids.insert(time_ids.end(), ids.begin(), ids.end());
      }
    }
    inputs["text_embeds"] = HostTensor::Float({rows, plan.facts.text_embed_dim}, std::move(embeds));
    inputs["time_ids"] = HostTensor::Float({rows, plan.facts.num_time_ids}, std::move(time_ids));
  }
  return inputs;
}

// Initial latents: pure noise for txt2img (and strength 1), or the encoded
// image noised to the first timestep that runs.
Result<std::vector<float>> InitialLatents(const GenerateOptions& options, const Plan& plan,
                                          const ImageInputs& images, const Sampler& sampler) {
  const std::size_t latent = plan.LatentSize();
  std::vector<float> latents(latent * static_cast<std::size_t>(plan.batch));
  for (std::int64_t b = 0; b < plan.batch; ++b) {
    NoiseSource noise(options.seed + static_cast<std::uint64_t>(b));
    std::span<float> slice(latents.data() + b * static_cast<std::int64_t>(latent), latent);
    noise.Fill(slice);
    if (images.init_latent.empty() || plan.strength >= 1.0) {
      for (float& v : slice) v *= sampler.InitNoiseSigma();
    } else {
      std::vector<float> noise_values(slice.begin(), slice.end());
      SDONNX_RETURN_IF_ERROR(sampler.AddNoise(images.init_latent, noise_values, slice));
    }
  }
  return latents;
}

// Combines the UNet rows of one step (in Plan::Copies order) into one
// prediction per image.
std::vector<float> Guide(const std::vector<float>& out, std::size_t size,
                         const GenerateOptions& options, const Plan& plan) {
  std::vector<float> guided(out.begin(), out.begin() + static_cast<long>(size));
  if (!plan.guidance) return guided;
  const float cfg = options.cfg_scale;
  if (!plan.pix2pix) {
    for (std::size_t k = 0; k < size; ++k) guided[k] = out[k] + cfg * (out[size + k] - out[k]);
    return guided;
  }
  const float image_cfg = plan.image_cfg_scale;
  for (std::size_t k = 0; k < size; ++k) {
    const float plain = out[k];
    const float image = out[size + k];
    const float text = out[2 * size + k];
    guided[k] = plain + cfg * (text - image) + image_cfg * (image - plain);
  }
  return guided;
}

Result<std::vector<float>> RunSampler(ModelSet& models, const GenerateOptions& options,
                                      const Plan& plan, const Contexts& contexts,
                                      const ImageInputs& images, const StepCallback& on_step,
                                      double* seconds_per_step) {
  SamplerOptions sampler_options;
  sampler_options.kind = plan.sampler;
  sampler_options.steps = options.steps;
  sampler_options.prediction = plan.facts.prediction;
  sampler_options.strength = plan.strength;
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<Sampler> sampler, Sampler::Create(sampler_options));
  SDONNX_ASSIGN_OR_RETURN(std::vector<float> latents,
                          InitialLatents(options, plan, images, *sampler));
  BatchNoiseSource step_noise(options.seed + kStepNoiseSeedOffset, plan.batch);
  const int total = sampler->NumSteps();
  const std::size_t size = latents.size();
  const auto start = Clock::now();
  for (int i = 0; i < total; ++i) {
    std::vector<float> scaled = latents;
    SDONNX_RETURN_IF_ERROR(sampler->ScaleModelInput(i, scaled));
    auto inputs = UNetInputs(options, plan, contexts, images, scaled, sampler->Timesteps()[i]);
    SDONNX_ASSIGN_OR_RETURN(auto outputs, models.unet().Run(inputs, {"out_sample"}));
    const std::vector<float>& out = outputs["out_sample"].f32;
    const std::size_t expected = size * static_cast<std::size_t>(plan.Copies());
    if (out.size() != expected) {
      return Status::Error(models.unet().path() + ": out_sample has " +
                           std::to_string(out.size()) + " values, expected " +
                           std::to_string(expected));
    }
    SDONNX_RETURN_IF_ERROR(CheckFinite(out, "unet", models.unet(), i + 1, total));
    std::vector<float> guided = Guide(out, size, options, plan);
    SDONNX_RETURN_IF_ERROR(sampler->Step(i, guided, latents, step_noise));
    if (on_step) on_step(i + 1, total, SecondsSince(start));
  }
  *seconds_per_step = total > 0 ? SecondsSince(start) / total : 0;
  return latents;
}

Result<std::vector<Image>> DecodeImages(ModelSet& models, std::vector<float> latents,
                                        const GenerateOptions& options, const Plan& plan,
                                        const ImageInputs& images) {
  for (float& v : latents) v /= plan.facts.scaling_factor;
  std::vector<Image> out;
  const std::size_t latent = plan.LatentSize();
  const std::size_t plane = static_cast<std::size_t>(options.width * options.height);
  for (std::int64_t b = 0; b < plan.batch; ++b) {
    std::vector<float> one(latents.begin() + static_cast<long>(b * latent),
                           latents.begin() + static_cast<long>((b + 1) * latent));
    SDONNX_ASSIGN_OR_RETURN(
        auto decoded,
        models.vae_decoder().RunInFixedBatches(
            {{"latent_sample", HostTensor::Float({1, plan.facts.latent_channels, plan.latent_height,
                                                  plan.latent_width},
                                                 std::move(one))}},
            {"sample"}));
    std::vector<float>& pixels = decoded["sample"].f32;
    SDONNX_RETURN_IF_ERROR(CheckFinite(pixels, "vae_decoder", models.vae_decoder(), 0, 0));
    if (pixels.size() != 3 * plane) {
      return Status::Error(models.vae_decoder().path() + ": sample has " +
                           std::to_string(pixels.size()) + " values, expected " +
                           std::to_string(3 * plane));
    }
    if (!images.mask.empty()) {  // Keep the original pixels outside the mask.
      for (std::size_t c = 0; c < 3; ++c) {
        for (std::size_t i = 0; i < plane; ++i) {
          if (images.mask[i] < 0.5f) pixels[c * plane + i] = images.pixels[c * plane + i];
        }
      }
    }
    out.push_back(TensorToImage(pixels.data(), options.width, options.height));
  }
  return out;
}

std::string SamplerLabel(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::kEulerAncestral: return "Euler a";
    case SamplerKind::kEuler: return "Euler";
    case SamplerKind::kDdim: return "DDIM";
    case SamplerKind::kDpmpp2m: return "DPM++ 2M";
    case SamplerKind::kDpmpp2mKarras: return "DPM++ 2M Karras";
    case SamplerKind::kLcm: return "LCM";
  }
  return "?";
}

// AUTOMATIC1111's "parameters" text, which PNG Info tools read back. PNG
// text chunks must be valid UTF-8, so invalid bytes in the prompts become
// U+FFFD.
std::string Parameters(const GenerateOptions& options, const Plan& plan, std::uint64_t seed) {
  char cfg[32];
  std::snprintf(cfg, sizeof(cfg), "%g", options.cfg_scale);
  auto valid = [](const std::string& text) {
    return unicode::EncodeUtf8(unicode::DecodeUtf8(text));
  };
  std::string text = valid(options.prompt) + "\n";
  if (!options.negative_prompt.empty()) {
    text += "Negative prompt: " + valid(options.negative_prompt) + "\n";
  }
  text += "Steps: " + std::to_string(options.steps) + ", Sampler: " + SamplerLabel(plan.sampler) +
          ", CFG scale: " + cfg + ", Seed: " + std::to_string(seed) + ", Size: " +
          std::to_string(options.width) + "x" + std::to_string(options.height);
  if (plan.facts.source_sha256.size() >= 10) {
    text += ", Model hash: " + plan.facts.source_sha256.substr(0, 10);
  }
  text += ", Model: " + plan.facts.stem;
  if (options.clip_skip > 1) text += ", Clip skip: " + std::to_string(options.clip_skip);
  if (plan.facts.num_time_ids == 5) {
    char scores[128];
    std::snprintf(scores, sizeof(scores), ", Aesthetic score: %g, Negative aesthetic score: %g",
                  options.aesthetic_score.value_or(kAestheticScore),
                  options.negative_aesthetic_score.value_or(kNegativeAestheticScore));
    text += scores;
  }
  if (plan.pix2pix) {
    char image_cfg[32];
    std::snprintf(image_cfg, sizeof(image_cfg), "%g", plan.image_cfg_scale);
    text += std::string(", Image CFG scale: ") + image_cfg;
  } else if (options.init_image) {
    char strength[32];
    std::snprintf(strength, sizeof(strength), "%g", plan.strength);
    text += std::string(", Denoising strength: ") + strength;
  }
  return text;
}

std::vector<std::string> OutputPaths(const std::string& output, int batch) {
  if (batch == 1) return {output};
  const fs::path path(output);
  std::vector<std::string> paths;
  for (int i = 1; i <= batch; ++i) {
    paths.push_back((path.parent_path() / (path.stem().string() + "-" + std::to_string(i) +
                                           path.extension().string()))
                        .string());
  }
  return paths;
}

// Creates the output files as temporaries, before any work, so that a
// read-only folder or an existing file is reported at once.
Result<std::vector<AtomicFile>> CreateOutputFiles(const GenerateOptions& options) {
  std::vector<AtomicFile> files;
  for (const std::string& path : OutputPaths(options.output, options.batch_size)) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      return Status::Error(path + ": is a folder; --output takes a .png file path");
    }
    for (const std::optional<std::string>& input : {options.init_image, options.mask}) {
      if (input && fs::equivalent(path, *input, ec)) {
        return Status::Error(path + ": is also an input image; give --output another path");
      }
    }
    SDONNX_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path, options.overwrite));
    files.push_back(std::move(file));
  }
  return files;
}

}  // namespace

std::string AllowedSizesNear(std::int64_t value, std::int64_t multiple) {
  if (value < multiple) return std::to_string(multiple);
  const std::int64_t below = value / multiple * multiple;
  return std::to_string(below) + " or " + std::to_string(below + multiple);
}

Result<GenerateResult> Generate(const GenerateOptions& options, const StepCallback& on_step) {
  if (options.output.empty()) return Status::Error("--output is required (a .png path)");
  const std::string extension = fs::path(options.output).extension().string();
  if (extension != ".png" && extension != ".PNG") {
    return Status::Error("--output " + options.output +
                         ": generate writes PNG files; give a path ending in .png");
  }
  if (options.batch_size < 1 || options.batch_size > 64) {
    return Status::Error("--batch-size " + std::to_string(options.batch_size) +
                         " is out of range; use 1 to 64");
  }
  for (auto [name, value] : {std::pair{"width", options.width}, {"height", options.height}}) {
    if (value > kMaxImageSide) {
      return Status::Error(std::string("--") + name + " " + std::to_string(value) +
                           " is more than the supported " + std::to_string(kMaxImageSide));
    }
  }
  // Missing folders above --output are created, as convert creates its
  // output folder, and removed again if the run fails.
  Result<CreatedFolders> created = CreatedFolders::Create(fs::path(options.output).parent_path());
  if (!created.ok()) return Status::Error("--output: " + created.status().message());
  CreatedFolders created_folders = std::move(created).value();
  SDONNX_ASSIGN_OR_RETURN(std::vector<AtomicFile> files, CreateOutputFiles(options));
  GenerateResult result;
  const auto load_start = Clock::now();
  ProfileRequest run;
  run.width = options.width;
  run.height = options.height;
  run.batch = options.batch_size;
  // Whether the UNet is instruct-pix2pix is read from its file when the
  // profile is made, so both guidance scales are passed on.
  run.guidance = options.cfg_scale != 1.0f;
  run.image_guidance = options.image_cfg_scale.value_or(kImageCfgScale) != 1.0f;
  SDONNX_ASSIGN_OR_RETURN(
      std::unique_ptr<ModelSet> models,
      ModelSet::Load(options.model_dir, options.init_image.has_value(), options.session, run));
  result.load_seconds = SecondsSince(load_start);
  result.cache_built = models->CacheBuilt();
  std::tie(result.cache_entries_removed, result.cache_bytes_freed) = models->CacheEntriesRemoved();
  SDONNX_ASSIGN_OR_RETURN(Plan plan, MakePlan(options, models->facts()));
  SDONNX_ASSIGN_OR_RETURN(ImageInputs images, PrepareImages(*models, options, plan));
  SDONNX_ASSIGN_OR_RETURN(Contexts contexts, EncodePrompts(*models, options, plan));
  if (plan.facts.static_batch > 0 && contexts.cond.shape.size() == 3 &&
      contexts.cond.shape[1] > 77) {
    return Status::Error("the prompt or negative prompt takes " +
                         std::to_string(contexts.cond.shape[1] / 77) +
                         " chunks of 75 tokens, but the model was converted with --static-shape, "
                         "so its UNet takes one; shorten the prompts (see sdonnx tokenize) or "
                         "convert without --static-shape");
  }
  SDONNX_ASSIGN_OR_RETURN(std::vector<float> latents,
                          RunSampler(*models, options, plan, contexts, images, on_step,
                                     &result.seconds_per_step));
  result.latents = latents;
  SDONNX_ASSIGN_OR_RETURN(std::vector<Image> decoded,
                          DecodeImages(*models, std::move(latents), options, plan, images));

  // Every image is encoded and written to its temporary before any of them
  // is renamed into place, and the renames succeed or fail together.
  for (std::size_t i = 0; i < decoded.size(); ++i) {
    const std::string parameters = Parameters(options, plan, options.seed + i);
    if (i == 0) result.parameters = parameters;
    SDONNX_ASSIGN_OR_RETURN(std::string png, EncodePng(decoded[i], {{"parameters", parameters}}));
    SDONNX_RETURN_IF_ERROR(files[i].Write(png));
    SDONNX_RETURN_IF_ERROR(files[i].Close());
  }
  SDONNX_RETURN_IF_ERROR(AtomicFile::CommitAll(files));
  created_folders.Keep();
  for (const AtomicFile& file : files) result.files.push_back(file.path());
  return result;
}

}  // namespace sdonnx
