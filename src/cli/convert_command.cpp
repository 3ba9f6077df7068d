#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "convert/convert.h"

namespace sdonnx::cli {
namespace {

struct ConvertArgs {
  std::string model_path;
  std::string output_dir;
  std::string config;
  int opset = kDefaultOpset;
  std::string external_data = "auto";
  std::string prediction_type;
  bool force = false;
  bool ema = false;
  std::string vae;
  bool fp16 = false;
  bool fp16_vae_decoder = false;
  bool fp32_weights = false;
  std::string static_shape;
  std::int64_t batch_size = 1;
  bool batch_size_given = false;
  bool ort_attention = false;
  std::optional<std::int64_t> attention_chunks;
};

// Parses WIDTHxHEIGHT, such as 1024x768.
Result<StaticShape> ParseStaticShape(const std::string& text, std::int64_t batch) {
  const std::size_t x = text.find('x');
  StaticShape shape;
  shape.batch = batch;
  try {
    std::size_t used_width = 0;
    std::size_t used_height = 0;
    if (x == std::string::npos) throw std::invalid_argument("no x");
    shape.width = std::stoll(text.substr(0, x), &used_width);
    shape.height = std::stoll(text.substr(x + 1), &used_height);
    if (used_width != x || used_height != text.size() - x - 1) throw std::invalid_argument("tail");
  } catch (const std::exception&) {
    return Status::Error("--static-shape '" + text +
                         "' is invalid; expected WIDTHxHEIGHT in pixels, such as 512x512");
  }
  return shape;
}

// Every line goes through PrintLine: paths, notes and the basis of the
// detection come from file names and file contents.
void PrintReport(const ConvertReport& report, bool fp16) {
  const ModelSpec& spec = report.spec;
  const std::string variant = spec.variant == "base" ? "" : " " + spec.variant;
  std::ostringstream detected;
  detected << "detected: " << FamilyName(spec.family) << variant << " (" << spec.family_basis
           << "), prediction " << spec.prediction_type << " (" << spec.prediction_basis
           << "), VAE scaling factor " << spec.vae_scaling_factor;
  PrintLine(detected.str());
  for (const std::string& note : spec.notes) PrintLine("  " + note);
  PrintLine("source sha256: " + report.source_sha256);
  for (const ConvertedComponent& c : report.components) {
    for (const WrittenFile& f : c.files) {
      PrintLine("wrote " + f.path + " (" + HumanBytes(f.bytes) + ")");
    }
    const NarrowingCounts& total = c.conversion.total;
    const std::uint64_t converted = c.conversion.converted_tensors;
    const std::string tensors =
        std::to_string(converted) + (converted == 1 ? " tensor" : " tensors");
    if (converted > 0 && c.weight_precision == "fp32") {
      PrintLine("  " + c.component + ": " + tensors + " widened to float32 (exact)");
    } else if (converted > 0) {
      PrintLine("  " + c.component + ": " + tensors + " converted to float16; " +
                std::to_string(total.clamped) +
                " values clamped to +-65504, " + std::to_string(total.flushed_to_zero) +
                " flushed to zero");
    }
  }
  if (report.float32_graphs_with_narrow_weights > 0) {
    std::string dtypes;
    for (const std::string& dtype : report.narrow_weight_dtypes) {
      dtypes += (dtypes.empty() ? "" : " and ") + dtype;
    }
    std::string where;
    for (const auto& [component, count] : report.cast_weights) {
      where += (where.empty() ? "" : ", ") + component + " " + std::to_string(count);
    }
    PrintLine("note: float32 models keep " + dtypes + " weights of the source (" + where +
              "), each widened by a Cast whenever generate runs the model");
    // Only the UNet runs at every step with weights large enough to matter.
    if (report.cast_weights.contains("unet")) {
      const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
      PrintLine(sdxl ? "  for the SDXL UNet on a CPU that costs about 2 s per 512x512 step; "
                       "generate --widen-at-load does it once, in 20-35 s and 10 GB"
                     : "  generate --widen-at-load widens them once at load instead, which keeps "
                       "a float32 copy in memory");
      PrintLine("  convert with --fp32-weights to store them widened (files twice the size)" +
                (fp16 ? std::string() : std::string(", or with --fp16 for float16 compute")));
    }
  }
  PrintLine("wrote " + report.extras.path + " (" + HumanBytes(report.extras.bytes) +
            ", the tensors no graph uses, for rebuild)");
}

int RunConvert(const ConvertArgs& args) {
  ConvertOptions options;
  options.model_path = args.model_path;
  options.output_dir = args.output_dir;
  if (!args.config.empty()) options.config_path = args.config;
  if (!args.prediction_type.empty()) options.prediction_type = args.prediction_type;
  options.opset = args.opset;
  options.overwrite = args.force;
  options.ema = args.ema;
  if (!args.vae.empty()) options.vae_path = args.vae;
  if (args.external_data == "always") options.external_data = ExternalData::kAlways;
  if (args.external_data == "never") options.external_data = ExternalData::kNever;
  options.fp16 = args.fp16;
  options.fp16_sdxl_vae_decoder = args.fp16_vae_decoder;
  options.fp32_weights = args.fp32_weights;
  options.ort_attention = args.ort_attention;
  options.attention_chunks = args.attention_chunks;
  if (args.fp16_vae_decoder && !args.fp16) {
    return ReportError("--fp16-vae-decoder only applies with --fp16; add --fp16");
  }
  if (!args.static_shape.empty()) {
    Result<StaticShape> shape = ParseStaticShape(args.static_shape, args.batch_size);
    if (!shape.ok()) return ReportError(shape.status().message());
    options.static_shape = *shape;
  } else if (args.batch_size_given) {
    return ReportError(
        "--batch-size only applies with --static-shape WIDTHxHEIGHT; add it or "
        "drop --batch-size");
  }
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) return ReportError(report.status().message());
  PrintReport(*report, options.fp16);
  return 0;
}

}  // namespace

void AddConvertCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a single-file checkpoint to one ONNX file per component");
  cmd->add_option("--model-path,model_path", args->model_path, "Checkpoint (.safetensors or .ckpt); also the first positional argument")
      ->required();
  cmd->add_option("--output-dir,output_dir", args->output_dir, "Folder for the ONNX files")
      ->required();
  cmd->add_option("--opset-version", args->opset, "ONNX opset")
      ->transform(IntegerValidator())
      ->check(CLI::Range(kMinOpset, kMaxOpset))
      ->capture_default_str();
  cmd->add_option("--config", args->config,
                  "Original-format YAML config (default: MODEL.yaml beside the checkpoint)");
  cmd->add_option("--external-data", args->external_data,
                  "Store weights in a .onnx.data file: auto (past 2 GB), always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--prediction-type", args->prediction_type,
                  "Override detection: epsilon or v_prediction; probe runs the SD 2.x UNet "
                  "probe even when a config is present")
      ->check(CLI::IsMember({"epsilon", "v_prediction", "v", "probe"}));
  cmd->add_flag("--force", args->force, "Overwrite existing output files");
  cmd->add_flag("--ema", args->ema, "Convert the UNet's EMA weights (model_ema.*)");
  cmd->add_option("--vae", args->vae,
                  "Separate VAE file (.safetensors or .ckpt, original or diffusers naming) to "
                  "use instead of the checkpoint's");
  cmd->add_flag("--fp16", args->fp16,
                "Store weights as float16 and compute in float16; inputs and outputs stay "
                "float32");
  cmd->add_flag("--fp16-vae-decoder", args->fp16_vae_decoder,
                "With --fp16: convert the SDXL VAE decoder to float16 too (it stays float32 "
                "by default because it overflows float16)");
  cmd->add_flag("--fp32-weights", args->fp32_weights,
                "Store float16 and bfloat16 source weights as float32: files twice the size "
                "whose weights need no Cast to float32 in ONNX Runtime (an fp16 SDXL UNet "
                "steps about 2 s faster at 512x512 on a CPU)");
  cmd->add_flag("--ort-attention", args->ort_attention,
                "Write UNet and VAE attention as ONNX Runtime's com.microsoft."
                "MultiHeadAttention (flash attention on CPU: faster, less memory); the files "
                "then load only in ONNX Runtime");
  cmd->add_option("--attention-chunks", args->attention_chunks,
                  "Split the queries of UNet and VAE self-attention into this many chunks "
                  "(default " +
                      std::to_string(kDefaultAttentionChunks) +
                      "), so that only "
                      "one chunk's scores are in memory at a time; the VAE gets a quarter; 1 "
                      "writes each attention in one piece, as TensorRT wants; ignored with "
                      "--ort-attention")
      ->transform(IntegerValidator())
      ->check(CLI::Range(std::int64_t{1}, kMaxAttentionChunks));
  cmd->add_option("--static-shape", args->static_shape,
                  "Write fixed-shape models for images of WIDTHxHEIGHT pixels, such as 512x512");
  cmd->add_option("--batch-size", args->batch_size,
                  "With --static-shape: images per run; the UNet takes twice as many rows "
                  "(negative and positive prompt)")
      ->transform(IntegerValidator())
      ->each([args](const std::string&) { args->batch_size_given = true; })
      ->capture_default_str();
  cmd->callback([run, args] { *run = [args] { return RunConvert(*args); }; });
}

}  // namespace sdonnx::cli
