#include "graph/model_writer.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <filesystem>
#include <fstream>

#include "util/atomic_file.h"
#include "util/log.h"

namespace sdonnx {
namespace {

// Leaves room under protobuf's 2 GiB message limit for the graph itself.
constexpr std::uint64_t kInlineLimitBytes = (2ull << 30) - (64ull << 20);
constexpr std::uint64_t kExternalAlignment = 4096;

onnx::TensorProto* FindInitializer(onnx::GraphProto* graph, const std::string& name) {
  for (auto& init : *graph->mutable_initializer()) {
    if (init.name() == name) return &init;
  }
  return nullptr;
}

Status WriteExternal(GraphBuilder& builder, const Checkpoint& checkpoint, const std::string& dir,
                     const std::string& data_name, std::vector<WrittenFile>* written) {
  const std::string data_path = (std::filesystem::path(dir) / data_name).string();
  SDONNX_ASSIGN_OR_RETURN(AtomicFile data, AtomicFile::Create(data_path, /*overwrite=*/true));
  auto* graph = builder.model().mutable_graph();
  std::map<std::string, onnx::TensorProto*> by_name;
  for (auto& init : *graph->mutable_initializer()) by_name[init.name()] = &init;
  for (const WeightRef& ref : builder.weights()) {
    SDONNX_RETURN_IF_ERROR(data.PadTo(kExternalAlignment));
    const std::uint64_t offset = data.bytes_written();
    const auto bytes = checkpoint.Data(*ref.tensor);
    checkpoint.file().file().WillNeed(ref.tensor->offset, ref.tensor->nbytes);
    SDONNX_RETURN_IF_ERROR(data.Write(bytes).WithContext("writing tensor '" + ref.key + "'"));
    checkpoint.file().file().DontNeed(ref.tensor->offset, ref.tensor->nbytes);
    onnx::TensorProto* init = by_name[ref.key];
    init->set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
    auto add_entry = [&](const std::string& key, const std::string& value) {
      auto* entry = init->add_external_data();
      entry->set_key(key);
      entry->set_value(value);
    };
    add_entry("location", data_name);
    add_entry("offset", std::to_string(offset));
    add_entry("length", std::to_string(bytes.size()));
  }
  written->push_back({data_path, data.bytes_written()});
  return data.Commit();
}

}  // namespace

Status CheckModelFile(const std::string& path) {
  try {
    onnx::checker::check_model(path);
    onnx::ModelProto model;
    {
      std::ifstream in(path, std::ios::binary);
      if (!in || !model.ParseFromIstream(&in)) {
        return Status::Error(path + ": cannot be parsed as an ONNX ModelProto");
      }
    }
    onnx::ShapeInferenceOptions options{/*check_type=*/true, /*error_mode=*/1,
                                        /*enable_data_propagation=*/false};
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return Status::Error(path + ": fails the ONNX checker: " + e.what());
  }
  return Status::Ok();
}

Result<std::vector<WrittenFile>> WriteModel(GraphBuilder& builder, const Checkpoint& checkpoint,
                                            const std::string& dir, const std::string& file_name,
                                            const ModelWriteOptions& options) {
  SDONNX_RETURN_IF_ERROR(builder.status());
  onnx::ModelProto& model = builder.model();
  model.set_producer_name("sdonnx");
  model.set_producer_version(options.producer_version);
  for (const auto& [key, value] : options.metadata) {
    auto* prop = model.add_metadata_props();
    prop->set_key(key);
    prop->set_value(value);
  }

  std::uint64_t weight_bytes = 0;
  for (const WeightRef& ref : builder.weights()) weight_bytes += ref.tensor->nbytes;
  const bool external = options.external_data == ExternalData::kAlways ||
                        (options.external_data == ExternalData::kAuto &&
                         weight_bytes > kInlineLimitBytes);
  if (!external && weight_bytes > kInlineLimitBytes) {
    return Status::Error(file_name + ": " + std::to_string(weight_bytes) +
                         " bytes of weights do not fit in one protobuf (limit 2 GiB); use "
                         "--external-data auto or always");
  }

  std::vector<WrittenFile> written;
  if (external) {
    SDONNX_RETURN_IF_ERROR(
        WriteExternal(builder, checkpoint, dir, file_name + ".data", &written));
  } else {
    auto* graph = model.mutable_graph();
    for (const WeightRef& ref : builder.weights()) {
      const auto bytes = checkpoint.Data(*ref.tensor);
      FindInitializer(graph, ref.key)
          ->set_raw_data(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    }
  }

  const std::string path = (std::filesystem::path(dir) / file_name).string();
  {
    SDONNX_ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::Create(path, /*overwrite=*/true));
    std::string serialized;
    if (!model.SerializeToString(&serialized)) {
      return Status::Error(path + ": protobuf serialization failed");
    }
    if (!external) model.mutable_graph()->clear_initializer();  // Drop the copied bytes early.
    SDONNX_RETURN_IF_ERROR(out.Write(serialized));
    written.insert(written.begin(), {path, out.bytes_written()});
    SDONNX_RETURN_IF_ERROR(out.Commit());
  }
  SDONNX_RETURN_IF_ERROR(CheckModelFile(path));
  LogDebug("checked " + path);
  return written;
}

}  // namespace sdonnx
