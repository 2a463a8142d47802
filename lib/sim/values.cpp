// Python-like value printing and conversions, and request JSON parsing, for the simulator.

#include "sim/internal.h"

#include <cerrno>
#include <cmath>

#include "json/json.h"

namespace dw::sim {

namespace {

// What a real ComfyUI 0.8.0 refuses (it answers 500, or closes the websocket): aiohttp reads at most
// client_max_size = max_upload_size (100 MiB) of body, and Python's json module raises RecursionError
// a little below sys.getrecursionlimit() (1000) levels of nesting.
const dw::json::Limits kRequestJsonLimits{kMaxUploadSize, 990};

}  // namespace

std::string json_escape(const std::string &s) {
  std::string o;
  o.reserve(s.size() + 2);
  o += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          g_snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  o += '"';
  return o;
}

std::string py_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[400];
  const double a = std::fabs(v);
  if (a != 0.0 && (a >= 1e16 || a < 1e-4)) {
    for (int prec = 1; prec <= 17; ++prec) {
      g_snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
      if (g_ascii_strtod(buf, nullptr) == v) break;
    }
  } else {
    for (int dec = 0; dec <= 17; ++dec) {
      g_snprintf(buf, sizeof buf, "%.*f", dec, v);
      if (g_ascii_strtod(buf, nullptr) == v) break;
    }
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string node_to_json(JsonNode *n) {
  if (!n) return "null";
  char *t = json_to_string(n, FALSE);
  std::string r = t ? t : "null";
  g_free(t);
  return r;
}

// Python str()/repr()-like rendering of a JSON value (for error messages).
std::string py_str(JsonNode *n) {
  if (!n || JSON_NODE_HOLDS_NULL(n)) return "None";
  if (JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_STRING) return json_node_get_string(n);
    if (t == G_TYPE_BOOLEAN) return json_node_get_boolean(n) ? "True" : "False";
    if (t == G_TYPE_INT64) return std::to_string(json_node_get_int(n));
    if (t == G_TYPE_DOUBLE) return py_float(json_node_get_double(n));
  }
  return node_to_json(n);
}

std::string py_repr(JsonNode *n) {
  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    return "'" + std::string(json_node_get_string(n)) + "'";
  return py_str(n);
}

bool is_string(JsonNode *n) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING; }

bool is_int(JsonNode *n) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64; }

int64_t now_ms() { return g_get_real_time() / 1000; }

std::string hex_sid() {
  char *u = g_uuid_string_random();
  std::string s;
  for (const char *p = u; *p; ++p)
    if (*p != '-') s += *p;
  g_free(u);
  return s;
}

namespace {
// str.strip() as int()/float() apply it to their argument (ASCII whitespace, like g_strstrip).
std::string py_strip(const std::string &s) {
  std::string t = s;
  g_strstrip(t.data());
  return t.c_str();
}
}  // namespace

std::string py_list(const std::vector<std::string> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += "'" + v[i] + "'";
  }
  return s + "]";
}

bool py_int(JsonNode *n, int64_t &out, std::string &err) {
  if (n && JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) { out = json_node_get_int(n); return true; }
    if (t == G_TYPE_DOUBLE) {
      double d = json_node_get_double(n);
      if (std::isnan(d) || std::isinf(d)) { err = "cannot convert float NaN to integer"; return false; }
      out = static_cast<int64_t>(d);
      return true;
    }
    if (t == G_TYPE_BOOLEAN) { out = json_node_get_boolean(n) ? 1 : 0; return true; }
    if (t == G_TYPE_STRING) {
      std::string s = json_node_get_string(n);
      const std::string t2 = py_strip(s);
      char *end = nullptr;
      errno = 0;
      long long v = g_ascii_strtoll(t2.c_str(), &end, 10);
      if (!t2.empty() && end && *end == '\0' && errno == 0 && (g_ascii_isdigit(t2.back()))) {
        out = v;
        return true;
      }
      err = "invalid literal for int() with base 10: '" + s + "'";
      return false;
    }
  }
  err = std::string("int() argument must be a string, a bytes-like object or a real number, not '") +
        (n && JSON_NODE_HOLDS_NULL(n) ? "NoneType" : n && JSON_NODE_HOLDS_OBJECT(n) ? "dict" : "list") + "'";
  return false;
}

bool py_float_conv(JsonNode *n, double &out, std::string &err) {
  if (n && JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) { out = static_cast<double>(json_node_get_int(n)); return true; }
    if (t == G_TYPE_DOUBLE) { out = json_node_get_double(n); return true; }
    if (t == G_TYPE_BOOLEAN) { out = json_node_get_boolean(n) ? 1.0 : 0.0; return true; }
    if (t == G_TYPE_STRING) {
      std::string s = json_node_get_string(n);
      const std::string t2 = py_strip(s);
      char *end = nullptr;
      double v = g_ascii_strtod(t2.c_str(), &end);
      if (!t2.empty() && end && *end == '\0') { out = v; return true; }
      err = "could not convert string to float: '" + s + "'";
      return false;
    }
  }
  err = std::string("float() argument must be a string or a real number, not '") +
        (n && JSON_NODE_HOLDS_NULL(n) ? "NoneType" : n && JSON_NODE_HOLDS_OBJECT(n) ? "dict" : "list") + "'";
  return false;
}

std::string err_obj(const std::string &type, const std::string &message, const std::string &details,
                    const std::string &extra_raw) {
  JW w;
  w.ob().k("type").s(type).k("message").s(message).k("details").s(details).k("extra_info").raw(extra_raw).oe();
  return w.str();
}

JsonNode *parse_json(const char *data, size_t len, const char *what) {
  try {
    return dw::json::parse(std::string_view(data ? data : "", len), what, kRequestJsonLimits).release();
  } catch (const dw::json::Error &) {
    return nullptr;
  }
}

}  // namespace dw::sim
