#include "runtime/session_cache.h"

#include <onnxruntime_cxx_api.h>
#include <onnxruntime_session_options_config_keys.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <regex>
#include <span>
#include <sstream>
#include <utility>

#include "util/log.h"
#include "util/sha256.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

constexpr char kFormatLine[] = "sdonnx session cache 1";
constexpr char kBuildingPrefix[] = ".building-";
constexpr char kLockName[] = "sdonnx.lock";
constexpr char kModelName[] = "model.onnx";
constexpr char kDataName[] = "model.onnx.data";
constexpr char kEntryName[] = "entry.txt";
// Initializers from this size up go to the entry's data file, so that
// loads map them instead of parsing them out of the model.
constexpr char kMinExternalBytes[] = "1024";
// entry.txt is a few lines and the key text: well under this.
constexpr std::uint64_t kMaxEntryTextBytes = 1u << 20;

// "SIZE MTIME_NS" of `path`, or an error naming it.
Result<std::string> FileStamp(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::Error(path.string() +
                         ": cannot read its size and time: " + std::strerror(errno));
  }
  const long long ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL +
                       static_cast<long long>(st.st_mtim.tv_nsec);
  return std::to_string(static_cast<unsigned long long>(st.st_size)) + " " + std::to_string(ns);
}

// The first "model name" and "flags" lines of /proc/cpuinfo; MLAS picks its
// kernels and prepacked layouts by these features.
std::string CpuIdentity() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::string name;
  std::string flags;
  while (std::getline(cpuinfo, line) && (name.empty() || flags.empty())) {
    if (name.empty() && line.rfind("model name", 0) == 0) name = line;
    if (flags.empty() && (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0)) {
      flags = line;
    }
  }
  return "cpu " + (name.empty() ? std::string("unknown") : name) + "\ncpu " +
         (flags.empty() ? std::string("flags unknown") : flags) + "\n";
}

// The byte count of `path` when it is a regular file and not a symlink.
std::optional<std::uint64_t> PlainFileBytes(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(path, ec);
  if (ec || !fs::is_regular_file(status)) return std::nullopt;
  const std::uint64_t bytes = fs::file_size(path, ec);
  if (ec) return std::nullopt;
  return bytes;
}

// The first line where the recorded key and this run's key differ.
std::string KeyDifference(const std::string& recorded, const std::string& current) {
  auto lines = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };
  const std::vector<std::string> old_lines = lines(recorded);
  const std::vector<std::string> new_lines = lines(current);
  std::size_t i = 0;
  while (i < old_lines.size() && i < new_lines.size() && old_lines[i] == new_lines[i]) ++i;
  const std::string old_line = i < old_lines.size() ? "'" + old_lines[i] + "'" : "nothing";
  const std::string new_line = i < new_lines.size() ? "'" + new_lines[i] + "'" : "nothing";
  return "line " + std::to_string(i + 4) + ": " + old_line + " where this run's key has " +
         new_line;
}

std::string EntryText(const std::string& key_text, std::uint64_t model_bytes,
                      std::uint64_t data_bytes) {
  return std::string(kFormatLine) + "\nmodel_bytes " + std::to_string(model_bytes) +
         "\ndata_bytes " + std::to_string(data_bytes) + "\n" + key_text;
}

// Removes an entry folder that failed SessionCacheEntryProblem, but only
// when it contains no file or folder besides the files an entry has.
Status RemoveDamagedEntry(const fs::path& entry) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(entry, ec);
  if (fs::is_symlink(status) || !fs::is_directory(status)) {
    return Status::Error(entry.string() + ": is " +
                         (fs::is_symlink(status) ? "a symlink" : "not a folder") +
                         " where the session cache keeps an entry folder; remove it or pass "
                         "another --cache-dir");
  }
  for (const fs::directory_entry& item : fs::directory_iterator(entry, ec)) {
    const std::string name = item.path().filename().string();
    std::error_code type_error;
    if (item.is_directory(type_error) && !item.is_symlink(type_error)) {
      return Status::Error(entry.string() + ": contains a folder '" + name +
                           "', which no session cache entry has; remove the folder or pass "
                           "another --cache-dir");
    }
    if (name != kModelName && name != kDataName && name != kEntryName) {
      return Status::Error(entry.string() + ": contains '" + name + "', which no session cache " +
                           "entry has; remove the folder or pass another --cache-dir");
    }
  }
  fs::remove_all(entry, ec);
  if (ec) {
    return Status::Error(entry.string() +
                         ": cannot remove the damaged cache entry: " + ec.message());
  }
  return Status::Ok();
}

// The key text of an entry folder, or nullopt when it has no readable
// entry.txt with the format line.
std::optional<std::string> EntryKeyText(const fs::path& entry) {
  const std::optional<std::uint64_t> bytes = PlainFileBytes(entry / kEntryName);
  if (!bytes || *bytes > kMaxEntryTextBytes) return std::nullopt;
  std::ifstream record(entry / kEntryName, std::ios::binary);
  std::string line;
  if (!std::getline(record, line) || line != kFormatLine) return std::nullopt;
  // Two byte-count lines precede the key text.
  if (!std::getline(record, line) || !std::getline(record, line)) return std::nullopt;
  std::stringstream rest;
  rest << record.rdbuf();
  return rest.str();
}

// Whether the file a key line stamped ("SIZE MTIME_NS") is gone or has
// changed. A file counts as gone only when its folder still has other
// files: an unmounted drive leaves its mount point empty or absent, and the
// file may come back.
bool StampIsStale(const fs::path& file, const std::string& recorded_stamp) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno != ENOENT) return false;
    std::error_code ec;
    const fs::path folder = file.parent_path();
    return fs::is_directory(folder, ec) && !fs::is_empty(folder, ec) && !ec;
  }
  const Result<std::string> stamp = FileStamp(file);
  return stamp.ok() && *stamp != recorded_stamp;
}

// Whether an entry's key names a model or data file that has changed or was
// removed since the entry was built. No run can use such an entry again:
// every key is made from the files as they are now. A key this build would
// not write (a path holding a line break, say) is never judged stale.
bool EntryIsStale(const std::string& key_text) {
  static const std::regex kOtherKeyLine(
      "(conversion|onnxruntime|cpu|optimization|widen_weights_at_load|config) .*");
  static const std::regex kStamp("[0-9]+ -?[0-9]+");
  std::istringstream lines(key_text);
  std::string line;
  if (!std::getline(lines, line) || line.rfind("model ", 0) != 0) return false;
  const fs::path model = line.substr(6);
  if (!model.is_absolute()) return false;
  std::vector<std::pair<fs::path, std::string>> stamps;  // file, "SIZE MTIME_NS"
  while (std::getline(lines, line)) {
    if (line.rfind("model file ", 0) == 0) {
      stamps.emplace_back(model, line.substr(11));
    } else if (line.rfind("data file ", 0) == 0) {
      // "data file LOCATION SIZE MTIME_NS", where the location may contain spaces.
      const std::string rest = line.substr(10);
      const std::size_t time_space = rest.rfind(' ');
      if (time_space == std::string::npos || time_space == 0) return false;
      const std::size_t size_space = rest.rfind(' ', time_space - 1);
      if (size_space == std::string::npos) return false;
      stamps.emplace_back(model.parent_path() / rest.substr(0, size_space),
                          rest.substr(size_space + 1));
    } else if (!std::regex_match(line, kOtherKeyLine)) {
      return false;
    }
  }
  if (stamps.empty() || stamps.front().first != model) return false;
  for (const auto& [file, stamp] : stamps) {
    if (!std::regex_match(stamp, kStamp)) return false;
  }
  for (const auto& [file, stamp] : stamps) {
    if (StampIsStale(file, stamp)) return true;
  }
  return false;
}

struct Pruned {
  std::size_t entries = 0;
  std::uint64_t bytes = 0;
};

// Removes the entries of `cache_dir` other than `keep` whose models changed
// or were removed. A folder counts as an entry only when SessionCacheEntry
// gives its name for the key it records. Entries that contain anything an
// entry does not have are kept, like damaged ones.
Pruned PruneStaleEntries(const fs::path& cache_dir, const fs::path& keep) {
  std::error_code ec;
  Pruned pruned;
  for (const fs::directory_entry& item : fs::directory_iterator(cache_dir, ec)) {
    std::error_code type_error;
    if (item.path() == keep || item.is_symlink(type_error) || !item.is_directory(type_error)) {
      continue;
    }
    const std::optional<std::string> key = EntryKeyText(item.path());
    if (!key || key->rfind("model ", 0) != 0) continue;
    const std::string model = key->substr(6, key->find('\n') - 6);
    if (SessionCacheEntry(cache_dir, model, *key) != item.path() || !EntryIsStale(*key)) continue;
    const std::uint64_t bytes = PlainFileBytes(item.path() / kModelName).value_or(0) +
                                PlainFileBytes(item.path() / kDataName).value_or(0);
    if (!RemoveDamagedEntry(item.path()).ok()) continue;
    LogInfo(item.path().string() + ": removed; its model changed or was removed");
    ++pruned.entries;
    pruned.bytes += bytes;
  }
  return pruned;
}

}  // namespace

Result<std::string> SessionCacheKey(const std::string& model_path,
                                    const std::map<std::string, std::string>& metadata,
                                    const std::vector<std::string>& data_files,
                                    const SessionOptions& options) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(fs::absolute(model_path), ec);
  std::string text = "model " + (ec ? model_path : canonical.string()) + "\n";
  SDONNX_ASSIGN_OR_RETURN(const std::string model_stamp, FileStamp(model_path));
  text += "model file " + model_stamp + "\n";
  for (const std::string& location : data_files) {
    SDONNX_ASSIGN_OR_RETURN(const std::string stamp,
                            FileStamp(fs::path(model_path).parent_path() / location));
    text += "data file " + location + " " + stamp + "\n";
  }
  const auto id = metadata.find("sdonnx.conversion_id");
  text += "conversion " + (id == metadata.end() ? std::string("none") : id->second) + "\n";
  text += "onnxruntime " + std::string(Ort::GetVersionString()) + "\n";
  text += CpuIdentity();
  text += "optimization all, prepacked\n";
  text +=
      std::string("widen_weights_at_load ") + (options.widen_weights_at_load ? "1" : "0") + "\n";
  for (const auto& [key, value] : options.config_entries) {
    text += "config " + key + "=" + value + "\n";
  }
  return text;
}

bool IsSessionCacheEntry(const fs::path& folder) {
  if (!PlainFileBytes(folder / kEntryName)) return false;
  std::ifstream record(folder / kEntryName, std::ios::binary);
  std::string first;
  return std::getline(record, first) && first == kFormatLine;
}

fs::path SessionCacheEntry(const fs::path& cache_dir, const std::string& model_path,
                           const std::string& key_text) {
  const std::string digest = Sha256Hex(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(key_text.data()), key_text.size()));
  return cache_dir / (fs::path(model_path).stem().string() + "-" + digest.substr(0, 16));
}

std::string SessionCacheEntryProblem(const fs::path& entry, const std::string& key_text) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(entry, ec);
  if (ec || !fs::exists(status)) return "it does not exist";
  if (fs::is_symlink(status)) return "it is a symlink";
  if (!fs::is_directory(status)) return "it is not a folder";

  const std::optional<std::uint64_t> record_bytes = PlainFileBytes(entry / kEntryName);
  if (!record_bytes) return std::string(kEntryName) + " is missing or not a regular file";
  if (*record_bytes > kMaxEntryTextBytes) {
    return std::string(kEntryName) + " has " + std::to_string(*record_bytes) +
           " bytes, more than the " + std::to_string(kMaxEntryTextBytes) + " an entry writes";
  }
  std::ifstream record(entry / kEntryName, std::ios::binary);
  std::stringstream contents;
  contents << record.rdbuf();

  const std::optional<std::uint64_t> model_bytes = PlainFileBytes(entry / kModelName);
  const std::optional<std::uint64_t> data_bytes = PlainFileBytes(entry / kDataName);
  if (!model_bytes) return std::string(kModelName) + " is missing or not a regular file";
  if (!data_bytes) return std::string(kDataName) + " is missing or not a regular file";

  // The record is the format line, two byte counts, then the key text.
  std::string format;
  std::string model_count;
  std::string data_count;
  std::getline(contents, format);
  std::getline(contents, model_count);
  std::getline(contents, data_count);
  const std::string rest = contents.str().substr(
      std::min<std::size_t>(contents.str().size(), static_cast<std::size_t>(contents.tellg())));
  if (!contents || format != kFormatLine) {
    return std::string(kEntryName) + " does not start with '" + kFormatLine + "'";
  }
  if (rest != key_text)
    return std::string(kEntryName) + " records another key (" + KeyDifference(rest, key_text) + ")";

  auto count_problem = [](const std::string& line, const std::string& label,
                          const std::string& name, std::uint64_t bytes) -> std::string {
    if (line == label + " " + std::to_string(bytes)) return "";
    return name + " has " + std::to_string(bytes) + " bytes, but " + kEntryName + " records '" +
           line + "'";
  };
  if (std::string problem = count_problem(model_count, "model_bytes", kModelName, *model_bytes);
      !problem.empty()) {
    return problem;
  }
  return count_problem(data_count, "data_bytes", kDataName, *data_bytes);
}

Result<std::unique_ptr<OrtModel>> OrtModel::LoadThroughCache(
    const std::string& path, const SessionOptions& options,
    const std::map<std::string, std::string>& metadata,
    const std::vector<std::string>& data_files) {
  const fs::path cache_dir = options.cache_dir;
  SDONNX_ASSIGN_OR_RETURN(const std::string key_text,
                          SessionCacheKey(path, metadata, data_files, options));
  const fs::path entry = SessionCacheEntry(cache_dir, path, key_text);
  const std::string name = fs::path(path).filename().string();
  bool built = false;
  Pruned pruned;
  std::string problem = SessionCacheEntryProblem(entry, key_text);
  if (!problem.empty()) {
    if (problem != "it does not exist") {
      SDONNX_RETURN_IF_ERROR(RemoveDamagedEntry(entry));
      LogWarning(entry.string() + ": the cached session of " + name + " cannot be used (" +
                 problem + "); building it again");
    }
    Result<CreatedFolders> created_folders = CreatedFolders::Create(cache_dir);
    if (!created_folders.ok()) {
      return Status::Error("--cache-dir: " + created_folders.status().message());
    }
    CreatedFolders created = std::move(created_folders).value();
    Result<LockedTemporaryFolder> building_folder =
        LockedTemporaryFolder::Create(cache_dir, kBuildingPrefix, kLockName);
    if (!building_folder.ok()) {
      return Status::Error(building_folder.status().message() + "; pass a writable --cache-dir");
    }
    LockedTemporaryFolder build = std::move(building_folder).value();
    LogInfo(name + ": optimizing for the session cache " + cache_dir.string() +
            " (once per model; later loads map the result)");
    const auto start = std::chrono::steady_clock::now();
    auto build_failed = [&](const std::string& why) {
      return Status::Error("building the session cache entry of " + name + " in " +
                           cache_dir.string() + " failed (is the disk full?): " + why +
                           "; free space there, pass another --cache-dir, or run without it");
    };
    SessionOptions build_options = options;
    build_options.cache_dir.clear();
    build_options.optimization = GraphOptimization::kAll;
    build_options.prepack_weights = true;
    build_options.shared_arena = false;
    build_options.optimized_model_path = (build.path() / kModelName).string();
    build_options.config_entries[kOrtSessionOptionsOptimizedModelExternalInitializersFileName] =
        kDataName;
    build_options
        .config_entries[kOrtSessionOptionsOptimizedModelExternalInitializersMinSizeInBytes] =
        kMinExternalBytes;
    build_options.config_entries[kOrtSessionOptionsSavePrePackedConstantInitializers] = "1";
    {
      // The building session keeps a copy of every weight in memory, so it
      // is dropped before the entry is loaded.
      Result<std::unique_ptr<OrtModel>> building = CreateSession(path, build_options);
      if (!building.ok()) return build_failed(building.status().message());
    }
    const std::optional<std::uint64_t> model_bytes = PlainFileBytes(build.path() / kModelName);
    if (!model_bytes) {
      return Status::Error(path + ": ONNX Runtime wrote no optimized model into " +
                           build.path().string() + "; its version may not save optimized models");
    }
    if (!PlainFileBytes(build.path() / kDataName)) {
      // A model without initializers of kMinExternalBytes gets no data file.
      std::ofstream(build.path() / kDataName, std::ios::binary);
    }
    const std::uint64_t data_bytes = PlainFileBytes(build.path() / kDataName).value_or(0);
    {
      std::ofstream record(build.path() / kEntryName, std::ios::binary);
      record << EntryText(key_text, *model_bytes, data_bytes);
      if (!record.flush()) {
        return build_failed(std::string("writing ") + kEntryName + ": " + std::strerror(errno));
      }
    }
    SDONNX_ASSIGN_OR_RETURN(const bool placed, build.RenameTo(entry));
    built = placed;
    created.Keep();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char took[32];
    std::snprintf(took, sizeof took, "%.1f s", seconds);
    LogInfo(name + ": " + (placed ? "cached as " : "another run cached it first as ") +
            entry.string() + " (" + took + ")");
    problem = SessionCacheEntryProblem(entry, key_text);
    if (!problem.empty()) {
      return Status::Error(entry.string() + ": the new cache entry cannot be used (" + problem +
                           "); remove the folder and run again");
    }
    pruned = PruneStaleEntries(cache_dir, entry);
  }
  SessionOptions load_options = options;
  load_options.cache_dir.clear();
  load_options.optimization = GraphOptimization::kNone;
  load_options.prepack_weights = true;
  Result<std::unique_ptr<OrtModel>> model =
      CreateSession((entry / kModelName).string(), load_options);
  if (!model.ok()) {
    return Status::Error(model.status().message() + " (the cached session of " + path +
                         "; remove " + entry.string() + " to build it again)");
  }
  (*model)->cached_path_ = (*model)->path_;
  (*model)->path_ = path;
  (*model)->cache_built_ = built;
  (*model)->cache_entries_removed_ = pruned.entries;
  (*model)->cache_bytes_freed_ = pruned.bytes;
  (*model)->original_metadata_ = metadata;
  return model;
}

}  // namespace sdonnx
