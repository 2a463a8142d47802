#include "json/json.h"

#include <cstring>

namespace dw::json {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The 4 hex digits after "\u" at p (p points at 'u'); -1 if they are not all there.
long escape_code(std::string_view s, size_t p) {
  if (p + 4 >= s.size()) return -1;
  long v = 0;
  for (size_t i = 1; i <= 4; i++) {
    int h = hex_value(s[p + i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

const char *kind_name(JsonNode *n) {
  switch (JSON_NODE_TYPE(n)) {
    case JSON_NODE_OBJECT: return "an object";
    case JSON_NODE_ARRAY: return "an array";
    case JSON_NODE_NULL: return "null";
    default: break;
  }
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_STRING) return "a string";
  if (t == G_TYPE_BOOLEAN) return "a boolean";
  return "a number";
}

std::string at(const char *problem, size_t offset) { return std::string(problem) + " at byte " + std::to_string(offset); }

}  // namespace

std::string check(std::string_view text, const Limits &limits) {
  if (text.empty()) return "empty JSON document";
  if (text.size() > limits.max_bytes)
    return "JSON document of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
           std::to_string(limits.max_bytes) + " bytes";
  if (const void *nul = std::memchr(text.data(), '\0', text.size()))
    return at("NUL byte", static_cast<const char *>(nul) - text.data());
  const gchar *end = nullptr;
  if (!g_utf8_validate_len(text.data(), text.size(), &end)) return at("invalid UTF-8", end - text.data());

  // One pass, no recursion: nesting depth counted outside strings, escapes checked inside them.
  int depth = 0;
  bool in_string = false;
  const size_t n = text.size();
  for (size_t i = 0; i < n; i++) {
    const char c = text[i];
    if (in_string) {
      if (c == '"') {
        in_string = false;
      } else if (c == '\\' && i + 1 < n) {
        i++;
        const size_t esc = i - 1;
        if (text[i] != 'u') {
          // json-glib's scanner accepts some non-JSON escapes; only JSON's own pass.
          if (!std::strchr("\"\\/bfnrt", text[i]) || text[i] == '\0') return at("invalid escape in a string", esc);
          continue;
        }
        // json-glib turns a short "\u" escape ("\udc0'") into a lone surrogate in its output.
        const long code = escape_code(text, i);
        if (code < 0) return at("malformed \\u escape (needs 4 hex digits) in a string", esc);
        if (code == 0) return at("\\u0000 (NUL) escape in a string", esc);
        if (code >= 0xDC00 && code <= 0xDFFF) return at("lone UTF-16 low surrogate escape in a string", esc);
        if (code >= 0xD800 && code <= 0xDBFF) {
          // Must be followed at once by "\uDC00".."\uDFFF".
          const size_t next = i + 5;
          const long low = (next + 1 < n && text[next] == '\\' && text[next + 1] == 'u') ? escape_code(text, next + 1) : -1;
          if (low < 0xDC00 || low > 0xDFFF) return at("lone UTF-16 high surrogate escape in a string", esc);
          i = next + 5;  // the low surrogate's last hex digit
        } else {
          i += 4;
        }
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limits.max_depth)
          return at(("JSON nested deeper than " + std::to_string(limits.max_depth) + " levels").c_str(), i);
        break;
      case ']':
      case '}':
        // Unbalanced closers are json-glib's to report; never let them hide later nesting.
        if (depth > 0) depth--;
        break;
      default:
        break;
    }
  }
  return {};
}

NodePtr parse(std::string_view text, const char *what, const Limits &limits) {
  const std::string name = what && *what ? what : "JSON input";
  std::string why = check(text, limits);
  if (!why.empty()) throw Error(name + ": " + why);
  if (text.size() > static_cast<size_t>(G_MAXSSIZE)) throw Error(name + ": too large");

  std::unique_ptr<JsonParser, decltype(&g_object_unref)> parser(json_parser_new_immutable(), g_object_unref);
  GError *err = nullptr;
  if (!json_parser_load_from_data(parser.get(), text.data(), static_cast<gssize>(text.size()), &err)) {
    // json-glib says "<data>:LINE:COL: Parse error: ..."; keep LINE:COL and the message.
    // json-glib quotes the offending token cut at a byte count, which can split a UTF-8 sequence:
    // the message travels on (HTTP replies, GStreamer errors), so it must be valid text itself.
    gchar *valid = g_utf8_make_valid(err ? err->message : "unknown parse error", -1);
    std::string msg = valid;
    g_free(valid);
    if (msg.rfind("<data>:", 0) == 0) msg = msg.substr(7);
    g_clear_error(&err);
    throw Error(name + ": invalid JSON: " + msg);
  }
  NodePtr root(json_parser_steal_root(parser.get()));
  if (!root) throw Error(name + ": empty JSON document");
  return root;
}

NodePtr parse_object(std::string_view text, const char *what, const Limits &limits) {
  NodePtr root = parse(text, what, limits);
  if (!JSON_NODE_HOLDS_OBJECT(root.get()))
    throw Error(std::string(what && *what ? what : "JSON input") + ": expected a JSON object, got " +
                kind_name(root.get()));
  return root;
}

std::string check_text(std::string_view text, size_t max_bytes) {
  if (text.empty()) return {};
  if (text.size() > max_bytes)
    return "longer than " + std::to_string(max_bytes) + " bytes (" + std::to_string(text.size()) + ")";
  if (const void *nul = std::memchr(text.data(), '\0', text.size()))
    return at("contains a NUL byte", static_cast<const char *>(nul) - text.data());
  const gchar *end = nullptr;
  if (!g_utf8_validate_len(text.data(), text.size(), &end)) return at("not valid UTF-8", end - text.data());
  return {};
}

std::string to_string(JsonNode *node, bool pretty) {
  if (!node) return "null";
  std::unique_ptr<JsonGenerator, decltype(&g_object_unref)> gen(json_generator_new(), g_object_unref);
  json_generator_set_root(gen.get(), node);
  json_generator_set_pretty(gen.get(), pretty);
  gsize len = 0;
  gchar *data = json_generator_to_data(gen.get(), &len);
  std::string out(data ? data : "", len);
  g_free(data);
  return out;
}

}  // namespace dw::json
