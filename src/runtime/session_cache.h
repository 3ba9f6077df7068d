// A folder of ONNX Runtime sessions optimized once and memory-mapped later.
//
// On the CPU, ONNX Runtime's highest optimization level (NCHWc convolution
// layouts, fused nodes) and weight prepacking make steps 10-15% faster.
// But they copy every weight at each load: the full-size SD 1.5 UNet then
// loads in 10-37 s with 3.5 GB of copies. ONNX Runtime can save the
// optimized graph with its reordered and prepacked weights as external
// data. A later session loads that file without optimizing again and maps
// its weights from disk like any other data file.
//
// Layout of a cache folder:
//  1. One entry folder per model and setting, named `STEM-DIGEST`: the
//     model's file name without `.onnx` and the first 16 hex digits of the
//     SHA-256 of its key text.
//  2. The key text names the model's canonical path, its sdonnx conversion
//     id, and the size and modification time of the model and of each
//     external data file. It also names the ONNX Runtime version, the
//     session settings that change the optimized graph, and the CPU's model
//     name and feature flags, on which prepacked layouts depend. Any change
//     gives a new key.
//  3. An entry contains `model.onnx` (the optimized graph), `model.onnx.data`
//     (its weights, as ONNX Runtime wrote them) and `entry.txt`: a format
//     line, the full key text and the byte counts of both files.
//  4. An entry is built in a temporary folder `.building-XXXXXX` of the cache
//     folder, locked while its run lives, and renamed to its final name once
//     complete. A folder with the final name is therefore always complete;
//     one whose files no longer match entry.txt is rebuilt.
//  5. After a build, entries whose key stamps a model or data file that has
//     since changed, or was deleted from a folder that still has other
//     files, are removed because no key made now can match them.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "runtime/ort_session.h"
#include "util/status.h"

namespace sdonnx {

// The text that identifies the optimized session of `model_path` under
// `options`. `metadata` is the model's metadata_props and
// `data_files` the external data files it references (relative to its folder).
Result<std::string> SessionCacheKey(const std::string& model_path,
                                    const std::map<std::string, std::string>& metadata,
                                    const std::vector<std::string>& data_files,
                                    const SessionOptions& options);

// Whether `folder` is an entry of a session cache: its entry.txt starts with
// the format line. verify skips such folders inside an export folder.
bool IsSessionCacheEntry(const std::filesystem::path& folder);

// The entry folder of `key_text` for `model_path` inside `cache_dir`.
std::filesystem::path SessionCacheEntry(const std::filesystem::path& cache_dir,
                                        const std::string& model_path, const std::string& key_text);

// Why the entry folder `entry` cannot be used for `key_text`, or "" when it
// is complete: its files exist, are regular files (no symlinks) and have the
// byte counts its entry.txt records for that key.
std::string SessionCacheEntryProblem(const std::filesystem::path& entry,
                                     const std::string& key_text);

}  // namespace sdonnx
