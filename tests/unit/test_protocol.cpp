// Parsing / building of the ComfyUI wire protocol, with the real payloads of PROTOCOL.md.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "comfy/client.h"
#include "comfy/protocol.h"

using namespace dw::comfy;
using namespace dw::comfy::proto;

namespace {

WsMessage text(const std::string &s, Error *err = nullptr) {
  WsMessage m;
  Error e = parse_ws_text(s.data(), s.size(), &m);
  if (err) *err = e;
  else EXPECT_FALSE(e) << e.describe() << " for " << s;
  return m;
}

std::vector<uint8_t> be32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

void append(std::vector<uint8_t> &v, const std::vector<uint8_t> &w) { v.insert(v.end(), w.begin(), w.end()); }
void append(std::vector<uint8_t> &v, const std::string &w) { v.insert(v.end(), w.begin(), w.end()); }

const std::vector<uint8_t> kPng = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R'};

Error prompt_resp(int status, const std::string &body, PromptResponse *pr, std::vector<std::string> wanted = {}) {
  return parse_prompt_response(status, body.data(), body.size(), wanted, pr);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Text messages

TEST(ProtocolText, StatusWithAndWithoutSid) {
  auto m = text(R"({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "probeA-08b83408"}})");
  EXPECT_EQ(m.type, MsgType::Status);
  EXPECT_EQ(m.queue_remaining, 0);
  EXPECT_EQ(m.sid, "probeA-08b83408");
  EXPECT_TRUE(m.prompt_id.empty());
  m = text(R"({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}})");
  EXPECT_EQ(m.queue_remaining, 1);
  EXPECT_TRUE(m.sid.empty());
}

TEST(ProtocolText, ExecutionStartAndCached) {
  auto m = text(R"({"type": "execution_start", "data": {"prompt_id": "321b", "timestamp": 1795563841628}})");
  EXPECT_EQ(m.type, MsgType::ExecutionStart);
  EXPECT_EQ(m.prompt_id, "321b");
  EXPECT_EQ(m.timestamp, 1795563841628);
  m = text(R"({"type": "execution_cached", "data": {"nodes": ["1", "2", "3"], "prompt_id": "1b08", "timestamp": 1}})");
  EXPECT_EQ(m.type, MsgType::ExecutionCached);
  EXPECT_EQ(m.node_list, (std::vector<std::string>{"1", "2", "3"}));
  m = text(R"({"type": "execution_cached", "data": {"nodes": [], "prompt_id": "1b08"}})");
  EXPECT_TRUE(m.node_list.empty());
}

TEST(ProtocolText, Executing) {
  auto m = text(R"({"type": "executing", "data": {"node": "2", "display_node": "2", "prompt_id": "p"}})");
  EXPECT_EQ(m.type, MsgType::Executing);
  EXPECT_EQ(m.node, "2");
  EXPECT_FALSE(m.node_is_null);
  EXPECT_EQ(m.display_node, "2");
  EXPECT_EQ(m.prompt_id, "p");
  m = text(R"({"type": "executing", "data": {"node": null, "prompt_id": "p"}})");
  EXPECT_TRUE(m.node_is_null);
  EXPECT_TRUE(m.node.empty());
  // After a reconnect: no prompt_id, no display_node.
  m = text(R"({"type": "executing", "data": {"node": "2"}})");
  EXPECT_EQ(m.node, "2");
  EXPECT_TRUE(m.prompt_id.empty());
  Error e;
  text(R"({"type": "executing", "data": {"node": 2, "prompt_id": "p"}})", &e);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
}

TEST(ProtocolText, ProgressAndProgressState) {
  auto m = text(R"({"type": "progress", "data": {"value": 0, "max": 2, "prompt_id": "1d7d", "node": "4"}})");
  EXPECT_EQ(m.type, MsgType::Progress);
  EXPECT_EQ(m.value, 0);
  EXPECT_EQ(m.max, 2);
  EXPECT_EQ(m.node, "4");
  m = text(R"({"type": "progress", "data": {"value": 0.5, "max": 1.0, "prompt_id": "x", "node": "4"}})");
  EXPECT_DOUBLE_EQ(m.value, 0.5);
  m = text(R"({"type": "progress_state", "data": {"prompt_id": "321b", "nodes": {
    "1": {"value": 1.0, "max": 1.0, "state": "finished", "node_id": "1", "prompt_id": "321b", "display_node_id": "1", "parent_node_id": null, "real_node_id": "1"},
    "2": {"value": 0, "max": 2, "state": "running", "node_id": "2", "prompt_id": "321b", "display_node_id": "2", "parent_node_id": null, "real_node_id": "2"}}}})");
  EXPECT_EQ(m.type, MsgType::ProgressState);
  ASSERT_EQ(m.nodes.size(), 2u);
  for (auto &n : m.nodes) {
    if (n.node_id == "1") {
      EXPECT_EQ(n.value, 1.0);
      EXPECT_EQ(n.state, "finished");
    } else {
      EXPECT_EQ(n.node_id, "2");
      EXPECT_EQ(n.max, 2.0);
      EXPECT_EQ(n.state, "running");
    }
  }
  Error e;
  text(R"({"type": "progress", "data": {"value": "a", "max": 2, "prompt_id": "x"}})", &e);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
}

TEST(ProtocolText, Executed) {
  auto m = text(R"({"type": "executed", "data": {"node": "6", "display_node": "6", "output": {"images": [{"filename": "probe_08b83408_00001_.png", "subfolder": "", "type": "output"}]}, "prompt_id": "321b"}})");
  EXPECT_EQ(m.type, MsgType::Executed);
  EXPECT_EQ(m.node, "6");
  ASSERT_EQ(m.images.size(), 1u);
  EXPECT_EQ(m.images[0].node_id, "6");
  EXPECT_EQ(m.images[0].ref.filename, "probe_08b83408_00001_.png");
  EXPECT_EQ(m.images[0].ref.type, "output");
  EXPECT_EQ(m.images[0].ref.load_image_value(), "probe_08b83408_00001_.png [output]");
  // Garbage image entries are skipped, not fatal.
  m = text(R"({"type": "executed", "data": {"node": "6", "output": {"images": [5, {"filename": 3}, {"filename": "a.png", "subfolder": "s", "type": "temp"}]}, "prompt_id": "p"}})");
  ASSERT_EQ(m.images.size(), 1u);
  EXPECT_EQ(m.images[0].ref.subfolder, "s");
  // Output without images (e.g. text outputs).
  m = text(R"({"type": "executed", "data": {"node": "9", "output": {"text": ["hi"]}, "prompt_id": "p"}})");
  EXPECT_TRUE(m.images.empty());
}

TEST(ProtocolText, ExecutionSuccessErrorInterrupted) {
  auto m = text(R"({"type": "execution_success", "data": {"prompt_id": "321b", "timestamp": 1795563841773}})");
  EXPECT_EQ(m.type, MsgType::ExecutionSuccess);
  EXPECT_EQ(m.prompt_id, "321b");

  m = text(R"({"type": "execution_error", "data": {"prompt_id": "74b7", "node_id": "1", "node_type": "LoadImage", "executed": [],
   "exception_message": "cannot identify image file '<data-dir>/input/broken_08b83408.png'\n", "exception_type": "PIL.UnidentifiedImageError",
   "traceback": ["  File \"<comfyui>/execution.py\", line 518, in execute\n    ..."],
   "current_inputs": {"image": ["broken_08b83408.png"]}, "current_outputs": ["5", "6", "1"], "timestamp": 1795563843491}})");
  EXPECT_EQ(m.type, MsgType::ExecutionError);
  EXPECT_EQ(m.node_id, "1");
  EXPECT_EQ(m.node_type, "LoadImage");
  EXPECT_EQ(m.exception_type, "PIL.UnidentifiedImageError");
  EXPECT_EQ(m.exception_message, "cannot identify image file '<data-dir>/input/broken_08b83408.png'");  // trimmed
  Error e = error_from_execution_message(m);
  EXPECT_EQ(e.kind, ErrorKind::ExecutionError);
  EXPECT_EQ(e.node_id, "1");
  EXPECT_EQ(e.node_type, "LoadImage");
  EXPECT_NE(e.message.find("node 1 (LoadImage)"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("PIL.UnidentifiedImageError: cannot identify"), std::string::npos) << e.message;

  m = text(R"({"type": "execution_interrupted", "data": {"prompt_id": "6936", "node_id": "3", "node_type": "ImageBlur", "executed": ["1", "2"], "timestamp": 1795563851540}})");
  EXPECT_EQ(m.type, MsgType::ExecutionInterrupted);
  EXPECT_EQ(m.node_list, (std::vector<std::string>{"1", "2"}));
  e = error_from_execution_message(m);
  EXPECT_EQ(e.kind, ErrorKind::Interrupted);
  EXPECT_EQ(e.node_id, "3");
  EXPECT_EQ(e.node_type, "ImageBlur");
}

TEST(ProtocolText, FeatureFlagsAndUnknown) {
  auto m = text(R"({"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600, "extension": {"manager": {"supports_v4": true}}}})");
  EXPECT_EQ(m.type, MsgType::FeatureFlags);
  EXPECT_TRUE(m.supports_preview_metadata);
  EXPECT_EQ(m.max_upload_size, 104857600);
  m = text(R"({"type": "crystools.monitor", "data": {"cpu": 3}})");
  EXPECT_EQ(m.type, MsgType::Unknown);
  EXPECT_EQ(m.type_name, "crystools.monitor");
  m = text(R"({"type": "something_new"})");  // unknown without data: tolerated
  EXPECT_EQ(m.type, MsgType::Unknown);
}

TEST(ProtocolText, Garbage) {
  const char *bad[] = {"", "{", "null", "[]", "42", "\"x\"", R"({"data": {}})", R"({"type": 5, "data": {}})",
                       R"({"type": "status"})", R"({"type": "executing", "data": []})",
                       R"({"type": "execution_start", "data": {}})", R"({"type": "execution_success", "data": {"prompt_id": 7}})",
                       R"({"type": "executed", "data": {"prompt_id": "p"}})", "\xff\xfe\x00garbage"};
  for (const char *b : bad) {
    Error e;
    WsMessage m;
    e = parse_ws_text(b, strlen(b), &m);
    EXPECT_EQ(e.kind, ErrorKind::Protocol) << b;
  }
  WsMessage m;
  EXPECT_EQ(parse_ws_text(nullptr, 0, &m).kind, ErrorKind::Protocol);
  // Random bytes never crash.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; i++) {
    std::string s(rng() % 64, '\0');
    for (auto &c : s) c = static_cast<char>(rng());
    parse_ws_text(s.data(), s.size(), &m);
  }
  // Wrong types in every field of a valid frame never crash.
  const char *weird[] = {
      R"({"type": "progress_state", "data": {"prompt_id": "p", "nodes": {"1": 5, "2": {"value": "x", "max": null, "state": 3}}}})",
      R"({"type": "status", "data": {"status": 1}})",
      R"({"type": "execution_error", "data": {"prompt_id": "p", "node_id": 1, "exception_message": ["x"]}})",
      R"({"type": "executed", "data": {"node": "1", "output": {"images": {"a": 1}}, "prompt_id": "p"}})",
      R"({"type": "feature_flags", "data": {"supports_preview_metadata": "yes", "max_upload_size": "big"}})",
  };
  for (const char *w : weird) parse_ws_text(w, strlen(w), &m);
}

// ------------------------------------------------------------------------------------------------
// Binary frames

TEST(ProtocolBinary, PreviewImageType1) {
  std::vector<uint8_t> f = be32(1);
  append(f, be32(2));
  append(f, kPng);
  BinaryFrame b;
  ASSERT_FALSE(parse_ws_binary(f.data(), f.size(), &b));
  EXPECT_EQ(b.event_type, 1u);
  EXPECT_EQ(b.image_format, 2u);
  EXPECT_EQ(b.mime, "image/png");
  EXPECT_EQ(b.image, kPng);
  EXPECT_FALSE(b.has_metadata);
  f = be32(1);
  append(f, be32(1));
  append(f, std::vector<uint8_t>{0xff, 0xd8, 0xff, 0xe0});
  ASSERT_FALSE(parse_ws_binary(f.data(), f.size(), &b));
  EXPECT_EQ(b.mime, "image/jpeg");
}

TEST(ProtocolBinary, TextType3) {
  std::vector<uint8_t> f = be32(3);
  append(f, be32(1));
  append(f, std::string("2width: 512, height: 512\n batch size: 1"));
  BinaryFrame b;
  ASSERT_FALSE(parse_ws_binary(f.data(), f.size(), &b));
  EXPECT_EQ(b.event_type, 3u);
  EXPECT_EQ(b.text_node_id, "2");
  EXPECT_EQ(b.text, "width: 512, height: 512\n batch size: 1");
  EXPECT_EQ(f.size(), 47u);  // as observed
}

TEST(ProtocolBinary, MetadataType4) {
  std::string meta = R"({"node_id": "4", "prompt_id": "1d7dbbf0", "display_node_id": "4", "parent_node_id": null, "real_node_id": "4", "image_type": "image/png"})";
  std::vector<uint8_t> f = be32(4);
  append(f, be32(meta.size()));
  append(f, meta);
  append(f, kPng);
  BinaryFrame b;
  ASSERT_FALSE(parse_ws_binary(f.data(), f.size(), &b));
  EXPECT_EQ(b.event_type, 4u);
  EXPECT_TRUE(b.has_metadata);
  EXPECT_EQ(b.prompt_id, "1d7dbbf0");
  EXPECT_EQ(b.node_id, "4");
  EXPECT_EQ(b.mime, "image/png");
  EXPECT_EQ(b.image, kPng);
}

TEST(ProtocolBinary, TruncatedFramesAreErrors) {
  BinaryFrame b;
  const uint8_t tiny[] = {0, 0, 0};
  EXPECT_EQ(parse_ws_binary(tiny, sizeof tiny, &b).kind, ErrorKind::Protocol);
  EXPECT_EQ(parse_ws_binary(nullptr, 0, &b).kind, ErrorKind::Protocol);
  auto t1 = be32(1);
  EXPECT_EQ(parse_ws_binary(t1.data(), t1.size(), &b).kind, ErrorKind::Protocol);  // no format
  append(t1, be32(2));
  EXPECT_EQ(parse_ws_binary(t1.data(), t1.size(), &b).kind, ErrorKind::Protocol);  // no image
  auto t3 = be32(3);
  append(t3, be32(100));
  append(t3, std::string("2abc"));
  EXPECT_EQ(parse_ws_binary(t3.data(), t3.size(), &b).kind, ErrorKind::Protocol);  // node id past the end
  auto t4 = be32(4);
  append(t4, be32(0xffffffff));
  append(t4, std::string("{}"));
  EXPECT_EQ(parse_ws_binary(t4.data(), t4.size(), &b).kind, ErrorKind::Protocol);  // huge length
  auto t4b = be32(4);
  append(t4b, be32(5));
  append(t4b, std::string("nope!"));
  append(t4b, kPng);
  EXPECT_EQ(parse_ws_binary(t4b.data(), t4b.size(), &b).kind, ErrorKind::Protocol);  // metadata not JSON
  auto t4c = be32(4);
  append(t4c, be32(2));
  append(t4c, std::string("{}"));
  EXPECT_EQ(parse_ws_binary(t4c.data(), t4c.size(), &b).kind, ErrorKind::Protocol);  // no image
  // Every prefix of a valid type-4 frame is either an error or parsed, never a crash.
  std::string meta = R"({"node_id": "4", "prompt_id": "p"})";
  std::vector<uint8_t> f = be32(4);
  append(f, be32(meta.size()));
  append(f, meta);
  append(f, kPng);
  for (size_t n = 0; n < f.size(); n++) {
    Error e = parse_ws_binary(f.data(), n, &b);
    if (n < 8 + meta.size() + 1) {
      EXPECT_TRUE(e) << n;
    }
  }
  // Unknown types are tolerated.
  auto t9 = be32(9);
  EXPECT_FALSE(parse_ws_binary(t9.data(), t9.size(), &b));
  EXPECT_EQ(b.event_type, 9u);
}

// ------------------------------------------------------------------------------------------------
// POST /prompt

TEST(ProtocolPrompt, Ok200) {
  PromptResponse pr;
  EXPECT_FALSE(prompt_resp(200, R"({"prompt_id": "321b0084-e177-4314-9eb0-d6d420f7f316", "number": 0, "node_errors": {}})", &pr));
  EXPECT_EQ(pr.prompt_id, "321b0084-e177-4314-9eb0-d6d420f7f316");
  EXPECT_TRUE(pr.has_number);
  EXPECT_EQ(pr.number, 0);
  EXPECT_FALSE(prompt_resp(200, R"({"prompt_id": "my-own-id", "number": 5.0, "node_errors": {}})", &pr));
  EXPECT_EQ(pr.number, 5.0);
  EXPECT_FALSE(prompt_resp(200, R"({"prompt_id": "x", "number": -29, "node_errors": {}})", &pr));
  EXPECT_EQ(pr.number, -29);
}

static const char *kPartial = R"({"prompt_id": "6412b444", "number": 24, "node_errors": {"7": {"errors": [{"type": "value_bigger_than_max",
  "message": "Value 99 bigger than max of 31", "details": "blur_radius", "extra_info": {"input_name": "blur_radius",
  "input_config": ["INT", {"default": 1, "min": 1, "max": 31, "step": 1}], "received_value": 99}}],
  "dependent_outputs": ["8"], "class_type": "ImageBlur"}}})";

TEST(ProtocolPrompt, Partial200) {
  PromptResponse pr;
  // Our output (8) was dropped.
  Error e = prompt_resp(200, kPartial, &pr, {"8"});
  EXPECT_EQ(e.kind, ErrorKind::InvalidPrompt);
  EXPECT_EQ(e.node_id, "7");
  EXPECT_EQ(e.node_type, "ImageBlur");
  EXPECT_NE(e.message.find("node 7 (ImageBlur) input 'blur_radius': Value 99 bigger than max of 31"), std::string::npos) << e.message;
  ASSERT_EQ(pr.node_errors.size(), 1u);
  EXPECT_EQ(pr.node_errors[0].dependent_outputs, (std::vector<std::string>{"8"}));
  // Any output wanted: also an error.
  EXPECT_EQ(prompt_resp(200, kPartial, &pr, {}).kind, ErrorKind::InvalidPrompt);
  // Our output (6) survived.
  EXPECT_FALSE(prompt_resp(200, kPartial, &pr, {"6"}));
  EXPECT_EQ(pr.prompt_id, "6412b444");
}

TEST(ProtocolPrompt, Rejected400Shapes) {
  struct Case {
    const char *body, *expect;
  } cases[] = {
      {R"({"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.", "details": "Node ID '#3'", "extra_info": {}}, "node_errors": {}})",
       "Cannot execute because node NoSuchNode does not exist. (Node ID '#3')"},
      {R"({"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.", "details": "Node ID '#4'", "extra_info": {}}, "node_errors": {}})",
       "missing the class_type property"},
      {R"({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}})",
       "Prompt has no outputs"},
      {R"({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}, "node_errors": {}})",
       "No prompt provided"},
      {R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
          "node_errors": {"3": {"errors": [{"type": "value_bigger_than_max", "message": "Value 99 bigger than max of 31", "details": "cfg", "extra_info": {"input_name": "cfg", "received_value": 99}}],
                                "dependent_outputs": ["9"], "class_type": "KSampler"}}})",
       "node 3 (KSampler) input 'cfg': Value 99 bigger than max of 31"},
      {R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
          "node_errors": {"2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "upscale_method: 'foo' not in ['nearest-exact', 'bilinear']", "extra_info": {"input_name": "upscale_method", "received_value": "foo"}},
                                           {"type": "required_input_missing", "message": "Required input is missing", "details": "width", "extra_info": {"input_name": "width"}}],
                                "dependent_outputs": ["6"], "class_type": "ImageScale"},
                          "5": {"errors": [{"type": "exception_during_inner_validation", "message": "Exception when validating inner node", "details": "'99'", "extra_info": {"input_name": "image", "exception_message": "'99'", "exception_type": "KeyError", "linked_node": ["4", 0]}}],
                                "dependent_outputs": ["6"], "class_type": "ImageSharpen"}}})",
       "node 2 (ImageScale) input 'upscale_method': Value not in list (upscale_method: 'foo' not in ['nearest-exact', 'bilinear']); "
       "node 2 (ImageScale) input 'width': Required input is missing; "
       "node 5 (ImageSharpen) input 'image': Exception when validating inner node ('99')"},
  };
  for (const auto &c : cases) {
    PromptResponse pr;
    Error e = prompt_resp(400, c.body, &pr);
    EXPECT_EQ(e.kind, ErrorKind::InvalidPrompt) << c.body;
    EXPECT_EQ(e.http_status, 400);
    EXPECT_NE(e.message.find(c.expect), std::string::npos) << e.message;
  }
  PromptResponse pr;
  Error e = prompt_resp(400, cases[0].body, &pr);
  EXPECT_EQ(e.node_id, "3");
  EXPECT_EQ(pr.error_type, "invalid_prompt");
  e = prompt_resp(400, cases[4].body, &pr);
  EXPECT_EQ(e.node_id, "3");
  EXPECT_EQ(e.node_type, "KSampler");
  // 400 with an empty or garbage body still reads as a rejected prompt.
  EXPECT_EQ(prompt_resp(400, "", &pr).kind, ErrorKind::InvalidPrompt);
  EXPECT_EQ(prompt_resp(400, "<html>", &pr).kind, ErrorKind::InvalidPrompt);
  EXPECT_EQ(prompt_resp(400, R"({"error": "bad"})", &pr).kind, ErrorKind::InvalidPrompt);
}

// A LoadImage file the server does not have (a restart with a clean output dir: the next job names
// the previous output): transient MissingInput, so the caller re-uploads instead of giving up.
// The body is the one PROTOCOL.md recorded from ComfyUI 0.8.0, verbatim.
TEST(ProtocolPrompt, MissingLoadImageFileIsMissingInput) {
  const char *real = R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
      "node_errors": {"1": {"errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: nope_08b83408.png", "extra_info": {"input_name": "image"}}],
                            "dependent_outputs": ["6"], "class_type": "LoadImage"}}})";
  PromptResponse pr;
  Error e = prompt_resp(400, real, &pr);
  EXPECT_EQ(e.kind, ErrorKind::MissingInput) << e.describe();
  EXPECT_TRUE(e.transient());
  EXPECT_FALSE(e.retry_free);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.node_id, "1");
  EXPECT_EQ(e.node_type, "LoadImage");
  EXPECT_NE(e.message.find("not on the server"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("node 1 (LoadImage) input 'image': Custom validation failed for node (image - Invalid image file: nope_08b83408.png)"),
            std::string::npos) << e.message;
  EXPECT_STREQ(error_kind_name(e.kind), "missing-input");
  EXPECT_TRUE(missing_input_only(pr.node_errors));

  // The annotated output name of the feedback loop ("dw_00163_.png [output]") reads the same.
  const char *output_ref = R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
      "node_errors": {"10": {"errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: dw_00163_.png [output]", "extra_info": {"input_name": "image"}}],
                             "dependent_outputs": ["9"], "class_type": "LoadImage"}}})";
  EXPECT_EQ(prompt_resp(400, output_ref, &pr).kind, ErrorKind::MissingInput);

  // Older servers: the image combo check of LoadImage.
  const char *combo = R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
      "node_errors": {"1": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "image: 'gone.png' not in ['a.png']", "extra_info": {"input_name": "image", "received_value": "gone.png"}}],
                            "dependent_outputs": ["6"], "class_type": "LoadImage"}}})";
  EXPECT_EQ(prompt_resp(400, combo, &pr).kind, ErrorKind::MissingInput);

  // Anything else wrong as well: re-uploading cannot fix it, so it stays a rejected prompt.
  const char *mixed = R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
      "node_errors": {"1": {"errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}}],
                            "dependent_outputs": ["6"], "class_type": "LoadImage"},
                      "3": {"errors": [{"type": "value_bigger_than_max", "message": "Value 99 bigger than max of 31", "details": "blur_radius", "extra_info": {"input_name": "blur_radius", "received_value": 99}}],
                            "dependent_outputs": ["6"], "class_type": "ImageBlur"}}})";
  e = prompt_resp(400, mixed, &pr);
  EXPECT_EQ(e.kind, ErrorKind::InvalidPrompt) << e.describe();
  EXPECT_FALSE(e.transient());
  // value_not_in_list on another input or node is a real mistake in the workflow.
  const char *other_combo = R"({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
      "node_errors": {"2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "upscale_method: 'foo' not in ['nearest-exact']", "extra_info": {"input_name": "upscale_method", "received_value": "foo"}}],
                            "dependent_outputs": ["6"], "class_type": "ImageScale"}}})";
  EXPECT_EQ(prompt_resp(400, other_combo, &pr).kind, ErrorKind::InvalidPrompt);
  // A top-level error without node errors is never "missing input".
  EXPECT_EQ(prompt_resp(400, R"({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}})", &pr).kind,
            ErrorKind::InvalidPrompt);
}

TEST(ProtocolErrors, RetryFreeDefaultsOffAndKindsAreNamed) {
  Error e(ErrorKind::Unreachable, "x");
  EXPECT_FALSE(e.retry_free);
  EXPECT_TRUE(e.transient());
  EXPECT_TRUE(Error(ErrorKind::MissingInput, "x", 400).transient());
  EXPECT_FALSE(Error(ErrorKind::InvalidPrompt, "x", 400).transient());
  EXPECT_EQ(Error(ErrorKind::MissingInput, "gone").describe(), "missing-input: gone");
  EXPECT_STREQ(health_name(Health::Unresponsive), "unresponsive");
  EXPECT_STREQ(health_name(Health::Degraded), "degraded");
}

TEST(ProtocolPrompt, Other) {
  PromptResponse pr;
  Error e = prompt_resp(500, "500 Internal Server Error\n\nServer got itself in trouble", &pr);
  EXPECT_EQ(e.kind, ErrorKind::HttpStatus);
  EXPECT_EQ(e.http_status, 500);
  EXPECT_NE(e.message.find("Server got itself in trouble"), std::string::npos);
  EXPECT_EQ(prompt_resp(403, "", &pr).kind, ErrorKind::HttpStatus);
  EXPECT_EQ(prompt_resp(200, "", &pr).kind, ErrorKind::Protocol);
  EXPECT_EQ(prompt_resp(200, "{\"prompt_id\": \"abc\", \"num", &pr).kind, ErrorKind::Protocol);
  EXPECT_EQ(prompt_resp(200, "[]", &pr).kind, ErrorKind::Protocol);
  EXPECT_EQ(prompt_resp(200, R"({"number": 1})", &pr).kind, ErrorKind::Protocol);
  EXPECT_EQ(prompt_resp(200, R"({"prompt_id": 5})", &pr).kind, ErrorKind::Protocol);
  EXPECT_EQ(prompt_resp(200, R"({"prompt_id": "x", "node_errors": []})", &pr).kind, ErrorKind::Protocol);
  EXPECT_FALSE(prompt_resp(200, R"({"prompt_id": "x"})", &pr));  // no number / node_errors: fine
  EXPECT_FALSE(pr.has_number);
}

// ------------------------------------------------------------------------------------------------
// History

TEST(ProtocolHistory, Empty) {
  HistoryEntry h;
  EXPECT_FALSE(parse_history("{}", 2, "p", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::NotFinished);
  std::string other = R"({"other": {"outputs": {}}})";
  EXPECT_FALSE(parse_history(other.data(), other.size(), "p", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::NotFinished);
}

TEST(ProtocolHistory, Success) {
  std::string s = R"({"321b": {
  "prompt": [0, "321b", {"1": {}}, {"client_id": "probeA", "create_time": 1795563841627}, ["6"]],
  "outputs": {"6": {"images": [{"filename": "probe_08b83408_00001_.png", "subfolder": "", "type": "output"}]},
              "10": {"images": [{"filename": "ComfyUI_temp_slycf_00001_.png", "subfolder": "", "type": "temp"}]}},
  "status": {"status_str": "success", "completed": true, "messages": [
     ["execution_start", {"prompt_id": "321b", "timestamp": 1795563841628}],
     ["execution_cached", {"nodes": [], "prompt_id": "321b", "timestamp": 1795563841631}],
     ["execution_success", {"prompt_id": "321b", "timestamp": 1795563841773}]]},
  "meta": {"6": {"node_id": "6", "display_node": "6", "parent_node": null, "real_node_id": "6"}}}})";
  HistoryEntry h;
  ASSERT_FALSE(parse_history(s.data(), s.size(), "321b", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::Success);
  EXPECT_TRUE(h.completed);
  ASSERT_EQ(h.outputs.size(), 2u);
  EXPECT_EQ(h.outputs[0].node_id, "6");  // numeric order: 6 before 10
  EXPECT_EQ(h.outputs[0].ref.filename, "probe_08b83408_00001_.png");
  EXPECT_EQ(h.outputs[1].ref.type, "temp");
  EXPECT_EQ(h.outputs[1].ref.load_image_value(), "ComfyUI_temp_slycf_00001_.png [temp]");
}

TEST(ProtocolHistory, SaveImageWebsocketOnly) {
  std::string s = R"({"p": {"prompt": [], "outputs": {}, "status": {"status_str": "success", "completed": true, "messages": [["execution_success", {"prompt_id": "p", "timestamp": 1}]]}, "meta": {}}})";
  HistoryEntry h;
  ASSERT_FALSE(parse_history(s.data(), s.size(), "p", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::Success);
  EXPECT_TRUE(h.outputs.empty());
}

TEST(ProtocolHistory, ErrorAndInterruptedToldApart) {
  std::string err = R"({"74b7": {"outputs": {}, "status": {"status_str": "error", "completed": false, "messages": [
     ["execution_start", {"prompt_id": "74b7", "timestamp": 1}],
     ["execution_error", {"prompt_id": "74b7", "node_id": "1", "node_type": "LoadImage", "executed": [], "exception_message": "cannot identify image file\n", "exception_type": "PIL.UnidentifiedImageError", "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": 2}]]}}})";
  HistoryEntry h;
  ASSERT_FALSE(parse_history(err.data(), err.size(), "74b7", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::Error);
  EXPECT_EQ(h.last_message.node_id, "1");
  Error e = error_from_execution_message(h.last_message);
  EXPECT_EQ(e.kind, ErrorKind::ExecutionError);
  EXPECT_EQ(e.node_type, "LoadImage");
  EXPECT_NE(e.message.find("cannot identify image file"), std::string::npos);

  std::string intr = R"({"6936": {"outputs": {}, "status": {"status_str": "error", "completed": false, "messages": [
     ["execution_start", {"prompt_id": "6936", "timestamp": 1}],
     ["execution_interrupted", {"prompt_id": "6936", "node_id": "3", "node_type": "ImageBlur", "executed": ["1", "2"], "timestamp": 1795563851540}]]}}})";
  ASSERT_FALSE(parse_history(intr.data(), intr.size(), "6936", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::Interrupted);
  e = error_from_execution_message(h.last_message);
  EXPECT_EQ(e.kind, ErrorKind::Interrupted);
  EXPECT_EQ(e.node_id, "3");

  std::string bare = R"({"q": {"outputs": {}, "status": {"status_str": "error", "completed": false, "messages": []}}})";
  ASSERT_FALSE(parse_history(bare.data(), bare.size(), "q", &h));
  EXPECT_EQ(h.state, HistoryEntry::State::Error);
  EXPECT_EQ(error_from_execution_message(h.last_message).kind, ErrorKind::ExecutionError);
}

TEST(ProtocolHistory, Garbage) {
  HistoryEntry h;
  const char *bad[] = {"", "[", "[]", "5", R"({"p": 5})", R"({"p": {"status": {"status_str": "weird"}}})"};
  for (const char *b : bad) EXPECT_EQ(parse_history(b, strlen(b), "p", &h).kind, ErrorKind::Protocol) << b;
  const char *odd[] = {R"({"p": {"outputs": 5, "status": {"status_str": "success", "messages": 7}}})",
                       R"({"p": {"outputs": {"6": {"images": [1, "x", null]}}, "status": {"status_str": "success", "messages": [[1, 2], ["execution_error"], []]}}})"};
  for (const char *o : odd) {
    EXPECT_FALSE(parse_history(o, strlen(o), "p", &h)) << o;
    EXPECT_EQ(h.state, HistoryEntry::State::Success);
    EXPECT_TRUE(h.outputs.empty());
  }
}

// ------------------------------------------------------------------------------------------------
// Upload, builders, helpers

TEST(ProtocolUpload, Responses) {
  ImageRef r;
  std::string s = R"({"name": "probe_08b83408 (1).png", "subfolder": "", "type": "input"})";
  ASSERT_FALSE(parse_upload_response(s.data(), s.size(), &r));
  EXPECT_EQ(r.filename, "probe_08b83408 (1).png");
  EXPECT_EQ(r.load_image_value(), "probe_08b83408 (1).png");
  s = R"({"name": "sub_08b83408.png", "subfolder": "probe", "type": "input"})";
  ASSERT_FALSE(parse_upload_response(s.data(), s.size(), &r));
  EXPECT_EQ(r.load_image_value(), "probe/sub_08b83408.png");
  const char *bad[] = {"", "{}", R"({"name": 3})", R"({"name": ""})", "[1]", "garbage"};
  for (const char *b : bad) EXPECT_EQ(parse_upload_response(b, strlen(b), &r).kind, ErrorKind::Protocol) << b;
}

TEST(ProtocolImageRef, LoadImageValue) {
  EXPECT_EQ((ImageRef{"a.png", "", "output"}).load_image_value(), "a.png [output]");
  EXPECT_EQ((ImageRef{"a.png", "", "temp"}).load_image_value(), "a.png [temp]");
  EXPECT_EQ((ImageRef{"a.png", "", "input"}).load_image_value(), "a.png");
  EXPECT_EQ((ImageRef{"a.png", "sub", "input"}).load_image_value(), "sub/a.png");
}

static JsonNode *parse(const std::string &s) {
  JsonParser *p = json_parser_new();
  EXPECT_TRUE(json_parser_load_from_data(p, s.c_str(), -1, nullptr)) << s;
  JsonNode *n = json_node_copy(json_parser_get_root(p));
  g_object_unref(p);
  return n;
}

TEST(ProtocolBuild, Bodies) {
  JsonNode *graph = parse(R"({"1": {"class_type": "LoadImage", "inputs": {"image": "a \"quoted\".png"}},
                              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}})");
  std::string body = build_prompt_body(graph, "client-\"1\"", "pid-1");
  JsonNode *b = parse(body);
  JsonObject *o = json_node_get_object(b);
  EXPECT_STREQ(json_object_get_string_member(o, "client_id"), "client-\"1\"");
  EXPECT_STREQ(json_object_get_string_member(o, "prompt_id"), "pid-1");
  EXPECT_TRUE(json_node_equal(json_object_get_member(o, "prompt"), graph));
  json_node_unref(b);
  json_node_unref(graph);  // the builder copied it

  b = parse(build_feature_flags());
  o = json_node_get_object(b);
  EXPECT_STREQ(json_object_get_string_member(o, "type"), "feature_flags");
  EXPECT_TRUE(json_object_get_boolean_member(json_object_get_object_member(o, "data"), "supports_preview_metadata"));
  json_node_unref(b);

  b = parse(build_queue_delete({"a", "b"}));
  JsonArray *del = json_object_get_array_member(json_node_get_object(b), "delete");
  ASSERT_EQ(json_array_get_length(del), 2u);
  EXPECT_STREQ(json_array_get_string_element(del, 1), "b");
  json_node_unref(b);

  EXPECT_EQ(build_interrupt(""), "{}");
  b = parse(build_interrupt("x"));
  EXPECT_STREQ(json_object_get_string_member(json_node_get_object(b), "prompt_id"), "x");
  json_node_unref(b);
}

TEST(ProtocolHelpers, ImageValidation) {
  EXPECT_TRUE(is_png(kPng.data(), kPng.size()));
  const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0, 0};
  EXPECT_TRUE(is_jpeg(jpg, sizeof jpg));
  EXPECT_FALSE(validate_image(kPng.data(), kPng.size(), "x"));
  EXPECT_EQ(validate_image(nullptr, 0, "x").kind, ErrorKind::BadImage);
  const char *txt = "not an image at all";
  EXPECT_EQ(validate_image(reinterpret_cast<const uint8_t *>(txt), strlen(txt), "x").kind, ErrorKind::BadImage);
  EXPECT_EQ(excerpt("ab\ncd", 5), "ab cd");
  EXPECT_EQ(excerpt("abcdef", 6, 3), "abc...");
}

TEST(ProtocolQueue, RunningAndPendingIds) {
  // As captured from ComfyUI 0.8.0: items are arrays, pending is in heap order, number may be a float.
  const std::string body =
      R"({"queue_running": [[27, "6936544c", {"1": {}}, {"client_id": "a"}, ["5"]]],)"
      R"( "queue_pending": [[-29, "240f3fd0", {}, {}, ["6"]], [5.0, "my-own-id", {}, {}, ["5"]]]})";
  std::vector<std::string> ids;
  ASSERT_FALSE(parse_queue(body.data(), body.size(), &ids));
  EXPECT_EQ(ids, (std::vector<std::string>{"6936544c", "240f3fd0", "my-own-id"}));

  const std::string empty = R"({"queue_running": [], "queue_pending": []})";
  ASSERT_FALSE(parse_queue(empty.data(), empty.size(), &ids));
  EXPECT_TRUE(ids.empty());

  for (const char *bad : {"{\"queue_running\": []}", "[]", "{\"queue_running\": [[1, 2]], \"queue_pending\": []}",
                          "{\"queue_running\": [\"x\"], \"queue_pending\": []}", "{trunc"}) {
    EXPECT_EQ(parse_queue(bad, strlen(bad), &ids).kind, ErrorKind::Protocol) << bad;
  }
}
