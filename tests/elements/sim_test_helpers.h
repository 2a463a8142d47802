// Helpers shared by the element tests that run against the in-process ComfyUI simulator.
#pragma once

#include <glib.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include <string>

namespace dw_test {

// A file of the source tree (DW_SOURCE_DIR is set by meson test).
inline std::string source_path(const std::string &rel) {
  const char *dir = g_getenv("DW_SOURCE_DIR");
  return std::string(dir ? dir : ".") + "/" + rel;
}

// "message | debug" of an ERROR or WARNING message.
inline std::string error_text(GstMessage *msg) {
  GError *err = nullptr;
  gchar *debug = nullptr;
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR)
    gst_message_parse_error(msg, &err, &debug);
  else
    gst_message_parse_warning(msg, &err, &debug);
  std::string out = std::string(err ? err->message : "") + " | " + (debug ? debug : "");
  g_clear_error(&err);
  g_free(debug);
  return out;
}

// A string input of a node in a POST /prompt body ("" when absent).
inline std::string prompt_input_of(const std::string &body, const char *node, const char *input) {
  JsonParser *parser = json_parser_new();
  std::string value;
  if (json_parser_load_from_data(parser, body.c_str(), -1, nullptr)) {
    JsonObject *root = json_node_get_object(json_parser_get_root(parser));
    JsonObject *graph = root ? json_object_get_object_member(root, "prompt") : nullptr;
    JsonObject *n = graph && json_object_has_member(graph, node) ? json_object_get_object_member(graph, node) : nullptr;
    JsonObject *inputs = n ? json_object_get_object_member(n, "inputs") : nullptr;
    if (inputs && json_object_has_member(inputs, input)) {
      const gchar *s = json_object_get_string_member(inputs, input);
      value = s ? s : "";
    }
  }
  g_object_unref(parser);
  return value;
}

// LoadImage value (node "4") and positive prompt text (node "2") of tests/data/tiny_img2img.json.
inline std::string image_value_of(const std::string &body) { return prompt_input_of(body, "4", "image"); }
inline std::string prompt_text_of(const std::string &body) { return prompt_input_of(body, "2", "text"); }

}  // namespace dw_test
