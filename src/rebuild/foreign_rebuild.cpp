#include <filesystem>
#include <set>

#include "formats/safetensors.h"
#include "rebuild/foreign_keys.h"
#include "rebuild/source_record.h"
#include "rebuild/rebuild.h"
#include "util/log.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

struct MappedComponent {
  std::unique_ptr<OnnxFile> file;
  ForeignComponentMap map;
};

Status IncompleteForeignError(const std::string& dir, const RebuildReport& report) {
  std::string message = dir + ": the export does not cover the checkpoint's weights: ";
  for (const std::string& c : report.missing_components) {
    message += "component " + c + " (" + c + "/model.onnx) is missing; ";
  }
  for (std::size_t i = 0; i < report.unmapped.size() && i < 10; ++i) {
    message += "unmapped " + report.unmapped[i] + "; ";
  }
  if (report.unmapped.size() > 10) {
    message += std::to_string(report.unmapped.size() - 10) + " more unmapped; ";
  }
  return Status::Error(message + "nothing was written; pass --allow-partial to write the "
                       "mapped weights as a partial file");
}

}  // namespace

bool IsForeignExportFolder(const std::string& dir) {
  std::error_code ec;
  for (const std::string& component : ForeignComponents()) {
    if (fs::is_regular_file(fs::path(dir) / component / "model.onnx", ec)) return true;
  }
  return false;
}

Result<RebuildReport> RebuildForeignExport(const std::string& dir, const RebuildOptions& options) {
  RebuildReport report;
  report.foreign = true;
  report.source_file = dir;
  std::vector<MappedComponent> components;
  for (const std::string& component : ForeignComponents()) {
    const fs::path path = fs::path(dir) / component / "model.onnx";
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      report.missing_components.push_back(component);
      report.components.push_back({component, "", 0});
      continue;
    }
    SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<OnnxFile> file, OnnxFile::Open(path.string()));
    ForeignComponentMap map = MapForeignComponent(*file, component);
    report.components.push_back({component, path.string(), map.mapped.size()});
    for (const std::string& u : map.unmapped) report.unmapped.push_back(component + ": " + u);
    components.push_back({std::move(file), std::move(map)});
  }
  report.partial = !report.missing_components.empty() || !report.unmapped.empty();
  if (report.partial && !options.allow_partial) return IncompleteForeignError(dir, report);

  std::vector<std::vector<std::uint8_t>> buffers;
  std::vector<TensorToWrite> tensors;
  std::set<std::string> keys;
  for (const MappedComponent& c : components) {
    for (const ForeignWeight& w : c.map.mapped) {
      if (!keys.insert(w.checkpoint_key).second) {
        return Status::Error(c.file->path() + ": initializer '" + w.onnx_name + "' maps to '" +
                             w.checkpoint_key + "', which another initializer already has");
      }
      buffers.push_back(ToCheckpointLayout(w, *c.file));
      tensors.push_back({w.checkpoint_key, c.file->Find(w.onnx_name)->dtype, w.checkpoint_shape,
                         buffers.back(), {}});
    }
  }
  std::map<std::string, std::string> metadata = {
      {"sdonnx.rebuild", report.partial ? "partial" : "foreign"},
      {"sdonnx.rebuild_source", fs::path(dir).filename().string()},
  };
  if (report.partial) {
    metadata["sdonnx.rebuild_missing_components"] = JoinComponents(report.missing_components);
  }
  report.tensors_written = tensors.size();
  SDONNX_ASSIGN_OR_RETURN(CreatedFolders folders,
                          CreatedFolders::Create(fs::path(options.output_path).parent_path()));
  SDONNX_RETURN_IF_ERROR(WriteSafetensors(options.output_path, tensors, metadata, options.overwrite)
                             .WithContext("writing " + options.output_path));
  folders.Keep();
  std::error_code ec;
  report.bytes = fs::file_size(options.output_path, ec);
  return report;
}

}  // namespace sdonnx
