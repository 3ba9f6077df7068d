// Writes a built graph to a .onnx file and checks it.
//
// Initializer bytes are copied from the checkpoint's memory map straight into
// the output, one tensor at a time. Models whose weights would pass the 2 GB
// protobuf limit store them as external data: one file, NAME.onnx.data, beside
// the model, referenced by a relative location, with every tensor's offset
// aligned to 4096 bytes so ONNX Runtime can memory-map it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "formats/dtype_convert.h"
#include "graph/builder.h"
#include "util/status.h"

namespace sdonnx {

enum class ExternalData { kAuto, kAlways, kNever };

struct WrittenFile {
  std::string path;
  std::uint64_t bytes = 0;
};

// Counts of the dtype conversion of one model's weights.
struct WeightConversion {
  std::uint64_t converted_tensors = 0;
  NarrowingCounts total;
  // Tensors that lost values (clamped or flushed to zero), in write order.
  std::vector<std::pair<std::string, NarrowingCounts>> lossy;
};

struct ModelWriteOptions {
  ExternalData external_data = ExternalData::kAuto;
  std::map<std::string, std::string> metadata;
  // Metadata that may still be computing while weights are written (the
  // source file's hash); called right before the model is serialized.
  std::function<std::map<std::string, std::string>()> late_metadata;
  // The id of the convert run (see formats/conversion_id.h), which may also
  // depend on the source file's hash; called once the weights are written.
  // When set, the id goes into the metadata and the header of the data file.
  std::function<std::string()> conversion_id;
  std::string producer_version;
  // Threads that convert weight dtypes (float32 to float16) while writing.
  int conversion_threads = 2;
  // Receives the conversion counts when not null.
  WeightConversion* conversion = nullptr;
};

// Writes `builder`'s model as `dir`/`file_name` (plus its data file when
// external data is used), then runs the ONNX checker and strict shape
// inference on the written file. Returns the files written.
Result<std::vector<WrittenFile>> WriteModel(GraphBuilder& builder, const Checkpoint& checkpoint,
                                            const std::string& dir, const std::string& file_name,
                                            const ModelWriteOptions& options);

// Runs the ONNX checker on the file at `path` (external data included) and
// shape inference in strict mode. The ONNX library here has schemas up to
// opset 17. For files of later opsets, the external data references are
// checked and the graph, without weight data, is loaded by ONNX Runtime.
Status CheckModelFile(const std::string& path);

}  // namespace sdonnx
