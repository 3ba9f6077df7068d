#include <memory>

#include "cli/commands.h"
#include "rebuild/extract.h"

namespace sdonnx::cli {
namespace {

struct ExtractArgs {
  std::string onnx_path;
  std::string output_path;
  bool force = false;
};

int RunExtract(const ExtractArgs& args) {
  ExtractOptions options;
  options.onnx_path = args.onnx_path;
  options.output_path = args.output_path;
  options.overwrite = args.force;
  Result<ExtractReport> report = ExtractInitializers(options);
  if (!report.ok()) return ReportError(report.status().message());
  PrintLine("wrote " + args.output_path + " (" + std::to_string(report->tensors) +
            " tensors of " + report->component + ", " + HumanBytes(report->bytes) + ")");
  PrintLine("note: this file holds the weights of one ONNX component only; it is not a "
            "checkpoint that Stable Diffusion tools can load.");
  if (report->made_by_sdonnx) {
    PrintLine("note: sdonnx wrote the model, so the tensor names are the original checkpoint "
              "keys; `sdonnx rebuild` restores the whole checkpoint from a complete export.");
  } else {
    PrintLine("note: another tool wrote the model; the tensor names are its initializer names, "
              "not checkpoint keys.");
  }
  return 0;
}

}  // namespace

void AddExtractCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<ExtractArgs>();
  CLI::App* cmd = app.add_subcommand(
      "extract", "Write every initializer of one ONNX file to a .safetensors file");
  cmd->add_option("model", args->onnx_path, "ONNX model (.onnx; external data is read too)")
      ->required();
  cmd->add_option("output,-o,--output", args->output_path,
                  "Output .safetensors file; missing folders above it are created")
      ->required();
  cmd->add_flag("--force", args->force, "Overwrite an existing output file");
  cmd->callback([run, args] { *run = [args] { return RunExtract(*args); }; });
}

}  // namespace sdonnx::cli
