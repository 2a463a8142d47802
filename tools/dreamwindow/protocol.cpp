#include "protocol.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "json/json.h"

namespace dw::app {

namespace {

const char kKnownControlKeys[] = "prompt, negative_prompt, denoise, seed, pause, resume, action";

// Outside text made fit for a message: valid UTF-8 without NUL, at most `max` bytes, cut at a
// character boundary.
std::string shorten(std::string_view s, size_t max = 64) {
  gchar *valid = g_utf8_make_valid(s.data(), static_cast<gssize>(std::min(s.size(), max + 4)));
  std::string v = valid;
  g_free(valid);
  for (char &c : v)
    if (c == '\0') c = '?';
  if (v.size() <= max && s.size() <= max) return v;
  size_t n = std::min(max, v.size());
  while (n > 0 && n < v.size() && (static_cast<unsigned char>(v[n]) & 0xC0) == 0x80) n--;
  return v.substr(0, n) + "…";
}

// The byte offset in a dw::json reason ("... at byte 17"), or npos.
size_t offset_of(const std::string &why) {
  const size_t p = why.rfind(" at byte ");
  if (p == std::string::npos) return std::string::npos;
  return std::strtoull(why.c_str() + p + 9, nullptr, 10);
}

bool holds(JsonNode *n, GType t) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == t; }

bool fail(ProtocolError *error, unsigned status, std::string message) {
  if (error) {
    error->status = status;
    error->message = std::move(message);
  }
  return false;
}

// A prompt-like member: a string, valid text, at most max bytes.
bool take_text(JsonNode *n, const char *key, size_t max, std::optional<std::string> *out, ProtocolError *error) {
  if (!holds(n, G_TYPE_STRING)) return fail(error, 400, std::string(key) + " must be a string");
  const char *s = json_node_get_string(n);
  const std::string_view v = s ? s : "";
  const std::string why = dw::json::check_text(v, max);
  if (!why.empty()) return fail(error, 400, std::string(key) + ": " + why);
  *out = std::string(v);
  return true;
}

}  // namespace

std::string member_at(std::string_view text, size_t offset) {
  std::string key;
  bool expect_key = false;
  int depth = 0;
  const size_t n = text.size();
  for (size_t i = 0; i < n; i++) {
    if (i >= offset) return depth >= 1 ? key : std::string();
    const char c = text[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < n && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
      if (depth == 1 && expect_key) {
        key = std::string(text.substr(i + 1, std::min(j, n) - i - 1));
        expect_key = false;
      }
      if (offset > i && offset <= j) return depth >= 1 ? key : std::string();
      i = j;
      continue;
    }
    if (c == '{' || c == '[') {
      if (++depth == 1 && c == '{') expect_key = true;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
  }
  return depth >= 1 ? key : std::string();
}

bool parse_control(std::string_view body, ControlRequest *out, ProtocolError *error, const ControlLimits &limits) {
  if (body.size() > limits.max_body)
    return fail(error, 413, "request body of " + std::to_string(body.size()) + " bytes exceeds the limit of " +
                                std::to_string(limits.max_body) + " bytes");
  if (body.empty()) return fail(error, 400, "the body must be a JSON object");
  dw::json::Limits jl;
  jl.max_bytes = limits.max_body;
  jl.max_depth = limits.max_depth;
  // The text rules first, so that a bad string is refused naming its member.
  const std::string why = dw::json::check(body, jl);
  if (!why.empty()) {
    const size_t at = offset_of(why);
    const std::string member = at == std::string::npos ? std::string() : member_at(body, at);
    return fail(error, 400, member.empty() ? "invalid JSON: " + why : shorten(member) + ": " + why);
  }
  dw::json::NodePtr root;
  try {
    root = dw::json::parse_object(body, "control request", jl);
  } catch (const dw::json::Error &e) {
    return fail(error, 400, e.what());
  }
  JsonObject *o = json_node_get_object(root.get());
  ControlRequest r;
  GList *members = json_object_get_members(o);
  bool ok = true;
  for (GList *l = members; l && ok; l = l->next) {
    const char *k = static_cast<const char *>(l->data);
    const std::string key = k ? k : "";
    JsonNode *n = json_object_get_member(o, k);
    std::optional<bool> pause;
    if (key == "prompt") {
      ok = take_text(n, "prompt", limits.max_prompt, &r.prompt, error);
    } else if (key == "negative_prompt") {
      ok = take_text(n, "negative_prompt", limits.max_prompt, &r.negative_prompt, error);
    } else if (key == "denoise") {
      const bool number = holds(n, G_TYPE_DOUBLE) || holds(n, G_TYPE_INT64);
      const double d = number ? json_node_get_double(n) : NAN;
      if (!number || !std::isfinite(d) || d < 0 || d > 1) ok = fail(error, 400, "denoise must be a number in [0, 1]");
      else r.denoise = d;
    } else if (key == "seed") {
      if (!holds(n, G_TYPE_INT64) || json_node_get_int(n) < 0) ok = fail(error, 400, "seed must be a non-negative integer");
      else r.seed = json_node_get_int(n);
    } else if (key == "pause") {
      if (!holds(n, G_TYPE_BOOLEAN)) ok = fail(error, 400, "pause must be a boolean");
      else pause = json_node_get_boolean(n);
    } else if (key == "resume") {
      if (!holds(n, G_TYPE_BOOLEAN)) ok = fail(error, 400, "resume must be a boolean");
      else if (json_node_get_boolean(n)) pause = false;
    } else if (key == "action") {
      const char *a = holds(n, G_TYPE_STRING) ? json_node_get_string(n) : nullptr;
      if (g_strcmp0(a, "pause") == 0) pause = true;
      else if (g_strcmp0(a, "resume") == 0) pause = false;
      else ok = fail(error, 400, "action must be \"pause\" or \"resume\"");
    } else {
      ok = fail(error, 400, "unknown key '" + shorten(key) + "' (known: " + kKnownControlKeys + ")");
    }
    if (ok && pause) {
      if (r.pause && *r.pause != *pause) ok = fail(error, 400, "pause, resume and action disagree");
      else r.pause = pause;
    }
  }
  g_list_free(members);
  if (!ok) return false;
  if (out) *out = std::move(r);
  return true;
}

bool parse_signal(std::string_view text, SignalMessage *out, std::string *error) {
  auto bad = [&](std::string why) {
    if (error) *error = std::move(why);
    return false;
  };
  dw::json::Limits jl;
  jl.max_bytes = kMaxSignalBytes;
  jl.max_depth = 8;
  dw::json::NodePtr root;
  try {
    root = dw::json::parse_object(text, "signalling message", jl);
  } catch (const dw::json::Error &e) {
    return bad(e.what());
  }
  JsonObject *o = json_node_get_object(root.get());
  JsonNode *type = json_object_get_member(o, "type");
  if (!holds(type, G_TYPE_STRING)) return bad("signalling message: \"type\" must be a string");
  const std::string t = json_node_get_string(type);
  SignalMessage m;
  if (t == "answer") {
    JsonNode *sdp = json_object_get_member(o, "sdp");
    if (!holds(sdp, G_TYPE_STRING)) return bad("signalling answer: \"sdp\" must be a string");
    m.type = SignalMessage::Type::Answer;
    m.sdp = json_node_get_string(sdp);
    if (m.sdp.empty()) return bad("signalling answer: \"sdp\" is empty");
  } else if (t == "ice") {
    JsonNode *cand = json_object_get_member(o, "candidate");
    if (!holds(cand, G_TYPE_STRING)) return bad("signalling ice: \"candidate\" must be a string");
    m.type = SignalMessage::Type::Ice;
    m.candidate = json_node_get_string(cand);
    if (JsonNode *ml = json_object_get_member(o, "sdpMLineIndex"); ml && !JSON_NODE_HOLDS_NULL(ml)) {
      if (!holds(ml, G_TYPE_INT64) || json_node_get_int(ml) < 0 || json_node_get_int(ml) > 255)
        return bad("signalling ice: \"sdpMLineIndex\" must be an integer in [0, 255]");
      m.mline = static_cast<unsigned>(json_node_get_int(ml));
    }
  } else {
    return bad("signalling message: unknown type '" + shorten(t) + "' (expected answer or ice)");
  }
  if (out) *out = std::move(m);
  return true;
}

}  // namespace dw::app
