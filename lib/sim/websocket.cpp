// /ws: connections, routing of messages by clientId, binary image frames.

#include "sim/internal.h"


namespace dw::sim {

std::string Simulator::Impl::status_msg(const std::string *sid) const {
  JW w;
  w.ob().k("type").s("status").k("data").ob().k("status").ob().k("exec_info").ob().k("queue_remaining").i(queue_remaining()).oe().oe();
  if (sid) w.k("sid").s(*sid);
  w.oe().oe();
  return w.str();
}

bool Simulator::Impl::ws_open(Ws *ws) {
  return ws && ws->conn && soup_websocket_connection_get_state(ws->conn) == SOUP_WEBSOCKET_STATE_OPEN;
}

void Simulator::Impl::ws_send_text(Ws *ws, const std::string &text, bool force) {
  if (!ws_open(ws)) return;
  const Faults f = get_faults();
  if (f.hang || (!force && f.silent_websocket)) return;
  soup_websocket_connection_send_text(ws->conn, text.c_str());
}

void Simulator::Impl::ws_send_binary(Ws *ws, const std::vector<uint8_t> &data) {
  if (!ws_open(ws)) return;
  const Faults f = get_faults();
  if (f.hang || f.silent_websocket) return;
  soup_websocket_connection_send_binary(ws->conn, data.data(), data.size());
}

void Simulator::Impl::broadcast(const std::string &msg) {
  for (auto &kv : table) ws_send_text(kv.second, msg);
}

// To the socket of client_id; with no client_id: broadcast if `broadcast_if_none`.
void Simulator::Impl::send_to(const std::string &client_id, const std::string &msg, bool broadcast_if_none) {
  if (client_id.empty()) {
    if (broadcast_if_none) broadcast(msg);
    return;
  }
  auto it = table.find(client_id);
  if (it != table.end()) ws_send_text(it->second, msg);
}

std::string Simulator::Impl::typed(const std::string &type, const std::string &data_raw) {
  return "{\"type\": " + json_escape(type) + ", \"data\": " + data_raw + "}";
}

void Simulator::Impl::forget_ws(Ws *ws) {
  // ComfyUI removes the table entry of the sid, whichever socket it points to (deafness rule).
  table.erase(ws->sid);
  if (ws->conn) {
    if (ws->h_message) g_signal_handler_disconnect(ws->conn, ws->h_message);
    if (ws->h_closed) g_signal_handler_disconnect(ws->conn, ws->h_closed);
    g_object_unref(ws->conn);
    ws->conn = nullptr;
  }
  sockets.remove_if([ws](const std::unique_ptr<Ws> &p) { return p.get() == ws; });
}

// Closes every websocket with no close frame (1006 on the client).
void Simulator::Impl::drop_all_ws() {
  table.clear();
  for (auto &ws : sockets) {
    if (!ws->conn) continue;
    if (ws->h_message) g_signal_handler_disconnect(ws->conn, ws->h_message);
    if (ws->h_closed) g_signal_handler_disconnect(ws->conn, ws->h_closed);
    GIOStream *io = soup_websocket_connection_get_io_stream(ws->conn);
    if (io) {
      GIOStream *base = io;
      if (G_IS_SOCKET_CONNECTION(base)) {
        GSocket *sock = g_socket_connection_get_socket(G_SOCKET_CONNECTION(base));
        if (sock) g_socket_shutdown(sock, TRUE, TRUE, nullptr);
      }
      g_io_stream_close(io, nullptr, nullptr);
    }
    g_object_unref(ws->conn);
    ws->conn = nullptr;
  }
  sockets.clear();
}

void Simulator::Impl::on_ws_message(SoupWebsocketConnection *, gint type, GBytes *message, gpointer user) {
  auto *ws = static_cast<Ws *>(user);
  if (type != SOUP_WEBSOCKET_DATA_TEXT || ws->got_first_text) return;
  ws->got_first_text = true;
  gsize len = 0;
  const char *data = static_cast<const char *>(g_bytes_get_data(message, &len));
  JsonNode *root = parse_json(data, len, "websocket frame");
  if (!root) return;
  if (JSON_NODE_HOLDS_OBJECT(root)) {
    JsonObject *o = json_node_get_object(root);
    const char *t = json_object_has_member(o, "type") && is_string(json_object_get_member(o, "type"))
                        ? json_object_get_string_member(o, "type") : "";
    if (g_strcmp0(t, "feature_flags") == 0) {
      JsonNode *d = json_object_get_member(o, "data");
      if (d && JSON_NODE_HOLDS_OBJECT(d)) {
        JsonNode *f = json_object_get_member(json_node_get_object(d), "supports_preview_metadata");
        ws->supports_meta = f && JSON_NODE_HOLDS_VALUE(f) && json_node_get_value_type(f) == G_TYPE_BOOLEAN &&
                            json_node_get_boolean(f);
      }
      ws->impl->ws_send_text(ws, typed("feature_flags", features_json()));
    }
  }
  json_node_unref(root);
}

void Simulator::Impl::on_ws_closed(SoupWebsocketConnection *, gpointer user) {
  auto *ws = static_cast<Ws *>(user);
  ws->impl->log("websocket %s closed", ws->sid.c_str());
  ws->impl->forget_ws(ws);
}

void Simulator::Impl::on_websocket(SoupServer *, SoupServerMessage *msg, const char *, SoupWebsocketConnection *conn, gpointer user) {
  auto *self = static_cast<Impl *>(user);
  std::string sid;
  GUri *uri = soup_server_message_get_uri(msg);
  const char *q = uri ? g_uri_get_query(uri) : nullptr;
  if (q) {
    GHashTable *params = g_uri_parse_params(q, -1, "&", G_URI_PARAMS_NONE, nullptr);
    if (params) {
      const char *c = static_cast<const char *>(g_hash_table_lookup(params, "clientId"));
      if (c) sid = c;
      g_hash_table_unref(params);
    }
  }
  if (sid.empty()) sid = hex_sid();
  auto ws = std::make_unique<Ws>();
  ws->conn = SOUP_WEBSOCKET_CONNECTION(g_object_ref(conn));
  ws->sid = sid;
  ws->impl = self;
  soup_websocket_connection_set_max_incoming_payload_size(conn, kMaxWebsocketMessage);
  soup_websocket_connection_set_keepalive_interval(conn, 0);
  ws->h_message = g_signal_connect(conn, "message", G_CALLBACK(on_ws_message), ws.get());
  ws->h_closed = g_signal_connect(conn, "closed", G_CALLBACK(on_ws_closed), ws.get());
  Ws *raw = ws.get();
  self->sockets.push_back(std::move(ws));
  self->table[sid] = raw;
  self->log("websocket connected, sid %s", sid.c_str());
  self->ws_send_text(raw, self->status_msg(&sid), true);
  if (self->running && !self->running->client_id.empty() && self->running->client_id == sid &&
      !self->running->current_node.empty()) {
    JW w;
    w.ob().k("node").s(self->running->current_node).oe();
    self->ws_send_text(raw, typed("executing", w.str()));
  }
}

std::string Simulator::Impl::features_json() {
  return "{\"supports_preview_metadata\": true, \"max_upload_size\": 104857600, \"extension\": {\"manager\": "
         "{\"supports_v4\": true}}}";
}

namespace {

void put_u32(std::vector<uint8_t> &out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

// Binary frame type 1 (PREVIEW_IMAGE, format 2 = PNG): u32 1, u32 2, the image.
std::vector<uint8_t> preview_frame(const std::vector<uint8_t> &png) {
  std::vector<uint8_t> f;
  f.reserve(8 + png.size());
  put_u32(f, 1);
  put_u32(f, 2);
  f.insert(f.end(), png.begin(), png.end());
  return f;
}

// Binary frame type 4 (PREVIEW_IMAGE_WITH_METADATA): u32 4, u32 len(json), json, the image.
std::vector<uint8_t> preview_meta_frame(const std::string &meta, const std::vector<uint8_t> &png) {
  std::vector<uint8_t> f;
  f.reserve(8 + meta.size() + png.size());
  put_u32(f, 4);
  put_u32(f, static_cast<uint32_t>(meta.size()));
  f.insert(f.end(), meta.begin(), meta.end());
  f.insert(f.end(), png.begin(), png.end());
  return f;
}

}  // namespace

// SaveImageWebsocket: progress + one binary frame per image; type 4 goes before its progress
// message, type 1 after it (PROTOCOL.md, "Binary frames"). No client_id: broadcast, as type 1.
void Simulator::Impl::send_ws_image(Job &j, const std::string &id, const Image &img) {
  auto png = encode_png(img, 1);
  const int total = 1;
  for (int i = 0; i < total; ++i) {
    NodeState &s = state_of(j, id);
    s.ints = true;
    s.value = i;
    s.max = total;
    send_progress_state(j);
    JW p;
    p.ob().k("value").i(i).k("max").i(total).k("prompt_id").s(j.id).k("node").s(id).oe();
    const std::string progress = typed("progress", p.str());
    if (j.client_id.empty()) {
      broadcast(progress);
      const auto f1 = preview_frame(png);
      for (auto &kv : table) ws_send_binary(kv.second, f1);
      continue;
    }
    auto it = table.find(j.client_id);
    if (it == table.end()) continue;
    Ws *ws = it->second;
    if (ws->supports_meta) {
      JW m;
      m.ob().k("node_id").s(id).k("prompt_id").s(j.id).k("display_node_id").s(id).k("parent_node_id").null()
          .k("real_node_id").s(id).k("image_type").s("image/png").oe();
      ws_send_binary(ws, preview_meta_frame(m.str(), png));
      ws_send_text(ws, progress);
    } else {
      ws_send_text(ws, progress);
      ws_send_binary(ws, preview_frame(png));
    }
  }
}

}  // namespace dw::sim
