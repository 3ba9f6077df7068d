#include "runtime/ort_session.h"

#include <onnxruntime_cxx_api.h>
#include <onnxruntime_session_options_config_keys.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <unordered_map>

#include "formats/onnx_file.h"

namespace sdonnx {
namespace {

// Bytes of /proc/self/cmdline, or 0 when it cannot be read.
std::size_t CommandLineBytes() {
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::size_t bytes = 0;
  char buffer[4096];
  while (cmdline.read(buffer, sizeof buffer) || cmdline.gcount() > 0) {
    bytes += static_cast<std::size_t>(cmdline.gcount());
  }
  return bytes;
}

struct EnvironmentSlot {
  Ort::Env* env = nullptr;
  std::exception_ptr error;  // An Ort::Exception, rethrown on the caller's thread.
};

// Whether the environment has the CPU arena that sessions may share.
std::atomic<bool> g_shared_arena{false};

void* CreateEnvironment(void* slot_pointer) {
  auto* slot = static_cast<EnvironmentSlot*>(slot_pointer);
  try {
    // Errors reach the caller as Status values, so the runtime's own log stays quiet.
    slot->env = new Ort::Env(ORT_LOGGING_LEVEL_FATAL, "sdonnx");
  } catch (...) {
    slot->error = std::current_exception();
    return nullptr;
  }
  try {
    // The runtime's defaults: no limit, blocks grown by powers of two. With
    // kSameAsRequested the tiny test model at 512x512 peaked 45% higher.
    const Ort::ArenaCfg arena(0, -1, -1, -1);
    slot->env->CreateAndRegisterAllocator(
        Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault), arena);
    g_shared_arena = true;
  } catch (const Ort::Exception&) {
    // Sessions then keep an arena each, as without SessionOptions::shared_arena.
  }
  return nullptr;
}

// ONNX Runtime 1.29 parses /proc/self/cmdline when it creates its
// environment, recursing about 2.4 frames deep per byte, so a 40 KB prompt
// on the command line overflows an 8 MiB stack. The environment is created
// on a thread whose stack grows by 512 bytes per command-line byte (64 MiB
// held 120 KB in a test). Linux caps the command line near 2 MiB, so the
// reservation stays under about 1.1 GiB of address space, and only the
// pages the recursion reaches are touched.
Ort::Env& Environment() {
  // Destroyed at exit like any static, which stops the runtime's own
  // threads before the statics they read are gone.
  static std::unique_ptr<Ort::Env> env = [] {
    EnvironmentSlot slot;
    const std::size_t stack_bytes = (64u << 20) + 512 * CommandLineBytes();
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_t thread;
    const bool started = pthread_attr_setstacksize(&attributes, stack_bytes) == 0 &&
                         pthread_create(&thread, &attributes, CreateEnvironment, &slot) == 0;
    pthread_attr_destroy(&attributes);
    if (started) {
      pthread_join(thread, nullptr);
    } else {
      CreateEnvironment(&slot);  // Without a thread, on the caller's stack.
    }
    if (slot.error) std::rethrow_exception(slot.error);
    return std::unique_ptr<Ort::Env>(slot.env);
  }();
  return *env;
}

// Runs `body`, turning an Ort::Exception into an error Status that names
// `what` (the model file and the action).
Status OrtCall(const std::string& what, const std::function<void()>& body) {
  try {
    body();
  } catch (const Ort::Exception& e) {
    std::string message = e.what();
    while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) {
      message.pop_back();
    }
    return Status::Error(what + ": " + OrtAllocationAdvice(message) + "ONNX Runtime error " +
                         std::to_string(e.GetOrtErrorCode()) + ": " + message);
  }
  return Status::Ok();
}

}  // namespace

std::string OrtAllocationAdvice(const std::string& message) {
  static const std::string kMarker = "requested buffer of size ";
  const std::size_t at = message.find(kMarker);
  if (message.find("Failed to allocate memory") == std::string::npos || at == std::string::npos) {
    return "";
  }
  const std::uint64_t bytes = std::strtoull(message.c_str() + at + kMarker.size(), nullptr, 10);
  char size[32];
  std::snprintf(size, sizeof size, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return "out of memory: one intermediate tensor needs " + std::string(size) +
         ", more than this machine can give; use a smaller image size or batch size. ";
}

HostTensor HostTensor::Float(std::vector<std::int64_t> shape, std::vector<float> values) {
  HostTensor t;
  t.shape = std::move(shape);
  t.f32 = std::move(values);
  return t;
}

HostTensor HostTensor::Int32(std::vector<std::int64_t> shape, std::vector<std::int32_t> values) {
  HostTensor t;
  t.shape = std::move(shape);
  t.i32 = std::move(values);
  t.is_int32 = true;
  return t;
}

std::int64_t HostTensor::NumElements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Result<Provider> ParseProvider(const std::string& name) {
  if (name == "cpu") return Provider::kCpu;
  if (name == "cuda") return Provider::kCuda;
  if (name == "tensorrt") return Provider::kTensorRt;
  return Status::Error("unknown provider '" + name + "'; use cpu, cuda or tensorrt");
}

std::vector<std::string> AvailableProviders() {
  try {
    return Ort::GetAvailableProviders();
  } catch (const Ort::Exception&) {
    return {};
  }
}

std::map<std::string, std::string> TensorRtProviderOptions(const TensorRtProfile& profile,
                                                           const std::string& cache_dir) {
  std::map<std::string, std::string> entries;
  if (!profile.min_shapes.empty()) {
    entries = {{"trt_profile_min_shapes", profile.min_shapes},
               {"trt_profile_opt_shapes", profile.opt_shapes},
               {"trt_profile_max_shapes", profile.max_shapes}};
  }
  if (!cache_dir.empty()) {
    const std::string folder = (std::filesystem::path(cache_dir) / "tensorrt").string();
    entries["trt_engine_cache_enable"] = "1";
    entries["trt_engine_cache_path"] = folder;
    entries["trt_timing_cache_enable"] = "1";
    entries["trt_timing_cache_path"] = folder;
  }
  return entries;
}

namespace {

Status AppendProvider(const SessionOptions& options, Ort::SessionOptions& session_options) {
  const Provider provider = options.provider;
  if (provider == Provider::kCpu) return Status::Ok();
  const std::string wanted =
      provider == Provider::kCuda ? "CUDAExecutionProvider" : "TensorrtExecutionProvider";
  const std::vector<std::string> available = AvailableProviders();
  if (std::find(available.begin(), available.end(), wanted) == available.end()) {
    std::string list;
    for (const auto& name : available) list += (list.empty() ? "" : ", ") + name;
    return Status::Error("this ONNX Runtime build has no " + wanted + " (available: " + list +
                         "); use --provider cpu, or build with -DONNXRUNTIME_ROOT pointing at "
                         "a GPU build of ONNX Runtime");
  }
  return OrtCall("enabling " + wanted, [&] {
    if (provider == Provider::kCuda) {
      OrtCUDAProviderOptions cuda{};
      session_options.AppendExecutionProvider_CUDA(cuda);
    } else {
      Ort::TensorRTProviderOptions tensorrt;
      const auto entries = TensorRtProviderOptions(options.tensorrt_profile, options.cache_dir);
      tensorrt.Update(std::unordered_map<std::string, std::string>(entries.begin(), entries.end()));
      session_options.AppendExecutionProvider_TensorRT_V2(*tensorrt);
      OrtCUDAProviderOptions cuda{};  // Runs what TensorRT does not take.
      session_options.AppendExecutionProvider_CUDA(cuda);
    }
  });
}

GraphOptimizationLevel ToOrtLevel(GraphOptimization level) {
  switch (level) {
    case GraphOptimization::kNone:
      return GraphOptimizationLevel::ORT_DISABLE_ALL;
    case GraphOptimization::kBasic:
      return GraphOptimizationLevel::ORT_ENABLE_BASIC;
    case GraphOptimization::kExtended:
      return GraphOptimizationLevel::ORT_ENABLE_EXTENDED;
    case GraphOptimization::kAll:
      break;
  }
  return GraphOptimizationLevel::ORT_ENABLE_ALL;
}

}  // namespace

Result<GraphOptimization> ParseGraphOptimization(const std::string& name) {
  if (name == "all") return GraphOptimization::kAll;
  if (name == "extended") return GraphOptimization::kExtended;
  if (name == "basic") return GraphOptimization::kBasic;
  if (name == "disabled") return GraphOptimization::kNone;
  return Status::Error("graph optimization level '" + name +
                       "' is invalid: use all, extended, basic or disabled");
}

Status CheckLoadsInOrt(const std::string& model_bytes, const std::string& name) {
  return OrtCall(name + ": ONNX Runtime rejects the graph", [&] {
    Ort::SessionOptions options;
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_DISABLE_ALL);
    options.SetIntraOpNumThreads(1);
    Ort::Session session(Environment(), model_bytes.data(), model_bytes.size(), options);
  });
}

OrtModel::~OrtModel() = default;

Result<std::unique_ptr<OrtModel>> OrtModel::Load(const std::string& path,
                                                 const SessionOptions& options) {
  // ONNX Runtime reports a truncated, missing or linked external data file
  // with a line of its own source code and no byte counts. OnnxFile checks
  // every initializer first and names the file, the initializer and the
  // byte counts, as extract, rebuild and inspect do.
  Result<std::unique_ptr<OnnxFile>> checked = OnnxFile::Open(path);
  if (!checked.ok()) return checked.status();
  if (options.cache_dir.empty() || options.provider == Provider::kCuda) {
    return CreateSession(path, options);
  }
  const std::vector<std::string> available = AvailableProviders();
  if (options.provider == Provider::kTensorRt &&
      std::find(available.begin(), available.end(), "TensorrtExecutionProvider") !=
          available.end()) {
    // Without the provider, CreateSession reports that before any folder
    // is created.
    const std::filesystem::path folder = std::filesystem::path(options.cache_dir) / "tensorrt";
    std::error_code ec;
    std::filesystem::create_directories(folder, ec);
    if (ec) {
      return Status::Error(folder.string() + ": cannot create the TensorRT cache folder: " +
                           ec.message() + "; pass a writable --cache-dir");
    }
    return CreateSession(path, options);
  }
  if (options.provider == Provider::kTensorRt) return CreateSession(path, options);
  std::set<std::string> locations;
  for (const OnnxInitializer& init : (*checked)->initializers()) {
    if (init.storage == InitializerStorage::kExternal) locations.insert(init.location);
  }
  return LoadThroughCache(path, options, (*checked)->metadata(),
                          std::vector<std::string>(locations.begin(), locations.end()));
}

Result<std::unique_ptr<OrtModel>> OrtModel::CreateSession(const std::string& path,
                                                          const SessionOptions& options) {
  auto model = std::unique_ptr<OrtModel>(new OrtModel());
  model->path_ = path;
  Ort::SessionOptions session_options{nullptr};
  SDONNX_RETURN_IF_ERROR(OrtCall(path + ": setting up the session", [&] {
    session_options = Ort::SessionOptions();
    if (options.intra_op_threads > 0) session_options.SetIntraOpNumThreads(options.intra_op_threads);
    session_options.SetGraphOptimizationLevel(ToOrtLevel(options.optimization));
    if (!options.prepack_weights) {
      session_options.AddConfigEntry(kOrtSessionOptionsConfigDisablePrepacking, "1");
    }
    if (!options.profile_prefix.empty()) session_options.EnableProfiling(options.profile_prefix.c_str());
    if (!options.widen_weights_at_load) {
      // The key exists since ONNX Runtime 1.27; older versions ignore it
      // and fold every Cast, as with widen_weights_at_load.
      session_options.AddConfigEntry("optimization.constant_folding_max_output_size_in_bytes",
                                     std::to_string(kMaxFoldedBytes).c_str());
    }
    // At the kAll level, ONNX Runtime 1.29's FuseFp16InitializerToFp32NodeTransformer
    // aborts the process (a failed bounds assertion) on a Gather whose data is
    // a float16 weight behind a Cast, as in CLIP's token embedding. What it
    // would do, widening float16 weights at load, is widen_weights_at_load's
    // job, done by constant folding.
    session_options.AddConfigEntry(kOrtSessionOptionsDisableSpecifiedOptimizers,
                                   "FuseFp16InitializerToFp32NodeTransformer");
    if (!options.optimized_model_path.empty()) {
      session_options.SetOptimizedModelFilePath(options.optimized_model_path.c_str());
    }
    if (options.shared_arena && options.provider == Provider::kCpu) {
      Environment();  // Registers the shared arena on first use.
      if (g_shared_arena) {
        session_options.AddConfigEntry(kOrtSessionOptionsConfigUseEnvAllocators, "1");
      }
    }
    for (const auto& [key, value] : options.config_entries) {
      session_options.AddConfigEntry(key.c_str(), value.c_str());
    }
  }));
  SDONNX_RETURN_IF_ERROR(AppendProvider(options, session_options));
  SDONNX_RETURN_IF_ERROR(OrtCall(path + ": loading", [&] {
    model->session_ = std::make_unique<Ort::Session>(Environment(), path.c_str(), session_options);
  }));
  return model;
}

Result<std::map<std::string, std::string>> OrtModel::CpuArenaStats() const {
  std::map<std::string, std::string> stats;
  SDONNX_RETURN_IF_ERROR(OrtCall(path_ + ": reading the CPU arena's statistics", [&] {
    const Ort::MemoryInfo info = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const Ort::Allocator allocator(*session_, info);
    for (const auto& [key, value] : allocator.GetStats().GetKeyValuePairs()) stats[key] = value;
  }));
  return stats;
}

std::vector<std::string> OrtModel::InputNames() const {
  std::vector<std::string> names;
  Ort::AllocatorWithDefaultOptions allocator;
  for (std::size_t i = 0; i < session_->GetInputCount(); ++i) {
    names.push_back(session_->GetInputNameAllocated(i, allocator).get());
  }
  return names;
}

std::vector<std::string> OrtModel::OutputNames() const {
  std::vector<std::string> names;
  Ort::AllocatorWithDefaultOptions allocator;
  for (std::size_t i = 0; i < session_->GetOutputCount(); ++i) {
    names.push_back(session_->GetOutputNameAllocated(i, allocator).get());
  }
  return names;
}

Result<std::vector<std::int64_t>> OrtModel::InputShape(const std::string& name) const {
  const std::vector<std::string> names = InputNames();
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i] != name) continue;
    std::vector<std::int64_t> shape;
    Status status = OrtCall(path_ + ": reading input '" + name + "'", [&] {
      shape = session_->GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetShape();
    });
    if (!status.ok()) return status;
    return shape;
  }
  return Status::Error(path_ + ": has no input named '" + name + "'");
}

std::map<std::string, std::string> OrtModel::Metadata() const {
  if (!cached_path_.empty()) return original_metadata_;
  std::map<std::string, std::string> out;
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::ModelMetadata metadata = session_->GetModelMetadata();
  for (auto& key : metadata.GetCustomMetadataMapKeysAllocated(allocator)) {
    auto value = metadata.LookupCustomMetadataMapAllocated(key.get(), allocator);
    out[key.get()] = value ? value.get() : "";
  }
  return out;
}

Result<std::map<std::string, HostTensor>> OrtModel::Run(
    const std::map<std::string, HostTensor>& inputs, const std::vector<std::string>& outputs) {
  std::map<std::string, HostTensor> results;
  const std::vector<std::string> output_names = outputs.empty() ? OutputNames() : outputs;
  Status status = OrtCall(path_ + ": running", [&] {
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<const char*> in_names;
    std::vector<Ort::Value> in_values;
    for (const auto& [name, tensor] : inputs) {
      in_names.push_back(name.c_str());
      if (tensor.is_int32) {
        in_values.push_back(Ort::Value::CreateTensor<std::int32_t>(
            memory, const_cast<std::int32_t*>(tensor.i32.data()), tensor.i32.size(),
            tensor.shape.data(), tensor.shape.size()));
      } else {
        in_values.push_back(Ort::Value::CreateTensor<float>(
            memory, const_cast<float*>(tensor.f32.data()), tensor.f32.size(), tensor.shape.data(),
            tensor.shape.size()));
      }
    }
    std::vector<const char*> out_names;
    for (const auto& name : output_names) out_names.push_back(name.c_str());
    auto values = session_->Run(Ort::RunOptions{nullptr}, in_names.data(), in_values.data(),
                                in_values.size(), out_names.data(), out_names.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      auto info = values[i].GetTensorTypeAndShapeInfo();
      HostTensor out;
      out.shape = info.GetShape();
      const std::size_t n = info.GetElementCount();
      if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        const float* data = values[i].GetTensorData<float>();
        out.f32.assign(data, data + n);
      } else if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) {
        const std::int32_t* data = values[i].GetTensorData<std::int32_t>();
        out.i32.assign(data, data + n);
        out.is_int32 = true;
      } else {
        throw Ort::Exception("output '" + output_names[i] + "' has an element type other than "
                             "float32 or int32", ORT_INVALID_ARGUMENT);
      }
      results[output_names[i]] = std::move(out);
    }
  });
  if (!status.ok()) return status;
  return results;
}

}  // namespace sdonnx

namespace sdonnx {
namespace {

// Rows [first, first + count) of `t`, padded to `batch` rows with copies of
// the last one.
HostTensor RowSlice(const HostTensor& t, std::int64_t first, std::int64_t count,
                    std::int64_t batch) {
  HostTensor out = t;
  out.shape[0] = batch;
  const auto row = static_cast<std::size_t>(t.NumElements() / t.shape[0]);
  out.f32.clear();
  out.i32.clear();
  for (std::int64_t r = 0; r < batch; ++r) {
    const auto source = static_cast<std::size_t>(first + std::min(r, count - 1)) * row;
    if (t.is_int32) {
      out.i32.insert(out.i32.end(), t.i32.begin() + source, t.i32.begin() + source + row);
    } else {
      out.f32.insert(out.f32.end(), t.f32.begin() + source, t.f32.begin() + source + row);
    }
  }
  return out;
}

// Appends the first `count` rows of `part` to `whole`.
void AppendRows(HostTensor& whole, const HostTensor& part, std::int64_t count) {
  const auto row = static_cast<std::size_t>(part.NumElements() / part.shape[0]);
  const auto n = static_cast<std::size_t>(count) * row;
  if (whole.shape.empty()) {
    whole = part;
    whole.shape[0] = 0;
    whole.f32.clear();
    whole.i32.clear();
  }
  whole.shape[0] += count;
  if (part.is_int32) {
    whole.i32.insert(whole.i32.end(), part.i32.begin(), part.i32.begin() + n);
  } else {
    whole.f32.insert(whole.f32.end(), part.f32.begin(), part.f32.begin() + n);
  }
}

}  // namespace

Result<std::map<std::string, HostTensor>> OrtModel::RunInFixedBatches(
    const std::map<std::string, HostTensor>& inputs, const std::vector<std::string>& outputs) {
  const std::vector<std::string> names = InputNames();
  if (names.empty() || inputs.empty()) return Run(inputs, outputs);
  SDONNX_ASSIGN_OR_RETURN(const std::vector<std::int64_t> shape, InputShape(names.front()));
  auto first = inputs.find(names.front());
  if (shape.empty() || shape[0] <= 0 || first == inputs.end() || first->second.shape.empty() ||
      first->second.shape[0] == shape[0]) {
    return Run(inputs, outputs);
  }
  const std::int64_t batch = shape[0];
  const std::int64_t rows = first->second.shape[0];
  std::map<std::string, HostTensor> joined;
  for (std::int64_t start = 0; start < rows; start += batch) {
    const std::int64_t count = std::min(batch, rows - start);
    std::map<std::string, HostTensor> part;
    for (const auto& [name, tensor] : inputs) {
      const bool batched = !tensor.shape.empty() && tensor.shape[0] == rows;
      part[name] = batched ? RowSlice(tensor, start, count, batch) : tensor;
    }
    SDONNX_ASSIGN_OR_RETURN(auto results, Run(part, outputs));
    for (const auto& [name, tensor] : results) {
      if (tensor.shape.empty() || tensor.shape[0] != batch) {
        return Status::Error(path_ + ": output '" + name + "' does not have the fixed batch " +
                             std::to_string(batch) + " as its first dimension");
      }
      AppendRows(joined[name], tensor, count);
    }
  }
  return joined;
}

}  // namespace sdonnx
