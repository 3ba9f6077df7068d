// GraphBuilder: assembles one ONNX graph whose weights are checkpoint tensors.
//
// Every weight enters the graph as an initializer named by its full original
// checkpoint key, with its original dtype and shape. Non-float32 weights are
// widened by a Cast node inside the graph, so the file keeps the source bytes
// and a later rebuild can restore the checkpoint exactly. The initializer's
// bytes are not copied here: the model writer streams them from the memory
// map when the file is written (see graph/model_writer.h).
//
// Building records the first error (a missing key, a shape mismatch) instead
// of returning a status from every call, so that network code reads like the
// network; callers check status() once at the end.
#pragma once

#include <cstdint>
#include <map>
#include <onnx/onnx_pb.h>
#include <string>
#include <variant>
#include <vector>

#include "formats/checkpoint.h"
#include "util/status.h"

namespace sdonnx {

using AttrValue = std::variant<std::int64_t, float, std::string, std::vector<std::int64_t>,
                               std::vector<float>>;
struct Attr {
  std::string name;
  AttrValue value;
};

// A dimension of a graph input or output: fixed, or a symbolic name.
using Dim = std::variant<std::int64_t, std::string>;

// A weight stored in the graph, and where its bytes come from.
struct WeightRef {
  std::string key;
  const TensorInfo* tensor = nullptr;
};

class GraphBuilder {
 public:
  GraphBuilder(const Checkpoint& checkpoint, int opset, std::string graph_name);

  int opset() const { return opset_; }
  const Status& status() const { return status_; }
  void Fail(const std::string& message);

  std::string Input(const std::string& name, int elem_type, const std::vector<Dim>& dims);
  // Exposes `value` as graph output `name` (through Identity if needed).
  void Output(const std::string& value, const std::string& name, int elem_type,
              const std::vector<Dim>& dims);

  std::string Op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::vector<Attr>& attrs = {});
  std::vector<std::string> OpMulti(const std::string& type, const std::vector<std::string>& inputs,
                                   int num_outputs, const std::vector<Attr>& attrs = {});

  // The checkpoint tensor `key` as a float32 value. If `shape` is given, the
  // tensor must have exactly that shape.
  std::string Weight(const std::string& key, const std::vector<std::int64_t>& shape = {});
  // The shape of checkpoint tensor `key`, or an empty vector (and a recorded
  // error) if it is missing.
  std::vector<std::int64_t> WeightShape(const std::string& key);
  bool HasWeight(const std::string& key) const { return checkpoint_.Has(key); }

  std::string ConstFloat(const std::vector<float>& values, const std::vector<std::int64_t>& dims);
  std::string ConstInt64(const std::vector<std::int64_t>& values,
                         const std::vector<std::int64_t>& dims);
  std::string ScalarFloat(float value) { return ConstFloat({value}, {}); }

  // Keys under `prefix` in the checkpoint that no Weight() call used, in
  // file order.
  std::vector<std::string> UnusedKeys(const std::string& prefix) const;

  onnx::ModelProto& model() { return model_; }
  const std::vector<WeightRef>& weights() const { return weights_; }

 private:
  std::string FreshName(const std::string& type);
  onnx::NodeProto* AddNode(const std::string& type, const std::vector<std::string>& inputs,
                           const std::vector<Attr>& attrs);

  const Checkpoint& checkpoint_;
  int opset_;
  onnx::ModelProto model_;
  onnx::GraphProto* graph_;
  Status status_;
  std::map<std::string, int> name_counts_;
  std::map<std::string, std::string> weight_values_;  // key -> float32 value name
  std::vector<WeightRef> weights_;
};

}  // namespace sdonnx
