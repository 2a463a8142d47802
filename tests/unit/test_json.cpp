// dw::json: the pre-scan that runs before json-glib (size, depth, text rules) and the parse helpers.
#include "json/json.h"

#include <gtest/gtest.h>

#include <string>

using dw::json::Error;
using dw::json::Limits;

namespace {

std::string nested(int levels, char open = '[', char close = ']') {
  return std::string(levels, open) + std::string(levels, close);
}

// The message parse() throws, or "" when it parses.
std::string parse_error(const std::string &text, const Limits &limits = {}) {
  try {
    dw::json::parse(text, "test input", limits);
    return {};
  } catch (const Error &e) {
    return e.what();
  }
}

}  // namespace

TEST(Json, ParsesObjectsAndArrays) {
  auto root = dw::json::parse_object(R"({"a": [1, 2, {"b": "c"}], "d": null})", "doc");
  ASSERT_TRUE(JSON_NODE_HOLDS_OBJECT(root.get()));
  JsonObject *o = json_node_get_object(root.get());
  EXPECT_EQ(json_array_get_length(json_object_get_array_member(o, "a")), 3u);
  EXPECT_EQ(dw::json::to_string(root.get()), R"({"a":[1,2,{"b":"c"}],"d":null})");
}

TEST(Json, DeepNestingRefusedWithoutCrash) {
  // json-glib recurses once per level: this many levels overflowed the stack before the pre-scan.
  std::string text(75000, '[');
  std::string msg = parse_error(text);
  EXPECT_NE(msg.find("test input"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nested deeper than 64 levels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 64"), std::string::npos) << msg;  // the 65th '['
  EXPECT_NE(parse_error(nested(75000, '{', '}')), "");
  EXPECT_NE(parse_error(R"({"a":)" + std::string(75000, '[')), "");
}

TEST(Json, DepthExactlyAtLimitAccepted) {
  EXPECT_EQ(parse_error(nested(64)), "");
  EXPECT_NE(parse_error(nested(65)).find("nested deeper than 64"), std::string::npos);
  Limits small;
  small.max_depth = 3;
  EXPECT_EQ(parse_error(R"({"a":[{"b":1}]})", small), "");
  EXPECT_NE(parse_error(R"({"a":[{"b":[1]}]})", small).find("nested deeper than 3 levels at byte 11"), std::string::npos);
  // Siblings do not add up: depth goes back down after each closer.
  std::string siblings = "[";
  for (int i = 0; i < 1000; i++) siblings += (i ? "," : "") + nested(2);
  siblings += "]";
  EXPECT_EQ(parse_error(siblings, small), "");
}

TEST(Json, BracketsInsideStringsDoNotCount) {
  Limits small;
  small.max_depth = 2;
  std::string text = R"({"a": ")" + std::string(1000, '[') + std::string(1000, '{') + R"("})";
  EXPECT_EQ(parse_error(text, small), "");
  // An escaped quote does not end the string early.
  EXPECT_EQ(parse_error(R"({"a": "\"[[[[[[\\", "b": ["]]]]"]})", small), "");
  EXPECT_NE(parse_error(R"({"a": "\"", "b": [[1]]})", small), "");
}

TEST(Json, NulRefused) {
  std::string raw = std::string(R"({"a": "abc)") + '\0' + R"(def"})";
  std::string msg = parse_error(raw);
  EXPECT_NE(msg.find("NUL byte at byte 10"), std::string::npos) << msg;
  msg = parse_error(R"({"a": "abc\u0000def"})");
  EXPECT_NE(msg.find("\\u0000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 10"), std::string::npos) << msg;
}

TEST(Json, LoneSurrogatesRefused) {
  std::string msg = parse_error(R"({"a": "\ud800x"})");
  EXPECT_NE(msg.find("lone UTF-16 high surrogate"), std::string::npos) << msg;
  EXPECT_NE(parse_error(R"(["\uDBFF"])").find("high surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\ud800\u0041"])").find("high surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\ud800\ud800"])").find("high surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\udc00"])").find("low surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"(["x\\\udfff"])").find("low surrogate"), std::string::npos);
  // An escaped backslash before "u" is not an escape.
  EXPECT_EQ(parse_error(R"(["\\ud800"])"), "");
}

TEST(Json, MalformedEscapesRefused) {
  // json-glib turned this (found by fuzz_json) into a lone surrogate in its output string.
  EXPECT_NE(parse_error(R"(["out(\udc0''T0ut{"])").find("malformed \\u escape"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\u12"])").find("malformed"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\x41"])").find("invalid escape in a string at byte 2"), std::string::npos);
  EXPECT_EQ(parse_error(R"(["\"\\\/\b\f\n\r\t\u0041"])"), "");
}

TEST(Json, ValidSurrogatePairsAccepted) {
  auto root = dw::json::parse(R"(["\ud83d\ude00 ok", "\u00e9"])", "doc");
  JsonArray *a = json_node_get_array(root.get());
  EXPECT_STREQ(json_array_get_string_element(a, 0), "\xF0\x9F\x98\x80 ok");
  EXPECT_STREQ(json_array_get_string_element(a, 1), "\xC3\xA9");
}

TEST(Json, InvalidUtf8Refused) {
  std::string msg = parse_error("{\"a\": \"ok\xED\xA0\x80\"}");  // an encoded surrogate
  EXPECT_NE(msg.find("invalid UTF-8 at byte 9"), std::string::npos) << msg;
  EXPECT_NE(parse_error("[\"\xff\"]").find("invalid UTF-8"), std::string::npos);
  EXPECT_NE(parse_error("[\"\xC3\"]").find("invalid UTF-8"), std::string::npos);  // truncated
  EXPECT_EQ(parse_error("[\"\xC3\xA9\"]"), "");
}

TEST(Json, SizeLimit) {
  Limits tiny;
  tiny.max_bytes = 16;
  const std::string fits = R"({"a":"01234567"})", over = R"({"a":"012345678"})";
  ASSERT_EQ(fits.size(), 16u);
  EXPECT_EQ(parse_error(fits, tiny), "");
  std::string msg = parse_error(over, tiny);
  EXPECT_NE(msg.find("17 bytes exceeds the limit of 16"), std::string::npos) << msg;
}

TEST(Json, ErrorsNameTheInput) {
  try {
    dw::json::parse("{\"a\":", "cache index.json");
    FAIL() << "truncated JSON parsed";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("cache index.json: invalid JSON"), std::string::npos) << e.what();
  }
  EXPECT_NE(parse_error("").find("empty"), std::string::npos);
  EXPECT_NE(parse_error("   ").find("empty"), std::string::npos);
  try {
    dw::json::parse_object("[1]", "control request");
    FAIL() << "array accepted as object";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("control request: expected a JSON object, got an array"), std::string::npos)
        << e.what();
  }
}

TEST(Json, CheckMatchesParse) {
  EXPECT_EQ(dw::json::check("[1]"), "");
  EXPECT_NE(dw::json::check(std::string(100, '[')), "");
}

TEST(Json, CheckText) {
  EXPECT_EQ(dw::json::check_text("a prompt, \xC3\xA9"), "");
  EXPECT_EQ(dw::json::check_text(""), "");
  EXPECT_NE(dw::json::check_text(std::string("ab\0c", 4)).find("NUL"), std::string::npos);
  EXPECT_NE(dw::json::check_text("ab\xED\xA0\x80").find("not valid UTF-8 at byte 2"), std::string::npos);
  EXPECT_EQ(dw::json::check_text("12345", 5), "");
  EXPECT_NE(dw::json::check_text("123456", 5).find("longer than 5 bytes"), std::string::npos);
}

// Found by fuzz/control: json-glib quotes the unexpected token cut at a byte count, splitting a
// UTF-8 sequence; the error message goes into HTTP replies and must be valid text.
TEST(Json, ParseErrorMessageIsValidText) {
  const std::string input = "0\"`00\\u00d400\\u0CCC&CCCCCCC1a\\\"`00\\u00d400\\u0CC00\\u00d400\\u0CCCCCCCCCC"
                            "[u\"sdpMLineIndex\"d400`00\\u00d400\\u0CCCu00dC#400\\u0CCC";
  try {
    dw::json::parse(input, "control request");
    FAIL() << "not JSON, must be refused";
  } catch (const dw::json::Error &e) {
    EXPECT_EQ(dw::json::check_text(e.what()), "") << e.what();
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos);
  }
}
