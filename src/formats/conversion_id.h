// The id that ties together the files of one `sdonnx convert` run.
//
// Every file of a run names the same 128-bit id, so that a folder
// whose files come from different runs (an interrupted --force overwrite,
// files copied over by hand) can be distinguished from a complete export:
//  - .onnx files carry it as the metadata entry sdonnx.conversion_id, and
//    the extras safetensors file in its header metadata;
//  - an external data file starts with a header of kDataHeaderBytes bytes
//    that contains a magic string, a format version and the id, zero-padded.
//    Tensor offsets start after it, still 4096-aligned so that ONNX Runtime
//    can memory-map them. The .onnx file also records the data file's exact
//    length (sdonnx.external_data_bytes).
// Files without an id (exports of older sdonnx versions or of other tools)
// are accepted as before.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace sdonnx {

inline constexpr char kConversionIdKey[] = "sdonnx.conversion_id";
inline constexpr char kExternalDataBytesKey[] = "sdonnx.external_data_bytes";
// The header at the start of an external data file. Its size is a multiple
// of 4096, so the first tensor stays page-aligned.
inline constexpr std::uint64_t kDataHeaderBytes = 4096;
inline constexpr std::uint32_t kDataHeaderVersion = 1;

// Returns the id of a run: the first 32 hex digits of the SHA-256 of the
// source file's SHA-256 and `settings`, a text that names every setting the
// output depends on. A repeated run therefore writes the same bytes, and runs
// that differ in their source or settings get different ids.
std::string ConversionId(const std::string& source_sha256, const std::string& settings);

// Returns the kDataHeaderBytes bytes of a data file header naming `id`.
std::string DataFileHeader(const std::string& id);

// Returns the id named by the header at the start of `bytes`, or nullopt
// when `bytes` does not start with the header's magic string (a data file
// of another tool or an older sdonnx). A header with the magic string but an
// unknown version or a malformed id is an error naming `path`.
Result<std::optional<std::string>> ReadDataFileHeader(std::span<const std::uint8_t> bytes,
                                                      const std::string& path);

// Checks that the data file at `data_path` belongs to the model at
// `model_path` with `metadata`: the same conversion id in its header and
// the length recorded in the metadata. `head` is the start of the data file
// (at least kDataHeaderBytes bytes where the file has them) and
// `data_bytes` its size. Models without
// sdonnx.conversion_id pass unless the data file has a header, which means
// it was written for another model.
Status CheckDataFileMatches(const std::string& model_path,
                            const std::map<std::string, std::string>& metadata,
                            const std::string& data_path, std::span<const std::uint8_t> head,
                            std::uint64_t data_bytes);

// Returns "FILE, FILE: conversion ID; FILE: no conversion id" for file
// names grouped by conversion id, where "" stands for files without one.
std::string DescribeConversions(const std::map<std::string, std::vector<std::string>>& files_by_id);

}  // namespace sdonnx
