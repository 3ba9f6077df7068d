// Key names of a VAE saved by diffusers (AutoencoderKL), mapped to the
// original ldm names that the VAE graphs read ("encoder.down.0.block.1.
// conv1.weight" for "encoder.down_blocks.0.resnets.1.conv1.weight").
#pragma once

#include <map>
#include <optional>
#include <string>

#include "formats/checkpoint.h"

namespace sdonnx {

// True if the file's keys are in diffusers' naming.
bool HasDiffusersVaeKeys(const Checkpoint& checkpoint);

// Whether `name` is a VAE tensor under `prefix` (such as
// "first_stage_model." or ""): its encoder, decoder or quant convolutions,
// in the original naming or diffusers'.
bool IsVaeTensorName(const std::string& name, const std::string& prefix);

// For every tensor of a diffusers-named VAE: its original name -> its
// stored name. Tensors without an original counterpart are left out.
std::map<std::string, std::string> DiffusersVaeAliases(const Checkpoint& checkpoint);

// The original name of diffusers VAE key `key` ("decoder.up_blocks.0.
// resnets.1.conv1.weight"), given the decoder's number of up blocks; empty
// for keys that keep their name (conv_in, conv_out, quant_conv, ...).
std::optional<std::string> DiffusersVaeOriginalName(const std::string& key, int up_blocks);

}  // namespace sdonnx
