#include "graph/builder.h"

#include <cstring>
#include <set>

namespace sdonnx {
namespace {

void SetValueInfo(onnx::ValueInfoProto* info, const std::string& name, int elem_type,
                  const std::vector<Dim>& dims) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(elem_type);
  auto* shape = tensor_type->mutable_shape();
  for (const Dim& d : dims) {
    auto* dim = shape->add_dim();
    if (std::holds_alternative<std::int64_t>(d)) {
      dim->set_dim_value(std::get<std::int64_t>(d));
    } else {
      dim->set_dim_param(std::get<std::string>(d));
    }
  }
}

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

GraphBuilder::GraphBuilder(const Checkpoint& checkpoint, int opset, std::string graph_name)
    : checkpoint_(checkpoint), opset_(opset) {
  model_.set_ir_version(8);  // IR 8 is the version that ONNX 1.12 to 1.14 write for opset 14-18.
  auto* op = model_.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  graph_ = model_.mutable_graph();
  graph_->set_name(std::move(graph_name));
}

void GraphBuilder::Fail(const std::string& message) {
  if (status_.ok()) status_ = Status::Error(message);
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
  if (value != name) {
    auto* node = AddNode("Identity", {value}, {});
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

std::vector<std::int64_t> GraphBuilder::WeightShape(const std::string& key) {
  const TensorInfo* t = checkpoint_.Find(key);
  if (t == nullptr) {
    Fail("tensor '" + key + "' is missing from " + checkpoint_.path());
    return {};
  }
  return t->shape;
}

std::string GraphBuilder::Weight(const std::string& key, const std::vector<std::int64_t>& shape) {
  auto found = weight_values_.find(key);
  if (found != weight_values_.end()) return found->second;
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
  auto* init = graph_->add_initializer();
  init->set_name(stored);
  init->set_data_type(DTypeToOnnx(t->dtype));
  for (auto d : t->shape) init->add_dims(d);
  weights_.push_back({stored, t});

  std::string value = stored;
  if (t->dtype != DType::kF32) {
    value = Op("Cast", {stored}, {{"to", std::int64_t{onnx::TensorProto_DataType_FLOAT}}});
  }
  weight_values_[key] = value;
  return value;
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

std::string GraphBuilder::ConstFloat(const std::vector<float>& values,
                                     const std::vector<std::int64_t>& dims) {
  onnx::TensorProto tensor;
  tensor.set_data_type(onnx::TensorProto_DataType_FLOAT);
  for (auto d : dims) tensor.add_dims(d);
  tensor.set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                                  values.size() * sizeof(float)));
  auto* node = AddNode("Constant", {}, {});
  auto* attr = node->add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto_AttributeType_TENSOR);
  *attr->mutable_t() = std::move(tensor);
  return node->output(0);
}

std::string GraphBuilder::ConstInt64(const std::vector<std::int64_t>& values,
                                     const std::vector<std::int64_t>& dims) {
  onnx::TensorProto tensor;
  tensor.set_data_type(onnx::TensorProto_DataType_INT64);
  for (auto d : dims) tensor.add_dims(d);
  for (auto v : values) tensor.add_int64_data(v);
  auto* node = AddNode("Constant", {}, {});
  auto* attr = node->add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto_AttributeType_TENSOR);
  *attr->mutable_t() = std::move(tensor);
  return node->output(0);
}

}  // namespace sdonnx
