// The app's HTTP side (libsoup 3 on the app's context): routes, the control API and its token,
// the request-body limit, and the /ws signalling websocket of the WebRTC viewers.
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gio/gio.h>

#include <optional>
#include <string>

#include "app_impl.h"
#include "json_writer.h"
#include "protocol.h"

#define GST_CAT_DEFAULT dreamwindow_app_debug

extern "C" GResource *dreamwindow_app_get_resource(void);

namespace dw::app {

namespace {

bool token_ok(const std::string &token, SoupServerMessage *msg, GHashTable *query) {
  if (token.empty()) return true;
  std::string given;
  if (query) {
    const char *q = static_cast<const char *>(g_hash_table_lookup(query, "token"));
    if (q) given = q;
  }
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const char *auth = soup_message_headers_get_one(h, "Authorization");
  if (given.empty() && auth && g_str_has_prefix(auth, "Bearer ")) given = auth + 7;
  const char *x = soup_message_headers_get_one(h, "X-Dreamwindow-Token");
  if (given.empty() && x) given = x;
  if (given.size() != token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ token[i]);
  return diff == 0;
}

void reply(SoupServerMessage *msg, guint status, const char *type, const std::string &body) {
  soup_server_message_set_status(msg, status, nullptr);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  soup_server_message_set_response(msg, type, SOUP_MEMORY_COPY, body.data(), body.size());
}

void reply_json(SoupServerMessage *msg, guint status, const std::string &body) {
  reply(msg, status, "application/json; charset=utf-8", body);
}

void reply_error(SoupServerMessage *msg, guint status, const std::string &error) {
  JsonWriter w;
  reply_json(msg, status, w.begin_object().set("error", error).end_object().to_string());
}

// A control body of unannounced length (chunked), kept by us: libsoup would buffer all of it before
// the handler runs, so a hostile client could stream gigabytes into memory.
struct StreamedBody {
  std::string data;
  goffset total = 0;
  bool too_large = false;
};
constexpr const char *kStreamedBodyKey = "dw-streamed-body";

void on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer) {
  auto *body = static_cast<StreamedBody *>(g_object_get_data(G_OBJECT(msg), kStreamedBodyKey));
  if (!body) return;
  gsize n = 0;
  const char *d = static_cast<const char *>(g_bytes_get_data(chunk, &n));
  body->total += static_cast<goffset>(n);
  if (body->too_large) return;  // the rest is read and dropped
  if (body->total > static_cast<goffset>(ControlLimits().max_body)) {
    body->too_large = true;
    std::string().swap(body->data);
    return;
  }
  try {  // never let C++ unwind into libsoup
    body->data.append(d ? d : "", n);
  } catch (const std::exception &) {
    body->too_large = true;
    std::string().swap(body->data);
  }
}

// The control body as read: ours for chunked requests, libsoup's otherwise. Empty optional = over the
// limit (*total = bytes received).
std::optional<std::string> control_body(SoupServerMessage *msg, goffset *total) {
  if (auto *body = static_cast<StreamedBody *>(g_object_get_data(G_OBJECT(msg), kStreamedBodyKey))) {
    *total = body->total;
    if (body->too_large) return std::nullopt;
    return body->data;
  }
  GBytes *bytes = soup_message_body_flatten(soup_server_message_get_request_body(msg));
  gsize len = 0;
  const char *data = static_cast<const char *>(g_bytes_get_data(bytes, &len));
  std::string out(data ? data : "", len);
  g_bytes_unref(bytes);
  *total = static_cast<goffset>(len);
  return out;
}

// Refuses an oversized control body from its headers, before libsoup reads (and buffers) it; a
// body of unannounced length is read chunk by chunk into a bounded buffer instead.
void got_control_headers(SoupServerMessage *msg, App::Impl *self) {
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const goffset len = soup_message_headers_get_content_length(h);
  const SoupEncoding encoding = soup_message_headers_get_encoding(h);
  if (encoding == SOUP_ENCODING_CHUNKED || encoding == SOUP_ENCODING_EOF) {
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    g_object_set_data_full(G_OBJECT(msg), kStreamedBodyKey, new StreamedBody(),
                           [](gpointer p) { delete static_cast<StreamedBody *>(p); });
    g_signal_connect(msg, "got-chunk", G_CALLBACK(on_got_chunk), nullptr);
    return;
  }
  if (encoding == SOUP_ENCODING_CONTENT_LENGTH && len > static_cast<goffset>(ControlLimits().max_body)) {
    // libsoup then skips the body and the handler: count the request here.
    self->control_requests++;
    self->control_refused++;
    reply_error(msg, 413,
                "request body of " + std::to_string(len) + " bytes exceeds the limit of " +
                    std::to_string(ControlLimits().max_body) + " bytes");
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection", "close");
  }
}

void on_got_headers(SoupServerMessage *msg, gpointer user) {
  if (g_strcmp0(g_uri_get_path(soup_server_message_get_uri(msg)), "/api/control") != 0) return;
  try {  // never let C++ unwind into libsoup
    got_control_headers(msg, static_cast<App::Impl *>(user));
  } catch (const std::exception &e) {
    GST_WARNING("control request headers: %s", e.what());
  }
}

void on_request_started(SoupServer *, SoupServerMessage *msg, gpointer user) {
  g_signal_connect(msg, "got-headers", G_CALLBACK(on_got_headers), user);
}

void on_request(SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer user) {
  auto *self = static_cast<App::Impl *>(user);
  try {
    self->handle_request(msg, path ? path : "/", query);
  } catch (const std::exception &e) {  // never let C++ unwind into libsoup
    self->warn("request %s: %s", path ? path : "/", e.what());
    reply_error(msg, 500, std::string("internal error: ") + e.what());
  }
}

// Runs before the websocket handshake: refusing here answers a plain HTTP status.
void on_ws_path(SoupServer *, SoupServerMessage *msg, const char *, GHashTable *query, gpointer user) {
  auto *self = static_cast<App::Impl *>(user);
  if (!token_ok(self->opt.token, msg, query)) reply_error(msg, 401, "a valid token is required (?token=T)");
}

void ws_refuse(SoupWebsocketConnection *ws, const char *code, const std::string &message, unsigned short close_code) {
  JsonWriter w;
  const std::string t =
      w.begin_object().set("type", "error").set("code", code).set("message", message).end_object().to_string();
  soup_websocket_connection_send_text(ws, t.c_str());
  soup_websocket_connection_close(ws, close_code, message.c_str());
}

struct WsKey {
  App::Impl *self;
  uint64_t id;
};

#ifdef DW_HAVE_WEBRTC
void on_ws_message(SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user) {
  auto *key = static_cast<WsKey *>(user);
  auto it = key->self->viewers.find(key->id);
  if (it == key->self->viewers.end()) return;
  gsize len = 0;
  const char *data = static_cast<const char *>(g_bytes_get_data(message, &len));
  SignalMessage m;
  std::string why;
  if (type != SOUP_WEBSOCKET_DATA_TEXT) why = "signalling messages are JSON text";
  else if (!parse_signal(std::string_view(data, len), &m, &why)) {
  } else {
    it->second->on_signal(m);
    return;
  }
  // A peer that sends nonsense is told why and dropped; its page reconnects.
  key->self->signalling_refused++;
  key->self->warn("viewer %" G_GUINT64_FORMAT ": %s: closing", key->id, why.c_str());
  ws_refuse(ws, "bad-message", why, 1008);
}

void on_ws_closed(SoupWebsocketConnection *ws, gpointer user) {
  auto *key = static_cast<WsKey *>(user);
  key->self->drop_viewer(key->id, soup_websocket_connection_get_close_code(ws));
}
#endif

void on_websocket(SoupServer *, SoupServerMessage *msg, const char *, SoupWebsocketConnection *ws, gpointer user) {
  auto *self = static_cast<App::Impl *>(user);
#ifndef DW_HAVE_WEBRTC
  (void)msg;
  self->viewers_refused++;
  ws_refuse(ws, "no-webrtc", "this build of dreamwindow has no WebRTC support (meson option webrtc)", 4501);
#else
  if (!self->tee || self->shutting_down || self->restart_source) {
    self->viewers_refused++;
    ws_refuse(ws, "no-webrtc",
              self->shutting_down    ? "the server is shutting down"
              : self->restart_source ? "the pipeline is restarting after an error"
                                     : "this pipeline has no WebRTC output (--sink auto, or no tee named webrtctee)",
              self->restart_source ? 1013 : 4501);
    return;
  }
  if (self->viewers.size() >= self->opt.max_viewers) {
    self->viewers_refused++;
    self->log("viewer refused: %zu of %u viewers connected", self->viewers.size(), self->opt.max_viewers);
    ws_refuse(ws, "max-viewers",
              "too many viewers: " + std::to_string(self->opt.max_viewers) + " already watching (--max-viewers)",
              4429);
    return;
  }
  uint64_t id = self->next_viewer++;
  auto viewer = std::make_shared<Viewer>(id, ws, self->ctx);
  std::string err;
  self->viewers[id] = viewer;
  GSocketAddress *addr = soup_server_message_get_remote_address(msg);
  std::string remote = "?";
  if (addr && G_IS_INET_SOCKET_ADDRESS(addr)) {
    gchar *ip = g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
    remote = ip;
    g_free(ip);
  }
  soup_websocket_connection_set_keepalive_interval(ws, 10);
  // Signalling messages are small; a bigger one is refused by libsoup before it is buffered.
  soup_websocket_connection_set_max_incoming_payload_size(ws, kMaxSignalBytes);
  g_signal_connect_data(ws, "message", G_CALLBACK(on_ws_message), new WsKey{self, id},
                        [](gpointer d, GClosure *) { delete static_cast<WsKey *>(d); }, GConnectFlags(0));
  g_signal_connect_data(ws, "closed", G_CALLBACK(on_ws_closed), new WsKey{self, id},
                        [](gpointer d, GClosure *) { delete static_cast<WsKey *>(d); }, GConnectFlags(0));
  JsonWriter hello;
  viewer->send(hello.begin_object()
                   .set("type", "hello")
                   .set("id", static_cast<uint64_t>(id))
                   .set("codec", self->opt.codec)
                   .set("viewers", static_cast<uint64_t>(self->viewers.size()))
                   .set("max_viewers", self->opt.max_viewers)
                   .end_object()
                   .to_string());
  if (!viewer->attach(self->pipeline, self->tee, self->opt.codec, &err)) {
    self->viewers.erase(id);
    self->warn("viewer %" G_GUINT64_FORMAT ": %s", id, err.c_str());
    ws_refuse(ws, "pipeline", err, 1011);
    return;
  }
  self->viewers_total++;
  self->log("viewer %" G_GUINT64_FORMAT " connected from %s (%zu of %u)", id, remote.c_str(), self->viewers.size(),
            self->opt.max_viewers);
  // A peer connection that has not formed in 10 s will not: close, and the page reconnects.
  GSource *t = g_timeout_source_new_seconds(10);
  g_source_set_callback(
      t,
      [](gpointer d) -> gboolean {
        auto *key = static_cast<WsKey *>(d);
        auto it = key->self->viewers.find(key->id);
        if (it == key->self->viewers.end()) return G_SOURCE_REMOVE;
        const std::string ice = it->second->ice_state();
        if (ice != "connected" && ice != "completed") {
          key->self->warn("viewer %" G_GUINT64_FORMAT ": no WebRTC connection after 10 s (ICE %s): closing", key->id,
                          ice.c_str());
          it->second->close(4408, "WebRTC connection not established within 10 s");
          key->self->drop_viewer(key->id, 4408);
        }
        return G_SOURCE_REMOVE;
      },
      new WsKey{self, id}, [](gpointer d) { delete static_cast<WsKey *>(d); });
  g_source_attach(t, self->ctx);
  g_source_unref(t);
#endif
}

}  // namespace

void App::Impl::handle_control(SoupServerMessage *msg) {
  if (g_strcmp0(soup_server_message_get_method(msg), "POST") != 0) {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", "POST");
    reply_error(msg, 405, "POST a JSON object");
    return;
  }
  GstElement *src = element_of("comfykeyframesrc");
  if (!src) {
    reply_error(msg, 409, "this pipeline has no comfykeyframesrc");
    return;
  }
  goffset total = 0;
  const std::optional<std::string> body = control_body(msg, &total);
  if (!body) {
    control_refused++;
    reply_error(msg, 413,
                "request body of " + std::to_string(total) + " bytes exceeds the limit of " +
                    std::to_string(ControlLimits().max_body) + " bytes");
    return;
  }
  ControlRequest req;
  ProtocolError perr;
  if (!parse_control(*body, &req, &perr)) {
    control_refused++;
    reply_error(msg, perr.status, perr.message);
    return;
  }
  JsonWriter w;
  w.begin_object().set("ok", true).begin_array("applied");
  if (req.prompt) {
    g_object_set(src, "prompt", req.prompt->c_str(), nullptr);
    log("prompt: %s", req.prompt->c_str());
    w.set(nullptr, "prompt");
  }
  if (req.negative_prompt) {
    g_object_set(src, "negative-prompt", req.negative_prompt->c_str(), nullptr);
    w.set(nullptr, "negative_prompt");
  }
  if (req.denoise) {
    g_object_set(src, "denoise", *req.denoise, nullptr);
    w.set(nullptr, "denoise");
  }
  if (req.seed) {
    g_object_set(src, "seed", static_cast<gint64>(*req.seed), nullptr);
    w.set(nullptr, "seed");
  }
  if (req.pause) {
    set_paused(*req.pause);
    w.set(nullptr, *req.pause ? "pause" : "resume");
  }
  w.end_array();
  gdouble denoise = 0;
  gint64 seed = 0;
  g_object_get(src, "denoise", &denoise, "seed", &seed, nullptr);
  w.set("prompt", get_string_prop(src, "prompt"))
      .set("negative_prompt", get_string_prop(src, "negative-prompt"))
      .set("denoise", denoise)
      .set("seed", static_cast<int64_t>(seed))
      .set("paused", paused)
      .end_object();
  reply_json(msg, 200, w.to_string());
}

void App::Impl::serve_resource(SoupServerMessage *msg, const std::string &name, const char *type) {
  GBytes *b =
      g_resources_lookup_data(("/org/dreamwindow/app/web/" + name).c_str(), G_RESOURCE_LOOKUP_FLAGS_NONE, nullptr);
  if (!b) {
    reply_error(msg, 404, "not found");
    return;
  }
  gsize len = 0;
  const char *data = static_cast<const char *>(g_bytes_get_data(b, &len));
  reply(msg, 200, type, std::string(data, len));
  g_bytes_unref(b);
}

void App::Impl::handle_request(SoupServerMessage *msg, const std::string &path, GHashTable *query) {
  const char *method = soup_server_message_get_method(msg);
  const bool get = g_strcmp0(method, "GET") == 0 || g_strcmp0(method, "HEAD") == 0;
  if (path == "/api/control") {
    if (soup_server_message_get_status(msg) == 413) return;  // answered from the headers (on_got_headers)
    control_requests++;
    if (!token_ok(opt.token, msg, query)) {
      control_refused++;
      reply_error(msg, 401, "a valid token is required (?token=T or Authorization: Bearer T)");
      return;
    }
    handle_control(msg);
    return;
  }
  if (!get) {
    reply_error(msg, 405, "method not allowed");
    return;
  }
  if (path == "/" || path == "/index.html") {
    serve_resource(msg, "index.html", "text/html; charset=utf-8");
  } else if (path == "/viewer.js") {
    serve_resource(msg, "viewer.js", "text/javascript; charset=utf-8");
  } else if (path == "/style.css") {
    serve_resource(msg, "style.css", "text/css; charset=utf-8");
  } else if (path == "/favicon.ico") {
    reply(msg, 204, "image/x-icon", "");
  } else if (path == "/api/status") {
    reply_json(msg, 200, status_json());
  } else if (path == "/api/history") {
    reply_json(msg, 200, history_json());
  } else if (path == "/metrics") {
    reply(msg, 200, "text/plain; version=0.0.4; charset=utf-8", metrics_text());
  } else if (path == "/api/sim/prompts" && sim) {
    reply_json(msg, 200, sim_prompts_json());
  } else {
    reply_error(msg, 404, "not found");
  }
}

size_t App::Impl::viewer_count() const {
#ifdef DW_HAVE_WEBRTC
  return viewers.size();
#else
  return 0;
#endif
}

#ifdef DW_HAVE_WEBRTC
void App::Impl::drop_viewer(uint64_t id, int code) {
  auto it = viewers.find(id);
  if (it == viewers.end()) return;
  auto v = it->second;
  viewers.erase(it);
  detaching[id] = v;
  log("viewer %" G_GUINT64_FORMAT " left (websocket closed, code %d): removing its branch", id, code);
  v->detach([this, id]() { detaching.erase(id); });
}
#endif

void App::Impl::close_all_viewers(unsigned short code, const std::string &reason) {
#ifdef DW_HAVE_WEBRTC
  std::vector<std::shared_ptr<Viewer>> all;
  for (auto &kv : viewers) all.push_back(kv.second);
  for (auto &v : all) v->close(code, reason);
  // "closed" fires later (after the close handshake); detach now so the pipeline can stop.
  for (auto &v : all) drop_viewer(v->id(), code);
#else
  (void)code;
  (void)reason;
#endif
}

bool App::Impl::listen(std::string *error) {
  server = soup_server_new("server-header", "dreamwindow/" VERSION " ", nullptr);
  g_signal_connect(server, "request-started", G_CALLBACK(on_request_started), this);
  soup_server_add_handler(server, nullptr, on_request, this, nullptr);
  soup_server_add_handler(server, "/ws", on_ws_path, this, nullptr);
  soup_server_add_websocket_handler(server, "/ws", nullptr, nullptr, on_websocket, this, nullptr);
  GInetAddress *ia = g_inet_address_new_from_string(opt.listen.c_str());
  if (!ia) {
    *error = "--listen: not an IP address: " + opt.listen;
    return false;
  }
  GSocketAddress *sa = g_inet_socket_address_new(ia, opt.port);
  g_object_unref(ia);
  GError *err = nullptr;
  bool ok = soup_server_listen(server, sa, static_cast<SoupServerListenOptions>(0), &err);
  g_object_unref(sa);
  if (!ok) {
    *error = std::string("cannot listen on ") + opt.listen + ":" + std::to_string(opt.port) + ": " +
             (err ? err->message : "?");
    g_clear_error(&err);
    return false;
  }
  GSList *uris = soup_server_get_uris(server);
  for (GSList *l = uris; l; l = l->next) {
    GUri *u = static_cast<GUri *>(l->data);
    if (!port) port = static_cast<uint16_t>(g_uri_get_port(u));
  }
  g_slist_free_full(uris, reinterpret_cast<GDestroyNotify>(g_uri_unref));
  std::string host = opt.listen;
  if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  url = "http://" + host + ":" + std::to_string(port) + "/";
  return true;
}

}  // namespace dw::app
