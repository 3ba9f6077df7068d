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

// Every line goes through PrintLine, which escapes the control characters
// of keys and file names read from the inputs.
void PrintForeignReport(const RebuildReport& report, const std::string& output_path) {
  PrintLine("diffusers ONNX export: " + report.source_file);
  for (const RebuiltComponent& c : report.components) {
    PrintLine("  " + c.component + ": " +
              (c.file.empty() ? "missing"
                              : std::to_string(c.tensors) + " weights mapped from " + c.file));
  }
  for (const std::string& u : report.unmapped) PrintLine("not mapped, left out: " + u);
  PrintLine("wrote " + output_path + " (" + std::to_string(report.tensors_written) +
            " tensors, " + HumanBytes(report.bytes) + ")" +
            (report.partial ? ": a PARTIAL checkpoint" : ""));
  PrintLine("note: the export holds only the weights its graphs use; EMA copies and buffers such "
            "as alphas_cumprod or position_ids cannot be recovered from it, and each weight "
            "keeps the export's dtype. There is no recorded hash to check the weights against.");
}

void PrintReport(const RebuildReport& report, const std::string& output_path) {
  if (report.foreign) return PrintForeignReport(report, output_path);
  PrintLine("source: " + report.source_file + " (sha256 " + report.source_sha256 + ")");
  for (const RebuiltComponent& c : report.components) {
    PrintLine("  " + c.component + ": " +
              (c.file.empty() ? "missing"
                              : std::to_string(c.tensors) + " tensors from " + c.file));
  }
  for (const std::string& key : report.differing_keys) {
    PrintLine("differs from the source, left out: " + key);
  }
  for (const std::string& key : report.missing_keys) PrintLine("missing, left out: " + key);
  const std::string wrote = "wrote " + output_path + " (" +
                            std::to_string(report.tensors_written) + " tensors, " +
                            HumanBytes(report.bytes) + ")";
  if (report.partial) {
    PrintLine(wrote + ": a PARTIAL checkpoint, marked so in its metadata (sdonnx.rebuild = "
                      "partial)");
    return;
  }
  PrintLine(wrote);
  PrintLine(std::string("every tensor matches the SHA-256 recorded at export") +
            (report.file_identical ? "; the whole file is byte-identical to the source"
                                   : "; the file's header layout differs from the source's, so "
                                     "the file hash does not match it"));
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
  // Checked in RebuildCheckpoint rather than by CLI11, so that a missing -o
  // gets a plain message and exit code 1 like other usage errors.
  cmd->add_option("-o,--output", args->output_path, "Checkpoint to write (.safetensors)");
  cmd->add_flag("--allow-partial", args->allow_partial,
                "Write the verified tensors even when components are missing or tensors "
                "differ; the file's metadata marks it partial");
  cmd->add_flag("--force", args->force, "Overwrite an existing output file");
  cmd->callback([run, args] { *run = [args] { return RunRebuild(*args); }; });
}

}  // namespace sdonnx::cli
