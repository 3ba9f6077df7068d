#include "rebuild/extract.h"

#include <cstring>
#include <filesystem>
#include <vector>

#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "formats/sniff.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

// diffusers' ONNX folders name each file model.onnx inside a folder named
// after the component; other files are named after their stem.
std::string GuessComponent(const OnnxFile& file) {
  const std::string declared = file.MetadataValue("sdonnx.component");
  if (!declared.empty()) return declared;
  const fs::path path = fs::absolute(file.path());
  if (path.filename() == "model.onnx" && path.has_parent_path()) {
    return path.parent_path().filename().string();
  }
  return path.stem().string();
}

}  // namespace

Result<ExtractReport> ExtractInitializers(const ExtractOptions& options) {
  std::error_code ec;
  if (fs::is_directory(options.output_path, ec)) {
    return Status::Error(options.output_path + ": is a folder; give the path of the "
                         ".safetensors file to write, such as " +
                         (fs::path(options.output_path) / "weights.safetensors").string());
  }
  if (!options.overwrite && fs::exists(fs::symlink_status(options.output_path, ec))) {
    return Status::Error(options.output_path + ": already exists; pass --force to overwrite it");
  }
  // --force must never replace the model being read or a file beside it,
  // such as its external data.
  const fs::path output_dir = fs::absolute(options.output_path, ec).parent_path();
  if (fs::exists(options.output_path, ec) &&
      fs::equivalent(output_dir, fs::absolute(options.onnx_path, ec).parent_path(), ec)) {
    return Status::Error(options.output_path +
                         ": is an existing file in the model's folder; write the extract to a "
                         "new file name or another folder");
  }
  // A checkpoint given by mistake gets a message about what it is instead
  // of a protobuf parse error.
  Result<FileFormat> format = SniffFile(options.onnx_path);
  if (format.ok() && *format != FileFormat::kOnnx && *format != FileFormat::kUnknown &&
      *format != FileFormat::kEmpty) {
    return Status::Error(options.onnx_path + ": is a " + FileFormatName(*format) +
                         " file, not an ONNX model; extract reads the .onnx files that convert "
                         "writes (convert turns a checkpoint into them)");
  }
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<OnnxFile> file, OnnxFile::Open(options.onnx_path));
  ExtractReport report;
  report.component = GuessComponent(*file);
  report.made_by_sdonnx = file->made_by_sdonnx();

  std::vector<TensorToWrite> tensors;
  const OnnxFile* model = file.get();
  for (const OnnxInitializer& init : model->initializers()) {
    // Copied tensor by tensor, so pages of external data are released as
    // soon as they are written.
    tensors.push_back({init.name, init.dtype, init.dims, {},
                       [model, &init](std::span<std::uint8_t> out) {
                         const std::span<const std::uint8_t> data = model->Data(init);
                         if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
                         model->ReleasePages(init);
                       }});
  }
  report.tensors = tensors.size();
  const std::map<std::string, std::string> metadata = {
      {"sdonnx.extract", "one component; not a loadable checkpoint"},
      {"sdonnx.extract_component", report.component},
      {"sdonnx.extract_source_file", fs::path(options.onnx_path).filename().string()},
      {"sdonnx.extract_made_by_sdonnx", report.made_by_sdonnx ? "true" : "false"},
  };
  Result<CreatedFolders> created =
      CreatedFolders::Create(fs::absolute(options.output_path, ec).parent_path());
  if (!created.ok()) {
    return Status::Error(options.output_path + ": cannot create the output folder: " +
                         created.status().message());
  }
  // The writer's messages already name the output file.
  SDONNX_RETURN_IF_ERROR(WriteSafetensors(options.output_path, tensors, metadata));
  created->Keep();
  report.bytes = fs::file_size(options.output_path, ec);
  return report;
}

}  // namespace sdonnx
