#include "text/clip_tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "text/clip_text.h"
#include "text/unicode.h"
#include "util/regular_file.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOpenAiMergesName = "bpe_simple_vocab_16e6.txt.gz";
constexpr const char* kStartToken = "<|startoftext|>";
constexpr const char* kEndToken = "<|endoftext|>";
constexpr const char* kEndOfWord = "</w>";
// openai CLIP and Hugging Face read lines 1 to 48894 of their merges files
// (line 0 is a header), so the vocabulary has 512 byte tokens, 48894 merged
// tokens and 2 special tokens: 49408.
constexpr std::size_t kMergeCount = 49152 - 256 - 2;
// The decompressed openai file is about 1.7 MB; more means a wrong file.
constexpr std::size_t kMaxMergesFileBytes = std::size_t{64} << 20;
constexpr std::int32_t kMaxVocabId = 1 << 24;
// Bounds the memory of the word cache; past it the cache starts over.
constexpr std::size_t kMaxCachedWords = 1 << 16;
constexpr std::size_t kMaxCachedWordBytes = 64;

// GPT-2's reversible byte-to-character map, which CLIP uses: printable
// Latin-1 bytes ('!'-'~', 0xA1-0xAC, 0xAE-0xFF) map to themselves, the other
// 68 bytes in increasing order to U+0100 onwards. Sorted by character, the
// 256 characters are the first 256 vocabulary entries.
const std::array<char32_t, 256>& ByteToCharacter() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> map{};
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      map[b] = printable ? static_cast<char32_t>(b) : next_extra++;
    }
    return map;
  }();
  return table;
}

std::uint64_t PairKey(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

std::string MappedSpelling(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) unicode::AppendUtf8(ByteToCharacter()[b], &out);
  return out;
}

// Inverse of MappedSpelling. Characters outside the byte map (never in a
// real vocabulary) are kept as UTF-8.
std::string RawBytes(std::string_view mapped) {
  std::string out;
  for (char32_t c : unicode::DecodeUtf8(mapped)) {
    const auto& table = ByteToCharacter();
    const auto* it = std::find(table.begin(), table.end(), c);
    if (it != table.end()) {
      out.push_back(static_cast<char>(it - table.begin()));
    } else {
      unicode::AppendUtf8(c, &out);
    }
  }
  return out;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    const std::size_t start = i;
    while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i > start) fields.push_back(line.substr(start, i - start));
  }
  return fields;
}

using MergeList = std::vector<std::pair<std::string, std::string>>;

// Parses merge lines "LEFT RIGHT" from lines[1] on (lines[0] is the header),
// at most kMergeCount of them.
Result<MergeList> ParseMerges(const std::string& path, const std::vector<std::string_view>& lines) {
  MergeList merges;
  for (std::size_t i = 1; i < lines.size() && merges.size() < kMergeCount; ++i) {
    const std::vector<std::string_view> fields = SplitFields(lines[i]);
    if (fields.size() != 2) {
      return Status::Error(path + ": line " + std::to_string(i + 1) + " has " +
                           std::to_string(fields.size()) +
                           " fields; expected two symbols separated by a space");
    }
    merges.emplace_back(std::string(fields[0]), std::string(fields[1]));
  }
  return merges;
}

Result<std::string> ReadGzip(const std::string& path) {
  SDONNX_RETURN_IF_ERROR(CheckRegularFile(path));
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return Status::Error(path + ": cannot open the file for reading");
  std::string text;
  std::array<char, 1 << 16> buffer;
  int n = 0;
  while ((n = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) {
    text.append(buffer.data(), static_cast<std::size_t>(n));
    if (text.size() > kMaxMergesFileBytes) {
      gzclose(file);
      return Status::Error(path + ": decompresses to more than " +
                           std::to_string(kMaxMergesFileBytes >> 20) +
                           " MB; openai's bpe_simple_vocab_16e6.txt.gz decompresses to about 1.7 MB");
    }
  }
  if (n < 0) {
    int code = 0;
    const std::string reason = gzerror(file, &code);
    gzclose(file);
    return Status::Error(path + ": reading the gzip data failed: " + reason);
  }
  // zlib passes a file without the gzip header through as it is.
  const bool plain = gzdirect(file) == 1;
  gzclose(file);
  if (plain && text.empty()) {
    return Status::Error(path + ": the file is empty; give " + kOpenAiMergesName +
                         " as downloaded, or a folder with vocab.json and merges.txt");
  }
  if (plain) {
    return Status::Error(path + ": not gzip-compressed (no gzip header at byte 0); give " +
                         kOpenAiMergesName + " as downloaded, or a folder with vocab.json and "
                         "merges.txt");
  }
  return text;
}

Result<std::string> ReadText(const std::string& path) {
  SDONNX_RETURN_IF_ERROR(CheckRegularFile(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(path + ": cannot open the file for reading");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::Error(path + ": reading the file failed");
  return text.str();
}

struct TokenizerFiles {
  std::string openai_merges;  // set for openai's form
  std::string vocab_json;     // these two for Hugging Face's form
  std::string merges_txt;
};

// Returns the tokenizer files at `path`, or an error that explains why there
// are none. The message omits the path, which the caller adds.
Result<TokenizerFiles> ResolveTokenizerFiles(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::Error("does not exist");
  if (fs::is_directory(path, ec)) {
    const bool has_vocab = fs::is_regular_file(path / "vocab.json", ec);
    const bool has_merges = fs::is_regular_file(path / "merges.txt", ec);
    if (has_vocab && has_merges) {
      return TokenizerFiles{"", (path / "vocab.json").string(), (path / "merges.txt").string()};
    }
    if (fs::is_regular_file(path / kOpenAiMergesName, ec)) {
      return TokenizerFiles{(path / kOpenAiMergesName).string(), "", ""};
    }
    if (has_vocab != has_merges) {
      return Status::Error(std::string("is a folder with ") +
                           (has_vocab ? "vocab.json but no merges.txt" : "merges.txt but no vocab.json"));
    }
    return Status::Error(std::string("is a folder with neither ") + kOpenAiMergesName +
                         " nor vocab.json and merges.txt");
  }
  const std::string name = path.filename().string();
  if (name == "vocab.json" || name == "merges.txt") {
    return ResolveTokenizerFiles(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  }
  if (path.extension() == ".gz") return TokenizerFiles{path.string(), "", ""};
  return Status::Error(std::string("is neither a gzip merges file (") + kOpenAiMergesName +
                       ") nor vocab.json or merges.txt, nor a folder that contains them");
}

// The vocabulary openai CLIP derives from its merges: the 256 byte
// characters, the same followed by "</w>", one entry per merge (the two
// symbols joined), then the start and end tokens. A repeated spelling keeps
// the later id.
std::unordered_map<std::string, std::int32_t> DeriveVocab(const MergeList& merges) {
  std::vector<char32_t> characters(ByteToCharacter().begin(), ByteToCharacter().end());
  std::sort(characters.begin(), characters.end());
  std::vector<std::string> spellings;
  for (char32_t c : characters) spellings.push_back(unicode::EncodeUtf8(std::u32string(1, c)));
  for (char32_t c : characters) {
    spellings.push_back(unicode::EncodeUtf8(std::u32string(1, c)) + kEndOfWord);
  }
  for (const auto& [left, right] : merges) spellings.push_back(left + right);
  spellings.emplace_back(kStartToken);
  spellings.emplace_back(kEndToken);
  std::unordered_map<std::string, std::int32_t> encoder;
  for (std::size_t id = 0; id < spellings.size(); ++id) {
    encoder[spellings[id]] = static_cast<std::int32_t>(id);
  }
  return encoder;
}

Result<std::unordered_map<std::string, std::int32_t>> ParseVocabJson(const std::string& path,
                                                                     const std::string& text) {
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return Status::Error(path + ": not a JSON object of token -> id; expected Hugging Face's "
                                "CLIP vocab.json");
  }
  std::unordered_map<std::string, std::int32_t> encoder;
  for (const auto& [token, id] : parsed.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() >= kMaxVocabId) {
      return Status::Error(path + ": the id of token \"" + token + "\" is " + id.dump() +
                           "; ids must be integers from 0 to " + std::to_string(kMaxVocabId - 1));
    }
    encoder[token] = static_cast<std::int32_t>(id.get<std::int64_t>());
  }
  return encoder;
}

struct VocabAndMerges {
  std::unordered_map<std::string, std::int32_t> encoder;
  MergeList merges;
  // Hugging Face's files list the vocabulary, so every merge must be in it.
  // openai's vocabulary is derived from the merges, and a merge whose
  // symbols are not in it can never apply.
  bool merges_must_be_in_vocab = false;
};

Result<VocabAndMerges> ReadOpenAiFiles(const std::string& path) {
  SDONNX_ASSIGN_OR_RETURN(const std::string text, ReadGzip(path));
  const std::vector<std::string_view> lines = SplitLines(text);
  if (lines.size() < kMergeCount + 1) {
    return Status::Error(path + ": has " + std::to_string(lines.size()) +
                         " lines, expected a header line and " + std::to_string(kMergeCount) +
                         " merges; the file is truncated or is not openai's " + kOpenAiMergesName);
  }
  SDONNX_ASSIGN_OR_RETURN(MergeList merges, ParseMerges(path, lines));
  VocabAndMerges result;
  result.encoder = DeriveVocab(merges);
  result.merges = std::move(merges);
  return result;
}

Result<VocabAndMerges> ReadHuggingFaceFiles(const std::string& vocab_path,
                                            const std::string& merges_path) {
  SDONNX_ASSIGN_OR_RETURN(const std::string vocab_text, ReadText(vocab_path));
  SDONNX_ASSIGN_OR_RETURN(const std::string merges_text, ReadText(merges_path));
  VocabAndMerges result;
  SDONNX_ASSIGN_OR_RETURN(result.encoder, ParseVocabJson(vocab_path, vocab_text));
  // Hugging Face strips the file and skips its first line, the
  // "#version" header.
  std::string_view trimmed = merges_text;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) {
    trimmed.remove_suffix(1);
  }
  SDONNX_ASSIGN_OR_RETURN(result.merges, ParseMerges(merges_path, SplitLines(trimmed)));
  result.merges_must_be_in_vocab = true;
  return result;
}

}  // namespace

struct ClipTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<std::int32_t>> words;
};

ClipTokenizer::ClipTokenizer() : cache_(std::make_unique<Cache>()) {}
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

Result<ClipTokenizer> ClipTokenizer::Load(const std::string& path) {
  Result<TokenizerFiles> files = ResolveTokenizerFiles(path);
  if (!files.ok()) {
    return Status::Error("CLIP tokenizer " + path + " " + files.status().message() +
                         "; expected " + kOpenAiMergesName +
                         " or a folder with vocab.json and merges.txt");
  }
  if (!files->openai_merges.empty()) {
    SDONNX_ASSIGN_OR_RETURN(VocabAndMerges read, ReadOpenAiFiles(files->openai_merges));
    return Build(files->openai_merges, std::move(read.encoder), read.merges,
                 read.merges_must_be_in_vocab);
  }
  SDONNX_ASSIGN_OR_RETURN(VocabAndMerges read,
                          ReadHuggingFaceFiles(files->vocab_json, files->merges_txt));
  // Vocabulary problems are the likelier ones here, so errors name vocab.json.
  return Build(files->vocab_json, std::move(read.encoder), read.merges,
               read.merges_must_be_in_vocab);
}

Result<ClipTokenizer> ClipTokenizer::Build(
    const std::string& source, std::unordered_map<std::string, std::int32_t> encoder,
    const std::vector<std::pair<std::string, std::string>>& merges,
    bool merges_must_be_in_vocab) {
  ClipTokenizer tokenizer;
  auto find_id = [&encoder](const std::string& spelling) -> std::optional<std::int32_t> {
    auto it = encoder.find(spelling);
    if (it == encoder.end()) return std::nullopt;
    return it->second;
  };
  auto missing = [&source](const std::string& what) {
    return Status::Error(source + ": the vocabulary has no entry " + what +
                         "; the tokenizer files are incomplete or not CLIP's");
  };

  for (int b = 0; b < 256; ++b) {
    const std::string spelling = MappedSpelling(std::string(1, static_cast<char>(b)));
    const std::optional<std::int32_t> id = find_id(spelling);
    const std::optional<std::int32_t> end_id = find_id(spelling + kEndOfWord);
    if (!id || !end_id) return missing("for byte " + std::to_string(b));
    tokenizer.byte_ids_[b] = *id;
    tokenizer.byte_end_ids_[b] = *end_id;
  }
  const std::optional<std::int32_t> start = find_id(kStartToken);
  const std::optional<std::int32_t> end = find_id(kEndToken);
  if (!start) return missing(kStartToken);
  if (!end) return missing(kEndToken);
  tokenizer.start_id_ = *start;
  tokenizer.end_id_ = *end;

  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const std::optional<std::int32_t> left_id = find_id(left);
    const std::optional<std::int32_t> right_id = find_id(right);
    const std::optional<std::int32_t> merged_id = find_id(left + right);
    if (!left_id || !right_id || !merged_id) {
      if (!merges_must_be_in_vocab) continue;
      return missing("for merge " + std::to_string(rank + 1) + " \"" + left + " " + right + "\"");
    }
    tokenizer.merges_[PairKey(*left_id, *right_id)] =
        Merge{static_cast<std::int32_t>(rank), *merged_id};
  }

  std::int32_t max_id = 0;
  for (const auto& [spelling, id] : encoder) max_id = std::max(max_id, id);
  tokenizer.decoder_.assign(static_cast<std::size_t>(max_id) + 1, std::string());
  for (const auto& [spelling, id] : encoder) tokenizer.decoder_[id] = RawBytes(spelling);
  tokenizer.encoder_ = std::move(encoder);
  return tokenizer;
}

std::optional<std::int32_t> ClipTokenizer::TokenId(std::string_view token) const {
  auto it = encoder_.find(std::string(token));
  if (it == encoder_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::int32_t> ClipTokenizer::Bpe(const std::string& word) const {
  const std::size_t n = word.size();
  std::vector<std::int32_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = byte_ids_[static_cast<unsigned char>(word[i])];
  ids[n - 1] = byte_end_ids_[static_cast<unsigned char>(word[n - 1])];

  // Symbols form a linked list over their first byte's index; a merged
  // symbol keeps the index of its left part.
  std::vector<std::size_t> next(n);
  std::vector<std::size_t> prev(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i - 1;  // wraps for i = 0, which is never merged away and never read
  }

  struct Candidate {
    std::int32_t rank;
    std::size_t left;
    std::int32_t left_id;
    std::int32_t right_id;
    std::int32_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_pair = [&](std::size_t left) {
    const std::size_t right = next[left];
    if (right >= n) return;
    auto it = merges_.find(PairKey(ids[left], ids[right]));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, ids[left], ids[right], it->second.merged_id});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push_pair(i);

  // openai CLIP repeatedly takes the lowest-ranked pair present and merges
  // all its occurrences from left to right before it looks for the next
  // pair. So each rank is handled as one batch in position order, and the
  // pairs that the batch creates join the queue only after it.
  std::vector<std::size_t> changed;
  while (!queue.empty()) {
    const std::int32_t rank = queue.top().rank;
    changed.clear();
    while (!queue.empty() && queue.top().rank == rank) {
      const Candidate c = queue.top();
      queue.pop();
      const std::size_t right = next[c.left];
      if (!alive[c.left] || ids[c.left] != c.left_id || right >= n || ids[right] != c.right_id) {
        continue;  // an earlier merge changed this pair after it was queued
      }
      ids[c.left] = c.merged_id;
      alive[right] = false;
      next[c.left] = next[right];
      if (next[right] < n) prev[next[right]] = c.left;
      changed.push_back(c.left);
    }
    for (std::size_t left : changed) {
      if (left != 0) push_pair(prev[left]);
      push_pair(left);
    }
  }

  std::vector<std::int32_t> result;
  for (std::size_t i = 0; i < n; i = next[i]) result.push_back(ids[i]);
  return result;
}

void ClipTokenizer::AppendWordIds(const std::string& word, std::vector<std::int32_t>* ids) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> word_ids = Bpe(word);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
    cache_->words.emplace(word, std::move(word_ids));
  }
}

std::vector<std::int32_t> ClipTokenizer::Encode(std::string_view text) const {
  const std::u32string cleaned = CleanClipText(text);
  std::vector<std::int32_t> ids;
  std::string utf8;
  for (std::u32string_view word : SplitClipWords(cleaned)) {
    utf8 = unicode::EncodeUtf8(word);
    // openai CLIP's BPE cache starts out with the two special tokens, so
    // they map to their own ids instead of being split.
    if (utf8 == kStartToken) {
      ids.push_back(start_id_);
    } else if (utf8 == kEndToken) {
      ids.push_back(end_id_);
    } else {
      AppendWordIds(utf8, &ids);
    }
  }
  return ids;
}

std::string ClipTokenizer::Decode(const std::vector<std::int32_t>& ids) const {
  std::string bytes;
  for (std::int32_t id : ids) {
    if (id >= 0 && static_cast<std::size_t>(id) < decoder_.size()) bytes += decoder_[id];
  }
  const std::string text = unicode::EncodeUtf8(unicode::DecodeUtf8(bytes));
  std::string out;
  out.reserve(text.size());
  const std::string_view end_of_word = kEndOfWord;
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, end_of_word.size(), end_of_word) == 0) {
      out.push_back(' ');
      i += end_of_word.size();
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

Result<std::string> FindTokenizer(const std::optional<std::string>& explicit_path,
                                  const std::string& model_dir) {
  const std::string advice = std::string("; pass --tokenizer, or point ") +
                             kTokenizerEnvironmentVariable + " at " + kOpenAiMergesName +
                             " or at a folder with vocab.json and merges.txt";
  if (explicit_path) {
    Result<TokenizerFiles> files = ResolveTokenizerFiles(*explicit_path);
    if (files.ok()) return *explicit_path;
    return Status::Error("CLIP tokenizer " + *explicit_path + " " + files.status().message() +
                         "; expected " + kOpenAiMergesName +
                         " or a folder with vocab.json and merges.txt");
  }
  std::vector<std::string> rejected;
  if (!model_dir.empty()) {
    const std::string candidate = (fs::path(model_dir) / "tokenizer").string();
    Result<TokenizerFiles> files = ResolveTokenizerFiles(candidate);
    if (files.ok()) return candidate;
    rejected.push_back(candidate + " " + files.status().message());
  }
  const char* env = std::getenv(kTokenizerEnvironmentVariable);
  if (env == nullptr || *env == '\0') {
    rejected.push_back(std::string("$") + kTokenizerEnvironmentVariable + " is not set");
  } else {
    Result<TokenizerFiles> files = ResolveTokenizerFiles(env);
    if (files.ok()) return std::string(env);
    rejected.push_back(std::string("$") + kTokenizerEnvironmentVariable + " = " + env + " " +
                       files.status().message());
  }
  std::string message = "no CLIP tokenizer found: ";
  for (std::size_t i = 0; i < rejected.size(); ++i) {
    message += (i == 0 ? "" : "; ") + rejected[i];
  }
  return Status::Error(message + advice);
}

}  // namespace sdonnx
