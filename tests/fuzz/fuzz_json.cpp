// libFuzzer target for dw::json, the one entry point for outside JSON: any byte string must either
// parse, or throw dw::json::Error -- never crash, recurse without bound, hang or leak (ASan/UBSan).
// What parses must obey the text rules the pre-scan promises (every string valid UTF-8, no NUL).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "json/json.h"

namespace {

// Iterative walk (the fuzzer must not add the recursion dw::json exists to avoid); depth <= 8 here.
void check_strings(JsonNode *node, int depth) {
  // Containers nest at most 8 deep (the limit below); a scalar inside the 8th sits at depth 9.
  if (depth > 8 && (JSON_NODE_HOLDS_ARRAY(node) || JSON_NODE_HOLDS_OBJECT(node))) std::abort();
  switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT: {
      JsonObject *o = json_node_get_object(node);
      GList *members = json_object_get_members(o);
      for (GList *m = members; m; m = m->next) {
        const char *name = static_cast<const char *>(m->data);
        if (!dw::json::check_text(name).empty()) std::abort();
        check_strings(json_object_get_member(o, name), depth + 1);
      }
      g_list_free(members);
      break;
    }
    case JSON_NODE_ARRAY: {
      JsonArray *a = json_node_get_array(node);
      for (guint i = 0; i < json_array_get_length(a); i++) check_strings(json_array_get_element(a, i), depth + 1);
      break;
    }
    case JSON_NODE_VALUE:
      if (json_node_get_value_type(node) == G_TYPE_STRING) {
        const char *s = json_node_get_string(node);
        if (!s || !dw::json::check_text(s).empty()) std::abort();
      }
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view text(reinterpret_cast<const char *>(data), size);
  dw::json::Limits limits;
  limits.max_depth = 8;
  limits.max_bytes = 1 << 16;
  const std::string why = dw::json::check(text, limits);
  try {
    dw::json::NodePtr root = dw::json::parse(text, "fuzz input", limits);
    if (!why.empty()) std::abort();  // check() and parse() must agree
    check_strings(root.get(), 1);
    (void)dw::json::to_string(root.get());
  } catch (const dw::json::Error &e) {
    if (std::strncmp(e.what(), "fuzz input: ", 12) != 0) std::abort();  // every message names the input
  }
  (void)dw::json::check_text(text, 1024);
  return 0;
}
