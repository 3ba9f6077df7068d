#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "text/clip_tokenizer.h"
#include "text/prompt.h"

namespace sdonnx::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string family = "sd1";
  std::string prompt;
};

struct Encoder {
  std::string label;  // empty when the family has one text encoder
  std::int32_t pad_id;
};

std::vector<Encoder> EncodersOf(const std::string& family) {
  if (family == "sd2") return {{"", kOpenClipPadId}};
  if (family == "sdxl") {
    return {{"encoder 1 (CLIP ViT-L) ", kClipPadId}, {"encoder 2 (OpenCLIP ViT-bigG) ", kOpenClipPadId}};
  }
  return {{"", kClipPadId}};
}

std::string PaddingName(std::int32_t pad_id, const ClipTokenizer& tokenizer) {
  return std::to_string(pad_id) + (pad_id == tokenizer.EndId() ? " (end of text)" : "");
}

// The prompt tokens of a chunk: the ids after the start id, up to the
// first end-of-text id.
std::vector<std::int32_t> PromptTokens(const PromptChunk& chunk, std::int32_t end_id) {
  std::vector<std::int32_t> tokens;
  for (std::size_t i = 1; i < chunk.ids.size() && chunk.ids[i] != end_id; ++i) {
    tokens.push_back(chunk.ids[i]);
  }
  return tokens;
}

void PrintChunk(const std::string& label, std::size_t number, const PromptChunk& chunk,
                const ClipTokenizer& tokenizer) {
  std::cout << label << "chunk " << number << ":";
  for (std::int32_t id : chunk.ids) std::cout << " " << id;
  std::cout << "\n";
  // The decoded text comes from the tokenizer files and the prompt.
  PrintLine("  text: " + tokenizer.Decode(PromptTokens(chunk, tokenizer.EndId())));
  const bool weighted =
      std::any_of(chunk.weights.begin(), chunk.weights.end(), [](float w) { return w != 1.0f; });
  if (!weighted) return;
  std::cout << "  weights:";
  for (float weight : chunk.weights) {
    char text[32];
    std::snprintf(text, sizeof(text), " %.6g", static_cast<double>(weight));
    std::cout << text;
  }
  std::cout << "\n";
}

int RunTokenize(const TokenizeArgs& args) {
  std::optional<std::string> explicit_path;
  if (!args.tokenizer.empty()) explicit_path = args.tokenizer;
  Result<std::string> path = FindTokenizer(explicit_path, "");
  if (!path.ok()) {
    return ReportError(path.status().message());
  }
  Result<ClipTokenizer> tokenizer = ClipTokenizer::Load(*path);
  if (!tokenizer.ok()) return ReportError(tokenizer.status().message());

  const std::vector<Encoder> encoders = EncodersOf(args.family);
  PrintLine("tokenizer: " + *path);
  std::cout << "family " << args.family << ":";
  for (std::size_t e = 0; e < encoders.size(); ++e) {
    std::cout << (e == 0 ? " " : ", ") << encoders[e].label << "padding "
              << PaddingName(encoders[e].pad_id, *tokenizer);
  }
  std::cout << "\n";

  std::size_t chunk_count = 0;
  for (const Encoder& encoder : encoders) {
    const std::vector<PromptChunk> chunks = TokenizePrompt(*tokenizer, args.prompt, encoder.pad_id);
    chunk_count = chunks.size();
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      PrintChunk(encoder.label, i + 1, chunks[i], *tokenizer);
    }
  }
  std::cout << "tokens: " << CountPromptTokens(*tokenizer, args.prompt) << " in " << chunk_count
            << (chunk_count == 1 ? " chunk" : " chunks") << " of " << kChunkTokens << "\n";
  return 0;
}

}  // namespace

void AddTokenizeCommand(CLI::App& app, std::function<int()>* run) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Show the CLIP token ids of a prompt, split into the text encoder's chunks");
  cmd->add_option("prompt", args->prompt, "Prompt, with AUTOMATIC1111 emphasis and BREAK syntax")
      ->required();
  cmd->add_option("--tokenizer", args->tokenizer,
                  std::string("bpe_simple_vocab_16e6.txt.gz, or a folder with it or with "
                              "vocab.json and merges.txt (default: $") +
                      kTokenizerEnvironmentVariable + ")");
  cmd->add_option("--family", args->family,
                  "Model family, which sets the padding id: sd1 and sdxl's first encoder pad with "
                  "the end-of-text id, sd2 and sdxl's second encoder with 0")
      ->check(CLI::IsMember({"sd1", "sd2", "sdxl"}))
      ->capture_default_str();
  cmd->callback([run, args] { *run = [args] { return RunTokenize(*args); }; });
}

}  // namespace sdonnx::cli
