// Tests of the restricted unpickler and the PyTorch checkpoint reader: the
// fixtures under ckpt/ (zip, legacy, shared storage, bfloat16, malicious),
// then a catalogue of broken inputs built here, one per failure.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using namespace std::string_literals;
using testing::Fixture;
using testing::MakeZip;
using testing::TempDir;
using testing::WriteBytes;

std::span<const std::uint8_t> AsBytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string Le(std::uint64_t value, int width) {
  std::string out;
  for (int i = 0; i < width; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// Pickle opcodes with their arguments.
std::string Str(const std::string& text) { return "X" + Le(text.size(), 4) + text; }
std::string Int1(int value) { return "K" + Le(value, 1); }
std::string Global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}

// A protocol-2 data.pkl for {"w": tensor} whose FloatStorage '0' declares
// `numel` elements and whose tensor has `size` elements at `offset`.
std::string TensorPickle(int numel, int offset, int size) {
  return "\x80\x02}(" + Str("w") + Global("torch._utils", "_rebuild_tensor_v2") + "((" +
         Str("storage") + Global("torch", "FloatStorage") + Str("0") + Str("cpu") + Int1(numel) +
         "tQ" + Int1(offset) + Int1(size) + "\x85" + Int1(1) + "\x85" + "\x89" +
         Global("collections", "OrderedDict") + ")RtRu.";
}

std::string FloatBytes(int count) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    float value = static_cast<float>(i);
    out.append(reinterpret_cast<const char*>(&value), sizeof(value));
  }
  return out;
}

Result<TorchCheckpoint> Read(const std::filesystem::path& path) {
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path.string()));
  return ReadTorchCheckpoint(*file);
}

// Writes `bytes` as a .ckpt file in a temporary folder and reads it.
Status ReadBytes(const std::string& bytes) {
  TempDir dir;
  WriteBytes(dir / "broken.ckpt", bytes);
  return Read(dir / "broken.ckpt").status();
}

void ExpectError(const Status& status, const std::string& fragment) {
  ASSERT_FALSE(status.ok()) << "expected an error containing: " << fragment;
  EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
}

Status UnpickleStatus(const std::string& bytes,
                      const pickle::UnpickleLimits& limits = pickle::UnpickleLimits()) {
  return pickle::Unpickle(AsBytes(bytes), "test.pkl", 0, limits).status();
}

std::span<const std::uint8_t> TensorBytes(const MappedFile& file, const TorchTensor& tensor) {
  if (!tensor.in_file) return tensor.materialized;
  return file.bytes().subspan(tensor.file_offset, tensor.nbytes);
}

// Checks that every tensor of the checkpoint equals the tensor of the same
// name in `expected_path` (dtype, shape and bytes) and, with `same_order`,
// that the names come in the order of the safetensors data offsets.
void ExpectEqualsSafetensors(const std::filesystem::path& ckpt_path,
                             const std::filesystem::path& expected_path, bool same_order = true) {
  auto file = MappedFile::Open(ckpt_path.string());
  ASSERT_TRUE(file.ok()) << file.status().message();
  auto checkpoint = ReadTorchCheckpoint(**file);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  auto expected = SafetensorsFile::Open(expected_path.string());
  ASSERT_TRUE(expected.ok()) << expected.status().message();

  const auto& want = (*expected)->tensors();
  ASSERT_EQ(checkpoint->tensors.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const TorchTensor& got = checkpoint->tensors[i];
    SCOPED_TRACE(got.name);
    if (same_order) ASSERT_EQ(got.name, want[i].name);
    const TensorInfo* match = (*expected)->Find(got.name);
    ASSERT_NE(match, nullptr);
    EXPECT_EQ(got.dtype, match->dtype);
    EXPECT_EQ(got.shape, match->shape);
    ASSERT_EQ(got.nbytes, match->nbytes);
    auto got_bytes = TensorBytes(**file, got);
    auto want_bytes = (*expected)->Data(*match);
    ASSERT_EQ(got_bytes.size(), want_bytes.size());
    EXPECT_EQ(std::memcmp(got_bytes.data(), want_bytes.data(), want_bytes.size()), 0);
  }
}

std::filesystem::path Ckpt(const std::string& name) { return Fixture("ckpt/" + name); }

// --- Fixtures ---

TEST(TorchCheckpoint, LoadsZipWithStateDict) {
  ExpectEqualsSafetensors(Ckpt("tiny-sd1.ckpt"), Fixture("tiny/tiny-sd1.safetensors"));
  auto checkpoint = Read(Ckpt("tiny-sd1.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_TRUE(checkpoint->had_state_dict_wrapper);
  EXPECT_EQ(checkpoint->extras["global_step"], "123");
  EXPECT_EQ(checkpoint->extras.count("state_dict"), 0u);
}

TEST(TorchCheckpoint, LoadsLegacyWithStateDict) {
  ExpectEqualsSafetensors(Ckpt("tiny-sd1-legacy.ckpt"), Fixture("tiny/tiny-sd1.safetensors"));
  auto checkpoint = Read(Ckpt("tiny-sd1-legacy.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_TRUE(checkpoint->had_state_dict_wrapper);
  EXPECT_EQ(checkpoint->extras["global_step"], "123");
}

TEST(TorchCheckpoint, LoadsZipWithoutWrapper) {
  ExpectEqualsSafetensors(Ckpt("tiny-sd1-nowrap.ckpt"), Fixture("tiny/tiny-sd1.safetensors"));
  auto checkpoint = Read(Ckpt("tiny-sd1-nowrap.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_FALSE(checkpoint->had_state_dict_wrapper);
  EXPECT_TRUE(checkpoint->extras.empty());
}

TEST(TorchCheckpoint, KeepsZeroDimIntTensor) {
  auto checkpoint = Read(Ckpt("tiny-sd1.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  const TorchTensor* found = nullptr;
  for (const TorchTensor& t : checkpoint->tensors) {
    if (t.name == "model_ema.num_updates") found = &t;
  }
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->dtype, DType::kI32);
  EXPECT_TRUE(found->shape.empty());
  EXPECT_EQ(found->nbytes, 4u);
}

TEST(TorchCheckpoint, MaterializesSharedStorageViews) {
  ExpectEqualsSafetensors(Ckpt("tiny-sd1-shared-storage.ckpt"),
                          Ckpt("tiny-sd1-shared-storage.expected.safetensors"),
                          /*same_order=*/false);
  auto checkpoint = Read(Ckpt("tiny-sd1-shared-storage.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  ASSERT_EQ(checkpoint->tensors.size(), 4u);
  EXPECT_EQ(checkpoint->tensors[0].name, "shared.view_offset0");
  EXPECT_EQ(checkpoint->tensors[1].name, "shared.view_offset12");
  EXPECT_EQ(checkpoint->tensors[2].name, "shared.transposed_offset6");
  EXPECT_EQ(checkpoint->tensors[3].name, "own.f16");
  // Row-major views point into the file even at an offset. The transposed view is copied.
  EXPECT_TRUE(checkpoint->tensors[0].in_file);
  EXPECT_TRUE(checkpoint->tensors[1].in_file);
  EXPECT_EQ(checkpoint->tensors[1].file_offset, checkpoint->tensors[0].file_offset + 12 * 4);
  EXPECT_FALSE(checkpoint->tensors[2].in_file);
  EXPECT_EQ(checkpoint->tensors[2].shape, (std::vector<std::int64_t>{4, 3}));
  EXPECT_TRUE(checkpoint->tensors[3].in_file);
}

TEST(TorchCheckpoint, LoadsBFloat16) {
  auto file = MappedFile::Open(Ckpt("bf16.ckpt").string());
  ASSERT_TRUE(file.ok()) << file.status().message();
  auto checkpoint = ReadTorchCheckpoint(**file);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_TRUE(checkpoint->had_state_dict_wrapper);
  auto expected = SafetensorsFile::Open(Ckpt("bf16.expected.safetensors").string());
  ASSERT_TRUE(expected.ok()) << expected.status().message();

  ASSERT_EQ(checkpoint->tensors.size(), 4u);
  for (const TorchTensor& tensor : checkpoint->tensors) {
    SCOPED_TRACE(tensor.name);
    EXPECT_EQ(tensor.dtype, DType::kBF16);
    const TensorInfo* want = (*expected)->Find(tensor.name);
    ASSERT_NE(want, nullptr);
    EXPECT_EQ(tensor.shape, want->shape);
    auto got = TensorBytes(**file, tensor);
    auto want_bytes = (*expected)->Data(*want);
    ASSERT_EQ(got.size() * 2, want_bytes.size());
    for (std::size_t i = 0; i < got.size() / 2; ++i) {
      // Widening bfloat16 to float32 is `bits << 16`.
      const std::uint32_t widened = static_cast<std::uint32_t>(got[2 * i] | got[2 * i + 1] << 8)
                                    << 16;
      std::uint32_t want_bits = 0;
      std::memcpy(&want_bits, want_bytes.data() + 4 * i, 4);
      EXPECT_EQ(widened, want_bits) << "element " << i;
    }
  }
  EXPECT_EQ(checkpoint->tensors[0].name, "values");
  auto values = TensorBytes(**file, checkpoint->tensors[0]);
  ASSERT_EQ(values.size(), 16u);
  EXPECT_EQ(values[6] | values[7] << 8, 0x4049);  // The fourth stored bf16 value.
}

TEST(TorchCheckpoint, DetectsCheckpointFiles) {
  for (const char* name : {"tiny-sd1.ckpt", "tiny-sd1-legacy.ckpt", "bf16.ckpt"}) {
    auto file = MappedFile::Open(Ckpt(name).string());
    ASSERT_TRUE(file.ok()) << file.status().message();
    EXPECT_TRUE(LooksLikeTorchCheckpoint((*file)->bytes())) << name;
  }
  auto safetensors = MappedFile::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(safetensors.ok()) << safetensors.status().message();
  EXPECT_FALSE(LooksLikeTorchCheckpoint((*safetensors)->bytes()));
  EXPECT_FALSE(LooksLikeTorchCheckpoint(AsBytes(MakeZip({{"readme.txt", "hello"}}))));
}

TEST(Pickle, RejectsOsSystem) {
  Status status = Read(Ckpt("malicious-os-system.ckpt")).status();
  ExpectError(status, "references os.system, which is not allowed");
  ExpectError(status, "malicious-os-system.ckpt");
  ExpectError(status, "pickle at byte 76");
}

TEST(Pickle, RejectsBuiltinsEval) {
  ExpectError(Read(Ckpt("malicious-eval.ckpt")).status(), "references builtins.eval");
}

TEST(Pickle, RejectsSubprocessPopen) {
  ExpectError(UnpickleStatus("\x80\x02" + Global("subprocess", "Popen") + "(" + Str("sh") +
                             "tR."),
              "references subprocess.Popen, which is not allowed");
}

TEST(Pickle, RejectsGlobalWithEmbeddedNul) {
  // A NUL must not end the module name early and turn it into an allowed one.
  ExpectError(UnpickleStatus("\x80\x02" + Global("torch\0os"s, "FloatStorage") + "."),
              "is not allowed");
}

// --- Unpickler ---

TEST(Pickle, ParsesScalarsAndContainers) {
  const std::string bytes = "\x80\x02}(" + Str("a") + "J" + Le(-5, 4) + Str("b") + "\x88" +
                            Str("c") + "]q\x00(N\x8a\x02\x00\x80"s + "e" + Str("d") +
                            "G\x3f\xf8\x00\x00\x00\x00\x00\x00"s + "u.";
  auto result = pickle::Unpickle(AsBytes(bytes), "test.pkl");
  ASSERT_TRUE(result.ok()) << result.status().message();
  const pickle::Value& dict = *result->value;
  ASSERT_EQ(dict.kind, pickle::Value::Kind::kDict);
  ASSERT_EQ(dict.entries.size(), 4u);
  EXPECT_EQ(dict.Find("a")->integer, -5);
  EXPECT_TRUE(dict.Find("b")->boolean);
  ASSERT_EQ(dict.Find("c")->items.size(), 2u);
  EXPECT_EQ(dict.Find("c")->items[1]->integer, -32768);  // LONG1 0x8000, sign-extended.
  EXPECT_EQ(dict.Find("d")->floating, 1.5);
  EXPECT_EQ(result->end, bytes.size());
}

TEST(Pickle, RejectsPython2BuiltinSpelling) {
  ExpectError(UnpickleStatus("\x80\x02" + Global("__builtin__", "eval") + Str("0") + "\x85R."),
              "references __builtin__.eval");
}

TEST(Pickle, RejectsStackGlobal) {
  ExpectError(UnpickleStatus("\x80\x04" + Str("os") + Str("system") + "\x93."),
              "pickle at byte 20 references os.system");
}

TEST(Pickle, RejectsCallingStorageType) {
  ExpectError(UnpickleStatus("\x80\x02" + Global("torch", "FloatStorage") + ")R."),
              "allowed only as a value");
}

TEST(Pickle, RejectsDeepNesting) {
  ExpectError(UnpickleStatus("\x80\x02N" + std::string(200, '\x85') + "."),
              "nest deeper than the limit of 100");
}

TEST(Pickle, RejectsHugeMemoIndex) {
  ExpectError(UnpickleStatus("\x80\x02Nr" + Le(0xFFFFFFF0u, 4) + "."),
              "memo index 4294967280 exceeds the limit");
}

TEST(Pickle, RejectsMemoizeBeyondLimit) {
  pickle::UnpickleLimits limits;
  limits.max_memo_entries = 10;
  std::string bytes = "\x80\x04";
  for (int i = 0; i < 11; ++i) bytes += "N\x94";
  ExpectError(UnpickleStatus(bytes + ".", limits), "memo index 10 exceeds the limit of 10");
}

TEST(Pickle, RejectsDeepListNesting) {
  // MARK ... LIST, 500 times inside each other: each list holds the previous one.
  ExpectError(UnpickleStatus("\x80\x02" + std::string(500, '(') + std::string(500, 'l') + "."),
              "nest deeper than the limit of 100");
}

TEST(Pickle, RejectsDeepDictNesting) {
  // Each round stores the dict so far, pops it, and sets it as the value of
  // a new dict: {"k": {"k": ...}}.
  std::string bytes = "\x80\x02}";
  for (int i = 0; i < 200; ++i) bytes += "q\x00"s + "0}" + Str("k") + "h\x00s"s;
  ExpectError(UnpickleStatus(bytes + "."), "nest deeper than the limit of 100");
}

TEST(Pickle, ManyDuplicatedReferencesStayCheap) {
  // DUP and memo gets share one value, so a tiny pickle cannot make the
  // reader copy data.
  std::string bytes = "\x80\x02" + Str(std::string(1 << 16, 'x')) + "q\x00"s;
  for (int i = 0; i < 10000; ++i) bytes += "h\x00"s;
  bytes += "0";
  auto result = pickle::Unpickle(AsBytes(bytes + "."), "test.pkl");
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->value->text.size(), 1u << 16);
}

TEST(Pickle, RejectsUndefinedMemoIndex) {
  ExpectError(UnpickleStatus("\x80\x02h\x05."), "memo index 5 was never stored");
}

TEST(Pickle, RejectsStackAboveLimit) {
  pickle::UnpickleLimits limits;
  limits.max_stack_size = 10;
  ExpectError(UnpickleStatus("\x80\x02" + std::string(11, 'N') + ".", limits),
              "exceeds the limit of 10 values");
}

TEST(Pickle, RejectsTooManyMarks) {
  ExpectError(UnpickleStatus("\x80\x02" + std::string(2000, '(') + "."), "MARKs are open");
}

TEST(Pickle, RejectsSelfReferencingList) {
  ExpectError(UnpickleStatus("\x80\x02]q\x00h\x00"s + "a."), "inside itself");
}

TEST(Pickle, RejectsModifyingNestedList) {
  ExpectError(UnpickleStatus("\x80\x02]q\x00\x85h\x00Na."s), "already inside another container");
}

TEST(Pickle, RejectsMissingStop) { ExpectError(UnpickleStatus("\x80\x02N"), "without a STOP"); }

TEST(Pickle, RejectsTruncatedArgument) {
  ExpectError(UnpickleStatus("\x80\x02X\x10\x00\x00\x00"s + "abc"), "the file is truncated");
}

TEST(Pickle, RejectsUnknownOpcode) {
  ExpectError(UnpickleStatus("\x80\x02\xff."), "opcode 0xff is not supported");
}

TEST(Pickle, RejectsStackUnderflow) { ExpectError(UnpickleStatus("\x80\x02."), "stack is empty"); }

// --- Broken checkpoints ---

TEST(TorchCheckpoint, LoadsMinimalZip) {
  TempDir dir;
  WriteBytes(dir / "ok.ckpt", MakeZip({{"ok/data.pkl", TensorPickle(4, 1, 3)},
                                       {"ok/data/0", FloatBytes(4)}}));
  auto checkpoint = Read(dir / "ok.ckpt");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  ASSERT_EQ(checkpoint->tensors.size(), 1u);
  EXPECT_EQ(checkpoint->tensors[0].name, "w");
  EXPECT_EQ(checkpoint->tensors[0].shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(checkpoint->tensors[0].nbytes, 12u);
  EXPECT_TRUE(checkpoint->tensors[0].in_file);
}

TEST(TorchCheckpoint, RejectsTruncatedZip) {
  std::string zip = MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}, {"t/data/0", FloatBytes(4)}});
  ExpectError(ReadBytes(zip.substr(0, zip.size() / 2)), "no zip end of central directory");
}

TEST(TorchCheckpoint, RejectsRecordPastEndOfFile) {
  std::string zip = MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}, {"t/data/0", FloatBytes(4)}});
  // Raise the size of the first central directory entry (data.pkl) far past the file.
  const std::size_t central = zip.find(Le(0x02014b50, 4));
  zip.replace(central + 20, 8, Le(100000, 4) + Le(100000, 4));
  ExpectError(ReadBytes(zip), "reaches past the end");
}

TEST(TorchCheckpoint, RejectsDotDotRecordName) {
  ExpectError(ReadBytes(MakeZip({{"t/../../etc/data.pkl", TensorPickle(4, 0, 4)}})),
              "contains '..'");
}

TEST(TorchCheckpoint, RejectsAbsoluteRecordName) {
  ExpectError(ReadBytes(MakeZip({{"/t/data.pkl", TensorPickle(4, 0, 4)}})), "is absolute");
}

TEST(TorchCheckpoint, RejectsCompressedRecord) {
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4), 8}})),
              "is compressed (method 8)");
}

TEST(TorchCheckpoint, RejectsMissingDataPkl) {
  ExpectError(ReadBytes(MakeZip({{"t/other", "x"}})), "no data.pkl record");
}

TEST(TorchCheckpoint, RejectsStorageShorterThanTensor) {
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", TensorPickle(4, 2, 3)},
                                 {"t/data/0", FloatBytes(4)}})),
              "tensor 'w' (storage offset 2, size [3], stride [1]) reaches past the end of its "
              "storage '0' of 4 elements");
}

TEST(TorchCheckpoint, RejectsStorageRecordOfWrongSize) {
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)},
                                 {"t/data/0", FloatBytes(3)}})),
              "storage record 't/data/0' has 12 bytes but the pickle declares 4 elements");
}

TEST(TorchCheckpoint, RejectsMissingStorageRecord) {
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}})),
              "storage record 't/data/0' is missing");
}

TEST(TorchCheckpoint, RejectsBackslashRecordName) {
  ExpectError(ReadBytes(MakeZip({{"t\\..\\data.pkl", TensorPickle(4, 0, 4)}})), "is absolute");
}

TEST(TorchCheckpoint, RejectsDuplicateRecordNames) {
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)},
                                 {"t/data/0", FloatBytes(4)},
                                 {"t/data/0", FloatBytes(4)}})),
              "zip record 't/data/0' appears twice");
}

TEST(TorchCheckpoint, RejectsCorruptCentralDirectory) {
  std::string zip = MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}, {"t/data/0", FloatBytes(4)}});
  const std::size_t central = zip.find(Le(0x02014b50, 4));
  zip[central] = 'X';
  ExpectError(ReadBytes(zip), "central directory entry at byte " + std::to_string(central) +
                                  " is missing or truncated");
}

TEST(TorchCheckpoint, RejectsRecordCountAboveDirectorySize) {
  std::string zip = MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}, {"t/data/0", FloatBytes(4)}});
  const std::size_t end = zip.rfind(Le(0x06054b50, 4));
  zip.replace(end + 10, 2, Le(0xFFFF, 2));
  ExpectError(ReadBytes(zip), "declares 65535 records");
}

TEST(TorchCheckpoint, RejectsDirectoryPastEndOfFile) {
  std::string zip = MakeZip({{"t/data.pkl", TensorPickle(4, 0, 4)}, {"t/data/0", FloatBytes(4)}});
  const std::size_t end = zip.rfind(Le(0x06054b50, 4));
  zip.replace(end + 16, 4, Le(0x7FFFFFFF, 4));
  ExpectError(ReadBytes(zip), "reaches past the end of the file");
}

TEST(TorchCheckpoint, RejectsMaliciousGlobalInZip) {
  const std::string evil = "\x80\x02" + Global("posix", "system") + Str("id") + "\x85R.";
  ExpectError(ReadBytes(MakeZip({{"t/data.pkl", evil}})), "references posix.system");
}

// A legacy (non-zip) checkpoint of {"w": 4 floats} whose storage header
// declares `count` elements.
std::string LegacyFile(std::uint64_t count) {
  const std::string magic =
      "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."s;
  const std::string protocol = "\x80\x02M\xe9\x03."s;
  const std::string sys_info = "\x80\x02}."s;
  std::string object = TensorPickle(4, 0, 4);
  object.replace(object.find("K\x04tQ"), 4, "K\x04NtQ");  // Legacy ids have 6 items.
  const std::string keys = "\x80\x02](" + Str("0") + "e.";
  return magic + protocol + sys_info + object + keys + Le(count, 8) + FloatBytes(4);
}

TEST(TorchCheckpoint, LoadsMinimalLegacyFile) {
  TempDir dir;
  WriteBytes(dir / "legacy.ckpt", LegacyFile(4));
  auto checkpoint = Read(dir / "legacy.ckpt");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  ASSERT_EQ(checkpoint->tensors.size(), 1u);
  EXPECT_EQ(checkpoint->tensors[0].nbytes, 16u);
}

TEST(TorchCheckpoint, RejectsLegacyStorageCountMismatch) {
  ExpectError(ReadBytes(LegacyFile(5)), "legacy storage '0' has 5 elements but the pickle "
                                        "declares 4");
}

TEST(TorchCheckpoint, RejectsLegacyStoragePastEndOfFile) {
  const std::string legacy = LegacyFile(4);
  ExpectError(ReadBytes(legacy.substr(0, legacy.size() - 1)), "reaches past the end of the file");
}

TEST(TorchCheckpoint, RejectsTruncatedLegacyFile) {
  const auto legacy = Ckpt("tiny-sd1-legacy.ckpt");
  auto file = MappedFile::Open(legacy.string());
  ASSERT_TRUE(file.ok()) << file.status().message();
  auto bytes = (*file)->bytes();
  ExpectError(ReadBytes(std::string(bytes.begin(), bytes.end() - 100)), "truncated");
}

TEST(TorchCheckpoint, RejectsOtherFiles) {
  ExpectError(ReadBytes("not a checkpoint"), "not a PyTorch checkpoint");
}

}  // namespace
}  // namespace sdonnx
