// Layers shared by the networks, written as ONNX subgraphs over checkpoint
// weights. Each takes the key prefix of its module ("...in_layers.0") and
// reads "<prefix>.weight" and "<prefix>.bias" as the PyTorch module stores
// them.
//
// Only standard ai.onnx operators of opset 14 and up are used. Where an
// operator only exists in later opsets (LayerNormalization in 17), the
// builder's opset decides between the operator and its decomposition.
#pragma once

#include <cstdint>
#include <string>

#include "graph/builder.h"

namespace sdonnx::layers {

// y = x W^T + b over the last axis, for a torch.nn.Linear stored as [out, in].
std::string Linear(GraphBuilder& b, const std::string& x, const std::string& prefix,
                   bool has_bias = true);

// The same with the weight and bias named explicitly, for modules that do not
// follow the ".weight"/".bias" naming (torch's packed in_proj_weight).
std::string LinearWithKeys(GraphBuilder& b, const std::string& x, const std::string& weight_key,
                           const std::string& bias_key);

// torch.nn.Conv2d with the kernel size read from the weight; `pads` is
// [top, left, bottom, right], or empty for "same" padding of odd kernels.
std::string Conv2d(GraphBuilder& b, const std::string& x, const std::string& prefix,
                   std::int64_t stride = 1, std::vector<std::int64_t> pads = {});

// torch.nn.GroupNorm over NCHW: statistics per group in float32 (also in a
// float16 graph), then the per-channel affine transform.
std::string GroupNorm(GraphBuilder& b, const std::string& x, const std::string& prefix,
                      std::int64_t groups, float eps);

// torch.nn.LayerNorm over the last axis, computed in float32.
std::string LayerNorm(GraphBuilder& b, const std::string& x, const std::string& prefix, float eps);

std::string SiLU(GraphBuilder& b, const std::string& x);
// GELU with the exact erf form, as torch.nn.functional.gelu computes by default.
std::string Gelu(GraphBuilder& b, const std::string& x);
// x * sigmoid(1.702 x), the activation of OpenAI CLIP.
std::string QuickGelu(GraphBuilder& b, const std::string& x);

// Mean over the last axis with keepdims, in the form the opset requires.
std::string ReduceMeanLast(GraphBuilder& b, const std::string& x);

// Multi-head scaled dot-product attention on [B, S, heads * dim_head]
// projections; `mask` (optional, float32) is added to the scores before
// softmax. Scores and softmax are float32 in a float16 graph. Without a
// mask, a builder with ort_attention() writes one MultiHeadAttention node.
// With `query_chunks` > 1 and no mask, a Loop computes that many chunks of
// ceil(S_q / query_chunks) query rows one after another, each with its own
// scores and softmax, so that only one chunk's [B, heads, rows, S_k] scores
// exist at a time.
// Returns [B, S_q, heads * dim_head].
std::string Attention(GraphBuilder& b, const std::string& q, const std::string& k,
                      const std::string& v, std::int64_t heads, std::int64_t dim_head,
                      const std::string& mask = "", std::int64_t query_chunks = 1);

// Dimension `axis` of x's shape as a 1-element int64 tensor.
std::string ShapeDim(GraphBuilder& b, const std::string& x, std::int64_t axis);

}  // namespace sdonnx::layers
