// The app's two outside-input parsers, GStreamer-free so they are unit-tested and fuzzed on their
// own (tests/fuzz/fuzz_control.cpp): the /api/control request body and the
// /ws signalling messages from a browser. Both go through dw::json (size, depth and text rules
// checked before json-glib parses) and validate every member's type before anything is applied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dw::app {

struct ControlLimits {
  size_t max_body = 128 * 1024;  // bytes; larger bodies are refused with 413 before parsing
  size_t max_prompt = 4096;     // bytes of UTF-8 per prompt / negative prompt (docs/app.md)
  int max_depth = 8;            // a control request is flat: one object of scalars
};

// What a control request asks for; unset members are left as they are.
struct ControlRequest {
  std::optional<std::string> prompt;
  std::optional<std::string> negative_prompt;
  std::optional<double> denoise;  // [0, 1]
  std::optional<int64_t> seed;    // >= 0
  std::optional<bool> pause;      // true = pause, false = resume
};

// A refused request: the HTTP status (400 or 413) and a message naming the member or the problem.
struct ProtocolError {
  unsigned status = 400;
  std::string message;
};

// Parses and validates a control body. Known members: prompt, negative_prompt (strings),
// denoise (number in [0, 1]), seed (integer >= 0), pause (boolean), resume (boolean),
// action ("pause" or "resume"). Anything else is refused naming the key. Never throws.
bool parse_control(std::string_view body, ControlRequest *out, ProtocolError *error, const ControlLimits &limits = {});

// One signalling message from a browser.
struct SignalMessage {
  enum class Type { Answer, Ice };
  Type type = Type::Answer;
  std::string sdp;        // Answer: non-empty
  std::string candidate;  // Ice: may be empty (end of candidates)
  unsigned mline = 0;     // Ice: sdpMLineIndex (0..255)
};

constexpr size_t kMaxSignalBytes = 256 * 1024;  // an SDP answer is a few KB

// Parses {"type":"answer","sdp":"..."} or {"type":"ice","candidate":"...","sdpMLineIndex":N}.
// False with *error naming the problem (wrong type of a member, unknown type, ...). Never throws.
bool parse_signal(std::string_view text, SignalMessage *out, std::string *error);

// The top-level object member whose value contains byte `offset` of `text` ("" when none): names
// the field in a text-rule error reported by dw::json with its byte offset.
std::string member_at(std::string_view text, size_t offset);

}  // namespace dw::app
