#include "rebuild/foreign_keys.h"

#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "formats/diffusers_vae_keys.h"

namespace sdonnx {
namespace {

struct Consumer {
  const onnx::NodeProto* node = nullptr;
  int input = 0;
};

// "/down_blocks.0/resnets.0/norm1/Mul" -> "down_blocks.0.resnets.0.norm1".
std::string NodeScope(const std::string& node_name) {
  if (!node_name.starts_with("/")) return "";
  const std::size_t last = node_name.rfind('/');
  std::string scope = node_name.substr(1, last == 0 ? 0 : last - 1);
  for (char& c : scope) {
    if (c == '/') c = '.';
  }
  return scope;
}

std::string FirstPart(const std::string& dotted) {
  // Scope parts such as "layers.0" are one module: keep the index with it.
  static const std::regex kIndexed(R"(^([A-Za-z_]+\.\d+|[A-Za-z_]+)(\..*)?$)");
  std::smatch m;
  return std::regex_match(dotted, m, kIndexed) ? m[1].str() : dotted;
}

std::map<std::string, std::vector<Consumer>> ConsumersOf(const onnx::GraphProto& graph) {
  std::map<std::string, std::vector<Consumer>> consumers;
  for (const auto& node : graph.node()) {
    for (int i = 0; i < node.input_size(); ++i) consumers[node.input(i)].push_back({&node, i});
  }
  return consumers;
}

// The prefix that turns a node scope into a parameter path, by first scope
// part: a stand-in text encoder may scope "layers.0" for parameters named
// "text_model.encoder.layers.0...". Learned from the named initializers.
std::map<std::string, std::string> ScopePrefixes(
    const OnnxFile& file, const std::map<std::string, std::vector<Consumer>>& consumers) {
  std::map<std::string, std::string> prefixes;
  for (const OnnxInitializer& init : file.initializers()) {
    if (init.name.starts_with("onnx::")) continue;
    auto it = consumers.find(init.name);
    const std::size_t dot = init.name.rfind('.');
    if (it == consumers.end() || dot == std::string::npos) continue;
    const std::string module = init.name.substr(0, dot);
    for (const Consumer& c : it->second) {
      const std::string scope = NodeScope(c.node->name());
      if (scope.empty()) continue;
      if (module == scope || module.ends_with("." + scope)) {
        prefixes.emplace(FirstPart(scope), module.substr(0, module.size() - scope.size()));
      }
    }
  }
  return prefixes;
}

struct DiffusersName {
  std::string name;
  WeightTransform transform = WeightTransform::kSame;
};

// The diffusers parameter behind an anonymous initializer, from its consumer.
Result<DiffusersName> ResolveAnonymous(const OnnxInitializer& init,
                                       const std::vector<Consumer>& consumers,
                                       const std::map<std::string, std::string>& prefixes) {
  if (consumers.empty()) return Status::Error("no node uses it");
  const Consumer& c = consumers.front();
  const std::string scope = NodeScope(c.node->name());
  if (scope.empty()) {
    return Status::Error("its consumer node '" + c.node->name() + "' has no module scope");
  }
  auto prefix = prefixes.find(FirstPart(scope));
  const std::string module = (prefix == prefixes.end() ? "" : prefix->second) + scope;
  const std::string& op = c.node->op_type();
  if (op == "MatMul" && c.input == 1 && init.dims.size() == 2) {
    return DiffusersName{module + ".weight", WeightTransform::kTranspose};
  }
  const bool column = init.dims.size() >= 2 && init.dims[1] == 1 &&
                      (init.dims.size() == 2 || init.dims[2] == 1);
  if ((op == "Mul" || op == "Add") && column) {
    return DiffusersName{module + (op == "Mul" ? ".weight" : ".bias"), WeightTransform::kReshape};
  }
  return Status::Error("its consumer '" + c.node->name() + "' (" + op +
                       ") is not a MatMul weight or a reshaped norm scale or shift");
}

struct UNetLayout {
  int down_resnets = 0;  // Resnets per down block (num_res_blocks).
  int up_resnets = 0;    // Resnets per up block (num_res_blocks + 1).
  std::set<int> up_blocks_with_attention;
};

UNetLayout ReadUNetLayout(const std::vector<std::string>& names) {
  static const std::regex kDown(R"(down_blocks\.0\.resnets\.(\d+)\..*)");
  static const std::regex kUp(R"(up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\..*)");
  UNetLayout layout;
  std::smatch m;
  for (const std::string& name : names) {
    if (std::regex_match(name, m, kDown)) {
      layout.down_resnets = std::max(layout.down_resnets, std::stoi(m[1]) + 1);
    } else if (std::regex_match(name, m, kUp)) {
      if (m[2] == "attentions") layout.up_blocks_with_attention.insert(std::stoi(m[1]));
      if (m[2] == "resnets" && m[1] == "0") {
        layout.up_resnets = std::max(layout.up_resnets, std::stoi(m[3]) + 1);
      }
    }
  }
  return layout;
}

std::string ResnetPart(const std::string& part) {
  static const std::vector<std::pair<std::string, std::string>> kRenames = {
      {"norm1.", "in_layers.0."},      {"conv1.", "in_layers.2."},
      {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
      {"conv2.", "out_layers.3."},     {"conv_shortcut.", "skip_connection."}};
  for (const auto& [from, to] : kRenames) {
    if (part.starts_with(from)) return to + part.substr(from.size());
  }
  return part;
}

// The ldm name of a diffusers UNet2DConditionModel parameter, without the
// "model.diffusion_model." prefix.
std::optional<std::string> UNetOriginalName(const std::string& name, const UNetLayout& layout) {
  static const std::regex kBlock(
      R"((down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*))");
  static const std::regex kMid(R"(mid_block\.(resnets|attentions)\.(\d+)\.(.*))");
  static const std::vector<std::pair<std::string, std::string>> kTop = {
      {"conv_in.", "input_blocks.0.0."},        {"time_embedding.linear_1.", "time_embed.0."},
      {"time_embedding.linear_2.", "time_embed.2."}, {"add_embedding.linear_1.", "label_emb.0.0."},
      {"add_embedding.linear_2.", "label_emb.0.2."}, {"conv_norm_out.", "out.0."},
      {"conv_out.", "out.2."}};
  std::smatch m;
  if (std::regex_match(name, m, kBlock)) {
    const int level = std::stoi(m[2]);
    const int index = std::stoi(m[4]);
    const std::string rest = m[5];
    if (m[1] == "down") {
      const int per_level = layout.down_resnets + 1;
      if (m[3] == "downsamplers") {
        if (!rest.starts_with("conv.")) return std::nullopt;
        return "input_blocks." + std::to_string((level + 1) * per_level) + ".0.op." +
               rest.substr(5);
      }
      const std::string block = "input_blocks." + std::to_string(1 + level * per_level + index);
      return m[3] == "resnets" ? block + ".0." + ResnetPart(rest) : block + ".1." + rest;
    }
    const int per_level = layout.up_resnets;
    if (m[3] == "upsamplers") {
      const bool attention = layout.up_blocks_with_attention.contains(level);
      return "output_blocks." + std::to_string(level * per_level + per_level - 1) +
             (attention ? ".2." : ".1.") + rest;
    }
    const std::string block = "output_blocks." + std::to_string(level * per_level + index);
    return m[3] == "resnets" ? block + ".0." + ResnetPart(rest) : block + ".1." + rest;
  }
  if (std::regex_match(name, m, kMid)) {
    if (m[1] == "attentions") return "middle_block.1." + m[3].str();
    return "middle_block." + std::to_string(2 * std::stoi(m[2])) + "." + ResnetPart(m[3]);
  }
  for (const auto& [from, to] : kTop) {
    if (name.starts_with(from)) return to + name.substr(from.size());
  }
  return std::nullopt;
}

std::optional<std::string> VaeOriginalName(const std::string& name, int up_blocks) {
  if (std::optional<std::string> renamed = DiffusersVaeOriginalName(name, up_blocks)) {
    return "first_stage_model." + *renamed;
  }
  static const std::regex kKept(
      R"(((encoder|decoder)\.(conv_in|conv_out)|quant_conv|post_quant_conv)\.(weight|bias))");
  if (std::regex_match(name, kKept)) return "first_stage_model." + name;
  return std::nullopt;
}

std::optional<std::string> TextOriginalName(const std::string& name) {
  // NOTE: only the CLIP ViT-L encoder of SD 1.x; OpenCLIP (SD 2.x) and the
  // SDXL encoders need their own inverse mapping.
  if (!name.starts_with("text_model.")) return std::nullopt;
  return "cond_stage_model.transformer." + name;
}

std::vector<std::int64_t> CheckpointShape(const ForeignWeight& weight,
                                          const std::vector<std::int64_t>& dims) {
  std::vector<std::int64_t> shape = dims;
  if (weight.transform == WeightTransform::kReshape) {
    while (shape.size() > 1 && shape.back() == 1) shape.pop_back();
  } else if (weight.transform == WeightTransform::kTranspose) {
    shape = {dims[1], dims[0]};
    // ldm's VAE attention projections are 1x1 convolutions.
    static const std::regex kVaeAttention(
        R"(first_stage_model\.(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight)");
    if (std::regex_match(weight.checkpoint_key, kVaeAttention)) shape = {dims[1], dims[0], 1, 1};
  }
  return shape;
}

}  // namespace

const std::vector<std::string>& ForeignComponents() {
  static const std::vector<std::string> kComponents = {"unet", "vae_encoder", "vae_decoder",
                                                       "text_encoder"};
  return kComponents;
}

ForeignComponentMap MapForeignComponent(const OnnxFile& file, const std::string& component) {
  ForeignComponentMap map;
  map.component = component;
  const auto consumers = ConsumersOf(file.model().graph());
  const auto prefixes = ScopePrefixes(file, consumers);

  std::vector<ForeignWeight> weights;
  for (const OnnxInitializer& init : file.initializers()) {
    ForeignWeight weight{init.name, init.name, "", WeightTransform::kSame, {}};
    if (init.name.starts_with("onnx::")) {
      auto it = consumers.find(init.name);
      Result<DiffusersName> resolved =
          ResolveAnonymous(init, it == consumers.end() ? std::vector<Consumer>{} : it->second,
                           prefixes);
      if (!resolved.ok()) {
        map.unmapped.push_back(init.name + ": " + resolved.status().message());
        continue;
      }
      weight.diffusers_name = resolved->name;
      weight.transform = resolved->transform;
    }
    weights.push_back(std::move(weight));
  }

  std::vector<std::string> names;
  for (const ForeignWeight& w : weights) names.push_back(w.diffusers_name);
  const UNetLayout layout = ReadUNetLayout(names);
  std::set<int> vae_up_blocks;
  static const std::regex kVaeUp(R"(decoder\.up_blocks\.(\d+)\..*)");
  for (const std::string& name : names) {
    std::smatch m;
    if (std::regex_match(name, m, kVaeUp)) vae_up_blocks.insert(std::stoi(m[1]));
  }

  for (ForeignWeight& weight : weights) {
    std::optional<std::string> key;
    if (component == "unet") {
      key = UNetOriginalName(weight.diffusers_name, layout);
      if (key) key = "model.diffusion_model." + *key;
    } else if (component == "vae_encoder" || component == "vae_decoder") {
      key = VaeOriginalName(weight.diffusers_name, static_cast<int>(vae_up_blocks.size()));
    } else if (component == "text_encoder") {
      key = TextOriginalName(weight.diffusers_name);
    }
    if (!key) {
      map.unmapped.push_back(weight.onnx_name + ": diffusers parameter '" +
                             weight.diffusers_name + "' has no known checkpoint key");
      continue;
    }
    weight.checkpoint_key = *key;
    weight.checkpoint_shape = CheckpointShape(weight, file.Find(weight.onnx_name)->dims);
    map.mapped.push_back(std::move(weight));
  }
  return map;
}

std::vector<std::uint8_t> ToCheckpointLayout(const ForeignWeight& weight, const OnnxFile& file) {
  const OnnxInitializer& init = *file.Find(weight.onnx_name);
  const std::span<const std::uint8_t> data = file.Data(init);
  if (weight.transform != WeightTransform::kTranspose) return {data.begin(), data.end()};
  const std::size_t rows = static_cast<std::size_t>(init.dims[0]);
  const std::size_t cols = static_cast<std::size_t>(init.dims[1]);
  const std::size_t size = DTypeSize(init.dtype);
  std::vector<std::uint8_t> out(data.size());
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) {
      std::memcpy(out.data() + (c * rows + r) * size, data.data() + (r * cols + c) * size, size);
    }
  }
  return out;
}

}  // namespace sdonnx
