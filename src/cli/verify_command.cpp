#include <memory>

#include "cli/commands.h"
#include "inspect/verify.h"

namespace sdonnx::cli {
namespace {

struct VerifyArgs {
  std::string path;
  bool json = false;
};

// Every line goes through PrintLine, which escapes the control characters
// of keys and file names read from the file.
void PrintProblem(const VerifyProblem& problem) {
  const char* label = problem.wrong_shape_count > 0  ? "wrong shape: "
                      : problem.wrong_dtype_count > 0 ? "wrong dtype: "
                      : problem.component == "file"   ? "not a checkpoint: "
                                                      : "missing: ";
  PrintLine(label + problem.title + ": " + problem.what);
  for (const std::string& key : problem.missing_keys) PrintLine("    " + key);
  for (const ShapeMismatch& m : problem.wrong_shapes) {
    PrintLine("    " + m.key + ": " + ShapeText(m.found) + " instead of " + ShapeText(m.expected));
  }
  for (const DTypeMismatch& m : problem.wrong_dtypes) {
    PrintLine("    " + m.key + ": " + std::string(DTypeName(m.found)) +
              " instead of F32, F16 or BF16");
  }
  const std::size_t listed =
      problem.missing_keys.size() + problem.wrong_shapes.size() + problem.wrong_dtypes.size();
  const std::size_t count =
      problem.missing_count + problem.wrong_shape_count + problem.wrong_dtype_count;
  if (count > listed) PrintLine("    ... and " + std::to_string(count - listed) + " more");
  for (const std::string& message : problem.loader_messages) PrintLine("  " + message);
  PrintLine("  what to do: " + problem.advice);
}

int RunVerify(const VerifyArgs& args) {
  Result<VerifyReport> report = VerifyCheckpoint(args.path);
  if (!report.ok()) return ReportError(report.status().message());
  if (args.json) {
    PrintJson(VerifyReportJson(*report));
    return report->ok() ? 0 : 1;
  }
  const CheckpointSummary& summary = report->summary;
  PrintLine("file: " + summary.path + " (" + FileFormatName(summary.format) + ")");
  if (summary.spec) {
    const std::string& variant = summary.spec->variant;
    PrintLine("family: " + FamilyName(summary.spec->family) + " (" +
              FamilyTitle(summary.spec->family) + (variant == "base" ? "" : ", " + variant) + ")");
  }
  for (const VerifyProblem& problem : report->problems) PrintProblem(problem);
  if (!report->diagnosis.empty()) PrintLine("diagnosis: " + report->diagnosis);
  for (const std::string& warning : report->warnings) PrintLine("warning: " + warning);
  if (!report->ok()) {
    const std::size_t count = report->problems.size();
    PrintLine("FAILED: AUTOMATIC1111 and ComfyUI cannot load this file as a complete checkpoint (" +
              std::to_string(count) + (count == 1 ? " problem" : " problems") + ")");
    return 1;
  }
  PrintLine(std::string("OK: every weight that AUTOMATIC1111 and ComfyUI load is present") +
            (report->warnings.empty() ? "" : " (see the warnings)"));
  return 0;
}

}  // namespace

void AddVerifyCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "verify",
      "Check that a checkpoint is complete for AUTOMATIC1111 and ComfyUI; exit 0 if it is, 1 "
      "if a component or weight is missing");
  cmd->add_option("path", args->path, "A .safetensors or .ckpt checkpoint")->required();
  cmd->add_flag("--json", args->json, "Print one JSON object (fields: docs/inspect-verify.md)");
  cmd->callback([run, args] { *run = [args] { return RunVerify(*args); }; });
}

}  // namespace sdonnx::cli
