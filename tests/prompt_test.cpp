// AUTOMATIC1111 prompt syntax and chunking. The expected values are worked
// out by hand from AUTOMATIC1111's rules; the weights of the parser cases
// were also checked against its parse_prompt_attention in Python.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "test_support.h"
#include "text/prompt.h"

namespace sdonnx {
namespace {

using Pieces = std::vector<std::pair<std::string, float>>;
using Ids = std::vector<std::int32_t>;

// A piece whose weight is the double that Python computes, rounded to float
// as the API returns it.
std::pair<std::string, float> Piece(const std::string& text, double weight) {
  return {text, static_cast<float>(weight)};
}

const ClipTokenizer& Tokenizer() {
  static const ClipTokenizer* tokenizer = [] {
    Result<ClipTokenizer> loaded =
        ClipTokenizer::Load(testing::Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string());
    if (!loaded.ok()) throw std::runtime_error(loaded.status().message());
    return new ClipTokenizer(std::move(loaded).value());
  }();
  return *tokenizer;
}

// Token ids of single words in openai CLIP's vocabulary.
constexpr std::int32_t kStart = 49406;
constexpr std::int32_t kEnd = 49407;
constexpr std::int32_t kA = 320;
constexpr std::int32_t kB = 321;
constexpr std::int32_t kC = 322;
constexpr std::int32_t kCat = 2368;
constexpr std::int32_t kComma = 267;
constexpr std::int32_t kBreakWord = 2568;  // "break" as a word

// [start, tokens..., end, then `pad` up to 77 ids].
Ids Chunk(const Ids& tokens, std::int32_t pad = kEnd) {
  Ids ids = {kStart};
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  ids.push_back(kEnd);
  ids.resize(kChunkLength, pad);
  if (tokens.size() == kChunkTokens) ids.back() = kEnd;
  return ids;
}

Ids Repeat(std::int32_t id, std::size_t count) { return Ids(count, id); }

Ids Concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

std::string RepeatText(const std::string& text, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) out += text;
  return out;
}

std::vector<Ids> ChunkIds(const std::string& prompt, std::int32_t pad = kEnd) {
  std::vector<Ids> out;
  for (const PromptChunk& chunk : TokenizePrompt(Tokenizer(), prompt, pad)) out.push_back(chunk.ids);
  return out;
}

TEST(PromptParse, PlainText) {
  EXPECT_EQ(ParsePromptAttention("normal text"), (Pieces{Piece("normal text", 1.0)}));
}

TEST(PromptParse, EmptyPromptIsOneEmptyPiece) {
  EXPECT_EQ(ParsePromptAttention(""), (Pieces{Piece("", 1.0)}));
}

TEST(PromptParse, RoundBracketsMultiplyByOnePointOne) {
  EXPECT_EQ(ParsePromptAttention("an (important) word"),
            (Pieces{Piece("an ", 1.0), Piece("important", 1.1), Piece(" word", 1.0)}));
}

TEST(PromptParse, SquareBracketsDivideByOnePointOne) {
  EXPECT_EQ(ParsePromptAttention("[a]"), (Pieces{Piece("a", 1 / 1.1)}));
  EXPECT_EQ(ParsePromptAttention("[[a]]"), (Pieces{Piece("a", 1 / 1.1 / 1.1)}));
}

TEST(PromptParse, ExplicitWeightAndNesting) {
  // The first '(' is never closed, so it closes at the end and covers the
  // rest of the prompt. Weights as Python prints them.
  EXPECT_EQ(ParsePromptAttention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            (Pieces{Piece("a ", 1.0), Piece("house", 1.5730000000000004), Piece(" ", 1.1),
                    Piece("on", 1.0), Piece(" a ", 1.1), Piece("hill", 0.55),
                    Piece(", sun, ", 1.1), Piece("sky", 1.4641000000000006), Piece(".", 1.1)}));
}

TEST(PromptParse, WeightAllowsSpacesSignsAndOtherDigits) {
  EXPECT_EQ(ParsePromptAttention("(a: 2 )"), (Pieces{Piece("a", 2.0)}));
  EXPECT_EQ(ParsePromptAttention("((a:-1))"), (Pieces{Piece("a", -1.1)}));
  EXPECT_EQ(ParsePromptAttention("(a:.5)"), (Pieces{Piece("a", 0.5)}));
  // Arabic-Indic digits, which Python's \d and float() accept: 1.5.
  EXPECT_EQ(ParsePromptAttention("(a:\xD9\xA1.\xD9\xA5)"), (Pieces{Piece("a", 1.5)}));
}

TEST(PromptParse, EscapesAreLiteral) {
  EXPECT_EQ(ParsePromptAttention("\\(literal\\]"), (Pieces{Piece("(literal]", 1.0)}));
  EXPECT_EQ(ParsePromptAttention("a\\\\b"), (Pieces{Piece("a\\b", 1.0)}));
  EXPECT_EQ(ParsePromptAttention("(\\[x\\))"), (Pieces{Piece("[x)", 1.1)}));
}

TEST(PromptParse, LoneBackslashIsDropped) {
  EXPECT_EQ(ParsePromptAttention("a\\b"), (Pieces{Piece("ab", 1.0)}));
}

TEST(PromptParse, AdjacentEqualWeightsJoin) {
  EXPECT_EQ(ParsePromptAttention("(unnecessary)(parens)"),
            (Pieces{Piece("unnecessaryparens", 1.1)}));
}

TEST(PromptParse, UnclosedBracketsCloseAtEnd) {
  EXPECT_EQ(ParsePromptAttention("(unbalanced"), (Pieces{Piece("unbalanced", 1.1)}));
  EXPECT_EQ(ParsePromptAttention("a [b (c"),
            (Pieces{Piece("a ", 1.0), Piece("b ", 1 / 1.1), Piece("c", 1.1 / 1.1)}));
}

TEST(PromptParse, UnmatchedClosingBracketsAreLiteral) {
  EXPECT_EQ(ParsePromptAttention("a)b]c"), (Pieces{Piece("a)b]c", 1.0)}));
  EXPECT_EQ(ParsePromptAttention("a:1.5)"), (Pieces{Piece("a:1.5)", 1.0)}));
}

TEST(PromptParse, CrossedBracketsCloseIndependently) {
  // '(' covers a and b, '[' covers b and c.
  EXPECT_EQ(ParsePromptAttention("(a[b)c]"),
            (Pieces{Piece("a", 1.1), Piece("b", 1.1 * (1 / 1.1)), Piece("c", 1 / 1.1)}));
}

TEST(PromptParse, InvalidWeightIsText) {
  EXPECT_EQ(ParsePromptAttention("(a:x)"), (Pieces{Piece("a:x", 1.1)}));
  EXPECT_EQ(ParsePromptAttention("(a:1.2.3)"), (Pieces{Piece("a:1.2.3", 1.1)}));
  EXPECT_EQ(ParsePromptAttention("(a:.)"), (Pieces{Piece("a:.", 1.1)}));
}

TEST(PromptParse, BreakIsSeparateWord) {
  EXPECT_EQ(ParsePromptAttention("a BREAK b"),
            (Pieces{Piece("a", 1.0), Piece("BREAK", -1.0), Piece("b", 1.0)}));
  EXPECT_EQ(ParsePromptAttention("a,BREAK,b"),
            (Pieces{Piece("a,", 1.0), Piece("BREAK", -1.0), Piece(",b", 1.0)}));
  EXPECT_EQ(ParsePromptAttention("a \xC2\xA0" "BREAK\n\xE3\x80\x80 b"),
            (Pieces{Piece("a", 1.0), Piece("BREAK", -1.0), Piece("b", 1.0)}));
}

TEST(PromptParse, BreakInsideWordsOrLowercaseIsText) {
  const std::string text = "aBREAK BREAKfast break a_BREAK 1BREAK \xC3\xA9" "BREAK";
  EXPECT_EQ(ParsePromptAttention(text), (Pieces{Piece(text, 1.0)}));
}

TEST(PromptParse, BreakInsideBracketsIsWeightedText) {
  EXPECT_EQ(ParsePromptAttention("(a BREAK b)"),
            (Pieces{Piece("a", 1.1), Piece("BREAK", -1.1), Piece("b", 1.1)}));
}

TEST(PromptParse, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(ParsePromptAttention("(caf\xC3:1.2)"), (Pieces{Piece("caf\xEF\xBF\xBD", 1.2)}));
}

// Checks that every weight of `pieces` is finite and within the limit.
void ExpectWeightsInRange(const Pieces& pieces) {
  for (const auto& [text, weight] : pieces) {
    EXPECT_TRUE(std::isfinite(weight)) << text;
    EXPECT_LE(std::abs(weight), kMaxPromptWeight) << text;
  }
}

TEST(PromptParse, DeepNestingDoesNotOverflowStack) {
  const std::size_t depth = 20000;
  const Pieces closed =
      ParsePromptAttention(std::string(depth, '(') + "a" + std::string(depth, ')'));
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].first, "a");
  EXPECT_EQ(closed[0].second, kMaxPromptWeight);

  const Pieces unclosed = ParsePromptAttention(std::string(depth, '[') + "a");
  ASSERT_EQ(unclosed.size(), 1u);
  EXPECT_EQ(unclosed[0].second, 0.0f);

  const Pieces balanced =
      ParsePromptAttention(RepeatText("([", depth / 2) + "a" + RepeatText("])", depth / 2));
  ASSERT_EQ(balanced.size(), 1u);
  EXPECT_NEAR(balanced[0].second, 1.0f, 1e-4);
}

TEST(PromptParse, DeepNestingClampsWeight) {
  // 1.1^48 is about 97.0, which is below the limit, and 1.1^49 is above it.
  EXPECT_EQ(ParsePromptAttention(std::string(48, '(') + "a"),
            (Pieces{Piece("a", std::pow(1.1, 48))}));
  EXPECT_EQ(ParsePromptAttention(std::string(49, '(') + "a"),
            (Pieces{Piece("a", kMaxPromptWeight)}));
  // A square bracket around the overflow divides the running weight, which
  // stays far above the limit.
  const Pieces outer = ParsePromptAttention("[" + std::string(20000, '(') + "a");
  ASSERT_EQ(outer.size(), 1u);
  EXPECT_EQ(outer[0].second, static_cast<float>(kMaxPromptWeight));
  // 20 000 brackets closed by a weight of 0 would be inf x 0 = NaN without
  // the running limit.
  const Pieces zero =
      ParsePromptAttention("(" + std::string(20000, '(') + "a" + std::string(20000, ')') + ":0)");
  ASSERT_EQ(zero.size(), 1u);
  EXPECT_EQ(zero[0].second, 0.0f);
  // Weights far beyond the limit, divided back down, give the exact result.
  const Pieces back = ParsePromptAttention(RepeatText("[", 100) + RepeatText("(", 100) + "a" +
                                           RepeatText(")", 100) + RepeatText("]", 100));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_NEAR(back[0].second, 1.0f, 1e-6);
  // A negative weight inside deep nesting is clamped to the lower limit.
  EXPECT_EQ(ParsePromptAttention(std::string(20000, '(') + "a:-1)"),
            (Pieces{Piece("a", -kMaxPromptWeight)}));
}

TEST(PromptParse, HugeExplicitWeightIsClamped) {
  EXPECT_EQ(ParsePromptAttention("(a:1000)"), (Pieces{Piece("a", kMaxPromptWeight)}));
  EXPECT_EQ(ParsePromptAttention("(a:-1000)"), (Pieces{Piece("a", -kMaxPromptWeight)}));
  // 1e39 written out: finite as a double, infinite as a float.
  EXPECT_EQ(ParsePromptAttention("(a:1" + std::string(39, '0') + ")"),
            (Pieces{Piece("a", kMaxPromptWeight)}));
  // 400 digits overflow a double, and from_chars reports that as out of range.
  EXPECT_EQ(ParsePromptAttention("(a:" + std::string(400, '9') + ")"),
            (Pieces{Piece("a", kMaxPromptWeight)}));
  EXPECT_EQ(ParsePromptAttention("(a:-" + std::string(400, '9') + ".5)"),
            (Pieces{Piece("a", -kMaxPromptWeight)}));
  // Weights that multiply past the limit, and one that underflows.
  EXPECT_EQ(ParsePromptAttention("((((a:1000):1000):1000):1000)"),
            (Pieces{Piece("a", kMaxPromptWeight)}));
  EXPECT_EQ(ParsePromptAttention("(a:0." + std::string(400, '0') + "1)"),
            (Pieces{Piece("a", 0.0)}));
  // A weight over the limit divided back into range is not cut early.
  double divided = 150;
  for (int i = 0; i < 5; ++i) divided *= 1 / 1.1;
  EXPECT_EQ(ParsePromptAttention("[[[[[(a:150)]]]]]"), (Pieces{Piece("a", divided)}));
}

TEST(PromptParse, NanAndInfWeightsAreText) {
  // AUTOMATIC1111's weight pattern is [+-]?[.\d]+, so none of these is a
  // weight: the ':' and what follows are text, and ')' is a plain close.
  for (const std::string weight : {"nan", "inf", "-inf", "+inf", "1e39", "infinity", "NaN"}) {
    const Pieces pieces = ParsePromptAttention("(word:" + weight + ")");
    EXPECT_EQ(pieces, (Pieces{Piece("word:" + weight, 1.1)})) << weight;
    ExpectWeightsInRange(pieces);
  }
}

TEST(PromptParse, EveryWeightIsFinite) {
  const std::vector<std::string> prompts = {
      std::string(20000, '(') + "a" + std::string(20000, ')'),
      RepeatText("(a", 20000),
      RepeatText("[a", 20000),
      RepeatText("(a:" + std::string(400, '9') + ")", 100),
      std::string(20000, '(') + "a" + RepeatText(":" + std::string(400, '9') + ")", 20000),
      std::string(2000, '(') + "a" + RepeatText(":-1e39)", 2000),
  };
  for (const std::string& prompt : prompts) {
    ExpectWeightsInRange(ParsePromptAttention(prompt));
    for (const PromptChunk& chunk : TokenizePrompt(Tokenizer(), prompt, kEnd)) {
      for (float weight : chunk.weights) {
        ASSERT_TRUE(std::isfinite(weight));
        ASSERT_LE(std::abs(weight), kMaxPromptWeight);
      }
    }
  }
}

TEST(PromptParse, HundredKilobytesOfNestedPiecesIsFast) {
  // "(a(a(a...": the k-th "a" is inside k brackets, all closed at the end.
  // From k = 49 on, 1.1^k is above kMaxPromptWeight, so those pieces are
  // clamped to it and join: 48 pieces below the limit and one at it.
  const auto start = std::chrono::steady_clock::now();
  const Pieces pieces = ParsePromptAttention(RepeatText("(a", 50000));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(pieces.size(), 49u);
  EXPECT_EQ(pieces.front(), Piece("a", 1.1));
  EXPECT_EQ(pieces.back().second, kMaxPromptWeight);
  std::size_t letters = 0;
  for (const auto& piece : pieces) letters += piece.first.size();
  EXPECT_EQ(letters, 50000u);
  EXPECT_LT(seconds, 10.0);
}

TEST(PromptChunks, ShortPromptIsOnePaddedChunk) {
  const std::vector<PromptChunk> chunks = TokenizePrompt(Tokenizer(), "a photo of a cat", kEnd);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].ids, Chunk({kA, 1125, 539, kA, kCat}));
  EXPECT_EQ(chunks[0].weights, std::vector<float>(kChunkLength, 1.0f));
}

TEST(PromptChunks, OpenClipPadsWithZeroAfterEnd) {
  EXPECT_EQ(ChunkIds("a cat", kOpenClipPadId), (std::vector<Ids>{Chunk({kA, kCat}, 0)}));
}

TEST(PromptChunks, EmptyPromptGivesOneEmptyChunk) {
  EXPECT_EQ(ChunkIds(""), (std::vector<Ids>{Chunk({})}));
  EXPECT_EQ(ChunkIds("", 0), (std::vector<Ids>{Chunk({}, 0)}));
}

TEST(PromptChunks, WeightsFollowTokens) {
  const std::vector<PromptChunk> chunks = TokenizePrompt(Tokenizer(), "a (cat:1.5) [b]", kEnd);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].ids, Chunk({kA, kCat, kB}));
  std::vector<float> expected(kChunkLength, 1.0f);
  expected[2] = 1.5f;
  expected[3] = static_cast<float>(1 / 1.1);
  EXPECT_EQ(chunks[0].weights, expected);
}

TEST(PromptChunks, SeventyFiveTokensFillOneChunk) {
  EXPECT_EQ(ChunkIds(RepeatText("a ", 75)), (std::vector<Ids>{Chunk(Repeat(kA, 75))}));
  EXPECT_EQ(ChunkIds(RepeatText("a ", 76)),
            (std::vector<Ids>{Chunk(Repeat(kA, 75)), Chunk({kA})}));
}

TEST(PromptChunks, CommaNearEndMovesRestToNextChunk) {
  // 70 a, a comma at index 70, then 10 b: the chunk fills at 75 with 4 b;
  // the fifth b finds the comma 5 tokens back, so the 4 b move on.
  const std::string prompt = RepeatText("a ", 70) + ", " + RepeatText("b ", 10);
  EXPECT_EQ(ChunkIds(prompt), (std::vector<Ids>{Chunk(Concat({Repeat(kA, 70), {kComma}})),
                                                Chunk(Repeat(kB, 10))}));
}

TEST(PromptChunks, CommaTwentyBackStillMoves) {
  const std::string prompt = RepeatText("a ", 55) + ", " + RepeatText("b ", 25);
  EXPECT_EQ(ChunkIds(prompt), (std::vector<Ids>{Chunk(Concat({Repeat(kA, 55), {kComma}})),
                                                Chunk(Repeat(kB, 25))}));
}

TEST(PromptChunks, CommaTwentyOneBackStays) {
  const std::string prompt = RepeatText("a ", 54) + ", " + RepeatText("b ", 25);
  EXPECT_EQ(ChunkIds(prompt),
            (std::vector<Ids>{Chunk(Concat({Repeat(kA, 54), {kComma}, Repeat(kB, 20)})),
                              Chunk(Repeat(kB, 5))}));
}

TEST(PromptChunks, CommaAsSeventySixthTokenStartsNextChunk) {
  EXPECT_EQ(ChunkIds(RepeatText("a ", 75) + ", c"),
            (std::vector<Ids>{Chunk(Repeat(kA, 75)), Chunk({kComma, kC})}));
}

TEST(PromptChunks, MovedTokensKeepTheirWeights) {
  const std::string prompt = RepeatText("a ", 70) + ", (b:1.5) " + RepeatText("c ", 5);
  const std::vector<PromptChunk> chunks = TokenizePrompt(Tokenizer(), prompt, kEnd);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[1].ids, Chunk(Concat({{kB}, Repeat(kC, 5)})));
  EXPECT_EQ(chunks[1].weights[1], 1.5f);
  EXPECT_EQ(chunks[1].weights[2], 1.0f);
}

TEST(PromptChunks, BreakStartsNewChunk) {
  EXPECT_EQ(ChunkIds("a BREAK b"), (std::vector<Ids>{Chunk({kA}), Chunk({kB})}));
  EXPECT_EQ(ChunkIds("a BREAK"), (std::vector<Ids>{Chunk({kA})}));
  EXPECT_EQ(ChunkIds("BREAK"), (std::vector<Ids>{Chunk({})}));
  EXPECT_EQ(ChunkIds("BREAK BREAK a"), (std::vector<Ids>{Chunk({}), Chunk({}), Chunk({kA})}));
}

TEST(PromptChunks, BreakAfterFullChunkAddsNoEmptyChunk) {
  EXPECT_EQ(ChunkIds(RepeatText("a ", 75) + "BREAK b"),
            (std::vector<Ids>{Chunk(Repeat(kA, 75)), Chunk({kB})}));
}

TEST(PromptChunks, BreakInsideBracketsIsEncodedAsWord) {
  const std::vector<PromptChunk> chunks = TokenizePrompt(Tokenizer(), "(a BREAK b)", kEnd);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].ids, Chunk({kA, kBreakWord, kB}));
  EXPECT_EQ(chunks[0].weights[2], static_cast<float>(-1.1));
}

TEST(PromptChunks, PaddingReplacesEverythingAfterFirstEnd) {
  // As in AUTOMATIC1111, an end-of-text token typed into the prompt ends the
  // chunk for an encoder that pads with 0.
  EXPECT_EQ(ChunkIds("a <|endoftext|> b", 0), (std::vector<Ids>{Chunk({kA}, 0)}));
  EXPECT_EQ(ChunkIds("a <|endoftext|> b"), (std::vector<Ids>{Chunk({kA, kEnd, kB})}));
}

TEST(PromptChunks, InvalidUtf8IsEncodedAsReplacementCharacter) {
  // "caf" + U+FFFD: ids from openai CLIP's tokenizer.
  EXPECT_EQ(ChunkIds("caf\xC3"), (std::vector<Ids>{Chunk({20867, 39802})}));
}

TEST(PromptChunks, HundredKilobytePromptSplitsAtCommas) {
  // Each repetition is 6 tokens ending in a comma. 12 fill 72 tokens; the
  // next 3 fill the chunk and move on, since the comma is 4 tokens back.
  const std::size_t repeats = 100 * 1024 / std::string("a photo of a cat, ").size() + 1;
  const std::string prompt = RepeatText("a photo of a cat, ", repeats);
  const std::vector<PromptChunk> chunks = TokenizePrompt(Tokenizer(), prompt, kEnd);
  ASSERT_EQ(chunks.size(), (repeats + 11) / 12);
  const Ids repetition = {kA, 1125, 539, kA, kCat, kComma};
  Ids full;
  for (int i = 0; i < 12; ++i) full.insert(full.end(), repetition.begin(), repetition.end());
  EXPECT_EQ(chunks.front().ids, Chunk(full));
  for (const PromptChunk& chunk : chunks) {
    EXPECT_EQ(chunk.ids.size(), kChunkLength);
    EXPECT_EQ(chunk.weights.size(), kChunkLength);
  }
  EXPECT_EQ(CountPromptTokens(Tokenizer(), prompt), repeats * 6);
}

TEST(PromptCount, CountsPromptTokensOnly) {
  EXPECT_EQ(CountPromptTokens(Tokenizer(), ""), 0u);
  EXPECT_EQ(CountPromptTokens(Tokenizer(), "a (cat:1.2) BREAK b"), 3u);
  EXPECT_EQ(CountPromptTokens(Tokenizer(), RepeatText("a ", 80)), 80u);
}

TEST(PromptEqualize, PadsShorterListWithEmptyChunks) {
  std::vector<PromptChunk> positive = TokenizePrompt(Tokenizer(), "a BREAK b BREAK c", 0);
  std::vector<PromptChunk> negative = TokenizePrompt(Tokenizer(), "b", 0);
  EqualizeChunkCounts(positive, negative, kStart, kEnd, 0);
  ASSERT_EQ(positive.size(), 3u);
  ASSERT_EQ(negative.size(), 3u);
  EXPECT_EQ(negative[0].ids, Chunk({kB}, 0));
  EXPECT_EQ(negative[1].ids, Chunk({}, 0));
  EXPECT_EQ(negative[2].ids, Chunk({}, 0));
  EXPECT_EQ(negative[2].weights, std::vector<float>(kChunkLength, 1.0f));
}

TEST(PromptEqualize, WorksInEitherOrder) {
  std::vector<PromptChunk> positive = TokenizePrompt(Tokenizer(), "a", kEnd);
  std::vector<PromptChunk> negative = TokenizePrompt(Tokenizer(), "a BREAK b", kEnd);
  EqualizeChunkCounts(positive, negative, kStart, kEnd, kEnd);
  ASSERT_EQ(positive.size(), 2u);
  EXPECT_EQ(positive[1].ids, Chunk({}));
  EXPECT_EQ(negative.size(), 2u);
}

}  // namespace
}  // namespace sdonnx
