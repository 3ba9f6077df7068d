#include "runtime/tensorrt_profiles.h"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/wire_format_lite.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>

namespace sdonnx {
namespace {

using google::protobuf::internal::WireFormatLite;

constexpr int kModelGraphField = 7;      // ModelProto.graph
constexpr int kGraphInputField = 11;     // GraphProto.input
constexpr int kModelMetadataField = 14;  // ModelProto.metadata_props
constexpr std::int64_t kTokens = 77;     // one CLIP prompt chunk

// Reads GraphProto.input entries from a stream limited to the graph field.
bool ReadInputs(google::protobuf::io::CodedInputStream& in, std::vector<GraphInput>* inputs) {
  while (const std::uint32_t tag = in.ReadTag()) {
    if (WireFormatLite::GetTagFieldNumber(tag) != kGraphInputField ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      continue;
    }
    std::uint32_t length = 0;
    std::string bytes;
    onnx::ValueInfoProto value;
    if (!in.ReadVarint32(&length) || !in.ReadString(&bytes, static_cast<int>(length)) ||
        !value.ParseFromString(bytes)) {
      return false;
    }
    GraphInput input{value.name(), {}};
    for (const auto& dim : value.type().tensor_type().shape().dim()) {
      if (dim.has_dim_value()) {
        input.dims.emplace_back(dim.dim_value());
      } else {
        input.dims.emplace_back(dim.dim_param());
      }
    }
    inputs->push_back(std::move(input));
  }
  return true;
}

// The range of a dynamic dimension named `symbol` in `component`.
Result<std::array<std::int64_t, 3>> SymbolRange(const std::string& component,
                                                const std::string& symbol,
                                                const ProfileRequest& r) {
  const std::int64_t f = r.downsample_factor;
  const std::int64_t unet_rows = UNetRowsPerImage(r) * r.batch;
  // The max allows every run up to max_batch images, with guidance.
  const std::int64_t max_unet_rows = (r.pix2pix ? 3 : 2) * r.max_batch;
  if (component == "unet") {
    if (symbol == "batch") return std::array{std::int64_t{1}, unet_rows, max_unet_rows};
    if (symbol == "height") return std::array{r.min_side / f, r.height / f, r.max_side / f};
    if (symbol == "width") return std::array{r.min_side / f, r.width / f, r.max_side / f};
    if (symbol == "sequence") return std::array{kTokens, kTokens, kTokens * r.max_chunks};
    if (symbol == "timestep_count")
      return std::array{std::int64_t{1}, std::int64_t{1}, max_unet_rows};
  } else if (component == "vae_encoder") {
    if (symbol == "batch") return std::array{std::int64_t{1}, std::int64_t{1}, r.max_batch};
    if (symbol == "height") return std::array{r.min_side, r.height, r.max_side};
    if (symbol == "width") return std::array{r.min_side, r.width, r.max_side};
  } else if (component == "vae_decoder") {
    if (symbol == "batch") return std::array{std::int64_t{1}, std::int64_t{1}, r.max_batch};
    if (symbol == "latent_height") return std::array{r.min_side / f, r.height / f, r.max_side / f};
    if (symbol == "latent_width") return std::array{r.min_side / f, r.width / f, r.max_side / f};
  } else if (component.starts_with("clip_text")) {
    // generate encodes one prompt's chunks per run.
    if (symbol == "batch") return std::array{std::int64_t{1}, std::int64_t{1}, r.max_chunks};
  }
  return Status::Error(component + ": no TensorRT profile range for the dynamic dimension '" +
                       symbol +
                       "'; the file does not follow the sdonnx contract "
                       "(docs/onnx-contract.md)");
}

std::string ShapeText(const std::vector<std::int64_t>& shape) {
  std::string text;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += 'x';
    text += std::to_string(shape[i]);
  }
  return text;
}

}  // namespace

Result<GraphHeader> ReadGraphHeader(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(path + ": cannot open: " + std::strerror(errno));
  GraphHeader header;
  bool ok = true;
  {
    google::protobuf::io::FileInputStream file(fd);
    google::protobuf::io::CodedInputStream in(&file);
    in.SetTotalBytesLimit(INT_MAX);
    while (ok) {
      const std::uint32_t tag = in.ReadTag();
      if (tag == 0) break;
      const int field = WireFormatLite::GetTagFieldNumber(tag);
      const bool delimited =
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
      std::uint32_t length = 0;
      if (field == kModelGraphField && delimited) {
        ok = in.ReadVarint32(&length);
        const auto limit = in.PushLimit(static_cast<int>(length));
        ok = ok && ReadInputs(in, &header.inputs);
        in.PopLimit(limit);
      } else if (field == kModelMetadataField && delimited) {
        std::string bytes;
        onnx::StringStringEntryProto entry;
        ok = in.ReadVarint32(&length) && in.ReadString(&bytes, static_cast<int>(length)) &&
             entry.ParseFromString(bytes);
        header.metadata[entry.key()] = entry.value();
      } else {
        ok = WireFormatLite::SkipField(&in, tag);
      }
    }
  }
  ::close(fd);
  if (!ok || header.inputs.empty()) {
    return Status::Error(path + ": cannot read the graph inputs; is it an ONNX model?");
  }
  return header;
}

std::int64_t UNetRowsPerImage(const ProfileRequest& request) {
  if (request.pix2pix) return request.guidance || request.image_guidance ? 3 : 1;
  return request.guidance ? 2 : 1;
}

bool IsInstructPix2PixUNet(const GraphHeader& header) {
  std::int64_t latent_channels = 4;
  const auto recorded = header.metadata.find("sdonnx.latent_channels");
  if (recorded != header.metadata.end()) {
    const std::string& text = recorded->second;
    const auto [end, error] =
        std::from_chars(text.data(), text.data() + text.size(), latent_channels);
    if (error != std::errc()) return false;
  }
  for (const GraphInput& input : header.inputs) {
    if (input.name != "sample" || input.dims.size() != 4) continue;
    const auto* channels = std::get_if<std::int64_t>(&input.dims[1]);
    return channels != nullptr && *channels == 2 * latent_channels;
  }
  return false;
}

ProfileRequest DefaultProfileRequest(const std::string& family) {
  ProfileRequest request;
  if (family.starts_with("sdxl")) {
    request.width = request.height = 1024;
    request.min_side = 512;
    request.max_side = 1536;
  }
  return request;
}

Result<std::map<std::string, ShapeRange>> ProfileFor(const std::string& component,
                                                     const std::vector<GraphInput>& inputs,
                                                     const ProfileRequest& request) {
  std::map<std::string, ShapeRange> ranges;
  for (const GraphInput& input : inputs) {
    ShapeRange& range = ranges[input.name];
    for (const auto& dim : input.dims) {
      std::array<std::int64_t, 3> values;
      if (const auto* fixed = std::get_if<std::int64_t>(&dim)) {
        values = {*fixed, *fixed, *fixed};
      } else {
        SDONNX_ASSIGN_OR_RETURN(values,
                                SymbolRange(component, std::get<std::string>(dim), request));
      }
      range.min.push_back(std::min(values[0], values[1]));
      range.opt.push_back(values[1]);
      range.max.push_back(std::max(values[2], values[1]));
    }
  }
  return ranges;
}

TensorRtProfile FormatProfile(const std::map<std::string, ShapeRange>& ranges) {
  TensorRtProfile profile;
  for (const auto& [name, range] : ranges) {
    const std::string separator = profile.min_shapes.empty() ? "" : ",";
    profile.min_shapes += separator + name + ":" + ShapeText(range.min);
    profile.opt_shapes += separator + name + ":" + ShapeText(range.opt);
    profile.max_shapes += separator + name + ":" + ShapeText(range.max);
  }
  return profile;
}

}  // namespace sdonnx
