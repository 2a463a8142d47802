// A small JSON object writer for the app's replies (keys in insertion order, numbers as given).
#pragma once

#include <glib.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace dw::app {

inline std::string json_quote(const std::string &s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          g_snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(buf, sizeof buf, "%.6g", v);
  return buf;
}

class JsonObj {
 public:
  JsonObj &raw(const std::string &k, const std::string &json) {
    body_ += (body_.empty() ? "" : ",") + json_quote(k) + ":" + json;
    return *this;
  }
  JsonObj &set(const std::string &k, const std::string &v) { return raw(k, json_quote(v)); }
  JsonObj &set(const std::string &k, const char *v) { return v ? raw(k, json_quote(v)) : raw(k, "null"); }
  JsonObj &set(const std::string &k, bool v) { return raw(k, v ? "true" : "false"); }
  JsonObj &set(const std::string &k, gint64 v) { return raw(k, std::to_string(v)); }
  JsonObj &set(const std::string &k, guint64 v) { return raw(k, std::to_string(v)); }
  JsonObj &set(const std::string &k, int v) { return raw(k, std::to_string(v)); }
  JsonObj &set(const std::string &k, unsigned v) { return raw(k, std::to_string(v)); }
  JsonObj &set(const std::string &k, double v) { return raw(k, json_number(v)); }
  JsonObj &null(const std::string &k) { return raw(k, "null"); }
  std::string to_string() const { return "{" + body_ + "}"; }
  bool empty() const { return body_.empty(); }

 private:
  std::string body_;
};

}  // namespace dw::app
