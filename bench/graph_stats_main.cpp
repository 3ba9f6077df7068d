// sdonnx_graph_stats: counts a model's nodes by op type and estimates the
// floating-point operations of one run at fixed input shapes, from ONNX
// shape inference. Conv, ConvTranspose, Gemm and MatMul count as 2 FLOPs
// per multiply-accumulate. Every other op is ignored, so the figure is a
// lower bound made of the GEMM-like work that MLAS runs.
//
//   sdonnx_graph_stats MODEL.onnx [INPUT=D0,D1,... ...]
//
// Inputs not named keep their declared dims; symbolic dims then stay unknown
// and the nodes that depend on them are reported as not counted.
#include <onnx/shape_inference/implementation.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "formats/onnx_file.h"

namespace {

using Dims = std::vector<std::int64_t>;

// Parses "name=2,4,64,64" into a name and dims; returns false on bad text.
bool ParseInputShape(const std::string& text, std::string* name, Dims* dims) {
  const auto equals = text.find('=');
  if (equals == std::string::npos || equals == 0) return false;
  *name = text.substr(0, equals);
  std::stringstream list(text.substr(equals + 1));
  std::string item;
  while (std::getline(list, item, ',')) {
    try {
      dims->push_back(std::stoll(item));
    } catch (const std::exception&) {
      return false;
    }
  }
  return !dims->empty();
}

void SetInputShape(onnx::ValueInfoProto* input, const Dims& dims) {
  auto* shape = input->mutable_type()->mutable_tensor_type()->mutable_shape();
  shape->clear_dim();
  for (const std::int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

// Known static dims of every value: graph inputs, initializers and what
// shape inference found. A value with any unknown dim is left out.
std::map<std::string, Dims> StaticShapes(const onnx::GraphProto& graph) {
  std::map<std::string, Dims> shapes;
  auto add = [&](const onnx::ValueInfoProto& value) {
    if (!value.type().tensor_type().has_shape()) return;
    Dims dims;
    for (const auto& d : value.type().tensor_type().shape().dim()) {
      if (!d.has_dim_value()) return;
      dims.push_back(d.dim_value());
    }
    shapes[value.name()] = dims;
  };
  for (const auto& value : graph.input()) add(value);
  for (const auto& value : graph.value_info()) add(value);
  for (const auto& value : graph.output()) add(value);
  for (const auto& init : graph.initializer()) {
    shapes[init.name()] = Dims(init.dims().begin(), init.dims().end());
  }
  return shapes;
}

std::int64_t Product(const Dims& dims, std::size_t begin, std::size_t end) {
  std::int64_t product = 1;
  for (std::size_t i = begin; i < end && i < dims.size(); ++i) product *= dims[i];
  return product;
}

// Floating-point operations of one node, or -1 when a shape is unknown.
double NodeFlops(const onnx::NodeProto& node, const std::map<std::string, Dims>& shapes) {
  auto shape_of = [&](const std::string& name) -> const Dims* {
    const auto it = shapes.find(name);
    return it == shapes.end() ? nullptr : &it->second;
  };
  const std::string& op = node.op_type();
  if (op == "Conv" || op == "ConvTranspose") {
    const Dims* weight = shape_of(node.input(1));
    const Dims* output = shape_of(node.output(0));
    const Dims* input = shape_of(node.input(0));
    if (weight == nullptr || output == nullptr || input == nullptr) return -1;
    // Conv: out elements x (Cin/group x kernel). ConvTranspose: in elements x
    // (Cout/group x kernel), since each input pixel scatters one kernel.
    const Dims& spread = op == "Conv" ? *output : *input;
    return 2.0 * Product(spread, 0, spread.size()) * Product(*weight, 1, weight->size());
  }
  if (op == "MatMul" || op == "Gemm") {
    const Dims* a = shape_of(node.input(0));
    const Dims* output = shape_of(node.output(0));
    if (a == nullptr || output == nullptr || a->empty()) return -1;
    bool trans_a = false;
    for (const auto& attribute : node.attribute()) {
      if (attribute.name() == "transA") trans_a = attribute.i() != 0;
    }
    const std::int64_t k = trans_a ? (*a)[0] : a->back();
    return 2.0 * Product(*output, 0, output->size()) * k;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.onnx [INPUT=D0,D1,... ...]\n", argv[0]);
    return 2;
  }
  auto file = sdonnx::OnnxFile::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "error: %s\n", file.status().message().c_str());
    return 1;
  }
  onnx::ModelProto model = (*file)->model();
  for (int i = 2; i < argc; ++i) {
    std::string name;
    Dims dims;
    if (!ParseInputShape(argv[i], &name, &dims)) {
      std::fprintf(stderr, "error: '%s' is not INPUT=D0,D1,...\n", argv[i]);
      return 2;
    }
    bool found = false;
    for (auto& input : *model.mutable_graph()->mutable_input()) {
      if (input.name() != name) continue;
      SetInputShape(&input, dims);
      found = true;
    }
    if (!found) {
      std::fprintf(stderr, "error: the model has no input named '%s'\n", name.c_str());
      return 2;
    }
  }
  // Initializers' bytes are not needed for shape inference; dropping them
  // keeps the copy small for models with inline weights.
  for (auto& init : *model.mutable_graph()->mutable_initializer()) {
    if (init.dims_size() > 1) init.clear_raw_data();
  }
  try {
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(false, 0, true));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: shape inference failed: %s\n", e.what());
    return 1;
  }

  const auto shapes = StaticShapes(model.graph());
  std::map<std::string, int> count_by_op;
  std::map<std::string, double> flops_by_op;
  int not_counted = 0;
  for (const auto& node : model.graph().node()) {
    ++count_by_op[node.op_type()];
    const double flops = NodeFlops(node, shapes);
    if (flops < 0) {
      ++not_counted;
    } else {
      flops_by_op[node.op_type()] += flops;
    }
  }
  double total = 0;
  std::printf("%-24s %8s %14s\n", "op type", "nodes", "GFLOP");
  for (const auto& [op, count] : count_by_op) {
    std::printf("%-24s %8d %14.1f\n", op.c_str(), count, flops_by_op[op] / 1e9);
    total += flops_by_op[op];
  }
  std::printf("nodes: %d, GFLOP (Conv, ConvTranspose, Gemm, MatMul): %.1f\n",
              model.graph().node_size(), total / 1e9);
  if (not_counted > 0) {
    std::printf("not counted (shape unknown after inference): %d nodes\n", not_counted);
  }
  return not_counted > 0 ? 1 : 0;
}
