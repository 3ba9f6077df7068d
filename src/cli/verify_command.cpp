#include <algorithm>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "inspect/onnx_inspect.h"
#include "inspect/verify.h"

namespace sdonnx::cli {
namespace {

namespace fs = std::filesystem;

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

// Reports an input that cannot be verified: with --json, one object that
// names the error, and the error on stderr either way.
int Reject(const VerifyArgs& args, const std::string& message) {
  if (args.json) {
    PrintJson({{"kind", "error"}, {"path", args.path}, {"ok", false}, {"error", message}});
  }
  return ReportError(message);
}

// The problems that keep an export folder from being used as it is: files
// that cannot be read or do not fit together, and missing components.
std::vector<std::string> FolderProblems(const OnnxFolderSummary& folder) {
  std::vector<std::string> problems = folder.problems;
  for (const OnnxFileSummary& file : folder.files) {
    for (std::string& damage : FileDamage(file)) problems.push_back(std::move(damage));
  }
  for (const std::string& component : folder.missing_components) {
    problems.push_back("component " + component + " is missing");
  }
  return problems;
}

// Checks a folder of ONNX files (sdonnx's export or the diffusers layout)
// instead of a checkpoint.
int VerifyFolder(const VerifyArgs& args) {
  Result<OnnxFolderSummary> folder = InspectOnnxFolder(args.path);
  if (!folder.ok()) return Reject(args, folder.status().message());
  const std::vector<std::string> problems = FolderProblems(*folder);
  if (args.json) {
    nlohmann::json json = OnnxFolderSummaryJson(*folder);
    json["ok"] = problems.empty();
    json["verify_problems"] = problems;
    PrintJson(json);
    return problems.empty() ? 0 : 1;
  }
  PrintLine("folder: " + folder->path + " (ONNX export, " +
            std::to_string(folder->files.size()) + " models)");
  if (!folder->family.empty()) PrintLine("family: " + folder->family);
  for (const std::string& problem : problems) PrintLine("problem: " + problem);
  if (!folder->rebuild.empty()) PrintLine("rebuild: " + folder->rebuild);
  if (!problems.empty()) {
    PrintLine("FAILED: this export cannot be used as it is (" + std::to_string(problems.size()) +
              (problems.size() == 1 ? " problem" : " problems") +
              (folder->several_checkpoints
                   ? "); keep the export of each checkpoint in a folder of its own"
                   : "); convert the checkpoint again into an empty folder, or with --force"));
    return 1;
  }
  const bool by_sdonnx = std::any_of(folder->files.begin(), folder->files.end(),
                                     [](const OnnxFileSummary& f) { return f.made_by_sdonnx; });
  PrintLine(by_sdonnx ? "OK: every component is present, readable and from one convert run"
                      : "OK: every component is present and readable");
  return 0;
}

int RunVerify(const VerifyArgs& args) {
  std::error_code ec;
  if (fs::is_directory(args.path, ec)) return VerifyFolder(args);
  Result<VerifyReport> report = VerifyCheckpoint(args.path);
  if (!report.ok()) return Reject(args, report.status().message());
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
      "Check that a checkpoint is complete for AUTOMATIC1111 and ComfyUI, or that a folder of "
      "ONNX files is a complete export from one convert run; exit 0 if it is, 1 if not");
  cmd->add_option("path", args->path,
                  "A .safetensors or .ckpt checkpoint, or a folder of ONNX files")
      ->required();
  cmd->add_flag("--json", args->json, "Print one JSON object (fields: docs/inspect-verify.md)");
  cmd->callback([run, args] { *run = [args] { return RunVerify(*args); }; });
}

}  // namespace sdonnx::cli
