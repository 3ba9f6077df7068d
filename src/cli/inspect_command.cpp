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
};

std::string DTypeCounts(const std::map<std::string, std::size_t>& dtypes) {
  std::string out;
  for (const auto& [dtype, count] : dtypes) {
    out += (out.empty() ? "" : ", ") + dtype + " x" + std::to_string(count);
  }
  return out;
}

void PrintCheckpoint(const CheckpointSummary& s) {
  std::cout << "file: " << s.path << " (" << HumanBytes(s.file_bytes) << ", "
            << FileFormatName(s.format) << ")\n";
  if (s.spec) {
    const ModelSpec& spec = *s.spec;
    std::cout << "family: " << FamilyName(spec.family) << " (" << FamilyTitle(spec.family)
              << "; " << spec.family_basis << ")\n";
    std::cout << "variant: " << spec.variant << "\n";
    if (spec.needs_prediction_probe()) {
      std::cout << "prediction type: epsilon or v_prediction, decided by a UNet probe when "
                   "converting (no config beside the file)\n";
    } else {
      std::cout << "prediction type: " << spec.prediction_type << " (" << spec.prediction_basis
                << ")\n";
    }
    std::cout << "config: " << (spec.config_path ? *spec.config_path : "none") << "\n";
  } else {
    std::cout << "family: not detected: " << s.detection_error << "\n";
  }
  std::cout << "components:\n";
  for (const ComponentSummary& c : s.components) {
    char line[160];
    std::snprintf(line, sizeof(line), "  %-36s %6zu tensors %14s parameters  ", c.title.c_str(),
                  c.tensors, HumanCount(c.parameters).c_str());
    std::cout << line << DTypeCounts(c.dtypes) << "\n";
  }
  std::cout << "  total: " << s.tensors << " tensors, " << HumanCount(s.parameters)
            << " parameters\n";
  for (const ExpectedComponent& c : s.expected) {
    if (!c.present) std::cout << "missing: " << c.title << " (no " << c.prefix << "* keys)\n";
  }
  std::cout << "EMA weights: "
            << (s.checkpoint->HasPrefix("model_ema.diffusion_model") ? "yes" : "no") << "\n";
  if (!s.extra_keys.empty()) {
    std::cout << "extra keys: " << s.extra_keys.size() << ":";
    for (std::size_t i = 0; i < std::min(s.extra_keys.size(), kExtraKeysShown); ++i) {
      std::cout << " " << s.extra_keys[i];
    }
    std::cout << (s.extra_keys.size() > kExtraKeysShown ? " ...\n" : "\n");
  }
  for (const auto& [key, value] : s.checkpoint->metadata()) {
    std::cout << "metadata: " << key << " = " << value.substr(0, kMetadataValueShown)
              << (value.size() > kMetadataValueShown ? "..." : "") << "\n";
  }
  for (const std::string& warning : s.warnings) std::cout << "warning: " << warning << "\n";
}

std::string Values(const std::vector<OnnxValueSummary>& values) {
  std::string out;
  for (const OnnxValueSummary& v : values) {
    std::string shape;
    for (const std::string& dim : v.shape) shape += (shape.empty() ? "" : ", ") + dim;
    out += "\n    " + v.name + " " + v.dtype + " [" + shape + "]";
  }
  return out;
}

void PrintOnnxFile(const OnnxFileSummary& s) {
  std::cout << "file: " << s.path << " (" << HumanBytes(s.file_bytes) << ", ONNX)\n";
  std::cout << "  component: " << s.component << " (" << s.component_basis << ")\n";
  std::cout << "  producer: " << (s.producer.empty() ? "unknown" : s.producer)
            << ", IR version " << s.ir_version << ", opsets:";
  for (const auto& [domain, version] : s.opsets) {
    std::cout << " " << (domain.empty() ? "ai.onnx" : domain) << " " << version;
  }
  std::cout << "\n  inputs:" << Values(s.inputs) << "\n  outputs:" << Values(s.outputs) << "\n";
  std::cout << "  " << s.nodes << " nodes, " << s.initializers << " initializers, "
            << HumanCount(s.parameters) << " parameters (" << DTypeCounts(s.dtypes) << ")\n";
  for (const std::string& data : s.external_data_files) {
    const bool missing = std::find(s.missing_external_data_files.begin(),
                                   s.missing_external_data_files.end(),
                                   data) != s.missing_external_data_files.end();
    const bool unsafe = std::find(s.unsafe_external_data_files.begin(),
                                  s.unsafe_external_data_files.end(),
                                  data) != s.unsafe_external_data_files.end();
    std::cout << "  external data: " << data << (missing ? " (missing)" : "")
              << (unsafe ? " (unsafe: it points outside the model's folder)" : "")
              << "\n";
  }
  for (const auto& [key, value] : s.metadata) {
    std::cout << "  metadata: " << key << " = " << value.substr(0, kMetadataValueShown) << "\n";
  }
}

void PrintOnnxFolder(const OnnxFolderSummary& s) {
  std::cout << "folder: " << s.path << " (" << s.files.size() << " ONNX files)\n";
  std::cout << "family: " << (s.family.empty() ? "unknown" : s.family) << "\n";
  std::string present;
  for (const std::string& c : s.present_components) present += " " + c;
  std::string missing;
  for (const std::string& c : s.missing_components) missing += " " + c;
  std::cout << "pipeline components present:" << (present.empty() ? " none" : present) << "\n";
  std::cout << "pipeline components missing:" << (missing.empty() ? " none" : missing) << "\n";
  for (const std::string& warning : s.warnings) std::cout << "warning: " << warning << "\n";
  for (const OnnxFileSummary& file : s.files) PrintOnnxFile(file);
}

// Prints `json` or the text form; returns the exit code.
template <typename Summary, typename Text, typename Json>
int Emit(const Result<Summary>& summary, bool json, Text text, Json to_json) {
  if (!summary.ok()) return ReportError(summary.status().message());
  if (json) {
    std::cout << to_json(*summary).dump(2) << "\n";
  } else {
    text(*summary);
  }
  return 0;
}

int RunInspect(const InspectArgs& args) {
  std::error_code ec;
  if (std::filesystem::is_directory(args.path, ec)) {
    return Emit(InspectOnnxFolder(args.path), args.json, PrintOnnxFolder, OnnxFolderSummaryJson);
  }
  Result<FileFormat> format = SniffFile(args.path);
  if (!format.ok()) return ReportError(format.status().message());
  if (*format == FileFormat::kOnnx) {
    return Emit(InspectOnnxFile(args.path), args.json, PrintOnnxFile, OnnxFileSummaryJson);
  }
  // A zip may still be a checkpoint whose data.pkl is not the first record.
  const std::string advice = NotACheckpointAdvice(*format);
  if (!advice.empty() && *format != FileFormat::kZip) {
    if (args.json) {
      const nlohmann::json out = {{"kind", "not-a-model"},
                                  {"path", args.path},
                                  {"format", FileFormatId(*format)},
                                  {"advice", advice}};
      std::cout << out.dump(2) << "\n";
    }
    return ReportError(args.path + ": " + FileFormatName(*format) + ": " + advice);
  }
  return Emit(InspectCheckpoint(args.path), args.json, PrintCheckpoint, CheckpointSummaryJson);
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
  cmd->callback([run, args] { *run = [args] { return RunInspect(*args); }; });
}

}  // namespace sdonnx::cli
