// The app's one JSON writer: a thin chaining wrapper over json-glib's JsonBuilder, serialised by
// dw::json::to_string (JsonGenerator). Strings are escaped by json-glib; non-finite numbers become
// null. A null key adds an array element instead of an object member.
#pragma once

#include <json-glib/json-glib.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "json/json.h"

namespace dw::app {

class JsonWriter {
 public:
  JsonWriter() : b_(json_builder_new()) {}
  ~JsonWriter() { g_object_unref(b_); }
  JsonWriter(const JsonWriter &) = delete;
  JsonWriter &operator=(const JsonWriter &) = delete;

  JsonWriter &begin_object(const char *key = nullptr) {
    name(key);
    json_builder_begin_object(b_);
    return *this;
  }
  JsonWriter &end_object() {
    json_builder_end_object(b_);
    return *this;
  }
  JsonWriter &begin_array(const char *key = nullptr) {
    name(key);
    json_builder_begin_array(b_);
    return *this;
  }
  JsonWriter &end_array() {
    json_builder_end_array(b_);
    return *this;
  }
  JsonWriter &null(const char *key) {
    name(key);
    json_builder_add_null_value(b_);
    return *this;
  }
  JsonWriter &set(const char *key, const std::string &v) {
    name(key);
    json_builder_add_string_value(b_, v.c_str());
    return *this;
  }
  JsonWriter &set(const char *key, const char *v) {
    if (!v) return null(key);
    name(key);
    json_builder_add_string_value(b_, v);
    return *this;
  }
  JsonWriter &set(const char *key, bool v) {
    name(key);
    json_builder_add_boolean_value(b_, v);
    return *this;
  }
  JsonWriter &set(const char *key, int64_t v) {
    name(key);
    json_builder_add_int_value(b_, v);
    return *this;
  }
  JsonWriter &set(const char *key, uint64_t v) {
    if (v > static_cast<uint64_t>(INT64_MAX)) return null(key);
    return set(key, static_cast<int64_t>(v));
  }
  JsonWriter &set(const char *key, int v) { return set(key, static_cast<int64_t>(v)); }
  JsonWriter &set(const char *key, unsigned v) { return set(key, static_cast<int64_t>(v)); }
  JsonWriter &set(const char *key, double v) {
    if (!std::isfinite(v)) return null(key);
    name(key);
    json_builder_add_double_value(b_, v);
    return *this;
  }
  // A number that may be absent (null).
  JsonWriter &number_or_null(const char *key, bool present, double v) { return present ? set(key, v) : null(key); }
  // Takes ownership of node.
  JsonWriter &node(const char *key, JsonNode *n) {
    name(key);
    json_builder_add_value(b_, n);
    return *this;
  }

  // For writers that take a JsonBuilder (e.g. Egress::to_json): set the member name with key first.
  JsonBuilder *builder(const char *key = nullptr) {
    name(key);
    return b_;
  }

  std::string to_string() {
    JsonNode *root = json_builder_get_root(b_);
    std::string s = root ? dw::json::to_string(root) : std::string("null");
    if (root) json_node_unref(root);
    return s;
  }

 private:
  void name(const char *key) {
    if (key) json_builder_set_member_name(b_, key);
  }
  JsonBuilder *b_;
};

}  // namespace dw::app
