#include "graph/layers.h"

#include <cmath>
#include <string>
#include <vector>

namespace sdonnx::layers {

std::string Linear(GraphBuilder& b, const std::string& x, const std::string& prefix,
                   bool has_bias) {
  return LinearWithKeys(b, x, prefix + ".weight", has_bias ? prefix + ".bias" : "");
}

std::string LinearWithKeys(GraphBuilder& b, const std::string& x, const std::string& weight_key,
                           const std::string& bias_key) {
  // Gemm with transB reads the [out, in] weight as stored. A MatMul would
  // need a Transpose, which ONNX Runtime folds into a second copy of every
  // weight at load time. Gemm takes 2-D input, so x is flattened to
  // [rows, in] and the result reshaped back to x's leading dimensions.
  const auto shape = b.WeightShape(weight_key);
  if (shape.size() != 2) {
    b.Fail("tensor '" + weight_key + "' should be a 2-D [out, in] Linear weight");
    return x;
  }
  const std::string flat = b.Op("Reshape", {x, b.ConstInt64({-1, shape[1]}, {2})});
  std::vector<std::string> inputs = {flat, b.Weight(weight_key)};
  if (!bias_key.empty()) inputs.push_back(b.Weight(bias_key));
  const std::string y = b.Op("Gemm", inputs, {{"transB", std::int64_t{1}}});
  const std::string leading =
      b.Op("Slice", {b.Op("Shape", {x}), b.ConstInt64({0}, {1}), b.ConstInt64({-1}, {1})});
  const std::string out_shape =
      b.Op("Concat", {leading, b.ConstInt64({shape[0]}, {1})}, {{"axis", std::int64_t{0}}});
  return b.Op("Reshape", {y, out_shape});
}

std::string Conv2d(GraphBuilder& b, const std::string& x, const std::string& prefix,
                   std::int64_t stride, std::vector<std::int64_t> pads) {
  const auto shape = b.WeightShape(prefix + ".weight");
  if (shape.size() != 4) {
    b.Fail("tensor '" + prefix + ".weight' should be a 4-D convolution kernel");
    return x;
  }
  if (pads.empty()) {
    const std::int64_t ph = shape[2] / 2;
    const std::int64_t pw = shape[3] / 2;
    pads = {ph, pw, ph, pw};
  }
  std::vector<std::string> inputs = {x, b.Weight(prefix + ".weight")};
  if (b.HasWeight(prefix + ".bias")) inputs.push_back(b.Weight(prefix + ".bias"));
  return b.Op("Conv", inputs,
              {{"kernel_shape", std::vector<std::int64_t>{shape[2], shape[3]}},
               {"strides", std::vector<std::int64_t>{stride, stride}},
               {"pads", pads}});
}

std::string GroupNorm(GraphBuilder& b, const std::string& x, const std::string& prefix,
                      std::int64_t groups, float eps) {
  const auto shape = b.WeightShape(prefix + ".weight");
  if (shape.size() != 1 || shape[0] % groups != 0) {
    b.Fail("tensor '" + prefix + ".weight' should be 1-D with a channel count divisible by " +
           std::to_string(groups) + " groups");
    return x;
  }
  // InstanceNormalization over [B, groups, C/groups * H * W] computes the
  // group statistics; the learned affine transform is applied per channel.
  const std::string grouped =
      b.Op("Reshape", {x, b.ConstInt64({0, groups, -1}, {3})});
  // The statistics are float32 even in a float16 graph: a sum of squares
  // over a whole group overflows float16.
  const std::string ones = b.ConstFloat32(std::vector<float>(groups, 1.0f), {groups});
  const std::string zeros = b.ConstFloat32(std::vector<float>(groups, 0.0f), {groups});
  const std::string normed =
      b.Op("InstanceNormalization", {b.ToFloat32(grouped), ones, zeros}, {{"epsilon", eps}});
  const std::string restored = b.Op("Reshape", {b.ToCompute(normed), b.Op("Shape", {x})});
  const std::string per_channel = b.ConstInt64({-1, 1, 1}, {3});
  const std::string gamma = b.Op("Reshape", {b.Weight(prefix + ".weight"), per_channel});
  const std::string beta = b.Op("Reshape", {b.Weight(prefix + ".bias"), per_channel});
  return b.Op("Add", {b.Op("Mul", {restored, gamma}), beta});
}

std::string ReduceMeanLast(GraphBuilder& b, const std::string& x) {
  if (b.opset() >= 18) {
    return b.Op("ReduceMean", {x, b.ConstInt64({-1}, {1})}, {{"keepdims", std::int64_t{1}}});
  }
  return b.Op("ReduceMean", {x},
              {{"axes", std::vector<std::int64_t>{-1}}, {"keepdims", std::int64_t{1}}});
}

std::string LayerNorm(GraphBuilder& b, const std::string& x, const std::string& prefix,
                      float eps) {
  // Float32 throughout, as for GroupNorm: the variance of text encoder
  // activations overflows float16.
  const std::string x32 = b.ToFloat32(x);
  const std::string gamma = b.Weight32(prefix + ".weight");
  const std::string beta = b.Weight32(prefix + ".bias");
  if (b.opset() >= 17) {
    return b.ToCompute(b.Op("LayerNormalization", {x32, gamma, beta},
                            {{"axis", std::int64_t{-1}}, {"epsilon", eps}}));
  }
  const std::string centered = b.Op("Sub", {x32, ReduceMeanLast(b, x32)});
  const std::string variance = ReduceMeanLast(b, b.Op("Mul", {centered, centered}));
  const std::string stddev = b.Op("Sqrt", {b.Op("Add", {variance, b.ScalarFloat32(eps)})});
  const std::string normed = b.Op("Div", {centered, stddev});
  return b.ToCompute(b.Op("Add", {b.Op("Mul", {normed, gamma}), beta}));
}

std::string SiLU(GraphBuilder& b, const std::string& x) {
  return b.Op("Mul", {x, b.Op("Sigmoid", {x})});
}

std::string Gelu(GraphBuilder& b, const std::string& x) {
  const std::string scaled = b.Op("Mul", {x, b.ScalarFloat(static_cast<float>(M_SQRT1_2))});
  const std::string cdf = b.Op("Add", {b.Op("Erf", {scaled}), b.ScalarFloat(1.0f)});
  return b.Op("Mul", {b.Op("Mul", {x, cdf}), b.ScalarFloat(0.5f)});
}

std::string QuickGelu(GraphBuilder& b, const std::string& x) {
  return b.Op("Mul", {x, b.Op("Sigmoid", {b.Op("Mul", {x, b.ScalarFloat(1.702f)})})});
}

namespace {

// Attention over query chunks: softmax(q_i k^T * scale) v for each chunk
// q_i of `qh` [B, heads, S_q, dim_head], computed by one Loop of `chunks`
// iterations, so the graph has the same nodes at every chunk count. The
// queries are padded with zero rows to `chunks` equal chunks of
// ceil(S_q / chunks) rows, and the padded rows' results are dropped.
// Returns [B, S_q, heads * dim_head].
std::string ChunkedAttention(GraphBuilder& b, const std::string& qh, const std::string& kt,
                             const std::string& vh, float scale, std::int64_t chunks,
                             std::int64_t heads, std::int64_t dim_head) {
  const std::string rows = ShapeDim(b, qh, 2);
  const std::string count = b.ConstInt64({chunks}, {1});
  const std::string block =
      b.Op("Div", {b.Op("Add", {rows, b.ConstInt64({chunks - 1}, {1})}), count});
  const std::string pad_rows = b.Op("Sub", {b.Op("Mul", {block, count}), rows});
  const std::string pads = b.Op("Concat", {b.ConstInt64({0, 0, 0, 0, 0, 0}, {6}), pad_rows,
                                           b.ConstInt64({0}, {1})},
                                {{"axis", std::int64_t{0}}});
  // Scaling q instead of the scores touches S_q x dim_head values, not
  // S_q x S_k.
  const std::string padded = b.Op("Pad", {b.Op("Mul", {qh, b.ScalarFloat32(scale)}), pads});
  const std::string axes = b.ConstInt64({2}, {1});
  const std::vector<std::string> stacked = b.Loop(
      b.ConstInt64({chunks}, {}), {b.compute_type()}, [&](const std::string& iteration) {
        const std::string begin = b.Op("Mul", {iteration, block});
        const std::string part_q =
            b.Op("Slice", {padded, begin, b.Op("Add", {begin, block}), axes});
        const std::string probs = b.ToCompute(
            b.Op("Softmax", {b.Op("MatMul", {part_q, kt})}, {{"axis", std::int64_t{-1}}}));
        return std::vector<std::string>{b.Op("MatMul", {probs, vh})};
      });
  // [chunks, B, heads, rows, dim_head] -> [B, chunks * rows, heads * dim_head].
  const std::string joined = b.Op("Reshape",
                                  {b.Op("Transpose", {stacked[0]},
                                        {{"perm", std::vector<std::int64_t>{1, 0, 3, 2, 4}}}),
                                   b.ConstInt64({0, -1, heads * dim_head}, {3})});
  return b.Op("Slice", {joined, b.ConstInt64({0}, {1}), rows, b.ConstInt64({1}, {1})});
}

}  // namespace

std::string Attention(GraphBuilder& b, const std::string& q, const std::string& k,
                      const std::string& v, std::int64_t heads, std::int64_t dim_head,
                      const std::string& mask, std::int64_t query_chunks) {
  if (b.ort_attention() && mask.empty()) {
    // The contrib operator's CPU kernel runs flash attention on float32
    // only; its default scale is 1 / sqrt(dim_head), as below.
    const std::string out = b.OpInDomain(
        "com.microsoft", 1, "MultiHeadAttention",
        {b.ToFloat32(q), b.ToFloat32(k), b.ToFloat32(v)}, {{"num_heads", heads}});
    return b.ToCompute(out);
  }
  const std::string split = b.ConstInt64({0, 0, heads, dim_head}, {4});
  const std::vector<std::int64_t> to_heads = {0, 2, 1, 3};
  // Scores and softmax are float32 in a float16 graph: q.k over a wide
  // head overflows float16, and softmax needs the range of its inputs.
  const std::string qh =
      b.ToFloat32(b.Op("Transpose", {b.Op("Reshape", {q, split})}, {{"perm", to_heads}}));
  const std::string kt = b.ToFloat32(b.Op("Transpose", {b.Op("Reshape", {k, split})},
                                          {{"perm", std::vector<std::int64_t>{0, 2, 3, 1}}}));
  const std::string vh =
      b.Op("Transpose", {b.Op("Reshape", {v, split})}, {{"perm", to_heads}});
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim_head));
  if (query_chunks > 1 && mask.empty()) {
    return ChunkedAttention(b, qh, kt, vh, scale, query_chunks, heads, dim_head);
  }
  std::string scores = b.Op("MatMul", {qh, kt});
  scores = b.Op("Mul", {scores, b.ScalarFloat32(scale)});
  if (!mask.empty()) scores = b.Op("Add", {scores, mask});
  const std::string probs = b.ToCompute(b.Op("Softmax", {scores}, {{"axis", std::int64_t{-1}}}));
  const std::string joined = b.Op("MatMul", {probs, vh});
  const std::string out = b.Op("Transpose", {joined}, {{"perm", to_heads}});
  return b.Op("Reshape", {out, b.ConstInt64({0, 0, heads * dim_head}, {3})});
}

std::string ShapeDim(GraphBuilder& b, const std::string& x, std::int64_t axis) {
  return b.Op("Gather", {b.Op("Shape", {x}), b.ConstInt64({axis}, {1})},
              {{"axis", std::int64_t{0}}});
}

}  // namespace sdonnx::layers
