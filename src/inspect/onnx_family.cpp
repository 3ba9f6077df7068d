#include "inspect/onnx_family.h"

#include <map>
#include <vector>

namespace sdonnx {
namespace {

struct LayoutClues {
  std::int64_t context_dim = 0;
  bool add_embedding = false;
  bool linear_proj_in = false;
  bool conv_proj_in = false;
};

// Reads the clues from named initializers (diffusers' and ldm's names) and
// from the nodes that consume anonymous ones. torch.onnx names a node after
// its module scope ("/down_blocks.0/.../attn2/to_k/MatMul"), and a Linear
// applied to a 3-D input stores its weight transposed, as [in, out].
LayoutClues ReadClues(const onnx::GraphProto& graph) {
  LayoutClues clues;
  std::map<std::string, std::vector<std::int64_t>> dims;
  for (const onnx::TensorProto& t : graph.initializer()) {
    std::vector<std::int64_t>& shape = dims[t.name()];
    shape.assign(t.dims().begin(), t.dims().end());
    if (t.name().find("add_embedding.") != std::string::npos) clues.add_embedding = true;
    if (t.name().ends_with("proj_in.weight")) {
      (shape.size() == 2 ? clues.linear_proj_in : clues.conv_proj_in) = true;
    }
    if (clues.context_dim == 0 && t.name().ends_with("attn2.to_k.weight") && shape.size() == 2) {
      clues.context_dim = shape[1];  // [inner, context]
    }
  }
  for (const onnx::NodeProto& node : graph.node()) {
    const std::string& name = node.name();
    if (name.find("/add_embedding/") != std::string::npos) clues.add_embedding = true;
    if (name.find("/proj_in/") != std::string::npos) {
      const bool linear = node.op_type() == "MatMul" || node.op_type() == "Gemm";
      if (linear) clues.linear_proj_in = true;
      if (node.op_type() == "Conv") clues.conv_proj_in = true;
    }
    if (clues.context_dim != 0 || name.find("/attn2/to_k/") == std::string::npos ||
        node.op_type() != "MatMul" || node.input_size() < 2) {
      continue;
    }
    auto weight = dims.find(node.input(1));
    if (weight != dims.end() && weight->second.size() == 2) {
      clues.context_dim = weight->second[0];  // [context, inner]
    }
  }
  return clues;
}

}  // namespace

UNetFamilyHint InferUNetFamily(const onnx::GraphProto& graph) {
  const LayoutClues clues = ReadClues(graph);
  UNetFamilyHint hint;
  hint.context_dim = clues.context_dim;
  const std::string width = "UNet cross-attention context width " +
                            std::to_string(clues.context_dim);
  switch (clues.context_dim) {
    case 768: return {"sd1", width + " (CLIP ViT-L)", clues.context_dim};
    case 1024: return {"sd2", width + " (OpenCLIP ViT-H)", clues.context_dim};
    case 2048: return {"sdxl", width + " (CLIP ViT-L and OpenCLIP ViT-bigG)", clues.context_dim};
    case 1280: return {"sdxl-refiner", width + " (OpenCLIP ViT-bigG alone)", clues.context_dim};
    default: break;
  }
  const std::string unusual =
      clues.context_dim == 0 ? "no attn2.to_k weight found"
                             : width + ", which no released model has";
  if (clues.add_embedding) {
    hint.family = "sdxl";
    hint.basis = "UNet layout: an add_embedding, as only SDXL has (" + unusual + ")";
  } else if (clues.linear_proj_in && !clues.conv_proj_in) {
    hint.family = "sd2";
    hint.basis = "UNet layout: proj_in is a linear layer, as in SD 2.x (" + unusual + ")";
  } else if (clues.conv_proj_in && !clues.linear_proj_in) {
    hint.family = "sd1";
    hint.basis = "UNet layout: proj_in is a 1x1 convolution and there is no add_embedding, as "
                 "in SD 1.x (" + unusual + ")";
  }
  return hint;
}

}  // namespace sdonnx
