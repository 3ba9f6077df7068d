// A thin layer over the ONNX Runtime C++ API that returns Status instead of
// throwing. OrtCall below is the one place where Ort::Exception becomes a
// Status.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace Ort {
struct Session;
}

namespace sdonnx {

// A dense tensor held in host memory: float32 or int32 data.
struct HostTensor {
  std::vector<std::int64_t> shape;
  std::vector<float> f32;
  std::vector<std::int32_t> i32;
  bool is_int32 = false;

  static HostTensor Float(std::vector<std::int64_t> shape, std::vector<float> values);
  static HostTensor Int32(std::vector<std::int64_t> shape, std::vector<std::int32_t> values);
  std::int64_t NumElements() const;
};

enum class Provider { kCpu, kCuda, kTensorRt };

// Parses "cpu", "cuda" or "tensorrt".
Result<Provider> ParseProvider(const std::string& name);

// TensorRT optimization profile shapes, "name:1x4x64x64,name2:..." for
// the provider options trt_profile_min_shapes, _opt_shapes and _max_shapes.
struct TensorRtProfile {
  std::string min_shapes;
  std::string opt_shapes;
  std::string max_shapes;
};

enum class GraphOptimization { kNone, kBasic, kExtended, kAll };

// Parses "all", "extended", "basic" or "disabled".
Result<GraphOptimization> ParseGraphOptimization(const std::string& name);

struct SessionOptions {
  int intra_op_threads = 0;  // 0 lets ONNX Runtime choose.
  Provider provider = Provider::kCpu;
  // With Provider::kTensorRt: the profile of this model. When it is empty,
  // the provider builds an engine for the shapes of the first run.
  TensorRtProfile tensorrt_profile;
  // ONNX Runtime's graph optimization level. kAll adds the CPU layout
  // transforms (NCHWc convolutions), which copy every convolution weight.
  // kExtended is the default because on the full-size SD 1.5 UNet it
  // loaded in 0.4 s instead of 11 s with steps no slower (benchmarks.md).
  GraphOptimization optimization = GraphOptimization::kExtended;
  // Whether CPU kernels may repack constant weights at load time. Off by
  // default, so weights in external data stay memory-mapped, not copied.
  bool prepack_weights = false;
  // Whether the float16 and bfloat16 weights of a float32 graph (each
  // behind a Cast) are widened once at load, by ONNX Runtime's constant
  // folding, or by their Cast at every run. Off by default, because folding
  // keeps a float32 copy of every weight in memory and is slow: the fp16
  // SDXL base UNet loads in 20-35 s with 10.4 GB instead of 5 s with 88 MB.
  // The Casts cost about 2 s per 512x512 SDXL step (benchmarks.md). Only
  // results above kMaxFoldedBytes are left to run, so graphs without such
  // weights load as before.
  bool widen_weights_at_load = false;
  // When not empty, ONNX Runtime writes a JSON trace of every node's run
  // time to a file starting with this prefix.
  std::string profile_prefix;
  // When not empty, ONNX Runtime writes the graph as optimized at load to
  // this path.
  std::string optimized_model_path;
  // Whether a CPU session allocates from the one arena that every session
  // of the process shares. An arena keeps the most memory it ever had, so
  // with one arena per session the UNet's peak stayed while the VAE ran.
  // Shared, SD 1.5 at 512x512 peaked at 5.2 GB instead of 5.7 GB, and the
  // tiny test model at 4.6 GB instead of 9.1 GB, with the same images. Memory taken from the shared
  // arena stays with the process, so the session cache's build, which copies every weight, keeps
  // its own arena and frees it when dropped.
  bool shared_arena = true;
  // Further ONNX Runtime session config entries (onnxruntime_session_options_config_keys.h).
  std::map<std::string, std::string> config_entries;
  // When not empty, a folder for sessions built once and reused
  // (runtime/session_cache.h). On the CPU, each model is optimized at kAll
  // with prepacked weights and saved there. Later loads map that file
  // instead of optimizing again, so `optimization` and `prepack_weights` are
  // then ignored. With TensorRT, the provider keeps its engines and timing
  // cache in its `tensorrt` subfolder. With CUDA it is ignored.
  std::string cache_dir;
};

// The largest result of one constant-folded node when weights are not
// widened at load: 1 MiB, which lets small shape and scalar constants fold.
inline constexpr std::int64_t kMaxFoldedBytes = std::int64_t{1} << 20;

// The TensorRT provider options (V2 API keys) for `profile`; empty when the
// profile is empty.
// With a non-empty `cache_dir`, the provider also keeps its engines and its
// timing cache there.
std::map<std::string, std::string> TensorRtProviderOptions(const TensorRtProfile& profile,
                                                           const std::string& cache_dir = "");

// The execution providers compiled into the loaded ONNX Runtime library.
std::vector<std::string> AvailableProviders();

// Loads the serialized model `model_bytes` into an ONNX Runtime session
// without optimizations and drops it again: the runtime checks every node
// against its operator schemas and infers types and shapes. `name` names the
// model in errors.
Status CheckLoadsInOrt(const std::string& model_bytes, const std::string& name);

class OrtModel {
 public:
  // Checks the file and its external data (formats/onnx_file.h), then
  // creates the session, through options.cache_dir when it is set.
  static Result<std::unique_ptr<OrtModel>> Load(const std::string& path,
                                                const SessionOptions& options = {});
  ~OrtModel();

  const std::string& path() const { return path_; }
  std::vector<std::string> InputNames() const;
  std::vector<std::string> OutputNames() const;
  // Dimensions of input `name`; -1 marks a dynamic dimension.
  Result<std::vector<std::int64_t>> InputShape(const std::string& name) const;
  // The model's metadata_props; for a cached session, those of path().
  std::map<std::string, std::string> Metadata() const;

  // Runs the model; returns the requested outputs (all when empty) by name.
  Result<std::map<std::string, HostTensor>> Run(const std::map<std::string, HostTensor>& inputs,
                                                const std::vector<std::string>& outputs = {});
  // Runs the model on inputs of any row count when its first input has a
  // fixed batch B, as in a --static-shape file. The rows go in runs of B,
  // the last padded with copies of its last row, and outputs keep only the
  // real rows. Inputs whose first dimension is not the row count pass to
  // every run unchanged. Without a fixed batch this is Run.
  Result<std::map<std::string, HostTensor>> RunInFixedBatches(
      const std::map<std::string, HostTensor>& inputs, const std::vector<std::string>& outputs);

  // The statistics of the arena the session allocates CPU tensors from
  // ("InUse", "MaxInUse", "NumAllocs", ... in bytes and counts, as ONNX
  // Runtime names them); empty when it keeps none.
  Result<std::map<std::string, std::string>> CpuArenaStats() const;

  // The optimized file that the session was loaded from, when it came from
  // a session cache; otherwise empty.
  const std::string& cached_path() const { return cached_path_; }
  // Whether this load built that cache entry (the first run with the model).
  bool cache_built() const { return cache_built_; }
  // The number and bytes of stale cache entries that building this load's
  // entry removed.
  std::size_t cache_entries_removed() const { return cache_entries_removed_; }
  std::uint64_t cache_bytes_freed() const { return cache_bytes_freed_; }

 private:
  OrtModel() = default;
  // Creates the session without checking the file first.
  static Result<std::unique_ptr<OrtModel>> CreateSession(const std::string& path,
                                                         const SessionOptions& options);
  // Loads `path` through the cache folder options.cache_dir
  // (session_cache.cpp). `metadata` and `data_files` are the checked file's.
  static Result<std::unique_ptr<OrtModel>> LoadThroughCache(
      const std::string& path, const SessionOptions& options,
      const std::map<std::string, std::string>& metadata,
      const std::vector<std::string>& data_files);
  std::string path_;
  std::string cached_path_;
  bool cache_built_ = false;
  std::size_t cache_entries_removed_ = 0;
  std::uint64_t cache_bytes_freed_ = 0;
  // For a cached session: the metadata of the file at path_, which
  // Metadata() returns instead of the cache entry's copy.
  std::map<std::string, std::string> original_metadata_;
  std::unique_ptr<Ort::Session> session_;
};

// For ONNX Runtime's "Failed to allocate memory for requested buffer of
// size N" message: a sentence that gives the size asked for and what to
// change. Empty for any other message.
std::string OrtAllocationAdvice(const std::string& message);

}  // namespace sdonnx
