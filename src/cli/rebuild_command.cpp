#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "rebuild/rebuild.h"

namespace sdonnx::cli {
namespace {

struct RebuildArgs {
  std::vector<std::string> inputs;
  std::string output_path;
  bool allow_partial = false;
  bool force = false;
};

void PrintForeignReport(const RebuildReport& report, const std::string& output_path) {
  std::cout << "diffusers ONNX export: " << report.source_file << "\n";
  for (const RebuiltComponent& c : report.components) {
    std::cout << "  " << c.component << ": "
              << (c.file.empty() ? "missing" : std::to_string(c.tensors) + " weights mapped from " + c.file)
              << "\n";
  }
  for (const std::string& u : report.unmapped) std::cout << "not mapped, left out: " << u << "\n";
  std::cout << "wrote " << output_path << " (" << report.tensors_written << " tensors, "
            << HumanBytes(report.bytes) << ")" << (report.partial ? ": a PARTIAL checkpoint" : "")
            << "\nnote: the export holds only the weights its graphs use; EMA copies and "
               "buffers such as alphas_cumprod or position_ids cannot be recovered from it, and "
               "each weight keeps the export's dtype. There is no recorded hash to check the "
               "weights against.\n";
}

void PrintReport(const RebuildReport& report, const std::string& output_path) {
  if (report.foreign) return PrintForeignReport(report, output_path);
  std::cout << "source: " << report.source_file << " (sha256 " << report.source_sha256 << ")\n";
  for (const RebuiltComponent& c : report.components) {
    if (c.file.empty()) {
      std::cout << "  " << c.component << ": missing\n";
    } else {
      std::cout << "  " << c.component << ": " << c.tensors << " tensors from " << c.file << "\n";
    }
  }
  for (const std::string& key : report.differing_keys) {
    std::cout << "differs from the source, left out: " << key << "\n";
  }
  for (const std::string& key : report.missing_keys) {
    std::cout << "missing, left out: " << key << "\n";
  }
  std::cout << "wrote " << output_path << " (" << report.tensors_written << " tensors, "
            << HumanBytes(report.bytes) << ")";
  if (report.partial) {
    std::cout << ": a PARTIAL checkpoint, marked so in its metadata (sdonnx.rebuild = partial)\n";
    return;
  }
  std::cout << "\nevery tensor matches the SHA-256 recorded at export";
  std::cout << (report.file_identical ? "; the whole file is byte-identical to the source\n"
                                      : "; the file's header layout differs from the "
                                        "source's, so the file hash does not match it\n");
}

int RunRebuild(const RebuildArgs& args) {
  RebuildOptions options;
  options.inputs = args.inputs;
  options.output_path = args.output_path;
  options.allow_partial = args.allow_partial;
  options.overwrite = args.force;
  Result<RebuildReport> report = RebuildCheckpoint(options);
  if (!report.ok()) return ReportError(report.status().message());
  PrintReport(*report, args.output_path);
  return 0;
}

}  // namespace

void AddRebuildCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<RebuildArgs>();
  CLI::App* cmd = app.add_subcommand(
      "rebuild", "Restore the source checkpoint from the files `convert` wrote");
  cmd->add_option("inputs", args->inputs,
                  "The output folder of convert, or its .onnx and extras_*.safetensors files")
      ->required();
  cmd->add_option("-o,--output", args->output_path, "Checkpoint to write (.safetensors)")
      ->required();
  cmd->add_flag("--allow-partial", args->allow_partial,
                "Write the verified tensors even when components are missing or tensors "
                "differ; the file's metadata marks it partial");
  cmd->add_flag("--force", args->force, "Overwrite an existing output file");
  cmd->callback([run, args] { *run = [args] { return RunRebuild(*args); }; });
}

}  // namespace sdonnx::cli
