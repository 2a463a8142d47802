// The one JSON entry point for every outside input (ComfyUI responses and websocket messages, the
// app's control API and signalling, cache index, safetensors header, workflow files). json-glib
// recurses once per nesting level and has no size limit, so a hostile peer can crash the process
// with "[[[[..." or exhaust memory; parse() checks size, nesting depth and text validity *before*
// json-glib sees the bytes, and reports the first problem with its byte offset.
//
// Text rules (what json-glib would otherwise mangle silently): the input must be valid UTF-8, and
// no string may contain NUL (raw or "\u0000") or a lone UTF-16 surrogate escape ("\ud800x"), and
// escapes must be JSON's own ("\u" with 4 hex digits: json-glib turns "\udc0'" into a lone
// surrogate). Byte offsets in messages count from 0.
#pragma once

#include <json-glib/json-glib.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dw::json {

struct Limits {
  size_t max_bytes = 8u << 20;  // whole document
  int max_depth = 64;           // arrays/objects nested deeper than this are refused
};

// Thrown by parse(); what() names the input ("what"), the problem and the byte offset, e.g.
// "control request: JSON nested deeper than 64 levels at byte 65".
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NodeUnref {
  void operator()(JsonNode *node) const {
    if (node) json_node_unref(node);
  }
};
using NodePtr = std::unique_ptr<JsonNode, NodeUnref>;

// Checks size, depth and text rules, then parses with json-glib. Never returns null: throws Error.
// `what` names the input in the message ("ComfyUI /prompt response", "cache index.json", ...).
NodePtr parse(std::string_view text, const char *what, const Limits &limits = {});
// The same checks without parsing; returns "" when the text passes, else the reason.
std::string check(std::string_view text, const Limits &limits = {});

// parse() that also requires the root to be an object; returns it (owned by the returned node).
NodePtr parse_object(std::string_view text, const char *what, const Limits &limits = {});

// A string value taken from a parsed document (or any outside text) is acceptable as text: valid
// UTF-8, no NUL, at most max_bytes long. Returns "" or the reason ("not valid UTF-8", ...).
std::string check_text(std::string_view text, size_t max_bytes = SIZE_MAX);

// Serialises a node compactly (json-glib's generator).
std::string to_string(JsonNode *node, bool pretty = false);

}  // namespace dw::json
