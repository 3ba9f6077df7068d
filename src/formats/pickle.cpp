#include "formats/pickle.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <optional>

namespace sdonnx::pickle {
namespace {

// Opcode bytes of the pickle format.
enum Opcode : std::uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinFloat = 'G',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinString = 'T',
  kShortBinString = 'U',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kProto = 0x80,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kShortBinUnicode = 0x8c,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

constexpr int kHighestProtocol = 5;

struct AllowedGlobal {
  std::string_view module;
  std::string_view name;
};

constexpr std::array kAllowedGlobals = {
    AllowedGlobal{"collections", "OrderedDict"},
    AllowedGlobal{"torch._utils", "_rebuild_tensor_v2"},
    AllowedGlobal{"torch._utils", "_rebuild_parameter"},
    AllowedGlobal{"torch", "FloatStorage"},
    AllowedGlobal{"torch", "HalfStorage"},
    AllowedGlobal{"torch", "BFloat16Storage"},
    AllowedGlobal{"torch", "DoubleStorage"},
    AllowedGlobal{"torch", "LongStorage"},
    AllowedGlobal{"torch", "IntStorage"},
    AllowedGlobal{"torch", "ShortStorage"},
    AllowedGlobal{"torch", "CharStorage"},
    AllowedGlobal{"torch", "ByteStorage"},
    AllowedGlobal{"torch", "BoolStorage"},
};

ValuePtr MakeValue(Value::Kind kind) {
  auto value = std::make_shared<Value>();
  value->kind = kind;
  return value;
}

// The dict key identity of a hashable scalar, or nullopt for other kinds.
// Python treats True and 1 as the same key, and so does this.
std::optional<std::string> DictKey(const Value& key) {
  switch (key.kind) {
    case Value::Kind::kNone:
      return std::string("n");
    case Value::Kind::kBool:
      return "i" + std::to_string(key.boolean ? 1 : 0);
    case Value::Kind::kInt:
      return "i" + std::to_string(key.integer);
    case Value::Kind::kString:
      return "s" + key.text;
    case Value::Kind::kBytes:
      return "b" + key.text;
    default:
      return std::nullopt;
  }
}

class Unpickler {
 public:
  Unpickler(std::span<const std::uint8_t> bytes, const std::string& where,
            std::uint64_t base_offset, const UnpickleLimits& limits)
      : bytes_(bytes), where_(where), base_offset_(base_offset), limits_(limits) {}

  Result<UnpickleResult> Run();

 private:
  Status Step(std::uint8_t opcode);
  std::optional<Status> StepControl(std::uint8_t opcode);
  std::optional<Status> StepConstant(std::uint8_t opcode);
  std::optional<Status> StepContainer(std::uint8_t opcode);
  std::optional<Status> StepMemo(std::uint8_t opcode);
  std::optional<Status> StepObject(std::uint8_t opcode);

  // An error about the opcode that starts at op_start_.
  Status Fail(const std::string& message) const {
    return Status::Error(where_ + ": pickle at byte " + std::to_string(base_offset_ + op_start_) +
                         ": " + message);
  }

  Result<std::span<const std::uint8_t>> Take(std::uint64_t count);
  Result<std::uint64_t> TakeUnsigned(int width);
  Result<std::string> TakeLine();

  Status Push(ValuePtr value);
  Result<ValuePtr> Pop();
  Result<ValuePtr> Top();
  // Removes and returns the values above the innermost MARK, and the MARK.
  Result<std::vector<ValuePtr>> PopToMark();

  Result<ValuePtr> MakeContainer(Value::Kind kind, std::vector<ValuePtr> items);
  Status CheckModifiable(const Value& container, const char* opcode_name);
  Status Adopt(Value& container, Value& child);
  Status AppendTo(Value& list, ValuePtr item);
  Status SetItem(Value& dict, ValuePtr key, ValuePtr value);

  Status PushGlobal(const std::string& module, const std::string& name);
  Status Reduce();
  Result<ValuePtr> RebuildTensor(const Value& args);
  Status MemoPut(std::uint64_t index);
  Status MemoGet(std::uint64_t index);

  std::span<const std::uint8_t> bytes_;
  const std::string& where_;
  std::uint64_t base_offset_;
  const UnpickleLimits& limits_;

  std::size_t pos_ = 0;
  std::size_t op_start_ = 0;
  bool stopped_ = false;
  std::vector<ValuePtr> stack_;
  std::vector<std::size_t> marks_;  // Stack sizes at each open MARK.
  std::vector<ValuePtr> memo_;
  std::size_t memo_count_ = 0;
  ValuePtr result_;
  std::vector<ValuePtr> persistent_ids_;
};

Result<std::span<const std::uint8_t>> Unpickler::Take(std::uint64_t count) {
  if (count > bytes_.size() - pos_) {
    return Fail("opcode 0x" + [&] {
      char hex[3];
      std::snprintf(hex, sizeof(hex), "%02x", bytes_[op_start_]);
      return std::string(hex);
    }() + " needs " + std::to_string(count) + " more bytes but the pickle ends at byte " +
                std::to_string(base_offset_ + bytes_.size()) + "; the file is truncated");
  }
  auto span = bytes_.subspan(pos_, count);
  pos_ += count;
  return span;
}

Result<std::uint64_t> Unpickler::TakeUnsigned(int width) {
  SDONNX_ASSIGN_OR_RETURN(auto raw, Take(width));
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | raw[i];
  return value;
}

Result<std::string> Unpickler::TakeLine() {
  const auto begin = bytes_.begin() + pos_;
  const auto newline = std::find(begin, bytes_.end(), std::uint8_t{'\n'});
  if (newline == bytes_.end()) {
    return Fail("GLOBAL argument has no terminating newline; the file is truncated");
  }
  std::string line(begin, newline);
  pos_ += line.size() + 1;
  return line;
}

Status Unpickler::Push(ValuePtr value) {
  if (stack_.size() >= limits_.max_stack_size) {
    return Fail("the stack exceeds the limit of " + std::to_string(limits_.max_stack_size) +
                " values");
  }
  stack_.push_back(std::move(value));
  return Status::Ok();
}

Result<ValuePtr> Unpickler::Pop() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) return Fail("the opcode needs a value but the stack is empty");
  ValuePtr value = std::move(stack_.back());
  stack_.pop_back();
  return value;
}

Result<ValuePtr> Unpickler::Top() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) return Fail("the opcode needs a value but the stack is empty");
  return stack_.back();
}

Result<std::vector<ValuePtr>> Unpickler::PopToMark() {
  if (marks_.empty()) return Fail("the opcode needs a MARK but none is open");
  const std::size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + mark),
                              std::make_move_iterator(stack_.end()));
  stack_.resize(mark);
  return items;
}

Status Unpickler::Adopt(Value& container, Value& child) {
  const std::size_t depth = child.depth + 1;
  if (depth > limits_.max_nesting) {
    return Fail("containers nest deeper than the limit of " +
                std::to_string(limits_.max_nesting) + " levels");
  }
  container.depth = std::max(container.depth, depth);
  child.contained = true;
  return Status::Ok();
}

Result<ValuePtr> Unpickler::MakeContainer(Value::Kind kind, std::vector<ValuePtr> items) {
  ValuePtr container = MakeValue(kind);
  container->depth = 1;
  for (const ValuePtr& item : items) SDONNX_RETURN_IF_ERROR(Adopt(*container, *item));
  container->items = std::move(items);
  return container;
}

Status Unpickler::CheckModifiable(const Value& container, const char* opcode_name) {
  if (container.contained) {
    return Fail(std::string(opcode_name) + " modifies a " +
                std::string(KindName(container.kind)) +
                " that is already inside another container; self-referencing structures "
                "are not supported");
  }
  return Status::Ok();
}

Status Unpickler::AppendTo(Value& list, ValuePtr item) {
  if (list.kind != Value::Kind::kList) {
    return Fail("APPEND target is a " + std::string(KindName(list.kind)) + ", not a list");
  }
  SDONNX_RETURN_IF_ERROR(CheckModifiable(list, "APPEND"));
  if (item.get() == &list) return Fail("APPEND puts a list inside itself");
  SDONNX_RETURN_IF_ERROR(Adopt(list, *item));
  list.items.push_back(std::move(item));
  return Status::Ok();
}

Status Unpickler::SetItem(Value& dict, ValuePtr key, ValuePtr value) {
  if (dict.kind != Value::Kind::kDict) {
    return Fail("SETITEM target is a " + std::string(KindName(dict.kind)) + ", not a dict");
  }
  SDONNX_RETURN_IF_ERROR(CheckModifiable(dict, "SETITEM"));
  if (value.get() == &dict) return Fail("SETITEM puts a dict inside itself");
  std::optional<std::string> identity = DictKey(*key);
  if (!identity) {
    return Fail("dict key of kind " + std::string(KindName(key->kind)) + " is not supported");
  }
  SDONNX_RETURN_IF_ERROR(Adopt(dict, *key));
  SDONNX_RETURN_IF_ERROR(Adopt(dict, *value));
  auto [it, inserted] = dict.entry_index.emplace(*identity, dict.entries.size());
  if (inserted) {
    dict.entries.emplace_back(std::move(key), std::move(value));
  } else {
    // Like Python, a repeated key keeps its first position and takes the new value.
    dict.entries[it->second].second = std::move(value);
  }
  return Status::Ok();
}

Status Unpickler::PushGlobal(const std::string& module, const std::string& name) {
  if (!IsAllowedGlobal(module, name)) {
    return Status::Error(where_ + ": pickle at byte " + std::to_string(base_offset_ + op_start_) +
                         " references " + module + "." + name +
                         ", which is not allowed; only tensors and plain containers are loaded");
  }
  ValuePtr global = MakeValue(Value::Kind::kGlobal);
  global->text = module;
  global->name = name;
  return Push(std::move(global));
}

Result<ValuePtr> Unpickler::RebuildTensor(const Value& args) {
  const auto& a = args.items;
  if (a.size() < 4) {
    return Fail("_rebuild_tensor_v2 needs at least 4 arguments but got " +
                std::to_string(a.size()));
  }
  if (a[0]->kind != Value::Kind::kPersistentId) {
    return Fail("_rebuild_tensor_v2 storage is a " + std::string(KindName(a[0]->kind)) +
                ", not a persistent id");
  }
  if (a[1]->kind != Value::Kind::kInt) {
    return Fail("_rebuild_tensor_v2 storage_offset is a " + std::string(KindName(a[1]->kind)) +
                ", not an int");
  }
  ValuePtr tensor = MakeValue(Value::Kind::kTensor);
  tensor->tensor.storage = a[0];
  tensor->tensor.storage_offset = a[1]->integer;
  for (int index : {2, 3}) {
    const char* field = index == 2 ? "size" : "stride";
    if (a[index]->kind != Value::Kind::kTuple) {
      return Fail(std::string("_rebuild_tensor_v2 ") + field + " is a " +
                  std::string(KindName(a[index]->kind)) + ", not a tuple");
    }
    auto& out = index == 2 ? tensor->tensor.size : tensor->tensor.stride;
    for (const ValuePtr& dim : a[index]->items) {
      if (dim->kind != Value::Kind::kInt) {
        return Fail(std::string("_rebuild_tensor_v2 ") + field + " holds a " +
                    std::string(KindName(dim->kind)) + ", not an int");
      }
      out.push_back(dim->integer);
    }
  }
  if (tensor->tensor.size.size() != tensor->tensor.stride.size()) {
    return Fail("_rebuild_tensor_v2 size has " + std::to_string(tensor->tensor.size.size()) +
                " dimensions but stride has " + std::to_string(tensor->tensor.stride.size()));
  }
  tensor->depth = 1;
  return tensor;
}

Status Unpickler::Reduce() {
  SDONNX_ASSIGN_OR_RETURN(ValuePtr args, Pop());
  SDONNX_ASSIGN_OR_RETURN(ValuePtr callable, Pop());
  if (callable->kind != Value::Kind::kGlobal) {
    return Fail("REDUCE calls a " + std::string(KindName(callable->kind)) + ", not a global");
  }
  if (args->kind != Value::Kind::kTuple) {
    return Fail("REDUCE arguments are a " + std::string(KindName(args->kind)) + ", not a tuple");
  }
  // Safety: REDUCE never runs code from the file. It only builds a C++ value for an allowed global.
  const std::string qualified = callable->text + "." + callable->name;
  if (qualified == "collections.OrderedDict") {
    if (!args->items.empty()) return Fail("OrderedDict is called with arguments; expected none");
    ValuePtr dict = MakeValue(Value::Kind::kDict);
    dict->depth = 1;
    return Push(std::move(dict));
  }
  if (qualified == "torch._utils._rebuild_tensor_v2") {
    SDONNX_ASSIGN_OR_RETURN(ValuePtr tensor, RebuildTensor(*args));
    return Push(std::move(tensor));
  }
  if (qualified == "torch._utils._rebuild_parameter") {
    if (args->items.empty() || args->items[0]->kind != Value::Kind::kTensor) {
      return Fail("_rebuild_parameter needs a tensor as its first argument");
    }
    return Push(args->items[0]);
  }
  return Fail("REDUCE calls " + qualified + ", which is allowed only as a value, not as a call");
}

Status Unpickler::MemoPut(std::uint64_t index) {
  if (index >= limits_.max_memo_entries) {
    return Fail("memo index " + std::to_string(index) + " exceeds the limit of " +
                std::to_string(limits_.max_memo_entries) + " entries");
  }
  SDONNX_ASSIGN_OR_RETURN(ValuePtr top, Top());
  if (index >= memo_.size()) memo_.resize(index + 1);
  if (!memo_[index]) ++memo_count_;
  memo_[index] = std::move(top);
  return Status::Ok();
}

Status Unpickler::MemoGet(std::uint64_t index) {
  if (index >= memo_.size() || !memo_[index]) {
    return Fail("memo index " + std::to_string(index) + " was never stored");
  }
  return Push(memo_[index]);
}

// Protocol, framing, STOP and the stack and mark opcodes.
std::optional<Status> Unpickler::StepControl(std::uint8_t opcode) {
  switch (opcode) {
    case kProto: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t protocol, TakeUnsigned(1));
      if (protocol > kHighestProtocol) {
        return Fail("pickle protocol " + std::to_string(protocol) + " is not supported");
      }
      return Status::Ok();
    }
    case kFrame:  // A protocol 4 framing hint; the frame's bytes follow as ordinary opcodes.
      return TakeUnsigned(8).status();
    case kStop: {
      SDONNX_ASSIGN_OR_RETURN(result_, Pop());
      stopped_ = true;
      return Status::Ok();
    }
    case kMark:
      if (marks_.size() >= limits_.max_marks) {
        return Fail("more than " + std::to_string(limits_.max_marks) + " MARKs are open");
      }
      marks_.push_back(stack_.size());
      return Status::Ok();
    case kPop:
      return Pop().status();
    case kPopMark:
      return PopToMark().status();
    case kDup: {
      SDONNX_ASSIGN_OR_RETURN(ValuePtr top, Top());
      return Push(std::move(top));
    }
    default:
      return std::nullopt;
  }
}

// Opcodes that push a constant read from the stream.
std::optional<Status> Unpickler::StepConstant(std::uint8_t opcode) {
  switch (opcode) {
    case kNone:
      return Push(MakeValue(Value::Kind::kNone));
    case kNewTrue:
    case kNewFalse: {
      ValuePtr value = MakeValue(Value::Kind::kBool);
      value->boolean = opcode == kNewTrue;
      return Push(std::move(value));
    }
    case kBinInt:
    case kBinInt1:
    case kBinInt2: {
      int width = 2;
      if (opcode == kBinInt) width = 4;
      if (opcode == kBinInt1) width = 1;
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t raw, TakeUnsigned(width));
      ValuePtr value = MakeValue(Value::Kind::kInt);
      value->integer = opcode == kBinInt ? static_cast<std::int32_t>(raw)
                                         : static_cast<std::int64_t>(raw);
      return Push(std::move(value));
    }
    case kLong1: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t length, TakeUnsigned(1));
      SDONNX_ASSIGN_OR_RETURN(auto raw, Take(length));
      ValuePtr value;
      if (length <= 8) {
        value = MakeValue(Value::Kind::kInt);
        std::uint64_t bits = 0;
        for (std::size_t i = length; i-- > 0;) bits = (bits << 8) | raw[i];
        // Sign-extend the two's-complement value from `length` bytes.
        if (length > 0 && length < 8 && (raw[length - 1] & 0x80)) bits |= ~0ull << (8 * length);
        value->integer = static_cast<std::int64_t>(bits);
      } else {
        value = MakeValue(Value::Kind::kBigInt);
        value->text.assign(raw.begin(), raw.end());
      }
      return Push(std::move(value));
    }
    case kBinFloat: {
      SDONNX_ASSIGN_OR_RETURN(auto raw, Take(8));
      std::uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | raw[i];  // Big-endian.
      ValuePtr value = MakeValue(Value::Kind::kFloat);
      std::memcpy(&value->floating, &bits, sizeof(bits));
      return Push(std::move(value));
    }
    case kBinUnicode:
    case kShortBinUnicode:
    case kBinString:
    case kShortBinString:
    case kBinBytes:
    case kShortBinBytes: {
      const bool short_form =
          opcode == kShortBinUnicode || opcode == kShortBinString || opcode == kShortBinBytes;
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t length, TakeUnsigned(short_form ? 1 : 4));
      if (opcode == kBinString && (length & 0x80000000u)) {
        return Fail("BINSTRING has a negative length");
      }
      SDONNX_ASSIGN_OR_RETURN(auto raw, Take(length));
      // NOTE: string bytes are kept as they are, so invalid UTF-8 is not rejected.
      const bool unicode = opcode == kBinUnicode || opcode == kShortBinUnicode;
      ValuePtr value = MakeValue(unicode ? Value::Kind::kString : Value::Kind::kBytes);
      value->text.assign(raw.begin(), raw.end());
      return Push(std::move(value));
    }
    default:
      return std::nullopt;
  }
}

// Opcodes that build or fill tuples, lists and dicts.
std::optional<Status> Unpickler::StepContainer(std::uint8_t opcode) {
  switch (opcode) {
    case kEmptyTuple:
      return Push(MakeValue(Value::Kind::kTuple));
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      const std::size_t count = opcode - kTuple1 + 1;
      std::vector<ValuePtr> items(count);
      for (std::size_t i = count; i-- > 0;) {
        SDONNX_ASSIGN_OR_RETURN(items[i], Pop());
      }
      SDONNX_ASSIGN_OR_RETURN(ValuePtr tuple, MakeContainer(Value::Kind::kTuple, std::move(items)));
      return Push(std::move(tuple));
    }
    case kTuple:
    case kList: {
      SDONNX_ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      SDONNX_ASSIGN_OR_RETURN(
          ValuePtr container,
          MakeContainer(opcode == kTuple ? Value::Kind::kTuple : Value::Kind::kList,
                        std::move(items)));
      return Push(std::move(container));
    }
    case kEmptyList:
    case kEmptyDict: {
      ValuePtr container = MakeValue(opcode == kEmptyList ? Value::Kind::kList : Value::Kind::kDict);
      container->depth = 1;
      return Push(std::move(container));
    }
    case kDict:
    case kSetItems: {
      SDONNX_ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      if (items.size() % 2 != 0) {
        return Fail("dict items after MARK are " + std::to_string(items.size()) +
                    " values, which is not a whole number of key-value pairs");
      }
      ValuePtr dict;
      if (opcode == kDict) {
        dict = MakeValue(Value::Kind::kDict);
        dict->depth = 1;
        SDONNX_RETURN_IF_ERROR(Push(dict));
      } else {
        SDONNX_ASSIGN_OR_RETURN(dict, Top());
      }
      for (std::size_t i = 0; i < items.size(); i += 2) {
        SDONNX_RETURN_IF_ERROR(SetItem(*dict, std::move(items[i]), std::move(items[i + 1])));
      }
      return Status::Ok();
    }
    case kSetItem: {
      SDONNX_ASSIGN_OR_RETURN(ValuePtr value, Pop());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr key, Pop());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr dict, Top());
      return SetItem(*dict, std::move(key), std::move(value));
    }
    case kAppend: {
      SDONNX_ASSIGN_OR_RETURN(ValuePtr item, Pop());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr list, Top());
      return AppendTo(*list, std::move(item));
    }
    case kAppends: {
      SDONNX_ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr list, Top());
      for (ValuePtr& item : items) SDONNX_RETURN_IF_ERROR(AppendTo(*list, std::move(item)));
      return Status::Ok();
    }
    default:
      return std::nullopt;
  }
}

// Opcodes that store into or load from the memo.
std::optional<Status> Unpickler::StepMemo(std::uint8_t opcode) {
  switch (opcode) {
    case kBinPut: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t index, TakeUnsigned(1));
      return MemoPut(index);
    }
    case kLongBinPut: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t index, TakeUnsigned(4));
      return MemoPut(index);
    }
    case kMemoize:
      return MemoPut(memo_count_);
    case kBinGet: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t index, TakeUnsigned(1));
      return MemoGet(index);
    }
    case kLongBinGet: {
      SDONNX_ASSIGN_OR_RETURN(std::uint64_t index, TakeUnsigned(4));
      return MemoGet(index);
    }
    default:
      return std::nullopt;
  }
}

// Globals, persistent ids, REDUCE and BUILD.
std::optional<Status> Unpickler::StepObject(std::uint8_t opcode) {
  switch (opcode) {
    case kGlobal: {
      SDONNX_ASSIGN_OR_RETURN(std::string module, TakeLine());
      SDONNX_ASSIGN_OR_RETURN(std::string name, TakeLine());
      return PushGlobal(module, name);
    }
    case kStackGlobal: {
      SDONNX_ASSIGN_OR_RETURN(ValuePtr name, Pop());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr module, Pop());
      if (module->kind != Value::Kind::kString || name->kind != Value::Kind::kString) {
        return Fail("STACK_GLOBAL needs two strings but got a " +
                    std::string(KindName(module->kind)) + " and a " +
                    std::string(KindName(name->kind)));
      }
      return PushGlobal(module->text, name->text);
    }
    case kBinPersId: {
      SDONNX_ASSIGN_OR_RETURN(ValuePtr id, Pop());
      ValuePtr persistent = MakeValue(Value::Kind::kPersistentId);
      SDONNX_RETURN_IF_ERROR(Adopt(*persistent, *id));
      persistent->items.push_back(std::move(id));
      persistent_ids_.push_back(persistent);
      return Push(std::move(persistent));
    }
    case kReduce:
      return Reduce();
    case kBuild: {
      // BUILD sets an object's state, which is dropped here. For an OrderedDict
      // the state is its attributes, such as torch's `_metadata`, and no tensor needs them.
      SDONNX_ASSIGN_OR_RETURN(ValuePtr state, Pop());
      SDONNX_ASSIGN_OR_RETURN(ValuePtr target, Top());
      if (target->kind != Value::Kind::kDict && target->kind != Value::Kind::kTensor) {
        return Fail("BUILD sets the state of a " + std::string(KindName(target->kind)) +
                    "; only dicts and tensors are supported");
      }
      return Status::Ok();
    }
    default:
      return std::nullopt;
  }
}

// Each group handles its own opcodes and returns nullopt for the others.
Status Unpickler::Step(std::uint8_t opcode) {
  for (auto group : {&Unpickler::StepControl, &Unpickler::StepConstant,
                     &Unpickler::StepContainer, &Unpickler::StepMemo, &Unpickler::StepObject}) {
    std::optional<Status> handled = (this->*group)(opcode);
    if (handled) return std::move(*handled);
  }
  char hex[5];
  std::snprintf(hex, sizeof(hex), "0x%02x", opcode);
  return Fail("opcode " + std::string(hex) + " is not supported by the restricted unpickler");
}

Result<UnpickleResult> Unpickler::Run() {
  while (!stopped_) {
    if (pos_ >= bytes_.size()) {
      op_start_ = pos_;
      return Fail("the pickle ends without a STOP opcode; the file is truncated");
    }
    op_start_ = pos_;
    const std::uint8_t opcode = bytes_[pos_++];
    SDONNX_RETURN_IF_ERROR(Step(opcode));
  }
  UnpickleResult result;
  result.value = std::move(result_);
  result.end = pos_;
  result.persistent_ids = std::move(persistent_ids_);
  return result;
}

}  // namespace

const Value* Value::Find(std::string_view key) const {
  std::string identity = "s";
  identity.append(key);
  auto it = entry_index.find(identity);
  return it == entry_index.end() ? nullptr : entries[it->second].second.get();
}

std::string_view KindName(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kBigInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kBytes: return "bytes";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kList: return "list";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "global";
    case Value::Kind::kPersistentId: return "persistent id";
    case Value::Kind::kTensor: return "tensor";
  }
  return "unknown";
}

bool IsAllowedGlobal(std::string_view module, std::string_view name) {
  return std::any_of(kAllowedGlobals.begin(), kAllowedGlobals.end(),
                     [&](const AllowedGlobal& g) { return g.module == module && g.name == name; });
}

Result<UnpickleResult> Unpickle(std::span<const std::uint8_t> bytes, const std::string& where,
                                std::uint64_t base_offset, const UnpickleLimits& limits) {
  return Unpickler(bytes, where, base_offset, limits).Run();
}

}  // namespace sdonnx::pickle
