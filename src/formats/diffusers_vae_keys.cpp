#include "formats/diffusers_vae_keys.h"

#include <optional>
#include <regex>
#include <string_view>
#include <vector>

namespace sdonnx {
namespace {

// Renames within a resnet or attention block.
std::string BlockPart(std::string part) {
  static const std::vector<std::pair<std::string, std::string>> kRenames = {
      {"conv_shortcut.", "nin_shortcut."}, {"group_norm.", "norm."}, {"to_q.", "q."},
      {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."}, {"query.", "q."},
      {"key.", "k."}, {"value.", "v."}, {"proj_attn.", "proj_out."}};
  for (const auto& [from, to] : kRenames) {
    if (part.starts_with(from)) return to + part.substr(from.size());
  }
  return part;
}

std::optional<std::string> OriginalName(const std::string& key, int up_blocks) {
  static const std::regex kDown(R"(encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*))");
  static const std::regex kUp(R"(decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*))");
  static const std::regex kMid(R"((encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*))");
  std::smatch m;
  if (std::regex_match(key, m, kDown)) {
    const std::string level = "encoder.down." + m[1].str();
    if (m[2] == "downsamplers") return level + ".downsample." + m[4].str();
    return level + ".block." + m[3].str() + "." + BlockPart(m[4]);
  }
  if (std::regex_match(key, m, kUp)) {
    // diffusers numbers decoder levels in the order they run (lowest
    // resolution first); ldm numbers them by resolution (highest is 0).
    const int level = up_blocks - 1 - std::stoi(m[1]);
    const std::string prefix = "decoder.up." + std::to_string(level);
    if (m[2] == "upsamplers") return prefix + ".upsample." + m[4].str();
    return prefix + ".block." + m[3].str() + "." + BlockPart(m[4]);
  }
  if (std::regex_match(key, m, kMid)) {
    const std::string prefix = m[1].str() + ".mid.";
    if (m[2] == "attentions") return prefix + "attn_1." + BlockPart(m[4]);
    return prefix + "block_" + std::to_string(std::stoi(m[3]) + 1) + "." + BlockPart(m[4]);
  }
  for (const char* side : {"encoder.", "decoder."}) {
    if (key.starts_with(std::string(side) + "conv_norm_out.")) {
      return std::string(side) + "norm_out." + key.substr(std::string(side).size() + 14);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> DiffusersVaeOriginalName(const std::string& key, int up_blocks) {
  return OriginalName(key, up_blocks);
}

bool HasDiffusersVaeKeys(const Checkpoint& checkpoint) {
  return checkpoint.HasPrefix("encoder.down_blocks.") || checkpoint.HasPrefix("decoder.up_blocks.");
}

std::map<std::string, std::string> DiffusersVaeAliases(const Checkpoint& checkpoint) {
  int up_blocks = 0;
  while (checkpoint.HasPrefix("decoder.up_blocks." + std::to_string(up_blocks) + ".")) ++up_blocks;
  std::map<std::string, std::string> aliases;
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (std::optional<std::string> original = OriginalName(t.name, up_blocks)) {
      aliases[*original] = t.name;
    }
  }
  return aliases;
}

bool IsVaeTensorName(const std::string& name, const std::string& prefix) {
  if (!name.starts_with(prefix)) return false;
  const std::string_view rest = std::string_view(name).substr(prefix.size());
  for (const char* part : {"encoder.", "decoder.", "quant_conv.", "post_quant_conv."}) {
    if (rest.starts_with(part)) return true;
  }
  return false;
}

}  // namespace sdonnx
