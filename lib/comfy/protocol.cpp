#include "comfy/protocol.h"

#include "json/json.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace dw::comfy::proto {

namespace {

// Owns a parsed document.
struct Doc {
  dw::json::NodePtr node;
  JsonNode *root = nullptr;  // node.get()
};

// Every ComfyUI body and websocket message goes through dw::json: a server answering with
// "[[[[..." or invalid text is a Protocol error, never a crash. /object_info and /history bodies
// reach a few MiB; real documents are < 12 levels deep.
Error parse_doc(const char *data, size_t len, Doc *doc, const char *what) {
  if (!data || len == 0) return Error(ErrorKind::Protocol, std::string(what) + ": empty body");
  dw::json::Limits limits;
  limits.max_bytes = 64u << 20;
  limits.max_depth = 64;
  try {
    doc->node = dw::json::parse(std::string_view(data, len), what, limits);
  } catch (const dw::json::Error &e) {
    return Error(ErrorKind::Protocol, std::string(e.what()) + ": " + excerpt(data, len, 120));
  }
  doc->root = doc->node.get();
  return {};
}

JsonObject *as_object(JsonNode *n) { return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : nullptr; }
JsonArray *as_array(JsonNode *n) { return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : nullptr; }

JsonNode *member(JsonObject *o, const char *name) {
  return (o && json_object_has_member(o, name)) ? json_object_get_member(o, name) : nullptr;
}

bool is_string(JsonNode *n) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING; }
bool is_number(JsonNode *n) {
  if (!n || !JSON_NODE_HOLDS_VALUE(n)) return false;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

// A string member, or "" if absent / null / of another type (ok set false for another type).
std::string str_member(JsonObject *o, const char *name, bool *ok = nullptr) {
  JsonNode *n = member(o, name);
  if (!n || JSON_NODE_HOLDS_NULL(n)) return {};
  if (!is_string(n)) {
    if (ok) *ok = false;
    return {};
  }
  const char *s = json_node_get_string(n);
  return s ? s : "";
}

bool num_member(JsonObject *o, const char *name, double *out) {
  JsonNode *n = member(o, name);
  if (!is_number(n)) return false;
  *out = json_node_get_double(n);  // converts ints too
  return true;
}

bool int_member(JsonObject *o, const char *name, int64_t *out) {
  JsonNode *n = member(o, name);
  if (!is_number(n)) return false;
  if (json_node_get_value_type(n) == G_TYPE_INT64)
    *out = json_node_get_int(n);
  else
    *out = static_cast<int64_t>(json_node_get_double(n));
  return true;
}

bool bool_member(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN && json_node_get_boolean(n);
}

std::vector<std::string> str_list(JsonNode *n) {
  std::vector<std::string> v;
  JsonArray *a = as_array(n);
  if (!a) return v;
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (is_string(e)) v.emplace_back(json_node_get_string(e));
  }
  return v;
}

std::string trim(std::string s) {
  size_t b = 0, e = s.size();
  while (b < e && g_ascii_isspace(s[b])) b++;
  while (e > b && g_ascii_isspace(s[e - 1])) e--;
  return s.substr(b, e - b);
}

// Image refs of one output object {"images": [...]}; invalid entries skipped.
void collect_images(const std::string &node_id, JsonObject *output, std::vector<OutputImage> *out) {
  JsonArray *imgs = as_array(member(output, "images"));
  if (!imgs) return;
  for (guint i = 0; i < json_array_get_length(imgs); i++) {
    JsonObject *io = as_object(json_array_get_element(imgs, i));
    if (!io) continue;
    bool ok = true;
    OutputImage oi;
    oi.node_id = node_id;
    oi.ref.filename = str_member(io, "filename", &ok);
    oi.ref.subfolder = str_member(io, "subfolder", &ok);
    oi.ref.type = str_member(io, "type", &ok);
    if (!ok || oi.ref.filename.empty()) continue;
    if (oi.ref.type.empty()) oi.ref.type = "output";
    out->push_back(std::move(oi));
  }
}

uint32_t be32(const uint8_t *p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string to_json(JsonBuilder *b) {
  JsonNode *root = json_builder_get_root(b);
  JsonGenerator *gen = json_generator_new();
  json_generator_set_root(gen, root);
  gchar *s = json_generator_to_data(gen, nullptr);
  std::string r = s ? s : "";
  g_free(s);
  g_object_unref(gen);
  json_node_unref(root);
  g_object_unref(b);
  return r;
}

bool numeric_less(const std::string &a, const std::string &b) {
  // Node ids are usually decimal: order "2" < "10"; fall back to string order.
  char *ea = nullptr, *eb = nullptr;
  gint64 ia = g_ascii_strtoll(a.c_str(), &ea, 10), ib = g_ascii_strtoll(b.c_str(), &eb, 10);
  bool na = !a.empty() && ea && *ea == 0, nb = !b.empty() && eb && *eb == 0;
  if (na && nb) return ia < ib;
  if (na != nb) return na;
  return a < b;
}

}  // namespace

const char *msg_type_name(MsgType t) {
  switch (t) {
    case MsgType::Unknown: return "unknown";
    case MsgType::Status: return "status";
    case MsgType::ExecutionStart: return "execution_start";
    case MsgType::ExecutionCached: return "execution_cached";
    case MsgType::Executing: return "executing";
    case MsgType::Progress: return "progress";
    case MsgType::ProgressState: return "progress_state";
    case MsgType::Executed: return "executed";
    case MsgType::ExecutionSuccess: return "execution_success";
    case MsgType::ExecutionError: return "execution_error";
    case MsgType::ExecutionInterrupted: return "execution_interrupted";
    case MsgType::FeatureFlags: return "feature_flags";
  }
  return "unknown";
}

static MsgType type_from_name(const std::string &n) {
  static const MsgType all[] = {MsgType::Status, MsgType::ExecutionStart, MsgType::ExecutionCached,
                                MsgType::Executing, MsgType::Progress, MsgType::ProgressState,
                                MsgType::Executed, MsgType::ExecutionSuccess, MsgType::ExecutionError,
                                MsgType::ExecutionInterrupted, MsgType::FeatureFlags};
  for (MsgType t : all)
    if (n == msg_type_name(t)) return t;
  return MsgType::Unknown;
}

Error parse_ws_data(const std::string &type_name, JsonNode *data_node, WsMessage *out) {
  *out = WsMessage();
  out->type_name = type_name;
  out->type = type_from_name(type_name);
  if (out->type == MsgType::Unknown) return {};
  JsonObject *d = as_object(data_node);
  auto bad = [&](const std::string &why) {
    return Error(ErrorKind::Protocol, "websocket message '" + type_name + "': " + why);
  };
  if (!d) return bad("\"data\" is not an object");
  bool ok = true;
  out->prompt_id = str_member(d, "prompt_id", &ok);
  if (!ok) return bad("prompt_id is not a string");
  int_member(d, "timestamp", &out->timestamp);

  switch (out->type) {
    case MsgType::Status: {
      out->sid = str_member(d, "sid", &ok);
      JsonObject *st = as_object(member(d, "status"));
      JsonObject *ei = as_object(member(st, "exec_info"));
      if (!int_member(ei, "queue_remaining", &out->queue_remaining)) out->queue_remaining = -1;
      break;
    }
    case MsgType::ExecutionStart:
    case MsgType::ExecutionSuccess:
      if (out->prompt_id.empty()) return bad("missing prompt_id");
      break;
    case MsgType::ExecutionCached:
      out->node_list = str_list(member(d, "nodes"));
      break;
    case MsgType::Executing: {
      JsonNode *n = member(d, "node");
      if (!n || JSON_NODE_HOLDS_NULL(n)) {
        out->node_is_null = true;
      } else if (is_string(n)) {
        out->node = json_node_get_string(n);
      } else {
        return bad("node is neither a string nor null");
      }
      out->display_node = str_member(d, "display_node", &ok);
      break;
    }
    case MsgType::Progress:
      if (!num_member(d, "value", &out->value) || !num_member(d, "max", &out->max))
        return bad("value/max missing or not numbers");
      out->node = str_member(d, "node", &ok);
      break;
    case MsgType::ProgressState: {
      JsonObject *nodes = as_object(member(d, "nodes"));
      if (!nodes) return bad("nodes is not an object");
      GList *keys = json_object_get_members(nodes);
      for (GList *k = keys; k; k = k->next) {
        const char *key = static_cast<const char *>(k->data);
        JsonObject *no = as_object(json_object_get_member(nodes, key));
        if (!no) continue;
        NodeProgress np;
        np.node_id = key;
        num_member(no, "value", &np.value);
        num_member(no, "max", &np.max);
        np.state = str_member(no, "state");
        out->nodes.push_back(std::move(np));
      }
      g_list_free(keys);
      break;
    }
    case MsgType::Executed: {
      out->node = str_member(d, "node", &ok);
      if (!ok || out->node.empty()) return bad("missing node");
      out->display_node = str_member(d, "display_node");
      JsonObject *output = as_object(member(d, "output"));
      if (output) collect_images(out->node, output, &out->images);
      break;
    }
    case MsgType::ExecutionError:
    case MsgType::ExecutionInterrupted:
      out->node_id = str_member(d, "node_id", &ok);
      out->node_type = str_member(d, "node_type", &ok);
      out->exception_type = str_member(d, "exception_type", &ok);
      out->exception_message = trim(str_member(d, "exception_message", &ok));
      out->node_list = str_list(member(d, "executed"));
      break;
    case MsgType::FeatureFlags:
      out->supports_preview_metadata = bool_member(d, "supports_preview_metadata");
      int_member(d, "max_upload_size", &out->max_upload_size);
      break;
    case MsgType::Unknown:
      break;
  }
  return {};
}

Error parse_ws_text(const char *data, size_t len, WsMessage *out) {
  *out = WsMessage();
  Doc doc;
  if (Error e = parse_doc(data, len, &doc, "websocket text message")) return e;
  JsonObject *o = as_object(doc.root);
  if (!o) return Error(ErrorKind::Protocol, "websocket text message is not a JSON object: " + excerpt(data, len, 80));
  JsonNode *t = member(o, "type");
  if (!is_string(t)) return Error(ErrorKind::Protocol, "websocket text message without a string \"type\"");
  return parse_ws_data(json_node_get_string(t), member(o, "data"), out);
}

Error parse_ws_binary(const uint8_t *data, size_t len, BinaryFrame *out) {
  *out = BinaryFrame();
  if (!data || len < 4) return Error(ErrorKind::Protocol, "binary websocket frame shorter than its 4-byte type");
  out->event_type = be32(data);
  const uint8_t *p = data + 4;
  size_t left = len - 4;
  switch (out->event_type) {
    case kBinPreviewImage: {
      if (left < 4) return Error(ErrorKind::Protocol, "binary PREVIEW_IMAGE frame truncated (no format)");
      out->image_format = be32(p);
      p += 4;
      left -= 4;
      out->mime = out->image_format == 1 ? "image/jpeg" : out->image_format == 2 ? "image/png" : "";
      if (left == 0) return Error(ErrorKind::Protocol, "binary PREVIEW_IMAGE frame without image bytes");
      out->image.assign(p, p + left);
      return {};
    }
    case kBinText: {
      if (left < 4) return Error(ErrorKind::Protocol, "binary TEXT frame truncated (no length)");
      uint32_t n = be32(p);
      p += 4;
      left -= 4;
      if (n > left) return Error(ErrorKind::Protocol, "binary TEXT frame truncated (node id longer than the frame)");
      out->text_node_id.assign(reinterpret_cast<const char *>(p), n);
      out->text.assign(reinterpret_cast<const char *>(p + n), left - n);
      return {};
    }
    case kBinPreviewWithMetadata: {
      if (left < 4) return Error(ErrorKind::Protocol, "binary PREVIEW_IMAGE_WITH_METADATA frame truncated (no length)");
      uint32_t n = be32(p);
      p += 4;
      left -= 4;
      if (n > left)
        return Error(ErrorKind::Protocol, "binary PREVIEW_IMAGE_WITH_METADATA frame truncated (metadata longer than the frame)");
      Doc doc;
      if (Error e = parse_doc(reinterpret_cast<const char *>(p), n, &doc, "image frame metadata")) return e;
      JsonObject *m = as_object(doc.root);
      if (!m) return Error(ErrorKind::Protocol, "image frame metadata is not a JSON object");
      bool ok = true;
      out->has_metadata = true;
      out->prompt_id = str_member(m, "prompt_id", &ok);
      out->node_id = str_member(m, "node_id", &ok);
      out->display_node_id = str_member(m, "display_node_id", &ok);
      out->mime = str_member(m, "image_type", &ok);
      if (!ok) return Error(ErrorKind::Protocol, "image frame metadata has fields of the wrong type");
      p += n;
      left -= n;
      if (left == 0) return Error(ErrorKind::Protocol, "binary PREVIEW_IMAGE_WITH_METADATA frame without image bytes");
      out->image.assign(p, p + left);
      return {};
    }
    default:
      return {};  // unknown / unused types are tolerated
  }
}

// ---------------------------------------------------------------------------------------------

std::string summarize_node_errors(const std::vector<NodeError> &errors) {
  std::string s;
  for (const NodeError &ne : errors) {
    std::string head = "node " + ne.node_id + (ne.class_type.empty() ? "" : " (" + ne.class_type + ")");
    if (ne.errors.empty()) {
      if (!s.empty()) s += "; ";
      s += head + ": failed validation";
      continue;
    }
    for (const InputError &ie : ne.errors) {
      if (!s.empty()) s += "; ";
      s += head;
      if (!ie.input_name.empty()) s += " input '" + ie.input_name + "'";
      s += ": " + (ie.message.empty() ? ie.type : ie.message);
      if (!ie.details.empty() && ie.details != ie.input_name) s += " (" + ie.details + ")";
    }
  }
  return s;
}

static void parse_node_errors(JsonObject *ne, std::vector<NodeError> *out) {
  if (!ne) return;
  GList *keys = json_object_get_members(ne);
  for (GList *k = keys; k; k = k->next) {
    const char *key = static_cast<const char *>(k->data);
    NodeError e;
    e.node_id = key;
    JsonObject *eo = as_object(json_object_get_member(ne, key));
    if (eo) {
      e.class_type = str_member(eo, "class_type");
      e.dependent_outputs = str_list(member(eo, "dependent_outputs"));
      JsonArray *errs = as_array(member(eo, "errors"));
      for (guint i = 0; errs && i < json_array_get_length(errs); i++) {
        JsonObject *io = as_object(json_array_get_element(errs, i));
        if (!io) continue;
        InputError ie;
        ie.type = str_member(io, "type");
        ie.message = str_member(io, "message");
        ie.details = str_member(io, "details");
        ie.input_name = str_member(as_object(member(io, "extra_info")), "input_name");
        e.errors.push_back(std::move(ie));
      }
    }
    out->push_back(std::move(e));
  }
  g_list_free(keys);
  std::sort(out->begin(), out->end(), [](const NodeError &a, const NodeError &b) { return numeric_less(a.node_id, b.node_id); });
}

bool is_missing_image_error(const NodeError &node, const InputError &e) {
  // LoadImage.VALIDATE_INPUTS (ComfyUI 0.8.0): "image - Invalid image file: dw_00163_.png [output]".
  if (e.type == "custom_validation_failed" && e.details.find("Invalid image file") != std::string::npos) return true;
  // Older servers check the file against the combo list of input files instead.
  return e.type == "value_not_in_list" && e.input_name == "image" && node.class_type.rfind("LoadImage", 0) == 0;
}

bool missing_input_only(const std::vector<NodeError> &errors) {
  if (errors.empty()) return false;
  for (const NodeError &n : errors) {
    if (n.errors.empty()) return false;
    for (const InputError &e : n.errors)
      if (!is_missing_image_error(n, e)) return false;
  }
  return true;
}

Error parse_prompt_response(int http_status, const char *data, size_t len,
                            const std::vector<std::string> &wanted_outputs, PromptResponse *out) {
  *out = PromptResponse();
  out->http_status = http_status;
  if (http_status != 200 && http_status != 400) {
    std::string m = "HTTP " + std::to_string(http_status) + " from POST /prompt";
    if (len > 0) m += ": " + excerpt(data, len);
    return Error(ErrorKind::HttpStatus, m, http_status);
  }
  Doc doc;
  if (Error e = parse_doc(data, len, &doc, http_status == 200 ? "POST /prompt response" : "POST /prompt 400 response")) {
    if (http_status == 400) {
      e.kind = ErrorKind::InvalidPrompt;
      e.http_status = 400;
      e.message = "POST /prompt rejected (HTTP 400) with an unreadable body: " + excerpt(data, len);
    }
    return e;
  }
  JsonObject *o = as_object(doc.root);
  if (!o) {
    if (http_status == 400) return Error(ErrorKind::InvalidPrompt, "POST /prompt rejected (HTTP 400): " + excerpt(data, len), 400);
    return Error(ErrorKind::Protocol, "POST /prompt response is not a JSON object: " + excerpt(data, len));
  }
  JsonNode *ne = member(o, "node_errors");
  if (ne && !JSON_NODE_HOLDS_NULL(ne) && !as_object(ne)) {
    if (http_status == 200) return Error(ErrorKind::Protocol, "POST /prompt response: node_errors is not an object");
  }
  parse_node_errors(as_object(ne), &out->node_errors);

  if (http_status == 400) {
    JsonObject *err = as_object(member(o, "error"));
    JsonNode *errn = member(o, "error");
    if (err) {
      out->error_type = str_member(err, "type");
      out->error_message = str_member(err, "message");
      out->error_details = str_member(err, "details");
    } else if (is_string(errn)) {
      out->error_message = json_node_get_string(errn);
    }
    bool missing = missing_input_only(out->node_errors);
    std::string m = missing ? "POST /prompt rejected (HTTP 400): an input image is not on the server (restarted with a "
                              "clean input/output directory?)"
                            : "POST /prompt rejected (HTTP 400)";
    if (!missing) {
      if (!out->error_message.empty()) m += ": " + out->error_message;
      else if (!out->error_type.empty()) m += ": " + out->error_type;
      if (!out->error_details.empty()) m += " (" + out->error_details + ")";
    }
    std::string s = summarize_node_errors(out->node_errors);
    if (!s.empty()) m += ": " + s;
    Error e(missing ? ErrorKind::MissingInput : ErrorKind::InvalidPrompt, m, 400);
    if (!out->node_errors.empty()) {
      e.node_id = out->node_errors.front().node_id;
      e.node_type = out->node_errors.front().class_type;
    } else if (out->error_details.rfind("Node ID '#", 0) == 0) {
      std::string d = out->error_details.substr(10);
      size_t q = d.find('\'');
      e.node_id = d.substr(0, q);
    }
    return e;
  }

  // 200
  bool ok = true;
  out->prompt_id = str_member(o, "prompt_id", &ok);
  if (!ok || out->prompt_id.empty()) return Error(ErrorKind::Protocol, "POST /prompt response without a string prompt_id: " + excerpt(data, len));
  out->has_number = num_member(o, "number", &out->number);
  if (!out->node_errors.empty()) {
    std::vector<NodeError> hit;
    for (const NodeError &n : out->node_errors) {
      bool affects = wanted_outputs.empty() || wanted_node(wanted_outputs, n.node_id);
      for (const std::string &d : n.dependent_outputs)
        if (wanted_node(wanted_outputs, d)) affects = true;
      if (affects) hit.push_back(n);
    }
    if (!hit.empty()) {
      Error e(ErrorKind::InvalidPrompt,
              "POST /prompt queued the prompt but dropped the wanted outputs: " + summarize_node_errors(hit), 200);
      e.node_id = hit.front().node_id;
      e.node_type = hit.front().class_type;
      return e;
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------

Error error_from_execution_message(const WsMessage &msg) {
  std::string where = msg.node_id.empty() ? std::string("unknown node") : "node " + msg.node_id;
  if (!msg.node_type.empty()) where += " (" + msg.node_type + ")";
  Error e;
  if (msg.type == MsgType::ExecutionInterrupted) {
    e = Error(ErrorKind::Interrupted, "prompt " + msg.prompt_id + " was interrupted at " + where);
  } else {
    std::string m = "prompt " + msg.prompt_id + " failed in " + where + ": ";
    if (!msg.exception_type.empty()) m += msg.exception_type + ": ";
    m += msg.exception_message.empty() ? std::string("(no message)") : msg.exception_message;
    e = Error(ErrorKind::ExecutionError, m);
  }
  e.node_id = msg.node_id;
  e.node_type = msg.node_type;
  return e;
}

Error parse_queue(const char *data, size_t len, std::vector<std::string> *prompt_ids) {
  prompt_ids->clear();
  Doc doc;
  if (Error e = parse_doc(data, len, &doc, "GET /queue response")) return e;
  JsonObject *o = as_object(doc.root);
  if (!o) return Error(ErrorKind::Protocol, "GET /queue response is not a JSON object: " + excerpt(data, len));
  for (const char *list : {"queue_running", "queue_pending"}) {
    JsonArray *items = as_array(member(o, list));
    if (!items) return Error(ErrorKind::Protocol, std::string("GET /queue response has no ") + list + " array");
    for (guint i = 0; i < json_array_get_length(items); ++i) {
      JsonArray *item = as_array(json_array_get_element(items, i));
      JsonNode *id = item && json_array_get_length(item) >= 2 ? json_array_get_element(item, 1) : nullptr;
      if (!id || !JSON_NODE_HOLDS_VALUE(id) || json_node_get_value_type(id) != G_TYPE_STRING)
        return Error(ErrorKind::Protocol, std::string("GET /queue: an item of ") + list + " is not [number, prompt_id, ...]");
      prompt_ids->emplace_back(json_node_get_string(id));
    }
  }
  return {};
}

Error parse_history(const char *data, size_t len, const std::string &prompt_id, HistoryEntry *out) {
  *out = HistoryEntry();
  Doc doc;
  if (Error e = parse_doc(data, len, &doc, "GET /history response")) return e;
  JsonObject *o = as_object(doc.root);
  if (!o) return Error(ErrorKind::Protocol, "GET /history response is not a JSON object: " + excerpt(data, len));
  JsonNode *en = member(o, prompt_id.c_str());
  if (!en) return {};  // {} or another prompt: not finished (or forgotten)
  JsonObject *entry = as_object(en);
  if (!entry) return Error(ErrorKind::Protocol, "GET /history entry for " + prompt_id + " is not an object");

  JsonObject *outputs = as_object(member(entry, "outputs"));
  if (outputs) {
    GList *keys = json_object_get_members(outputs);
    std::vector<std::string> ids;
    for (GList *k = keys; k; k = k->next) ids.emplace_back(static_cast<const char *>(k->data));
    g_list_free(keys);
    std::sort(ids.begin(), ids.end(), numeric_less);
    for (const std::string &id : ids) collect_images(id, as_object(json_object_get_member(outputs, id.c_str())), &out->outputs);
  }
  JsonObject *status = as_object(member(entry, "status"));
  if (!status) {
    // Older servers: an entry with outputs means success.
    out->state = HistoryEntry::State::Success;
    out->completed = true;
    return {};
  }
  out->status_str = str_member(status, "status_str");
  out->completed = bool_member(status, "completed");
  // Last execution_* message decides.
  JsonArray *msgs = as_array(member(status, "messages"));
  WsMessage last;
  bool have_last = false;
  for (guint i = 0; msgs && i < json_array_get_length(msgs); i++) {
    JsonArray *pair = as_array(json_array_get_element(msgs, i));
    if (!pair || json_array_get_length(pair) < 2) continue;
    JsonNode *tn = json_array_get_element(pair, 0);
    if (!is_string(tn)) continue;
    std::string tname = json_node_get_string(tn);
    WsMessage m;
    if (parse_ws_data(tname, json_array_get_element(pair, 1), &m)) continue;
    if (m.type == MsgType::ExecutionError || m.type == MsgType::ExecutionInterrupted ||
        m.type == MsgType::ExecutionSuccess) {
      last = m;
      have_last = true;
    }
  }
  if (have_last && last.type == MsgType::ExecutionInterrupted) {
    out->state = HistoryEntry::State::Interrupted;
  } else if (have_last && last.type == MsgType::ExecutionError) {
    out->state = HistoryEntry::State::Error;
  } else if (out->status_str == "success" || (out->status_str.empty() && out->completed)) {
    out->state = HistoryEntry::State::Success;
  } else if (out->status_str == "error") {
    out->state = HistoryEntry::State::Error;  // error without details
  } else {
    return Error(ErrorKind::Protocol, "GET /history entry for " + prompt_id + " has an unknown status '" + out->status_str + "'");
  }
  if (have_last) out->last_message = last;
  if (out->last_message.prompt_id.empty()) out->last_message.prompt_id = prompt_id;
  if (out->state == HistoryEntry::State::Error && !have_last) {
    out->last_message.type = MsgType::ExecutionError;
    out->last_message.exception_message = "the server reports status 'error' without details";
  }
  return {};
}

Error parse_upload_response(const char *data, size_t len, ImageRef *out) {
  *out = ImageRef();
  Doc doc;
  if (Error e = parse_doc(data, len, &doc, "POST /upload/image response")) return e;
  JsonObject *o = as_object(doc.root);
  if (!o) return Error(ErrorKind::Protocol, "POST /upload/image response is not a JSON object: " + excerpt(data, len));
  bool ok = true;
  out->filename = str_member(o, "name", &ok);
  out->subfolder = str_member(o, "subfolder", &ok);
  out->type = str_member(o, "type", &ok);
  if (!ok || out->filename.empty())
    return Error(ErrorKind::Protocol, "POST /upload/image response without a string \"name\": " + excerpt(data, len));
  if (out->type.empty()) out->type = "input";
  return {};
}

// ---------------------------------------------------------------------------------------------

std::string build_prompt_body(JsonNode *prompt, const std::string &client_id, const std::string &prompt_id) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "prompt");
  if (prompt)
    json_builder_add_value(b, json_node_copy(prompt));
  else
    json_builder_add_null_value(b);
  if (!client_id.empty()) {
    json_builder_set_member_name(b, "client_id");
    json_builder_add_string_value(b, client_id.c_str());
  }
  if (!prompt_id.empty()) {
    json_builder_set_member_name(b, "prompt_id");
    json_builder_add_string_value(b, prompt_id.c_str());
  }
  json_builder_end_object(b);
  return to_json(b);
}

std::string build_feature_flags() {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "type");
  json_builder_add_string_value(b, "feature_flags");
  json_builder_set_member_name(b, "data");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "supports_preview_metadata");
  json_builder_add_boolean_value(b, TRUE);
  json_builder_end_object(b);
  json_builder_end_object(b);
  return to_json(b);
}

std::string build_queue_delete(const std::vector<std::string> &prompt_ids) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "delete");
  json_builder_begin_array(b);
  for (const auto &id : prompt_ids) json_builder_add_string_value(b, id.c_str());
  json_builder_end_array(b);
  json_builder_end_object(b);
  return to_json(b);
}

std::string build_interrupt(const std::string &prompt_id) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  if (!prompt_id.empty()) {
    json_builder_set_member_name(b, "prompt_id");
    json_builder_add_string_value(b, prompt_id.c_str());
  }
  json_builder_end_object(b);
  return to_json(b);
}

// ---------------------------------------------------------------------------------------------

bool is_png(const uint8_t *d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  return d && n > 8 && memcmp(d, sig, 8) == 0;
}

bool is_jpeg(const uint8_t *d, size_t n) { return d && n > 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff; }

Error validate_image(const uint8_t *data, size_t len, const std::string &what) {
  if (!data || len == 0) return Error(ErrorKind::BadImage, what + ": empty image");
  if (!is_png(data, len) && !is_jpeg(data, len))
    return Error(ErrorKind::BadImage, what + ": not a PNG or JPEG image (" + std::to_string(len) + " bytes starting " +
                                          excerpt(reinterpret_cast<const char *>(data), len, 16) + ")");
  return {};
}

std::string excerpt(const char *data, size_t len, size_t max_chars) {
  std::string s;
  if (!data) return s;
  size_t n = std::min(len, max_chars);
  s.reserve(n + 3);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = static_cast<unsigned char>(data[i]);
    if (c == '\n' || c == '\r' || c == '\t') s += ' ';
    else if (c < 0x20 || c >= 0x7f) s += '?';
    else s += static_cast<char>(c);
  }
  if (len > n) s += "...";
  return s;
}

bool wanted_node(const std::vector<std::string> &wanted, const std::string &node_id) {
  return wanted.empty() || std::find(wanted.begin(), wanted.end(), node_id) != wanted.end();
}

}  // namespace dw::comfy::proto
