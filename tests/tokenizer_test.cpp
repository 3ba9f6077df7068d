// The CLIP tokenizer against openai CLIP's own outputs, both file forms it
// loads, the tokenizer search, and the `sdonnx tokenize` command.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "text/clip_tokenizer.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::RunSdonnx;
using testing::CommandResult;
using testing::Quote;
using testing::Fixture;
using testing::TempDir;
using testing::WriteBytes;

const fs::path kMergesFixture = "clip/bpe_simple_vocab_16e6.txt.gz";

const ClipTokenizer& FixtureTokenizer() {
  static const ClipTokenizer* tokenizer = [] {
    Result<ClipTokenizer> loaded = ClipTokenizer::Load(Fixture(kMergesFixture).string());
    if (!loaded.ok()) throw std::runtime_error(loaded.status().message());
    return new ClipTokenizer(std::move(loaded).value());
  }();
  return *tokenizer;
}

struct ReferenceCase {
  std::string name;
  std::string prompt;
  std::vector<std::int32_t> ids;  // with the start and end ids
};

// Undoes the TSV escapes \\ \t \n \r of the prompt column.
std::string UnescapeTsv(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\' || i + 1 == field.size()) {
      out.push_back(field[i]);
      continue;
    }
    switch (const char next = field[++i]) {
      case 't':
        out.push_back('\t');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      default:
        out.push_back(next);
    }
  }
  return out;
}

std::vector<ReferenceCase> ReadReferenceCases() {
  std::ifstream in(Fixture("clip/tokenizer-cases.tsv"));
  std::vector<ReferenceCase> cases;
  std::string line;
  bool header_seen = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (!header_seen) {
      header_seen = true;  // name, prompt, n_ids, ids
      continue;
    }
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) {
      fields.push_back(line.substr(start, tab - start));
    }
    fields.push_back(line.substr(start));
    if (fields.size() != 4) throw std::runtime_error("malformed fixture line: " + line);
    ReferenceCase c{fields[0], UnescapeTsv(fields[1]), {}};
    std::istringstream ids(fields[3]);
    for (std::int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<std::int32_t> EncodeWrapped(const ClipTokenizer& tokenizer, const std::string& text) {
  std::vector<std::int32_t> ids = {tokenizer.StartId()};
  for (std::int32_t id : tokenizer.Encode(text)) ids.push_back(id);
  ids.push_back(tokenizer.EndId());
  return ids;
}

TEST(Tokenizer, MatchesReferenceCases) {
  const std::vector<ReferenceCase> cases = ReadReferenceCases();
  ASSERT_EQ(cases.size(), 40u);
  for (const ReferenceCase& c : cases) {
    EXPECT_EQ(EncodeWrapped(FixtureTokenizer(), c.prompt), c.ids) << c.name;
  }
}

TEST(Tokenizer, DecodeMatchesReference) {
  std::ifstream in(Fixture("clip/tokenizer-cases.json"));
  const nlohmann::json cases = nlohmann::json::parse(in)["cases"];
  ASSERT_EQ(cases.size(), 40u);
  for (const nlohmann::json& c : cases) {
    const std::vector<std::int32_t> ids = c["ids"].get<std::vector<std::int32_t>>();
    const std::vector<std::int32_t> inner(ids.begin() + 1, ids.end() - 1);
    EXPECT_EQ(FixtureTokenizer().Decode(inner), c["decoded"].get<std::string>())
        << c["name"].get<std::string>();
  }
}

TEST(Tokenizer, SpecialIdsAndVocabulary) {
  const ClipTokenizer& tokenizer = FixtureTokenizer();
  EXPECT_EQ(tokenizer.StartId(), 49406);
  EXPECT_EQ(tokenizer.EndId(), 49407);
  EXPECT_EQ(tokenizer.VocabSize(), 49408u);
  EXPECT_EQ(tokenizer.TokenId(",</w>"), std::optional<std::int32_t>(267));
  EXPECT_EQ(tokenizer.TokenId("no such token"), std::nullopt);
}

// Expected ids below come from a Python reimplementation of openai CLIP's
// SimpleTokenizer (html.unescape, the `regex` module) that reproduces all
// fixture cases, not from this code.
struct ExtraCase {
  const char* name;
  std::string text;
  std::vector<std::int32_t> ids;
};

TEST(Tokenizer, MatchesHandCheckedCases) {
  const std::vector<ExtraCase> cases = {
      {"html decoded twice", "&amp;lt;", {283}},
      {"html legacy names and numbers",
       "&copy2024 &notit; AT&T",
       {5811, 273, 271, 273, 275, 126, 361, 585, 282, 536, 261, 339}},
      {"html numeric rules", "&#x41;&#66;&#128;&#0;&#xD800;&#1;", {3937, 34919, 47356, 39802}},
      {"special tokens in text", "hello<|startoftext|>world <|ENDOFTEXT|>",
       {3306, 49406, 1002, 49407}},
      {"long s contraction", "it'\xC5\xBF", {585, 6, 129, 379}},
      {"dotted capital I", "\xC4\xB0stanbul", {328, 16384, 11231}},
      {"final sigma",
       "\xCE\x9F\xCE\x94\xCE\xA5\xCE\xA3\xCE\xA3\xCE\x95\xCE\xA5\xCE\xA3",
       {138, 123, 138, 112, 139, 227, 139, 225, 139, 225, 138, 113, 139, 227, 139, 480}},
      {"unicode spaces", "a\xC2\xA0" "b\xE3\x80\x80" "c\xE2\x80\xA8" "d\x1C" "e",
       {320, 321, 322, 323, 324}},
      {"combining mark", "cafe\xCC\x81", {4979, 136, 479}},
      {"ypogegrammeni is dropped", "a\xCD\x85" "b", {320, 321}},
  };
  for (const ExtraCase& c : cases) {
    EXPECT_EQ(FixtureTokenizer().Encode(c.text), c.ids) << c.name;
  }
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacters) {
  const std::vector<ExtraCase> cases = {
      {"truncated two-byte sequence", "caf\xC3", {20867, 39802}},
      {"bytes that never start a sequence", "a\xFF\xFE" "b", {320, 47356, 39802, 321}},
      {"truncated three-byte sequence", "x\xE2\x82y", {343, 39802, 344}},
      {"overlong encoding", "\xC0\xAFz", {47356, 39802, 345}},
  };
  for (const ExtraCase& c : cases) {
    EXPECT_EQ(FixtureTokenizer().Encode(c.text), c.ids) << c.name;
  }
}

TEST(Tokenizer, EncodesHundredKilobytePrompt) {
  std::string prompt;
  while (prompt.size() < 100 * 1024) prompt += "a photo of a cat, ";
  const std::size_t repeats = prompt.size() / std::string("a photo of a cat, ").size();
  const std::vector<std::int32_t> ids = FixtureTokenizer().Encode(prompt);
  ASSERT_EQ(ids.size(), repeats * 6);
  const std::vector<std::int32_t> first(ids.begin(), ids.begin() + 6);
  EXPECT_EQ(first, (std::vector<std::int32_t>{320, 1125, 539, 320, 2368, 267}));
}

TEST(Tokenizer, EncodesHundredKilobyteWord) {
  // The reference gives 12499 x "aaaaaaaa", then "aaaa" and "aaaa</w>".
  const std::vector<std::int32_t> ids = FixtureTokenizer().Encode(std::string(100000, 'a'));
  ASSERT_EQ(ids.size(), 12501u);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 23126), 12499);
  EXPECT_EQ(ids[12499], 6727);
  EXPECT_EQ(ids[12500], 19336);
  EXPECT_EQ(FixtureTokenizer().Decode(ids), std::string(100000, 'a') + " ");
}

// Writes Hugging Face's vocab.json and merges.txt for the vocabulary that
// openai CLIP derives from its merges file.
void WriteHuggingFaceFiles(const fs::path& merges_gz, const fs::path& folder) {
  gzFile file = gzopen(merges_gz.string().c_str(), "rb");
  ASSERT_NE(file, nullptr);
  std::string text;
  char buffer[1 << 16];
  for (int n; (n = gzread(file, buffer, sizeof(buffer))) > 0;) text.append(buffer, n);
  gzclose(file);

  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  const std::size_t merge_count = 49152 - 256 - 2;
  ASSERT_GT(lines.size(), merge_count);

  // GPT-2's byte map: printable Latin-1 bytes stand for themselves, the
  // others map to U+0100 onwards; the 256 characters sorted by code point.
  std::vector<char32_t> characters;
  char32_t extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    characters.push_back(printable ? static_cast<char32_t>(b) : extra++);
  }
  std::sort(characters.begin(), characters.end());
  auto utf8 = [](char32_t c) {
    std::string s;
    if (c < 0x80) {
      s.push_back(static_cast<char>(c));
    } else {
      s.push_back(static_cast<char>(0xC0 | (c >> 6)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
    return s;
  };
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (char32_t c : characters) vocab[utf8(c)] = id++;
  for (char32_t c : characters) vocab[utf8(c) + "</w>"] = id++;
  std::string merges_txt = "#version: 0.2\n";
  for (std::size_t i = 1; i <= merge_count; ++i) {
    const std::size_t space = lines[i].find(' ');
    vocab[lines[i].substr(0, space) + lines[i].substr(space + 1)] = id++;
    merges_txt += lines[i] + "\n";
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  WriteBytes(folder / "vocab.json", vocab.dump());
  WriteBytes(folder / "merges.txt", merges_txt);
}

TEST(Tokenizer, HuggingFaceFilesMatchReferenceCases) {
  TempDir dir;
  WriteHuggingFaceFiles(Fixture(kMergesFixture), dir.path());
  for (const fs::path& path : {dir.path(), dir / "vocab.json", dir / "merges.txt"}) {
    Result<ClipTokenizer> tokenizer = ClipTokenizer::Load(path.string());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
    EXPECT_EQ(tokenizer->VocabSize(), 49408u);
    for (const ReferenceCase& c : ReadReferenceCases()) {
      EXPECT_EQ(EncodeWrapped(*tokenizer, c.prompt), c.ids) << path << " " << c.name;
    }
  }
}

TEST(Tokenizer, LoadsFolderHoldingMergesFile) {
  TempDir dir;
  fs::create_symlink(fs::absolute(Fixture(kMergesFixture)), dir / "bpe_simple_vocab_16e6.txt.gz");
  Result<ClipTokenizer> tokenizer = ClipTokenizer::Load(dir.path().string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  EXPECT_EQ(tokenizer->Encode("cat"), (std::vector<std::int32_t>{2368}));
}

void ExpectLoadError(const fs::path& path, const std::vector<std::string>& fragments) {
  Result<ClipTokenizer> tokenizer = ClipTokenizer::Load(path.string());
  ASSERT_FALSE(tokenizer.ok());
  for (const std::string& fragment : fragments) {
    EXPECT_NE(tokenizer.status().message().find(fragment), std::string::npos)
        << tokenizer.status().message();
  }
}

TEST(Tokenizer, MissingPathIsReported) {
  ExpectLoadError("/nonexistent/tokenizer", {"/nonexistent/tokenizer", "does not exist"});
}

TEST(Tokenizer, FolderWithOnlyVocabIsReported) {
  TempDir dir;
  WriteBytes(dir / "vocab.json", "{}");
  ExpectLoadError(dir.path(), {dir.path().string(), "no merges.txt"});
}

TEST(Tokenizer, TruncatedMergesFileIsReported) {
  TempDir dir;
  const fs::path path = dir / "short.txt.gz";
  gzFile file = gzopen(path.string().c_str(), "wb");
  ASSERT_NE(file, nullptr);
  const std::string text = "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\nt h\n";
  gzwrite(file, text.data(), static_cast<unsigned>(text.size()));
  gzclose(file);
  ExpectLoadError(path, {path.string(), "has 4 lines", "truncated"});
}

TEST(Tokenizer, PlainTextNamedGzIsReported) {
  TempDir dir;
  const fs::path path = dir / "fake.txt.gz";
  WriteBytes(path, "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\n");
  ExpectLoadError(path, {path.string(), ": not gzip-compressed"});
  WriteBytes(path, "");
  ExpectLoadError(path, {path.string(), ": the file is empty"});
}

TEST(Tokenizer, MalformedMergeLineIsReported) {
  TempDir dir;
  WriteBytes(dir / "vocab.json", R"({"a": 0})");
  WriteBytes(dir / "merges.txt", "#version: 0.2\na b c\n");
  ExpectLoadError(dir.path(), {"merges.txt", "line 2 has 3 fields"});
}

TEST(Tokenizer, VocabularyWithoutByteTokensIsReported) {
  TempDir dir;
  WriteBytes(dir / "vocab.json", R"({"a": 0})");
  WriteBytes(dir / "merges.txt", "#version: 0.2\n");
  ExpectLoadError(dir.path(), {"vocab.json", "no entry for byte 0"});
}

TEST(Tokenizer, InvalidVocabJsonIsReported) {
  TempDir dir;
  WriteBytes(dir / "vocab.json", "[1, 2");
  WriteBytes(dir / "merges.txt", "#version: 0.2\n");
  ExpectLoadError(dir.path(), {"vocab.json", "not a JSON object"});
}

// Sets or clears an environment variable for one test.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnvironment() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(Tokenizer, FindPrefersExplicitPath) {
  TempDir model;
  fs::create_directories(model / "tokenizer");
  fs::create_symlink(fs::absolute(Fixture(kMergesFixture)),
                     model / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz");
  const std::string fixture = Fixture(kMergesFixture).string();
  Result<std::string> found = FindTokenizer(fixture, model.path().string());
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_EQ(*found, fixture);
}

TEST(Tokenizer, FindRejectsWrongExplicitPath) {
  ScopedEnvironment env(kTokenizerEnvironmentVariable, Fixture(kMergesFixture).string());
  Result<std::string> found = FindTokenizer(std::string("/nonexistent/vocab"), "");
  ASSERT_FALSE(found.ok());
  EXPECT_NE(found.status().message().find("/nonexistent/vocab does not exist"), std::string::npos)
      << found.status().message();
}

TEST(Tokenizer, FindUsesModelFolderBeforeEnvironment) {
  TempDir model;
  fs::create_directories(model / "tokenizer");
  fs::create_symlink(fs::absolute(Fixture(kMergesFixture)),
                     model / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz");
  ScopedEnvironment env(kTokenizerEnvironmentVariable, "/nonexistent/env");
  Result<std::string> found = FindTokenizer(std::nullopt, model.path().string());
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_EQ(*found, (model / "tokenizer").string());
}

TEST(Tokenizer, FindFallsBackToEnvironment) {
  TempDir model;
  const std::string fixture = Fixture(kMergesFixture).string();
  ScopedEnvironment env(kTokenizerEnvironmentVariable, fixture);
  Result<std::string> found = FindTokenizer(std::nullopt, model.path().string());
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_EQ(*found, fixture);
}

TEST(Tokenizer, FindListsEveryPlaceItLooked) {
  TempDir model;
  ScopedEnvironment env(kTokenizerEnvironmentVariable, "/nonexistent/env");
  Result<std::string> found = FindTokenizer(std::nullopt, model.path().string());
  ASSERT_FALSE(found.ok());
  const std::string message = found.status().message();
  EXPECT_NE(message.find((model / "tokenizer").string() + " does not exist"), std::string::npos)
      << message;
  EXPECT_NE(message.find("$SDONNX_TOKENIZER = /nonexistent/env does not exist"),
            std::string::npos)
      << message;
}

TEST(Tokenizer, FindReportsUnsetEnvironment) {
  ScopedEnvironment env(kTokenizerEnvironmentVariable, std::nullopt);
  Result<std::string> found = FindTokenizer(std::nullopt, "");
  ASSERT_FALSE(found.ok());
  EXPECT_NE(found.status().message().find("$SDONNX_TOKENIZER is not set"), std::string::npos)
      << found.status().message();
}

std::string Padding(std::int32_t id, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += " " + std::to_string(id);
  return out;
}

TEST(TokenizerCli, PrintsChunkIdsAndCount) {
  CommandResult r = RunSdonnx("tokenize --tokenizer " + Quote(Fixture(kMergesFixture)) +
                                      " 'a (red:1.5) cat'", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chunk 1: 49406 320 736 2368" + Padding(49407, 73) + "\n"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("  text: a red cat \n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  weights: 1 1 1.5 1 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokens: 3 in 1 chunk of 75\n"), std::string::npos) << r.output;
}

TEST(TokenizerCli, Sd2PadsWithZero) {
  CommandResult r = RunSdonnx("tokenize --family sd2 --tokenizer " +
                                      Quote(Fixture(kMergesFixture)) + " cat", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chunk 1: 49406 2368 49407" + Padding(0, 74) + "\n"), std::string::npos)
      << r.output;
}

TEST(TokenizerCli, SdxlPrintsBothEncoders) {
  CommandResult r = RunSdonnx("tokenize --family sdxl --tokenizer " +
                                      Quote(Fixture(kMergesFixture)) + " cat", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("encoder 1 (CLIP ViT-L) chunk 1: 49406 2368" + Padding(49407, 75)),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("encoder 2 (OpenCLIP ViT-bigG) chunk 1: 49406 2368 49407" +
                          Padding(0, 74)),
            std::string::npos)
      << r.output;
}

TEST(TokenizerCli, ReadsEnvironmentVariable) {
  CommandResult r =
      RunSdonnx("tokenize 'a, b BREAK c'", "SDONNX_TOKENIZER=" + Quote(Fixture(kMergesFixture)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chunk 1: 49406 320 267 321" + Padding(49407, 73) + "\n"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("chunk 2: 49406 322" + Padding(49407, 75) + "\n"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("tokens: 4 in 2 chunks of 75"), std::string::npos) << r.output;
}

TEST(TokenizerCli, MissingTokenizerSaysWhereItLooked) {
  CommandResult r = RunSdonnx("tokenize cat", "env -u SDONNX_TOKENIZER");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("$SDONNX_TOKENIZER is not set"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--tokenizer"), std::string::npos) << r.output;
}

TEST(TokenizerCli, WrongTokenizerPathIsNamed) {
  CommandResult r = RunSdonnx("tokenize --tokenizer /nonexistent/tok cat", "");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/nonexistent/tok does not exist"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sdonnx
