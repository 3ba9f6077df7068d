#include "generate/attention_memory.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

std::string Gib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return text;
}

// The largest score memory of one file, with the shape that needs it.
struct Need {
  std::uint64_t bytes = 0;
  SelfAttentionShape shape;
};

Result<Need> LargestNeed(const fs::path& path, const ProfileRequest& run, std::int64_t rows) {
  Need need;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return need;  // Loading reports a missing file.
  const Result<GraphHeader> header = ReadGraphHeader(path.string());
  if (!header.ok()) return need;
  const auto layout = header->metadata.find("sdonnx.self_attention");
  if (layout == header->metadata.end()) return need;
  Result<std::vector<SelfAttentionShape>> shapes = ParseSelfAttention(layout->second);
  if (!shapes.ok()) return shapes.status().WithContext(path.string());
  const std::int64_t factor = std::max<std::int64_t>(run.downsample_factor, 1);
  for (const SelfAttentionShape& shape : *shapes) {
    const std::uint64_t bytes = ScoreBytes(shape, run.height / factor, run.width / factor, rows);
    if (bytes > need.bytes) need = {bytes, shape};
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
        shape.heads < 1 || shape.chunks < 1) {
      return Status::Error("metadata sdonnx.self_attention: entry '" + entry +
                           "' is invalid; expected HALVINGS:HEADS:CHUNKS with positive counts");
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
  return static_cast<std::uint64_t>(std::max<std::int64_t>(rows, 1)) *
         static_cast<std::uint64_t>(shape.heads) * chunk_rows * tokens * 4 * 2;
}

std::uint64_t PhysicalMemoryBytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size);
}

Status CheckAttentionMemory(const fs::path& dir, const std::string& stem, bool need_encoder,
                            const ProfileRequest& run, std::uint64_t memory_bytes) {
  if (memory_bytes == 0) return Status::Ok();
  const std::vector<std::pair<std::string, std::int64_t>> components = [&] {
    std::vector<std::pair<std::string, std::int64_t>> list = {
        {"unet", run.batch * UNetRowsPerImage(run)}, {"vae_decoder", 1}};
    if (need_encoder) list.push_back({"vae_encoder", 1});
    return list;
  }();
  for (const auto& [component, rows] : components) {
    const fs::path path = dir / (component + "_" + stem + ".onnx");
    SDONNX_ASSIGN_OR_RETURN(const Need need, LargestNeed(path, run, rows));
    if (need.bytes <= memory_bytes) continue;
    std::string advice = "use a smaller --width and --height";
    if (component == "unet" && run.batch > 1) advice += " or --batch-size";
    if (need.shape.chunks < 256) {
      advice += ", or convert the checkpoint again with more --attention-chunks (at most 256)";
    }
    return Status::Error(
        path.string() + ": at " + std::to_string(run.width) + "x" +
        std::to_string(run.height) + " one query chunk of its self-attention needs about " +
        Gib(need.bytes) + " for its scores and their softmax (" + std::to_string(rows) +
        " rows, " + std::to_string(need.shape.heads) + " heads, " +
        std::to_string(need.shape.chunks) + " chunks), more than the " + Gib(memory_bytes) +
        " of memory this machine has; " + advice);
  }
  return Status::Ok();
}

}  // namespace sdonnx
