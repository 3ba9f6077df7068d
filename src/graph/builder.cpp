#include "graph/builder.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace sdonnx {
namespace {

void SetAttr(onnx::AttributeProto* a, const Attr& attr) {
  a->set_name(attr.name);
  if (auto* i = std::get_if<std::int64_t>(&attr.value)) {
    a->set_type(onnx::AttributeProto_AttributeType_INT);
    a->set_i(*i);
  } else if (auto* f = std::get_if<float>(&attr.value)) {
    a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a->set_f(*f);
  } else if (auto* s = std::get_if<std::string>(&attr.value)) {
    a->set_type(onnx::AttributeProto_AttributeType_STRING);
    a->set_s(*s);
  } else if (auto* is = std::get_if<std::vector<std::int64_t>>(&attr.value)) {
    a->set_type(onnx::AttributeProto_AttributeType_INTS);
    for (auto v : *is) a->add_ints(v);
  } else if (auto* fs = std::get_if<std::vector<float>>(&attr.value)) {
    a->set_type(onnx::AttributeProto_AttributeType_FLOATS);
    for (auto v : *fs) a->add_floats(v);
  }
}

}  // namespace

int IrVersionForOpset(int opset) {
  // The IR version of the ONNX release that introduced each opset: 1.13
  // (opset 18) still wrote IR 8, 1.14 and 1.15 (19, 20) IR 9, 1.16 (21) IR 10.
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

std::uint64_t WeightRef::stored_bytes() const {
  return tensor->nbytes / DTypeSize(tensor->dtype) * DTypeSize(stored);
}

GraphBuilder::GraphBuilder(const Checkpoint& checkpoint, int opset, std::string graph_name)
    : checkpoint_(checkpoint), opset_(opset) {
  model_.set_ir_version(IrVersionForOpset(opset));
  auto* op = model_.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  graph_ = model_.mutable_graph();
  graph_->set_name(std::move(graph_name));
}

int GraphBuilder::compute_type() const {
  return float16_ ? onnx::TensorProto_DataType_FLOAT16 : onnx::TensorProto_DataType_FLOAT;
}

void GraphBuilder::SetValueInfo(onnx::ValueInfoProto* info, const std::string& name, int elem_type,
                                const std::vector<Dim>& dims) const {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(elem_type);
  auto* shape = tensor_type->mutable_shape();
  for (const Dim& d : dims) {
    auto* dim = shape->add_dim();
    if (std::holds_alternative<std::int64_t>(d)) {
      dim->set_dim_value(std::get<std::int64_t>(d));
      continue;
    }
    const std::string& symbol = std::get<std::string>(d);
    auto fixed = static_dims_.find(symbol);
    if (fixed != static_dims_.end()) {
      dim->set_dim_value(fixed->second);
    } else {
      dim->set_dim_param(symbol);
    }
  }
}

void GraphBuilder::Fail(const std::string& message) {
  if (status_.ok()) status_ = Status::Error(message);
}

std::string GraphBuilder::SelfAttentionLayout() const {
  std::string text;
  for (const auto& [halvings, heads, chunks] : self_attention_) {
    if (!text.empty()) text += ",";
    text += std::to_string(halvings) + ":" + std::to_string(heads) + ":" + std::to_string(chunks);
  }
  return text;
}

std::string GraphBuilder::FreshName(const std::string& type) {
  int n = name_counts_[type]++;
  return "/" + type + "_" + std::to_string(n);
}

std::string GraphBuilder::Input(const std::string& name, int elem_type,
                                const std::vector<Dim>& dims) {
  SetValueInfo(graph_->add_input(), name, elem_type, dims);
  return name;
}

void GraphBuilder::Output(const std::string& value, const std::string& name, int elem_type,
                          const std::vector<Dim>& dims) {
  std::string source = value;
  if (elem_type == onnx::TensorProto_DataType_FLOAT) source = ToFloat32(value);
  if (source != name) {
    auto* node = AddNode("Identity", {source}, {});
    node->set_output(0, name);
  }
  SetValueInfo(graph_->add_output(), name, elem_type, dims);
}

onnx::NodeProto* GraphBuilder::AddNode(const std::string& type,
                                       const std::vector<std::string>& inputs,
                                       const std::vector<Attr>& attrs) {
  auto* node = graph_->add_node();
  node->set_op_type(type);
  const std::string name = FreshName(type);
  node->set_name(name);
  for (const auto& in : inputs) node->add_input(in);
  node->add_output(name + "_out");
  for (const Attr& attr : attrs) SetAttr(node->add_attribute(), attr);
  return node;
}

std::string GraphBuilder::Op(const std::string& type, const std::vector<std::string>& inputs,
                             const std::vector<Attr>& attrs) {
  return AddNode(type, inputs, attrs)->output(0);
}

std::string GraphBuilder::OpInDomain(const std::string& domain, int version,
                                     const std::string& type,
                                     const std::vector<std::string>& inputs,
                                     const std::vector<Attr>& attrs) {
  const auto& imports = model_.opset_import();
  const bool imported = std::any_of(imports.begin(), imports.end(),
                                    [&](const auto& import) { return import.domain() == domain; });
  if (!imported) {
    auto* import = model_.add_opset_import();
    import->set_domain(domain);
    import->set_version(version);
  }
  auto* node = AddNode(type, inputs, attrs);
  node->set_domain(domain);
  return node->output(0);
}

std::vector<std::string> GraphBuilder::OpMulti(const std::string& type,
                                               const std::vector<std::string>& inputs,
                                               int num_outputs, const std::vector<Attr>& attrs) {
  auto* node = AddNode(type, inputs, attrs);
  std::vector<std::string> outputs = {node->output(0)};
  for (int i = 1; i < num_outputs; ++i) {
    outputs.push_back(node->name() + "_out" + std::to_string(i));
    node->add_output(outputs.back());
  }
  return outputs;
}

std::vector<std::string> GraphBuilder::Loop(const std::string& trip_count,
                                            const std::vector<int>& elem_types,
                                            const LoopBody& body) {
  onnx::GraphProto body_graph;
  body_graph.set_name(FreshName("LoopBody").substr(1));
  const std::string iteration = FreshName("iteration");
  const std::string condition = FreshName("condition");
  // Scalars: a type with an empty shape.
  auto add_scalar = [](onnx::ValueInfoProto* info, const std::string& name, int elem_type) {
    info->set_name(name);
    auto* tensor_type = info->mutable_type()->mutable_tensor_type();
    tensor_type->set_elem_type(elem_type);
    tensor_type->mutable_shape();
  };
  add_scalar(body_graph.add_input(), iteration, onnx::TensorProto_DataType_INT64);
  add_scalar(body_graph.add_input(), condition, onnx::TensorProto_DataType_BOOL);

  onnx::GraphProto* const outer = graph_;
  graph_ = &body_graph;
  const std::vector<std::string> values = body(iteration);
  const std::string condition_out = Op("Identity", {condition});
  graph_ = outer;
  if (values.size() != elem_types.size()) {
    Fail("internal error: a loop body returned " + std::to_string(values.size()) +
         " values for " + std::to_string(elem_types.size()) + " output types");
    return std::vector<std::string>(elem_types.size(), trip_count);
  }
  add_scalar(body_graph.add_output(), condition_out, onnx::TensorProto_DataType_BOOL);
  for (std::size_t i = 0; i < values.size(); ++i) {
    // Each iteration's shape depends on the input shapes, so only the type
    // is declared.
    auto* info = body_graph.add_output();
    info->set_name(values[i]);
    info->mutable_type()->mutable_tensor_type()->set_elem_type(elem_types[i]);
  }
  auto* node = AddNode("Loop", {trip_count, ""}, {});
  std::vector<std::string> outputs = {node->output(0)};
  for (std::size_t i = 1; i < values.size(); ++i) {
    outputs.push_back(node->name() + "_out" + std::to_string(i));
    node->add_output(outputs.back());
  }
  auto* attr = node->add_attribute();
  attr->set_name("body");
  attr->set_type(onnx::AttributeProto_AttributeType_GRAPH);
  *attr->mutable_g() = std::move(body_graph);
  return outputs;
}

std::vector<std::int64_t> GraphBuilder::WeightShape(const std::string& key) {
  const TensorInfo* t = checkpoint_.Find(key);
  if (t == nullptr) {
    Fail("tensor '" + key + "' is missing from " + checkpoint_.path());
    return {};
  }
  return t->shape;
}

std::string GraphBuilder::Weight(const std::string& key, const std::vector<std::int64_t>& shape) {
  return WeightAs(key, shape, compute_type());
}

std::string GraphBuilder::Weight32(const std::string& key) {
  return WeightAs(key, {}, onnx::TensorProto_DataType_FLOAT);
}

std::string GraphBuilder::WeightAs(const std::string& key, const std::vector<std::int64_t>& shape,
                                   int elem_type) {
  auto found = weight_values_.find({key, elem_type});
  if (found != weight_values_.end()) return found->second;
  if (graph_ != model_.mutable_graph()) {
    Fail("internal error: weight '" + key + "' was read inside a loop body");
    return key;
  }
  const TensorInfo* t = checkpoint_.Find(key);
  if (t == nullptr) {
    Fail("tensor '" + key + "' is missing from " + checkpoint_.path());
    return key;
  }
  if (!shape.empty() && t->shape != shape) {
    Fail("tensor '" + key + "' has shape " + ShapeText(t->shape) + ", expected " +
         ShapeText(shape));
    return key;
  }
  if (!IsFloating(t->dtype)) {
    Fail("tensor '" + key + "' has dtype " + std::string(DTypeName(t->dtype)) +
         ", expected a floating-point weight");
    return key;
  }
  // The initializer is named by the key the bytes are stored under, which
  // differs from `key` when the checkpoint's EMA view is on.
  const std::string& stored = t->name;
  DType stored_dtype = float16_ ? DType::kF16 : t->dtype;
  if (!float16_ && float32_weights_ && (t->dtype == DType::kF16 || t->dtype == DType::kBF16)) {
    stored_dtype = DType::kF32;
  }
  if (initialized_.insert(stored).second) {
    auto* init = graph_->add_initializer();
    init->set_name(stored);
    init->set_data_type(DTypeToOnnx(stored_dtype));
    for (auto d : t->shape) init->add_dims(d);
    weights_.push_back({stored, t, stored_dtype});
  }
  const std::string value = CastTo(stored, elem_type == DTypeToOnnx(stored_dtype) ? -1 : elem_type);
  weight_values_[{key, elem_type}] = value;
  return value;
}

std::string GraphBuilder::CastTo(const std::string& x, int elem_type) {
  if (elem_type < 0) return x;
  return Op("Cast", {x}, {{"to", std::int64_t{elem_type}}});
}

std::string GraphBuilder::ToFloat32(const std::string& x) {
  return float16_ ? CastTo(x, onnx::TensorProto_DataType_FLOAT) : x;
}

std::string GraphBuilder::ToCompute(const std::string& x) {
  return float16_ ? CastTo(x, onnx::TensorProto_DataType_FLOAT16) : x;
}

std::vector<std::string> GraphBuilder::UnusedKeys(const std::string& prefix) const {
  std::set<std::string> used;
  for (const WeightRef& ref : weights_) used.insert(ref.key);
  std::vector<std::string> unused;
  for (const TensorInfo& t : checkpoint_.tensors()) {
    if (t.name.starts_with(prefix) && !used.contains(t.name)) unused.push_back(t.name);
  }
  return unused;
}

std::string GraphBuilder::AddConstant(onnx::TensorProto tensor) {
  auto* node = AddNode("Constant", {}, {});
  auto* attr = node->add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto_AttributeType_TENSOR);
  *attr->mutable_t() = std::move(tensor);
  return node->output(0);
}

std::string GraphBuilder::ConstFloat(const std::vector<float>& values,
                                     const std::vector<std::int64_t>& dims) {
  if (!float16_) return ConstFloat32(values, dims);
  onnx::TensorProto tensor;
  tensor.set_data_type(onnx::TensorProto_DataType_FLOAT16);
  for (auto d : dims) tensor.add_dims(d);
  std::string raw(values.size() * 2, '\0');
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t half = FloatToHalf(values[i]);
    std::memcpy(raw.data() + i * 2, &half, 2);
  }
  tensor.set_raw_data(std::move(raw));
  return AddConstant(std::move(tensor));
}

std::string GraphBuilder::ConstFloat32(const std::vector<float>& values,
                                       const std::vector<std::int64_t>& dims) {
  onnx::TensorProto tensor;
  tensor.set_data_type(onnx::TensorProto_DataType_FLOAT);
  for (auto d : dims) tensor.add_dims(d);
  tensor.set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                                  values.size() * sizeof(float)));
  return AddConstant(std::move(tensor));
}

std::string GraphBuilder::ConstInt64(const std::vector<std::int64_t>& values,
                                     const std::vector<std::int64_t>& dims) {
  onnx::TensorProto tensor;
  tensor.set_data_type(onnx::TensorProto_DataType_INT64);
  for (auto d : dims) tensor.add_dims(d);
  for (auto v : values) tensor.add_int64_data(v);
  return AddConstant(std::move(tensor));
}

}  // namespace sdonnx
