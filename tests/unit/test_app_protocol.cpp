// The app's control-API and signalling parsers (tools/dreamwindow/protocol.h), GStreamer-free:
// hostile bodies are refused with the right status and a message naming the key or field.
#include <gtest/gtest.h>

#include <string>

#include "protocol.h"

using dw::app::ControlRequest;
using dw::app::parse_control;
using dw::app::parse_signal;
using dw::app::ProtocolError;
using dw::app::SignalMessage;

namespace {

ProtocolError refuse(const std::string &body) {
  ControlRequest r;
  ProtocolError e;
  EXPECT_FALSE(parse_control(body, &r, &e)) << body.substr(0, 80);
  return e;
}

}  // namespace

TEST(ControlParser, AcceptsEveryKnownKey) {
  ControlRequest r;
  ProtocolError e;
  ASSERT_TRUE(parse_control(R"({"prompt":"a sea of glass","negative_prompt":"","denoise":0.35,"seed":42,"pause":true})",
                            &r, &e))
      << e.message;
  EXPECT_EQ(*r.prompt, "a sea of glass");
  EXPECT_EQ(*r.negative_prompt, "");
  EXPECT_DOUBLE_EQ(*r.denoise, 0.35);
  EXPECT_EQ(*r.seed, 42);
  EXPECT_TRUE(*r.pause);
  ASSERT_TRUE(parse_control(R"({"action":"resume"})", &r, &e));
  EXPECT_FALSE(*r.pause);
  EXPECT_FALSE(r.prompt.has_value());
  ASSERT_TRUE(parse_control(R"({"denoise":1})", &r, &e)) << e.message;  // an integer is a number
  // Escaped non-BMP text (a surrogate pair) is fine.
  ASSERT_TRUE(parse_control(R"({"prompt":"\ud83c\udf0a waves"})", &r, &e)) << e.message;
  EXPECT_EQ(*r.prompt, "\xF0\x9F\x8C\x8A waves");
}

TEST(ControlParser, DeepNestingIsRefusedNotRecursed) {
  const ProtocolError e = refuse(std::string(75000, '['));
  EXPECT_EQ(e.status, 400u);
  EXPECT_NE(e.message.find("nested"), std::string::npos) << e.message;
}

TEST(ControlParser, UnknownKeysAreNamed) {
  const ProtocolError e = refuse(R"({"prompt":"x","denosie":0.5})");
  EXPECT_EQ(e.status, 400u);
  EXPECT_NE(e.message.find("'denosie'"), std::string::npos) << e.message;
}

TEST(ControlParser, InvalidTextNamesTheField) {
  ProtocolError e = refuse(R"({"seed":1,"prompt":"\ud800x"})");
  EXPECT_EQ(e.status, 400u);
  EXPECT_EQ(e.message.rfind("prompt: ", 0), 0u) << e.message;
  e = refuse(R"({"negative_prompt":"abc\u0000def"})");
  EXPECT_EQ(e.message.rfind("negative_prompt: ", 0), 0u) << e.message;
  e = refuse("{\"prompt\":\"ab\xC3(\"}");  // raw invalid UTF-8
  EXPECT_EQ(e.message.rfind("prompt: ", 0), 0u) << e.message;
}

TEST(ControlParser, SizeLimits) {
  dw::app::ControlLimits limits;
  ControlRequest r;
  ProtocolError e;
  const std::string big = "{\"prompt\":\"" + std::string(limits.max_body, 'a') + "\"}";
  EXPECT_FALSE(parse_control(big, &r, &e, limits));
  EXPECT_EQ(e.status, 413u);
  const std::string long_prompt = "{\"prompt\":\"" + std::string(limits.max_prompt + 1, 'a') + "\"}";
  EXPECT_FALSE(parse_control(long_prompt, &r, &e, limits));
  EXPECT_EQ(e.status, 400u);
  EXPECT_NE(e.message.find("prompt"), std::string::npos) << e.message;
  const std::string ok_prompt = "{\"prompt\":\"" + std::string(limits.max_prompt, 'a') + "\"}";
  EXPECT_TRUE(parse_control(ok_prompt, &r, &e, limits)) << e.message;
}

TEST(ControlParser, TypesAndRanges) {
  for (const char *body : {R"({"denoise":2})", R"({"denoise":"0.5"})", R"({"seed":-1})", R"({"seed":1.5})",
                           R"({"pause":"yes"})", R"({"action":"stop"})", R"({"prompt":5})", "[1]", "not json", "",
                           R"({"pause":true,"action":"resume"})"}) {
    const ProtocolError e = refuse(body);
    EXPECT_EQ(e.status, 400u) << body;
    EXPECT_FALSE(e.message.empty()) << body;
  }
}

TEST(SignalParser, TypedMessages) {
  SignalMessage m;
  std::string why;
  ASSERT_TRUE(parse_signal(R"({"type":"answer","sdp":"v=0\r\n"})", &m, &why)) << why;
  EXPECT_EQ(m.type, SignalMessage::Type::Answer);
  EXPECT_EQ(m.sdp, "v=0\r\n");
  ASSERT_TRUE(parse_signal(R"({"type":"ice","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMLineIndex":0})",
                           &m, &why))
      << why;
  EXPECT_EQ(m.type, SignalMessage::Type::Ice);
  EXPECT_EQ(m.mline, 0u);
}

TEST(SignalParser, WrongTypesAreRefusedWithAMessage) {
  SignalMessage m;
  std::string why;
  EXPECT_FALSE(parse_signal(R"({"type":"answer","sdp":5})", &m, &why));
  EXPECT_NE(why.find("sdp"), std::string::npos) << why;
  for (const char *text : {R"({"type":"answer"})", R"({"type":5})", R"({"sdp":"x"})", R"({"type":"offer","sdp":"x"})",
                           R"({"type":"ice","candidate":1})", R"({"type":"ice","candidate":"c","sdpMLineIndex":-1})",
                           R"({"type":"ice","candidate":"c","sdpMLineIndex":"0"})", "[]", "{", ""}) {
    why.clear();
    EXPECT_FALSE(parse_signal(text, &m, &why)) << text;
    EXPECT_FALSE(why.empty()) << text;
  }
  why.clear();
  EXPECT_FALSE(parse_signal(std::string(75000, '['), &m, &why));
  EXPECT_NE(why.find("nested"), std::string::npos) << why;
}

TEST(MemberAt, NamesTheTopLevelMember) {
  const std::string text = R"({"a":1,"bb":{"c":"xyz"},"d":"q"})";
  EXPECT_EQ(dw::app::member_at(text, text.find("xyz")), "bb");
  EXPECT_EQ(dw::app::member_at(text, text.find("\"q\"") + 1), "d");
  EXPECT_EQ(dw::app::member_at(text, 0), "");
}
