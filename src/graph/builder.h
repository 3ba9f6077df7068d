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

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
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

// A weight stored in the graph, and where its bytes come from. `stored` is
// the initializer's dtype: the tensor's own, F16 in a float16 graph, or F32
// for a float16 or bfloat16 tensor under SetFloat32Weights.
struct WeightRef {
  std::string key;
  const TensorInfo* tensor = nullptr;
  DType stored = DType::kF32;

  std::uint64_t stored_bytes() const;
};

// The ONNX IR version that files of `opset` declare.
int IrVersionForOpset(int opset);

class GraphBuilder {
 public:
  GraphBuilder(const Checkpoint& checkpoint, int opset, std::string graph_name);

  int opset() const { return opset_; }

  // Makes the graph compute in float16: weights are stored as float16 and
  // ConstFloat, Weight and Output work in float16, except in the float32
  // islands that layers open with ToFloat32. Call before building.
  void SetFloat16(bool on) { float16_ = on; }
  bool float16() const { return float16_; }
  // Stores float16 and bfloat16 weights of a float32 graph as float32,
  // widened exactly at conversion, instead of as they are behind a Cast to
  // float32. Ignored in a float16 graph.
  void SetFloat32Weights(bool on) { float32_weights_ = on; }
  // onnx::TensorProto_DataType of the values between layers.
  int compute_type() const;
  // Writes attention without a mask as ONNX Runtime's contrib operator
  // com.microsoft.MultiHeadAttention (flash attention on CPU) instead of
  // standard operators. Only ONNX Runtime runs such files. Call before
  // building.
  void SetOrtAttention(bool on) { ort_attention_ = on; }
  bool ort_attention() const { return ort_attention_; }
  // The query chunks of the self-attention at the network's highest
  // resolution (layers::Attention); networks use fewer where sequences are
  // shorter. 1 computes all scores at once. Call before building.
  void SetAttentionChunks(std::int64_t chunks) { attention_chunks_ = chunks; }
  std::int64_t attention_chunks() const { return attention_chunks_; }
  // Records a self-attention with `heads` heads over the tokens of the
  // latent grid halved `halvings` times (each side rounded up), in `chunks`
  // query chunks, for the memory estimate of generate.
  void NoteSelfAttention(int halvings, std::int64_t heads, std::int64_t chunks) {
    self_attention_.insert({halvings, heads, chunks});
  }
  // Records that the network has a tensor of `channels` channels at the
  // full image resolution (the VAE's top level), for the same estimate.
  void NoteFullResolutionChannels(std::int64_t channels) {
    full_resolution_channels_ = std::max(full_resolution_channels_, channels);
  }
  // The widest such tensor's channels, or 0 when none was noted.
  std::int64_t full_resolution_channels() const { return full_resolution_channels_; }
  // The recorded self-attentions as "HALVINGS:HEADS:CHUNKS" entries joined
  // by commas (metadata sdonnx.self_attention), or "" for none.
  std::string SelfAttentionLayout() const;
  // Fixes symbolic dimensions of inputs and outputs: a Dim named in `dims`
  // is written with that size. Call before building.
  void SetStaticDims(std::map<std::string, std::int64_t> dims) { static_dims_ = std::move(dims); }
  const Status& status() const { return status_; }
  void Fail(const std::string& message);

  std::string Input(const std::string& name, int elem_type, const std::vector<Dim>& dims);
  // Exposes `value` as graph output `name` (through Identity if needed). A
  // float32 output of a float16 graph is cast from the compute type.
  void Output(const std::string& value, const std::string& name, int elem_type,
              const std::vector<Dim>& dims);

  std::string Op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::vector<Attr>& attrs = {});
  // A node of operator set `domain`, imported at `version` on first use.
  std::string OpInDomain(const std::string& domain, int version, const std::string& type,
                         const std::vector<std::string>& inputs,
                         const std::vector<Attr>& attrs = {});
  std::vector<std::string> OpMulti(const std::string& type, const std::vector<std::string>& inputs,
                                   int num_outputs, const std::vector<Attr>& attrs = {});
  // A Loop node that runs `body` `trip_count` times (an int64 scalar value)
  // and stacks what each iteration returns along a new first axis: one
  // output per returned value, of the matching `elem_types`. `body` gets
  // the iteration number (an int64 scalar) and adds its nodes through this
  // builder. The body may read values of the enclosing graph, but not
  // weights.
  using LoopBody = std::function<std::vector<std::string>(const std::string& iteration)>;
  std::vector<std::string> Loop(const std::string& trip_count, const std::vector<int>& elem_types,
                                const LoopBody& body);

  // The checkpoint tensor `key` as a value of the compute type. If `shape` is
  // given, the tensor must have exactly that shape.
  std::string Weight(const std::string& key, const std::vector<std::int64_t>& shape = {});
  // The same tensor as a float32 value, for float32 islands.
  std::string Weight32(const std::string& key);
  // The shape of checkpoint tensor `key`, or an empty vector (and a recorded
  // error) if it is missing.
  std::vector<std::int64_t> WeightShape(const std::string& key);
  bool HasWeight(const std::string& key) const { return checkpoint_.Has(key); }

  // A constant of the compute type.
  std::string ConstFloat(const std::vector<float>& values, const std::vector<std::int64_t>& dims);
  std::string ConstFloat32(const std::vector<float>& values, const std::vector<std::int64_t>& dims);
  std::string ConstInt64(const std::vector<std::int64_t>& values,
                         const std::vector<std::int64_t>& dims);
  std::string ScalarFloat(float value) { return ConstFloat({value}, {}); }
  std::string ScalarFloat32(float value) { return ConstFloat32({value}, {}); }

  // A compute-type value as float32, and back; no-ops in a float32 graph.
  std::string ToFloat32(const std::string& x);
  std::string ToCompute(const std::string& x);

  // Keys under `prefix` in the checkpoint that no Weight() call used, in
  // file order.
  std::vector<std::string> UnusedKeys(const std::string& prefix) const;

  onnx::ModelProto& model() { return model_; }
  const std::vector<WeightRef>& weights() const { return weights_; }

 private:
  std::string FreshName(const std::string& type);
  std::string AddConstant(onnx::TensorProto tensor);
  // Casts `x` to `elem_type`; a negative type returns `x` unchanged.
  std::string CastTo(const std::string& x, int elem_type);
  std::string WeightAs(const std::string& key, const std::vector<std::int64_t>& shape,
                       int elem_type);
  void SetValueInfo(onnx::ValueInfoProto* info, const std::string& name, int elem_type,
                    const std::vector<Dim>& dims) const;
  onnx::NodeProto* AddNode(const std::string& type, const std::vector<std::string>& inputs,
                           const std::vector<Attr>& attrs);

  const Checkpoint& checkpoint_;
  int opset_;
  bool float16_ = false;
  bool float32_weights_ = false;
  bool ort_attention_ = false;
  std::int64_t attention_chunks_ = 1;
  std::set<std::tuple<int, std::int64_t, std::int64_t>> self_attention_;
  std::int64_t full_resolution_channels_ = 0;
  std::map<std::string, std::int64_t> static_dims_;
  onnx::ModelProto model_;
  onnx::GraphProto* graph_;  // where nodes are added: the model's graph or a loop body
  Status status_;
  std::map<std::string, int> name_counts_;
  std::map<std::pair<std::string, int>, std::string> weight_values_;  // (key, type) -> value
  std::vector<WeightRef> weights_;
  std::set<std::string> initialized_;  // stored keys that have an initializer
};

}  // namespace sdonnx
