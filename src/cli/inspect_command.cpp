#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "formats/sniff.h"
#include "inspect/checkpoint_inspect.h"
#include "inspect/onnx_inspect.h"

namespace sdonnx::cli {
namespace {

constexpr std::size_t kMetadataValueShown = 160;
constexpr std::size_t kExtraKeysShown = 5;

struct InspectArgs {
  std::string path;
  bool json = false;
  bool no_probe = false;
};

std::string DTypeCounts(const std::map<std::string, std::size_t>& dtypes) {
  std::string out;
  for (const auto& [dtype, count] : dtypes) {
    out += (out.empty() ? "" : ", ") + dtype + " x" + std::to_string(count);
  }
  return out;
}

std::string Shortened(const std::string& value) {
  return value.size() > kMetadataValueShown ? value.substr(0, kMetadataValueShown) + "..." : value;
}

void PrintPrediction(const ModelSpec& spec, bool probe_skipped) {
  if (!spec.needs_prediction_probe()) {
    PrintLine("prediction type: " + spec.prediction_type + " (" + spec.prediction_basis + ")");
  } else if (probe_skipped) {
    PrintLine("prediction type: epsilon or v_prediction, undecided (--no-probe; SD 2.x without "
              "a config is decided by a UNet probe)");
  } else {
    PrintLine("prediction type: epsilon or v_prediction, undecided (the UNet probe failed; see "
              "the warnings)");
  }
}

const IncompleteComponentSummary* FindIncomplete(const CheckpointSummary& s,
                                                const std::string& name) {
  for (const IncompleteComponentSummary& c : s.incomplete) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// One line per incomplete component, with the count that `verify` gives,
// then the first missing keys.
void PrintIncomplete(const CheckpointSummary& s) {
  for (const IncompleteComponentSummary& c : s.incomplete) {
    PrintLine("incomplete: " + c.title + ": " + std::to_string(c.missing_weights) + " of " +
              std::to_string(c.expected_weights) + " weights missing");
    for (const std::string& key : c.missing_keys) PrintLine("    " + key);
    if (c.missing_weights > c.missing_keys.size()) {
      PrintLine("    ... and " + std::to_string(c.missing_weights - c.missing_keys.size()) +
                " more");
    }
  }
}

// Every line goes through PrintLine, which escapes the control characters
// of keys, metadata and file names read from the file.
void PrintCheckpoint(const CheckpointSummary& s, bool probe_skipped) {
  PrintLine("file: " + s.path + " (" + HumanBytes(s.file_bytes) + ", " +
            FileFormatName(s.format) + ")");
  // An extract of one component can still show a family from its keys, so
  // the file kind is printed whenever sdonnx's metadata names it.
  if (!s.file_kind.empty()) {
    PrintLine("file kind: " + s.file_title + ": " + s.file_description);
    PrintLine("what to do: " + s.file_advice);
  }
  if (s.spec) {
    const ModelSpec& spec = *s.spec;
    PrintLine("family: " + FamilyName(spec.family) + " (" + FamilyTitle(spec.family) + "; " +
              spec.family_basis + ")");
    PrintLine("variant: " + spec.variant);
    PrintPrediction(spec, probe_skipped);
    PrintLine("config: " + (spec.config_path ? *spec.config_path : "none"));
  } else if (s.file_kind.empty()) {
    PrintLine("family: not detected: " + s.detection_error);
  }
  PrintLine("components:");
  for (const ComponentSummary& c : s.components) {
    char line[160];
    std::snprintf(line, sizeof(line), "  %-36s %6zu %-7s %14s parameters  ", c.title.c_str(),
                  c.tensors, c.tensors == 1 ? "tensor" : "tensors", HumanCount(c.parameters).c_str());
    const IncompleteComponentSummary* incomplete = FindIncomplete(s, c.name);
    PrintLine(line + DTypeCounts(c.dtypes) + (incomplete ? "  (incomplete)" : ""));
  }
  PrintLine("  total: " + std::to_string(s.tensors) + " tensors, " + HumanCount(s.parameters) +
            " parameters");
  for (const ExpectedComponent& c : s.expected) {
    if (!c.present) PrintLine("missing: " + c.title + " (no " + c.prefix + "* keys)");
  }
  PrintIncomplete(s);
  PrintLine(std::string("EMA weights: ") +
            (s.checkpoint->HasPrefix("model_ema.diffusion_model") ? "yes" : "no"));
  if (!s.extra_keys.empty()) {
    std::string line = "extra keys: " + std::to_string(s.extra_keys.size()) + ":";
    for (std::size_t i = 0; i < std::min(s.extra_keys.size(), kExtraKeysShown); ++i) {
      line += " " + s.extra_keys[i];
    }
    PrintLine(line + (s.extra_keys.size() > kExtraKeysShown ? " ..." : ""));
  }
  for (const auto& [key, value] : s.checkpoint->metadata()) {
    PrintLine("metadata: " + key + " = " + Shortened(value));
  }
  for (const std::string& warning : s.warnings) PrintLine("warning: " + warning);
}

void PrintValues(const char* title, const std::vector<OnnxValueSummary>& values) {
  PrintLine(std::string("  ") + title + ":");
  for (const OnnxValueSummary& v : values) {
    std::string shape;
    for (const std::string& dim : v.shape) shape += (shape.empty() ? "" : ", ") + dim;
    PrintLine("    " + v.name + " " + v.dtype + " [" + shape + "]");
  }
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

void PrintExternalData(const OnnxFileSummary& s) {
  for (const std::string& data : s.external_data_files) {
    const bool truncated =
        std::any_of(s.truncated_external_data_files.begin(), s.truncated_external_data_files.end(),
                    [&data](const TruncatedDataFile& t) { return t.location == data; });
    PrintLine("  external data: " + data +
              (Contains(s.missing_external_data_files, data) ? " (missing)" : "") +
              (truncated ? " (truncated)" : "") +
              (Contains(s.unsafe_external_data_files, data)
                   ? " (unsafe: it points outside the model's folder)"
                   : "") +
              (Contains(s.symlinked_external_data_files, data) ? " (a symlink)" : ""));
  }
}

void PrintOnnxFile(const OnnxFileSummary& s) {
  PrintLine("file: " + s.path + " (" + HumanBytes(s.file_bytes) + ", ONNX)");
  PrintLine("  component: " + s.component + " (" + s.component_basis + ")");
  if (!s.family.empty()) PrintLine("  family: " + s.family + " (" + s.family_basis + ")");
  std::string line = "  producer: " + (s.producer.empty() ? "unknown" : s.producer) +
                     ", IR version " + std::to_string(s.ir_version) + ", opsets:";
  for (const auto& [domain, version] : s.opsets) {
    line += " " + (domain.empty() ? "ai.onnx" : domain) + " " + std::to_string(version);
  }
  PrintLine(line);
  PrintValues("inputs", s.inputs);
  PrintValues("outputs", s.outputs);
  PrintLine("  " + std::to_string(s.nodes) + " nodes, " + std::to_string(s.initializers) +
            " initializers, " + HumanCount(s.parameters) + " parameters (" +
            DTypeCounts(s.dtypes) + ")");
  PrintExternalData(s);
  for (const auto& [key, value] : s.metadata) {
    PrintLine("  metadata: " + key + " = " + Shortened(value));
  }
  for (const std::string& warning : s.warnings) PrintLine("  warning: " + warning);
  for (const std::string& problem : s.problems) PrintLine("  problem: " + problem);
}

void PrintOnnxFolder(const OnnxFolderSummary& s) {
  PrintLine("folder: " + s.path + " (" + std::to_string(s.files.size()) + " ONNX files)");
  PrintLine("family: " + (s.family.empty() ? "unknown" : s.family + " (" + s.family_basis + ")"));
  std::string present;
  for (const std::string& c : s.present_components) present += " " + c;
  std::string missing;
  for (const std::string& c : s.missing_components) missing += " " + c;
  PrintLine("pipeline components present:" + (present.empty() ? " none" : present));
  PrintLine("pipeline components missing:" + (missing.empty() ? " none" : missing));
  if (!s.rebuild.empty()) {
    PrintLine("extras file: " + (s.extras_file.empty() ? "missing" : s.extras_file));
    PrintLine("rebuild: " + s.rebuild);
  }
  for (const std::string& warning : s.warnings) PrintLine("warning: " + warning);
  for (const std::string& problem : s.problems) PrintLine("problem: " + problem);
  for (const OnnxFileSummary& file : s.files) PrintOnnxFile(file);
}

// Reports an input that cannot be inspected: with --json, one object that
// names the format sniffed and the error, and the error on stderr either way.
int Reject(const InspectArgs& args, const std::string& format, const std::string& message,
           const std::string& advice = "") {
  if (args.json) {
    nlohmann::json out = {{"kind", advice.empty() ? "error" : "not-a-model"},
                          {"path", args.path},
                          {"format", format.empty() ? nlohmann::json(nullptr)
                                                    : nlohmann::json(format)},
                          {"error", message}};
    if (!advice.empty()) out["advice"] = advice;
    PrintJson(out);
  }
  return ReportError(message);
}

// Whether a summary lists problems, which make inspect exit with 1.
bool HasProblems(const CheckpointSummary&) { return false; }
bool HasProblems(const OnnxFileSummary& s) { return !s.problems.empty(); }
bool HasProblems(const OnnxFolderSummary& s) {
  return !s.problems.empty() || std::any_of(s.files.begin(), s.files.end(),
                                            [](const OnnxFileSummary& f) {
                                              return HasProblems(f);
                                            });
}

// Prints `json` or the text form; returns the exit code: 1 when the
// summary lists problems.
template <typename Summary, typename Text, typename Json>
int Emit(const InspectArgs& args, const std::string& format, const Result<Summary>& summary,
         Text text, Json to_json) {
  if (!summary.ok()) return Reject(args, format, summary.status().message());
  if (args.json) {
    PrintJson(to_json(*summary));
  } else {
    text(*summary);
  }
  return HasProblems(*summary) ? 1 : 0;
}

int InspectCheckpointFile(const InspectArgs& args, FileFormat format) {
  Result<CheckpointSummary> summary = InspectCheckpoint(args.path);
  if (summary.ok() && !args.no_probe) {
    if (Status probe = RunPredictionProbe(&*summary); !probe.ok()) {
      summary->warnings.push_back("the SD 2.x prediction type probe failed: " + probe.message());
    }
  }
  const bool skipped = args.no_probe;
  return Emit(args, FileFormatId(format), summary,
              [skipped](const CheckpointSummary& s) { PrintCheckpoint(s, skipped); },
              CheckpointSummaryJson);
}

int RunInspect(const InspectArgs& args) {
  std::error_code ec;
  if (std::filesystem::is_directory(args.path, ec)) {
    return Emit(args, "folder", InspectOnnxFolder(args.path), PrintOnnxFolder,
                OnnxFolderSummaryJson);
  }
  Result<FileFormat> format = SniffFile(args.path);
  if (!format.ok()) return Reject(args, "", format.status().message());
  if (*format == FileFormat::kOnnx) {
    return Emit(args, FileFormatId(*format), InspectOnnxFile(args.path), PrintOnnxFile,
                OnnxFileSummaryJson);
  }
  // A zip may still be a checkpoint whose data.pkl is not the first record.
  const std::string advice = NotACheckpointAdvice(*format);
  if (!advice.empty() && *format != FileFormat::kZip) {
    return Reject(args, FileFormatId(*format),
                  args.path + ": " + FileFormatName(*format) + ": " + advice, advice);
  }
  return InspectCheckpointFile(args, *format);
}

}  // namespace

void AddInspectCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show what a checkpoint, an ONNX file or a folder of ONNX files holds");
  cmd->add_option("path", args->path,
                  "A .safetensors or .ckpt checkpoint, an .onnx file, or a folder of .onnx files "
                  "(the format is read from the bytes, not the extension)")
      ->required();
  cmd->add_flag("--json", args->json, "Print one JSON object (fields: docs/inspect-verify.md)");
  cmd->add_flag("--no-probe", args->no_probe,
                "For SD 2.x checkpoints without a config, leave the prediction type undecided "
                "instead of running the UNet probe (which writes the UNet to a temporary "
                "folder)");
  cmd->callback([run, args] { *run = [args] { return RunInspect(*args); }; });
}

}  // namespace sdonnx::cli
