#include <iostream>
#include <memory>

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
};

void PrintReport(const ConvertReport& report) {
  const ModelSpec& spec = report.spec;
  const std::string variant = spec.variant == "base" ? "" : " " + spec.variant;
  std::cout << "detected: " << FamilyName(spec.family) << variant << " ("
            << spec.family_basis << "), prediction "
            << spec.prediction_type << " (" << spec.prediction_basis << "), VAE scaling factor "
            << spec.vae_scaling_factor << "\n";
  for (const std::string& note : spec.notes) std::cout << "  " << note << "\n";
  std::cout << "source sha256: " << report.source_sha256 << "\n";
  for (const ConvertedComponent& c : report.components) {
    for (const WrittenFile& f : c.files) {
      std::cout << "wrote " << f.path << " (" << HumanBytes(f.bytes) << ")\n";
    }
  }
  std::cout << "wrote " << report.extras.path << " (" << HumanBytes(report.extras.bytes)
            << ", the tensors no graph uses, for rebuild)\n";
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
  Result<ConvertReport> report = ConvertCheckpoint(options);
  if (!report.ok()) return ReportError(report.status().message());
  PrintReport(*report);
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
  cmd->callback([run, args] { *run = [args] { return RunConvert(*args); }; });
}

}  // namespace sdonnx::cli
