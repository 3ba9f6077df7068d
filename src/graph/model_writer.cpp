#include "graph/model_writer.h"

#include <google/protobuf/io/coded_stream.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <charconv>
#include <filesystem>
#include <fstream>

#include "formats/conversion_id.h"
#include "formats/onnx_file.h"
#include "runtime/ort_session.h"
#include "util/atomic_file.h"
#include "util/log.h"

namespace sdonnx {
namespace {

// The last opset that the ONNX library (libonnx 1.12) has schemas for.
constexpr int kCheckerMaxOpset = 17;
// Leaves room under protobuf's 2 GiB message limit for the graph itself.
constexpr std::uint64_t kInlineLimitBytes = (2ull << 30) - (64ull << 20);
constexpr std::uint64_t kExternalAlignment = 4096;
// Inline models up to this size are re-read and checked by path after
// writing; larger ones would cost their whole size in memory to parse.
constexpr std::uint64_t kPathCheckLimitBytes = 64ull << 20;

// Protobuf field numbers used when a message is written by hand.
constexpr int kModelGraphField = 7;        // ModelProto.graph
constexpr int kGraphInitializerField = 5;  // GraphProto.initializer
constexpr int kTensorRawDataField = 9;     // TensorProto.raw_data

std::string LengthDelimitedKey(int field, std::uint64_t length) {
  std::string out;
  auto put_varint = [&out](std::uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  };
  put_varint((static_cast<std::uint64_t>(field) << 3) | 2);  // wire type 2: length-delimited
  put_varint(length);
  return out;
}

std::string Serialize(const google::protobuf::MessageLite& message) {
  std::string out;
  message.SerializeToString(&out);
  return out;
}

// The opset of the default domain that `model` imports.
int DefaultOpset(const onnx::ModelProto& model) {
  for (const auto& import : model.opset_import()) {
    if (import.domain().empty() || import.domain() == "ai.onnx") {
      return static_cast<int>(import.version());
    }
  }
  return 0;
}

// A copy of `model` without weight data, in which every initializer is a
// typed graph input.
onnx::ModelProto WeightlessCopy(const onnx::ModelProto& model) {
  onnx::ModelProto copy;
  copy.CopyFrom(model);
  auto* graph = copy.mutable_graph();
  for (const auto& init : graph->initializer()) {
    auto* input = graph->add_input();
    input->set_name(init.name());
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(init.data_type());
    auto* shape = type->mutable_shape();
    for (auto d : init.dims()) shape->add_dim()->set_dim_value(d);
  }
  graph->clear_initializer();
  return copy;
}

// Whether `model` imports an operator set besides the default one, such as
// ONNX Runtime's com.microsoft, whose schemas the ONNX library lacks.
bool ImportsOtherDomains(const onnx::ModelProto& model) {
  for (const auto& import : model.opset_import()) {
    if (!import.domain().empty() && import.domain() != "ai.onnx") return true;
  }
  return false;
}

// Whether ONNX Runtime, not the ONNX library, has to check `model`.
bool NeedsOrtCheck(const onnx::ModelProto& model) {
  return DefaultOpset(model) > kCheckerMaxOpset || ImportsOtherDomains(model);
}

// Checks the graph without weight data. Opsets up to kCheckerMaxOpset go
// through the ONNX library's checker and strict shape inference. Later
// ones, and graphs with ONNX Runtime's contrib operators, are loaded by
// ONNX Runtime, which has schemas for them.
Status CheckWeightless(const onnx::ModelProto& model, const std::string& name) {
  onnx::ModelProto copy = WeightlessCopy(model);
  if (NeedsOrtCheck(model)) {
    return CheckLoadsInOrt(Serialize(copy), name);
  }
  try {
    onnx::checker::check_model(copy);
    onnx::ShapeInferenceOptions options{/*check_type=*/true, /*error_mode=*/1,
                                        /*enable_data_propagation=*/false};
    onnx::shape_inference::InferShapes(copy, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return Status::Error(name + ": the built graph fails the ONNX checker: " + e.what());
  }
  return Status::Ok();
}

// Checks that every external data reference of `model` names a file beside
// `path` by a relative location and lies inside it.
Status CheckExternalReferences(const onnx::ModelProto& model, const std::string& path) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  for (const auto& init : model.graph().initializer()) {
    if (init.data_location() != onnx::TensorProto_DataLocation_EXTERNAL) continue;
    std::map<std::string, std::string> entries;
    for (const auto& entry : init.external_data()) entries[entry.key()] = entry.value();
    const std::string location = entries["location"];
    SDONNX_RETURN_IF_ERROR(CheckExternalDataLocation(dir.string(), location, /*must_exist=*/true,
                                                      "initializer '" + init.name() + "'"));
    std::error_code ec;
    const std::uint64_t size = std::filesystem::file_size(dir / location, ec);
    if (ec) {
      return Status::Error(path + ": external data file '" + location + "' of initializer '" +
                           init.name() + "' cannot be read: " + ec.message());
    }
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    for (auto [key, value] : {std::pair{"offset", &offset}, {"length", &length}}) {
      const std::string& text = entries[key];
      if (text.empty()) continue;
      const auto parsed = std::from_chars(text.data(), text.data() + text.size(), *value);
      if (parsed.ec != std::errc() || parsed.ptr != text.data() + text.size()) {
        return Status::Error(path + ": initializer '" + init.name() + "' has external data " +
                             key + " '" + text + "', expected a byte count");
      }
    }
    if (offset > size || length > size - offset) {
      return Status::Error(path + ": initializer '" + init.name() + "' reads bytes " +
                           std::to_string(offset) + " to " + std::to_string(offset + length) +
                           " of '" + location + "', which has " + std::to_string(size));
    }
  }
  return Status::Ok();
}

// Converts a weight to its stored dtype piece by piece, so that memory use
// stays at one piece whatever the tensor's size.
Status WriteConvertedTensor(AtomicFile& out, const Checkpoint& checkpoint, const WeightRef& ref,
                            int threads, WeightConversion* conversion) {
  constexpr std::size_t kPieceElements = std::size_t{4} << 20;
  const std::span<const std::uint8_t> source = checkpoint.Data(*ref.tensor);
  const std::size_t in_size = DTypeSize(ref.tensor->dtype);
  const std::size_t out_size = DTypeSize(ref.stored);
  const std::size_t count = source.size() / in_size;
  std::vector<std::uint8_t> buffer(std::min(count, kPieceElements) * out_size);
  NarrowingCounts counts;
  for (std::size_t first = 0; first < count; first += kPieceElements) {
    const std::size_t n = std::min(kPieceElements, count - first);
    const std::span<std::uint8_t> target(buffer.data(), n * out_size);
    SDONNX_RETURN_IF_ERROR(ConvertElementsParallel(ref.tensor->dtype,
                                                   source.subspan(first * in_size, n * in_size),
                                                   ref.stored, target, threads, &counts));
    SDONNX_RETURN_IF_ERROR(out.Write(target));
    if (!ref.tensor->in_memory) {
      checkpoint.mapped().DontNeed(ref.tensor->offset + first * in_size, n * in_size);
    }
  }
  if (conversion != nullptr) {
    ++conversion->converted_tensors;
    conversion->total.Add(counts);
    if (counts.lossy()) conversion->lossy.emplace_back(ref.key, counts);
  }
  return Status::Ok();
}

Status WriteTensorBytes(AtomicFile& out, const Checkpoint& checkpoint, const WeightRef& ref,
                        const ModelWriteOptions& options) {
  if (ref.stored != ref.tensor->dtype) {
    return WriteConvertedTensor(out, checkpoint, ref, options.conversion_threads,
                                options.conversion)
        .WithContext("converting tensor '" + ref.key + "' from " +
                     std::string(DTypeName(ref.tensor->dtype)) + " to " +
                     std::string(DTypeName(ref.stored)));
  }
  if (ref.tensor->in_memory) {
    return out.Write(checkpoint.Data(*ref.tensor)).WithContext("writing tensor '" + ref.key + "'");
  }
  const MappedFile& source = checkpoint.mapped();
  Status written = out.CopyRange(source.fd(), ref.tensor->offset, ref.tensor->nbytes,
                                 checkpoint.Data(*ref.tensor));
  source.DontNeed(ref.tensor->offset, ref.tensor->nbytes);
  return written.WithContext("writing tensor '" + ref.key + "'");
}

// Writes the weights to `dir`/`data_name` and points each initializer at its
// offset there.
Result<WrittenFile> WriteExternalData(GraphBuilder& builder, const Checkpoint& checkpoint,
                                      const std::string& dir, const std::string& data_name,
                                      const ModelWriteOptions& options) {
  SDONNX_RETURN_IF_ERROR(CheckExternalDataLocation(dir, data_name, /*must_exist=*/false,
                                                    "external data of " + data_name));
  const std::string data_path = (std::filesystem::path(dir) / data_name).string();
  SDONNX_ASSIGN_OR_RETURN(AtomicFile data, AtomicFile::Create(data_path, /*overwrite=*/true));
  // A run with a conversion id marks the data file as its own, so that a
  // reader can tell when the .onnx file is paired with another run's data.
  // The id is known only after the weights are written, so its header is
  // reserved here and filled in below.
  if (options.conversion_id) {
    SDONNX_RETURN_IF_ERROR(data.Write(std::string(kDataHeaderBytes, '\0')));
  }
  std::map<std::string, onnx::TensorProto*> by_name;
  for (auto& init : *builder.model().mutable_graph()->mutable_initializer()) {
    by_name[init.name()] = &init;
  }
  for (const WeightRef& ref : builder.weights()) {
    SDONNX_RETURN_IF_ERROR(data.PadTo(kExternalAlignment));
    const std::uint64_t offset = data.bytes_written();
    SDONNX_RETURN_IF_ERROR(WriteTensorBytes(data, checkpoint, ref, options));
    onnx::TensorProto* init = by_name[ref.key];
    init->set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
    auto add_entry = [init](const std::string& key, const std::string& value) {
      auto* entry = init->add_external_data();
      entry->set_key(key);
      entry->set_value(value);
    };
    add_entry("location", data_name);
    add_entry("offset", std::to_string(offset));
    add_entry("length", std::to_string(ref.stored_bytes()));
  }
  if (options.conversion_id) {
    const std::string header = DataFileHeader(options.conversion_id());
    SDONNX_RETURN_IF_ERROR(data.WriteAt(
        0, std::span(reinterpret_cast<const std::uint8_t*>(header.data()), header.size())));
  }
  const WrittenFile file{data_path, data.bytes_written()};
  SDONNX_RETURN_IF_ERROR(data.Commit());
  return file;
}

// Writes the model with its weights inline, streaming each weight from the
// checkpoint's memory map. Protobuf allows a message's fields in any order
// and a repeated field in pieces, so the file is the model without its
// graph, then the graph field: the graph without initializers followed by
// one initializer entry per weight, whose raw_data is written by hand.
Status WriteInline(GraphBuilder& builder, const Checkpoint& checkpoint, AtomicFile& out,
                   const ModelWriteOptions& options) {
  onnx::ModelProto& model = builder.model();
  onnx::GraphProto graph;
  graph.Swap(model.mutable_graph());
  model.clear_graph();
  std::map<std::string, std::string> headers;  // initializer name -> TensorProto without data
  for (const auto& init : graph.initializer()) headers[init.name()] = Serialize(init);
  onnx::GraphProto graph_without_weights;
  graph_without_weights.CopyFrom(graph);
  graph_without_weights.clear_initializer();
  const std::string model_bytes = Serialize(model);
  const std::string graph_bytes = Serialize(graph_without_weights);
  model.mutable_graph()->Swap(&graph);  // Restore the builder's model.

  std::vector<std::string> prefixes;  // initializer key + TensorProto header + raw_data key
  std::uint64_t graph_length = graph_bytes.size();
  for (const WeightRef& ref : builder.weights()) {
    const std::string& header = headers[ref.key];
    const std::uint64_t bytes = ref.stored_bytes();
    const std::string raw_key = LengthDelimitedKey(kTensorRawDataField, bytes);
    const std::uint64_t tensor_length = header.size() + raw_key.size() + bytes;
    prefixes.push_back(LengthDelimitedKey(kGraphInitializerField, tensor_length) + header +
                       raw_key);
    graph_length += prefixes.back().size() + bytes;
  }
  SDONNX_RETURN_IF_ERROR(out.Write(model_bytes));
  SDONNX_RETURN_IF_ERROR(out.Write(LengthDelimitedKey(kModelGraphField, graph_length)));
  SDONNX_RETURN_IF_ERROR(out.Write(graph_bytes));
  for (std::size_t i = 0; i < prefixes.size(); ++i) {
    SDONNX_RETURN_IF_ERROR(out.Write(prefixes[i]));
    SDONNX_RETURN_IF_ERROR(WriteTensorBytes(out, checkpoint, builder.weights()[i], options));
  }
  return Status::Ok();
}

}  // namespace

Status CheckModelFile(const std::string& path) {
  onnx::ModelProto model;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in || !model.ParseFromIstream(&in)) {
      return Status::Error(path + ": cannot be parsed as an ONNX ModelProto");
    }
  }
  if (NeedsOrtCheck(model)) {
    SDONNX_RETURN_IF_ERROR(CheckExternalReferences(model, path));
    return CheckWeightless(model, path);
  }
  try {
    onnx::checker::check_model(path);
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
  auto add_metadata = [&model](const std::map<std::string, std::string>& entries) {
    for (const auto& [key, value] : entries) {
      auto* prop = model.add_metadata_props();
      prop->set_key(key);
      prop->set_value(value);
    }
  };
  add_metadata(options.metadata);
  SDONNX_RETURN_IF_ERROR(CheckWeightless(model, file_name));

  std::uint64_t weight_bytes = 0;
  for (const WeightRef& ref : builder.weights()) weight_bytes += ref.stored_bytes();
  const bool external = options.external_data == ExternalData::kAlways ||
                        (options.external_data == ExternalData::kAuto &&
                         weight_bytes > kInlineLimitBytes);
  if (!external && weight_bytes > kInlineLimitBytes) {
    return Status::Error(file_name + ": " + std::to_string(weight_bytes) +
                         " bytes of weights do not fit in one protobuf (limit 2 GiB); use "
                         "--external-data auto or always");
  }

  std::vector<WrittenFile> written;
  const std::string path = (std::filesystem::path(dir) / file_name).string();
  if (external) {
    SDONNX_ASSIGN_OR_RETURN(WrittenFile data, WriteExternalData(builder, checkpoint, dir,
                                                                file_name + ".data", options));
    if (options.conversion_id) {
      add_metadata({{kConversionIdKey, options.conversion_id()},
                    {kExternalDataBytesKey, std::to_string(data.bytes)}});
    }
    if (options.late_metadata) add_metadata(options.late_metadata());
    SDONNX_ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::Create(path, /*overwrite=*/true));
    SDONNX_RETURN_IF_ERROR(out.Write(Serialize(model)));
    written.push_back({path, out.bytes_written()});
    written.push_back(data);
    SDONNX_RETURN_IF_ERROR(out.Commit());
  } else {
    if (options.conversion_id) add_metadata({{kConversionIdKey, options.conversion_id()}});
    if (options.late_metadata) add_metadata(options.late_metadata());
    SDONNX_ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::Create(path, /*overwrite=*/true));
    SDONNX_RETURN_IF_ERROR(WriteInline(builder, checkpoint, out, options));
    written.push_back({path, out.bytes_written()});
    SDONNX_RETURN_IF_ERROR(out.Commit());
  }
  if (external || written.front().bytes <= kPathCheckLimitBytes) {
    SDONNX_RETURN_IF_ERROR(CheckModelFile(path));
    LogDebug("checked " + path + " with the ONNX checker");
  } else {
    LogDebug("checked the graph of " + path + "; its " + std::to_string(written.front().bytes) +
             " bytes are too many to re-read for a full check");
  }
  return written;
}

}  // namespace sdonnx
