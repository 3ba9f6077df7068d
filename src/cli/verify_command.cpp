#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "inspect/verify.h"

namespace sdonnx::cli {
namespace {

struct VerifyArgs {
  std::string path;
  bool json = false;
};

void PrintProblem(const VerifyProblem& problem) {
  const bool wrong_shapes = problem.wrong_shape_count > 0;
  std::cout << (wrong_shapes ? "wrong shape: " : "missing: ") << problem.title << ": "
            << problem.what << "\n";
  for (const std::string& key : problem.missing_keys) std::cout << "    " << key << "\n";
  for (const ShapeMismatch& m : problem.wrong_shapes) {
    std::cout << "    " << m.key << ": " << ShapeText(m.found) << " instead of "
              << ShapeText(m.expected) << "\n";
  }
  const std::size_t listed = problem.missing_keys.size() + problem.wrong_shapes.size();
  if (problem.missing_count + problem.wrong_shape_count > listed) {
    std::cout << "    ... and " << problem.missing_count + problem.wrong_shape_count - listed
              << " more\n";
  }
  for (const std::string& message : problem.loader_messages) {
    std::cout << "  " << message << "\n";
  }
  std::cout << "  what to do: " << problem.advice << "\n";
}

int RunVerify(const VerifyArgs& args) {
  Result<VerifyReport> report = VerifyCheckpoint(args.path);
  if (!report.ok()) return ReportError(report.status().message());
  if (args.json) {
    std::cout << VerifyReportJson(*report).dump(2) << "\n";
    return report->ok() ? 0 : 1;
  }
  const CheckpointSummary& summary = report->summary;
  std::cout << "file: " << summary.path << " (" << FileFormatName(summary.format) << ")\n";
  if (summary.spec) {
    const std::string& variant = summary.spec->variant;
    std::cout << "family: " << FamilyName(summary.spec->family) << " ("
              << FamilyTitle(summary.spec->family) << (variant == "base" ? "" : ", " + variant)
              << ")\n";
  }
  for (const VerifyProblem& problem : report->problems) PrintProblem(problem);
  if (!report->diagnosis.empty()) std::cout << "diagnosis: " << report->diagnosis << "\n";
  for (const std::string& warning : report->warnings) {
    std::cout << "warning: " << warning << "\n";
  }
  if (!report->ok()) {
    std::cout << "FAILED: AUTOMATIC1111 and ComfyUI cannot load this file as a complete "
                 "checkpoint ("
              << report->problems.size()
              << (report->problems.size() == 1 ? " problem" : " problems") << ")\n";
    return 1;
  }
  std::cout << "OK: every weight that AUTOMATIC1111 and ComfyUI load is present"
            << (report->warnings.empty() ? "" : " (see the warnings)") << "\n";
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
