// TensorRT optimization profiles: the min, opt and max shape of every input
// of a converted file, from the dynamic axis names of docs/onnx-contract.md,
// in the "name:1x4x64x64,name2:..." form of ONNX Runtime's TensorRT provider
// options trt_profile_min_shapes, trt_profile_opt_shapes and
// trt_profile_max_shapes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "runtime/ort_session.h"
#include "util/status.h"

namespace sdonnx {

// One graph input: fixed dimensions as numbers, dynamic ones by name.
struct GraphInput {
  std::string name;
  std::vector<std::variant<std::int64_t, std::string>> dims;
};

struct GraphHeader {
  std::vector<GraphInput> inputs;
  std::map<std::string, std::string> metadata;  // metadata_props
};

// Reads the graph inputs and metadata of the .onnx file at `path`, skipping
// everything else, so that even an inline 2 GB model costs only its graph
// structure to read.
Result<GraphHeader> ReadGraphHeader(const std::string& path);

// The run a profile is optimized for, and the ranges it must allow.
// NOTE: the ranges are checked as strings only; no test builds an engine,
// because the bundled ONNX Runtime has no TensorRT provider.
struct ProfileRequest {
  std::int64_t width = 512;  // image pixels of the run: the opt shape
  std::int64_t height = 512;
  std::int64_t batch = 1;  // images per run
  // --cfg-scale is not 1: the UNet also runs the negative prompt.
  bool guidance = true;
  // --image-cfg-scale is not 1, which adds rows for instruct-pix2pix only.
  bool image_guidance = false;
  // The UNet is instruct-pix2pix (see IsInstructPix2PixUNet).
  bool pix2pix = false;
  std::int64_t downsample_factor = 8;
  std::int64_t min_side = 256;  // image side range in pixels
  std::int64_t max_side = 1024;
  std::int64_t max_batch = 4;   // images per run
  std::int64_t max_chunks = 3;  // 77-token prompt chunks
};

// Returns the UNet rows per image and step. Without guidance it is 1. With
// guidance it is 2 (negative prompt, prompt), or 3 for instruct-pix2pix
// (negative prompt without and with the image, prompt with it).
std::int64_t UNetRowsPerImage(const ProfileRequest& request);

// Returns whether `header` is an instruct-pix2pix UNet: its input 'sample'
// has twice the latent channels (sdonnx.latent_channels, else 4), because
// the init image's latent is stacked onto the noisy one.
bool IsInstructPix2PixUNet(const GraphHeader& header);

// Returns the default request for a family. SDXL ("sdxl", "sdxl-refiner")
// runs at 1024 and allows 512 to 1536 pixels. Other families run at 512 and
// allow 256 to 1024.
ProfileRequest DefaultProfileRequest(const std::string& family);

struct ShapeRange {
  std::vector<std::int64_t> min, opt, max;
};

// The shape range of each input of `component` ("unet", "vae_encoder",
// "vae_decoder", "clip_text", "clip_text_2"). Fixed dimensions stay fixed;
// an unknown dynamic dimension name is an error.
Result<std::map<std::string, ShapeRange>> ProfileFor(const std::string& component,
                                                     const std::vector<GraphInput>& inputs,
                                                     const ProfileRequest& request);

TensorRtProfile FormatProfile(const std::map<std::string, ShapeRange>& ranges);

}  // namespace sdonnx
