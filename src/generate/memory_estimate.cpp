#include "generate/memory_estimate.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>

#include "generate/metadata_values.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

// Bounds far above any released model (SDXL has 20 heads) and convert's
// 256 chunks, so that a damaged value is named.
constexpr std::int64_t kMaxHeads = 4096;
constexpr std::int64_t kMaxChunks = 65536;

std::string Size(std::uint64_t bytes) {
  char text[32];
  if (bytes < (1ull << 30)) {
    std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1ull << 20));
  } else {
    std::snprintf(text, sizeof(text), "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  }
  return text;
}

// The product of `factors`, or the largest uint64_t when it overflows, so
// that absurd metadata values read as too large instead of wrapping.
std::uint64_t SaturatingProduct(std::initializer_list<std::uint64_t> factors) {
  std::uint64_t product = 1;
  for (const std::uint64_t factor : factors) {
    if (__builtin_mul_overflow(product, factor, &product)) {
      return std::numeric_limits<std::uint64_t>::max();
    }
  }
  return product;
}

// The largest score memory of one file, with the shape that needs it, and
// the channels of its widest full-resolution tensor (0 when not recorded).
struct Need {
  std::uint64_t bytes = 0;
  SelfAttentionShape shape;
  std::int64_t full_resolution_channels = 0;
};

Result<Need> FileNeed(const fs::path& path, const ProfileRequest& run, std::int64_t rows) {
  Need need;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return need;  // Loading reports a missing file.
  const Result<GraphHeader> header = ReadGraphHeader(path.string());
  if (!header.ok()) return need;

  if (header->metadata.contains("sdonnx.full_resolution_channels")) {
    SDONNX_ASSIGN_OR_RETURN(need.full_resolution_channels,
                            MetadataInteger(path.string(), "sdonnx.full_resolution_channels",
                                            header->metadata, 1, kMaxFullResolutionChannels));
  }

  const auto layout = header->metadata.find("sdonnx.self_attention");
  if (layout == header->metadata.end()) return need;
  Result<std::vector<SelfAttentionShape>> shapes = ParseSelfAttention(layout->second);
  if (!shapes.ok()) return shapes.status().WithContext(path.string());
  const std::int64_t factor = std::max<std::int64_t>(run.downsample_factor, 1);
  for (const SelfAttentionShape& shape : *shapes) {
    const std::uint64_t bytes = ScoreBytes(shape, run.height / factor, run.width / factor, rows);
    if (bytes > need.bytes) {
      need.bytes = bytes;
      need.shape = shape;
    }
  }
  return need;
}

}  // namespace

Result<std::vector<SelfAttentionShape>> ParseSelfAttention(const std::string& text) {
  std::vector<SelfAttentionShape> shapes;
  if (text.empty()) return shapes;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string entry = text.substr(start, end - start);
    SelfAttentionShape shape;
    const char* p = entry.data();
    const char* last = entry.data() + entry.size();
    auto number = [&](auto* value, bool colon_after) {
      const auto [stop, error] = std::from_chars(p, last, *value);
      if (error != std::errc() || (colon_after && (stop == last || *stop != ':'))) return false;
      p = colon_after ? stop + 1 : stop;
      return true;
    };
    if (!number(&shape.halvings, true) || !number(&shape.heads, true) ||
        !number(&shape.chunks, false) || p != last || shape.halvings < 0 || shape.halvings > 16 ||
        shape.heads < 1 || shape.heads > kMaxHeads || shape.chunks < 1 ||
        shape.chunks > kMaxChunks) {
      const std::string ranges = "HALVINGS from 0 to 16, HEADS from 1 to " +
                                 std::to_string(kMaxHeads) + " and CHUNKS from 1 to " +
                                 std::to_string(kMaxChunks);
      return Status::Error("metadata sdonnx.self_attention: entry '" + entry +
                           "' is invalid; expected HALVINGS:HEADS:CHUNKS with " + ranges);
    }
    shapes.push_back(shape);
    start = end + 1;
  }
  return shapes;
}

std::uint64_t ScoreBytes(const SelfAttentionShape& shape, std::int64_t latent_height,
                         std::int64_t latent_width, std::int64_t rows) {
  std::uint64_t height = static_cast<std::uint64_t>(std::max<std::int64_t>(latent_height, 1));
  std::uint64_t width = static_cast<std::uint64_t>(std::max<std::int64_t>(latent_width, 1));
  for (int i = 0; i < shape.halvings; ++i) {
    height = (height + 1) / 2;
    width = (width + 1) / 2;
  }
  const std::uint64_t tokens = height * width;
  const auto chunks = static_cast<std::uint64_t>(shape.chunks);
  const std::uint64_t chunk_rows = (tokens + chunks - 1) / chunks;
  // Two float32 tensors of rows x heads x chunk_rows x tokens.
  return SaturatingProduct({static_cast<std::uint64_t>(std::max<std::int64_t>(rows, 1)),
                            static_cast<std::uint64_t>(shape.heads), chunk_rows, tokens, 4, 2});
}

std::uint64_t ParseCgroupMemoryLimit(const std::string& text) {
  std::size_t end = text.size();
  while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == ' ')) --end;
  std::uint64_t value = 0;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + end, value);
  if (error != std::errc() || stop != text.data() + end) return 0;  // "max" or damaged
  return value;
}

MemoryLimit CgroupMemoryLimit(const std::string& proc_cgroup, const fs::path& cgroup_root) {
  MemoryLimit lowest;
  auto consider = [&](const fs::path& file) {
    std::ifstream in(file);
    if (!in) return;
    std::stringstream text;
    text << in.rdbuf();
    const std::uint64_t bytes = ParseCgroupMemoryLimit(text.str());
    if (bytes > 0 && (lowest.bytes == 0 || bytes < lowest.bytes)) {
      lowest = {bytes, "memory limit in " + file.string()};
    }
  };
  std::istringstream lines(proc_cgroup);
  std::string line;
  while (std::getline(lines, line)) {
    // "ID:CONTROLLERS:PATH"; cgroup v2 has ID 0 and no controllers.
    const std::size_t first = line.find(':');
    const std::size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const bool v2 = controllers.empty();
    if (!v2 && ("," + controllers + ",").find(",memory,") == std::string::npos) continue;
    const fs::path base = v2 ? cgroup_root : cgroup_root / "memory";
    const char* file = v2 ? "memory.max" : "memory.limit_in_bytes";
    // Limits apply down the tree, so every level up to the root counts.
    fs::path relative = fs::path(line.substr(second + 1)).relative_path();
    for (;;) {
      consider(base / relative / file);
      if (relative.empty()) break;
      relative = relative.parent_path();
    }
  }
  return lowest;
}

MemoryLimit ProcessMemoryLimit() {
  MemoryLimit limit;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) {
    limit = {static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size),
             "of memory this machine has"};
  }
  std::ifstream in("/proc/self/cgroup");
  if (!in) return limit;
  std::stringstream text;
  text << in.rdbuf();
  const MemoryLimit group = CgroupMemoryLimit(text.str(), "/sys/fs/cgroup");
  if (group.bytes > 0 && (limit.bytes == 0 || group.bytes < limit.bytes)) return group;
  return limit;
}

std::uint64_t FullResolutionBytes(std::int64_t channels, std::int64_t width, std::int64_t height) {
  return SaturatingProduct({static_cast<std::uint64_t>(std::max<std::int64_t>(channels, 0)),
                            static_cast<std::uint64_t>(std::max<std::int64_t>(width, 1)),
                            static_cast<std::uint64_t>(std::max<std::int64_t>(height, 1)), 4,
                            static_cast<std::uint64_t>(kFullResolutionTensors)});
}

Status CheckRunMemory(const fs::path& dir, const std::string& stem, bool need_encoder,
                      const ProfileRequest& run, const MemoryLimit& memory) {
  if (memory.bytes == 0) return Status::Ok();
  const std::vector<std::pair<std::string, std::int64_t>> components = [&] {
    std::vector<std::pair<std::string, std::int64_t>> list = {
        {"unet", run.batch * UNetRowsPerImage(run)}, {"vae_decoder", 1}};
    if (need_encoder) list.push_back({"vae_encoder", 1});
    return list;
  }();
  const std::string size = std::to_string(run.width) + "x" + std::to_string(run.height);
  const std::string more_than = "more than the " + Size(memory.bytes) + " " + memory.source;
  for (const auto& [component, rows] : components) {
    const fs::path path = dir / (component + "_" + stem + ".onnx");
    SDONNX_ASSIGN_OR_RETURN(const Need need, FileNeed(path, run, rows));
    if (need.bytes > memory.bytes) {
      std::string advice = "use a smaller --width and --height";
      if (component == "unet" && run.batch > 1) advice += " or --batch-size";
      // convert allows 256 chunks, and the VAE gets a quarter of them. More
      // chunks are advised only where the maximum would fit.
      SelfAttentionShape max_chunked = need.shape;
      max_chunked.chunks = component == "unet" ? 256 : 64;
      const std::int64_t factor = std::max<std::int64_t>(run.downsample_factor, 1);
      if (need.shape.chunks < max_chunked.chunks &&
          ScoreBytes(max_chunked, run.height / factor, run.width / factor, rows) <= memory.bytes) {
        advice += ", or convert the checkpoint again with more --attention-chunks (at most 256)";
      }
      return Status::Error(
          path.string() + ": at " + size + " one query chunk of its self-attention needs about " +
          Size(need.bytes) + " for its scores and their softmax (" + std::to_string(rows) +
          " rows, " + std::to_string(need.shape.heads) + " heads, " +
          std::to_string(need.shape.chunks) +
          (need.shape.chunks == 1 ? " chunk), " : " chunks), ") + more_than + "; " + advice);
    }
    const std::uint64_t full =
        FullResolutionBytes(need.full_resolution_channels, run.width, run.height);
    if (full > memory.bytes) {
      return Status::Error(path.string() + ": at " + size +
                           " its layers at full image resolution need at least " + Size(full) +
                           " (" + std::to_string(kFullResolutionTensors) + " float32 tensors of " +
                           std::to_string(need.full_resolution_channels) + " channels at once), " +
                           more_than + "; use a smaller --width and --height");
    }
  }
  return Status::Ok();
}

}  // namespace sdonnx
