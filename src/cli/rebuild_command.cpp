#include <algorithm>
#include <functional>
#include <memory>
#include <utility>

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

// How many keys each line of left-out tensors names before "and N more".
constexpr std::size_t kKeysPerGroup = 3;

// The part of the checkpoint a key belongs to, from its prefix.
std::string PartOf(const std::string& key) {
  static const std::pair<const char*, const char*> kParts[] = {
      {"model.diffusion_model.", "unet"},
      {"first_stage_model.", "vae"},
      {"cond_stage_model.", "text encoder"},
      {"conditioner.embedders.0.", "text encoder 1"},
      {"conditioner.embedders.1.", "text encoder 2"},
      {"model_ema.", "EMA"}};
  for (const auto& [prefix, name] : kParts) {
    if (key.starts_with(prefix)) return std::string(name) + " (" + prefix + "*)";
  }
  const std::size_t dot = key.find('.');
  return dot == std::string::npos ? "keys without a prefix" : key.substr(0, dot + 1) + "*";
}

// Prints `items` in groups, one line per group in order of first
// appearance: "WHAT, left out: GROUP: N tensors: a, b, c and N more".
// `split` returns an item's group and the text shown for it. A real
// component has thousands of tensors, too many for a line each.
void PrintLeftOut(
    const std::string& what, const std::vector<std::string>& items,
    const std::function<std::pair<std::string, std::string>(const std::string&)>& split) {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  for (const std::string& item : items) {
    auto [group, shown] = split(item);
    auto found = std::find_if(groups.begin(), groups.end(),
                              [&group](const auto& g) { return g.first == group; });
    if (found == groups.end()) found = groups.insert(groups.end(), {group, {}});
    found->second.push_back(std::move(shown));
  }
  for (const auto& [group, members] : groups) {
    std::string line = what + ", left out: " + group + ": " + std::to_string(members.size()) +
                       (members.size() == 1 ? " tensor: " : " tensors: ");
    for (std::size_t i = 0; i < members.size() && i < kKeysPerGroup; ++i) {
      line += (i ? ", " : "") + members[i];
    }
    if (members.size() > kKeysPerGroup) {
      line += " and " + std::to_string(members.size() - kKeysPerGroup) + " more";
    }
    PrintLine(line);
  }
}

std::pair<std::string, std::string> ByPart(const std::string& key) { return {PartOf(key), key}; }

// Every line goes through PrintLine, which escapes the control characters
// of keys and file names read from the inputs.
void PrintForeignReport(const RebuildReport& report, const std::string& output_path) {
  PrintLine("diffusers ONNX export: " + report.source_file);
  for (const RebuiltComponent& c : report.components) {
    PrintLine("  " + c.component + ": " +
              (c.file.empty() ? "missing"
                              : std::to_string(c.tensors) + " weights mapped from " + c.file));
  }
  // Each entry is "COMPONENT: INITIALIZER: why".
  PrintLeftOut("not mapped", report.unmapped, [](const std::string& entry) {
    const std::size_t colon = entry.find(": ");
    if (colon == std::string::npos) return std::pair<std::string, std::string>{"other", entry};
    return std::pair<std::string, std::string>{entry.substr(0, colon), entry.substr(colon + 2)};
  });
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
  PrintLeftOut("differs from the source", report.differing_keys, ByPart);
  PrintLeftOut("missing", report.missing_keys, ByPart);
  const std::string wrote = "wrote " + output_path + " (" +
                            std::to_string(report.tensors_written) + " tensors, " +
                            HumanBytes(report.bytes) + ")";
  if (report.partial) {
    PrintLine(wrote + ": a PARTIAL checkpoint, marked so in its metadata (sdonnx.rebuild = "
                      "partial)");
    return;
  }
  PrintLine(wrote);
  std::string file_check;
  if (report.file_identical) {
    file_check = "; the whole file is byte-identical to the source (SHA-256)";
  } else if (report.source_format == "ckpt") {
    file_check = "; the source was a .ckpt file, so the output is a new safetensors file with "
                 "its tensors and no file hash to compare";
  } else {
    // Reached for an extras file of an earlier version without the
    // source's header.
    file_check = "; the file is not byte-identical to the source (SHA-256 " +
                 report.output_sha256 + ", source " + report.source_sha256 + ")";
  }
  PrintLine("every tensor matches the " + std::string(TensorDigestLabel(report.tensor_digest)) +
            " digest recorded at export" + file_check);
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
  cmd->add_option("-o,--output", args->output_path,
                  "Checkpoint to write (.safetensors); missing parent folders are created");
  cmd->add_flag("--allow-partial", args->allow_partial,
                "Write the verified tensors even when components are missing or tensors "
                "differ (the file's metadata then marks it partial), or when the rebuilt "
                "file's SHA-256 differs from the source's (with a warning)");
  cmd->add_flag("--force", args->force, "Overwrite an existing output file");
  cmd->callback([run, args] { *run = [args] { return RunRebuild(*args); }; });
}

}  // namespace sdonnx::cli
