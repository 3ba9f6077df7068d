// The CLIP byte-level BPE tokenizer of Stable Diffusion's text encoders
// (openai CLIP's SimpleTokenizer; open_clip and Hugging Face's CLIPTokenizer
// use the same vocabulary and merges).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "util/status.h"

namespace sdonnx {

// The token ids of openai CLIP's vocabulary for the two special tokens.
inline constexpr std::int32_t kClipStartOfText = 49406;
inline constexpr std::int32_t kClipEndOfText = 49407;

// Environment variable that names a tokenizer file or folder.
inline constexpr const char* kTokenizerEnvironmentVariable = "SDONNX_TOKENIZER";

class ClipTokenizer {
 public:
  // Loads a tokenizer from `path`, which is one of:
  //  - openai's merges file `bpe_simple_vocab_16e6.txt.gz` (gzip), from
  //    which the vocabulary is derived as openai CLIP derives it;
  //  - a folder that contains that file, or Hugging Face's `vocab.json` and
  //    `merges.txt` (a diffusers model's `tokenizer/` folder);
  //  - the `vocab.json` or `merges.txt` of such a pair.
  static Result<ClipTokenizer> Load(const std::string& path);

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

  // Returns the token ids of `text` without the start and end tokens and
  // without truncation. The text is cleaned as openai CLIP cleans it: HTML
  // character references are decoded twice, whitespace runs become one space,
  // the ends are stripped, and letters are lowercased. ftfy's fix_text, which
  // openai CLIP applies first, is not applied. Invalid UTF-8 is read as
  // U+FFFD, one per maximal ill-formed subsequence. Safe to call from several
  // threads at once.
  std::vector<std::int32_t> Encode(std::string_view text) const;

  // Returns the text of `ids` as openai CLIP decodes it: byte sequences that
  // are not valid UTF-8 become U+FFFD and each end-of-word mark becomes a
  // space. Ids outside the vocabulary are skipped.
  std::string Decode(const std::vector<std::int32_t>& ids) const;

  std::int32_t StartId() const { return start_id_; }
  std::int32_t EndId() const { return end_id_; }
  // One more than the largest token id.
  std::size_t VocabSize() const { return decoder_.size(); }
  // Returns the id of a vocabulary entry in its byte-mapped spelling, such as
  // ",</w>" for a comma that ends a word, or nullopt if there is none.
  std::optional<std::int32_t> TokenId(std::string_view token) const;

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged_id;
  };
  struct Cache;

  ClipTokenizer();
  static Result<ClipTokenizer> Build(
      const std::string& source, std::unordered_map<std::string, std::int32_t> encoder,
      const std::vector<std::pair<std::string, std::string>>& merges,
      bool merges_must_be_in_vocab);
  std::vector<std::int32_t> Bpe(const std::string& utf8_word) const;
  void AppendWordIds(const std::string& utf8_word, std::vector<std::int32_t>* ids) const;

  std::unordered_map<std::string, std::int32_t> encoder_;  // byte-mapped spelling -> id
  std::vector<std::string> decoder_;                       // id -> raw bytes of the token
  std::unordered_map<std::uint64_t, Merge> merges_;        // (left id, right id) -> merge
  std::int32_t byte_ids_[256] = {};                        // id of each single byte
  std::int32_t byte_end_ids_[256] = {};                    // same, ending a word ("</w>")
  std::int32_t start_id_ = kClipStartOfText;
  std::int32_t end_id_ = kClipEndOfText;
  std::unique_ptr<Cache> cache_;
};

// Returns the tokenizer location to load. An `explicit_path` is the only
// candidate when given, so a wrong path returns an error and is never
// silently replaced. Otherwise the candidates are `model_dir`/tokenizer
// (when `model_dir` is not empty), then $SDONNX_TOKENIZER. The error lists
// every place that was checked and why each was rejected.
Result<std::string> FindTokenizer(const std::optional<std::string>& explicit_path,
                                  const std::string& model_dir);

}  // namespace sdonnx
