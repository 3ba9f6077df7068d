// A restricted unpickler for the protocol 2 pickles that torch.save writes.
// It also accepts the protocol 4 opcodes FRAME, SHORT_BINUNICODE, MEMOIZE and
// STACK_GLOBAL.
//
// Safety model: nothing from the file is ever executed. GLOBAL and
// STACK_GLOBAL resolve only the names in the allow-list below, and any other
// global is rejected when the opcode is read, before anything could call it.
// REDUCE on an allowed global builds a plain C++ value (an empty dict, a
// tensor description); no Python object is ever constructed. Limits on the
// memo, the stack and container nesting keep a hostile pickle from exhausting
// memory or recursion, and every limit that is hit returns an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "util/status.h"

namespace sdonnx::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

// Arguments of torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
// stride, requires_grad, backward_hooks), the call that every pickled tensor
// is. requires_grad and backward_hooks are not kept.
struct TensorArgs {
  ValuePtr storage;  // A kPersistentId value.
  std::int64_t storage_offset = 0;  // In elements.
  std::vector<std::int64_t> size;
  std::vector<std::int64_t> stride;  // In elements.
};

struct Value {
  enum class Kind {
    kNone,
    kBool,
    kInt,     // Fits in int64: `integer`.
    kBigInt,  // LONG1 wider than int64: `text` contains its little-endian two's-complement bytes.
    kFloat,
    kString,  // UTF-8 in `text`.
    kBytes,   // BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES: raw bytes in `text`.
    kTuple,
    kList,
    kDict,          // Also collections.OrderedDict.
    kGlobal,        // An allow-listed global: `text` is the module, `name` the name.
    kPersistentId,  // BINPERSID: `items[0]` is the persistent id object.
    kTensor,        // The result of _rebuild_tensor_v2 or _rebuild_parameter: `tensor`.
  };

  Kind kind = Kind::kNone;
  bool boolean = false;
  std::int64_t integer = 0;
  double floating = 0;
  std::string text;
  std::string name;
  std::vector<ValuePtr> items;                          // Tuple and list elements.
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // Dict entries in insertion order.
  std::unordered_map<std::string, std::size_t> entry_index;  // Dict key -> index in `entries`.
  TensorArgs tensor;

  // Container nesting depth: 0 for scalars, 1 + the deepest child otherwise.
  std::size_t depth = 0;
  // Set once the value is inside a container. Such a list or dict may not be
  // modified any more, which rules out cycles and keeps `depth` exact.
  bool contained = false;

  bool IsContainer() const {
    return kind == Kind::kTuple || kind == Kind::kList || kind == Kind::kDict;
  }
  // The dict entry for string key `key`, or nullptr.
  const Value* Find(std::string_view key) const;
};

// "int", "dict", ... as error messages name a kind.
std::string_view KindName(Value::Kind kind);

struct UnpickleLimits {
  std::size_t max_memo_entries = 1u << 20;
  std::size_t max_stack_size = 1u << 20;  // Values on the stack, all marks together.
  std::size_t max_marks = 1024;           // Open MARKs at one time.
  std::size_t max_nesting = 100;          // Container depth, see Value::depth.
};

struct UnpickleResult {
  ValuePtr value;
  std::size_t end = 0;  // Offset in the input just after the STOP opcode.
  // Every persistent id the pickle loaded, in order of appearance.
  std::vector<ValuePtr> persistent_ids;
};

// True for the globals that Unpickle resolves, such as
// "collections", "OrderedDict" or "torch", "FloatStorage".
bool IsAllowedGlobal(std::string_view module, std::string_view name);

// Unpickles one pickle from the start of `bytes`, stopping at its STOP
// opcode. Errors begin with `where` (a file name, with the record for zip
// checkpoints) and give byte offsets as `base_offset` + the offset in
// `bytes`, so that callers can report offsets in the whole file.
Result<UnpickleResult> Unpickle(std::span<const std::uint8_t> bytes, const std::string& where,
                                std::uint64_t base_offset = 0,
                                const UnpickleLimits& limits = UnpickleLimits());

}  // namespace sdonnx::pickle
