// The simulator's HTTP routes (every one also under /api) and reply helpers.

#include "sim/internal.h"

#include <algorithm>

namespace dw::sim {

void Simulator::Impl::reply_json(SoupServerMessage *msg, guint status, const std::string &body) {
  std::string b = body;
  if (get_faults().malformed_json && b.size() > 1) b = b.substr(0, b.size() / 2);
  soup_server_message_set_status(msg, status, nullptr);
  soup_server_message_set_response(msg, "application/json; charset=utf-8", SOUP_MEMORY_COPY, b.data(), b.size());
}

void Simulator::Impl::reply_empty(SoupServerMessage *msg, guint status) {
  soup_server_message_set_status(msg, status, nullptr);
  soup_server_message_set_response(msg, "application/octet-stream", SOUP_MEMORY_STATIC, "", 0);
}

void Simulator::Impl::reply_500(SoupServerMessage *msg) {
  static const char body[] = "500 Internal Server Error\n\nServer got itself in trouble";
  soup_server_message_set_status(msg, 500, nullptr);
  soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_STATIC, body, sizeof body - 1);
}

void Simulator::Impl::reply_413(SoupServerMessage *msg, goffset size) {
  const std::string body = "Maximum request body size " + std::to_string(kMaxUploadSize) + " exceeded, actual body size " +
                           std::to_string(size);
  soup_server_message_set_status(msg, 413, nullptr);
  soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_COPY, body.data(), body.size());
}

bool Simulator::Impl::origin_ok(SoupServerMessage *msg) {
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const char *origin = soup_message_headers_get_one(h, "Origin");
  if (!origin) return true;
  const char *host = soup_message_headers_get_one(h, "Host");
  if (!host) return false;
  return std::string(origin) == std::string("http://") + host;
}

std::string Simulator::Impl::body_of(SoupServerMessage *msg) {
  SoupMessageBody *body = soup_server_message_get_request_body(msg);
  if (!body) return {};
  GBytes *b = soup_message_body_flatten(body);
  gsize len = 0;
  const char *d = static_cast<const char *>(g_bytes_get_data(b, &len));
  std::string s(d ? d : "", len);
  g_bytes_unref(b);
  return s;
}

std::string Simulator::Impl::qget(GHashTable *query, const char *key, const char *def, bool *present) {
  const char *v = query ? static_cast<const char *>(g_hash_table_lookup(query, key)) : nullptr;
  if (present) *present = v != nullptr;
  return v ? v : (def ? def : "");
}

void Simulator::Impl::on_ws_path(SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *, gpointer user) {
  auto *self = static_cast<Impl *>(user);
  if (!origin_ok(msg)) {
    self->log("websocket handshake refused: Origin mismatch");
    reply_empty(msg, 403);
    return;
  }
  // Otherwise leave the status unset: libsoup performs the websocket handshake (held while hanging).
  if (self->get_faults().hang) self->hold(msg, path ? path : "/ws", nullptr, true);
}

void Simulator::Impl::on_request(SoupServer *, SoupServerMessage *msg, const char *path_c, GHashTable *query, gpointer user) {
  auto *self = static_cast<Impl *>(user);
  self->handle(msg, path_c ? path_c : "/", query);
}

void Simulator::Impl::handle(SoupServerMessage *msg, std::string path, GHashTable *query) {
  const std::string method = soup_server_message_get_method(msg);
  Faults f = get_faults();
  if (f.hang) return hold(msg, path, query, false);
  ++http_count;
  if (!origin_ok(msg)) {
    log("%s %s -> 403 (Origin)", method.c_str(), path.c_str());
    reply_empty(msg, 403);
    return;
  }
  if (f.http_500_every > 0 && http_count % static_cast<uint64_t>(f.http_500_every) == 0) {
    log("%s %s -> 500 (fault)", method.c_str(), path.c_str());
    reply_500(msg);
    return;
  }
  // aiohttp's client_max_size, which ComfyUI sets to max_upload_size, applies to every body.
  const goffset body_size = soup_server_message_get_request_body(msg)->length;
  if (body_size > static_cast<goffset>(kMaxUploadSize)) {
    log("%s %s -> 413 (%" G_GOFFSET_FORMAT " bytes)", method.c_str(), path.c_str(), body_size);
    reply_413(msg, body_size);
    return;
  }
  if (path == "/api") path = "/";
  else if (path.rfind("/api/", 0) == 0) path = path.substr(4);
  route(msg, method, path, query, f);
  log("%s %s -> %u", method.c_str(), path.c_str(), soup_server_message_get_status(msg));
}

void Simulator::Impl::route(SoupServerMessage *msg, const std::string &method, const std::string &path, GHashTable *query, const Faults &f) {
  const bool get = method == "GET" || method == "HEAD";
  const bool post = method == "POST";
  if (get && path == "/system_stats") return system_stats(msg);
  if (get && path == "/features") return reply_json(msg, 200, features_json());
  if (get && (path == "/object_info" || path.rfind("/object_info/", 0) == 0)) return object_info(msg, path);
  if (post && path == "/upload/image") return upload(msg);
  if (post && path == "/prompt") {
    if (f.http_500_prompt) return reply_500(msg);
    return post_prompt(msg);
  }
  if (get && path == "/prompt") {
    JW w;
    w.ob().k("exec_info").ob().k("queue_remaining").i(queue_remaining()).oe().oe();
    return reply_json(msg, 200, w.str());
  }
  if (get && path == "/queue") return get_queue(msg);
  if (post && path == "/queue") return post_queue(msg);
  if (get && path == "/history") return get_history(msg, query);
  if (get && path.rfind("/history/", 0) == 0) return get_history_id(msg, path.substr(9));
  if (post && path == "/history") return post_history(msg);
  if (get && path == "/view") return view(msg, query, f);
  if (post && path == "/interrupt") return interrupt(msg);
  if (post && path == "/free") return free_mem(msg);
  if (get && path == "/jobs") return jobs(msg, query);
  if (get && path.rfind("/jobs/", 0) == 0) return job(msg, path.substr(6));
  if (get && path == "/embeddings") return reply_json(msg, 200, "[]");
  if (get && path == "/extensions") return reply_json(msg, 200, "[]");
  reply_empty(msg, 404);
}

void Simulator::Impl::system_stats(SoupServerMessage *msg) {
  JW w;
  const uint64_t ram = 8ull * 1024 * 1024 * 1024;
  w.ob().k("system").ob().k("os").s("linux").k("ram_total").u(ram).k("ram_free").u(ram / 2)
      .k("comfyui_version").s("0.8.0").k("required_frontend_version").s("1.35.9")
      .k("installed_templates_version").null().k("required_templates_version").s("0.7.67")
      .k("python_version").s("3.11.2 (comfy-sim)").k("pytorch_version").s("1.13.0a0")
      .k("embedded_python").b(false).k("argv").ab().s("comfy-sim").s("--port").s(std::to_string(port_now())).ae().oe();
  w.k("devices").ab().ob().k("name").s("cpu").k("type").s("cpu").k("index").null().k("vram_total").u(ram)
      .k("vram_free").u(ram / 2).k("torch_vram_total").u(ram).k("torch_vram_free").u(ram / 2).oe().ae().oe();
  reply_json(msg, 200, w.str());
}

std::string Simulator::Impl::class_info_json(const NodeSpec &s) const {
  auto files = list_input_files();
  JW w;
  w.ob().k("input").ob().k("required").ob();
  for (auto &in : s.inputs) w.k(in.name).raw(input_config_json(in, files));
  w.oe();
  if (s.hidden_prompt) w.k("hidden").ob().k("prompt").s("PROMPT").k("extra_pnginfo").s("EXTRA_PNGINFO").oe();
  w.oe().k("input_order").ob().k("required").ab();
  for (auto &in : s.inputs) w.s(in.name);
  w.ae();
  if (s.hidden_prompt) w.k("hidden").ab().s("prompt").s("extra_pnginfo").ae();
  w.oe().k("output").ab();
  for (auto &o : s.outputs) w.s(o);
  w.ae().k("output_is_list").ab();
  for (size_t i = 0; i < s.outputs.size(); ++i) w.b(false);
  w.ae().k("output_name").ab();
  for (auto &o : s.output_names) w.s(o);
  w.ae().k("name").s(s.name).k("display_name").s(s.display).k("description").s(s.description)
      .k("python_module").s("nodes").k("category").s(s.category).k("output_node").b(s.output_node).oe();
  return w.str();
}

void Simulator::Impl::object_info(SoupServerMessage *msg, const std::string &path) {
  JW w;
  w.ob();
  if (path == "/object_info" || path == "/object_info/") {
    for (auto &kv : node_specs()) w.k(kv.first).raw(class_info_json(kv.second));
  } else {
    char *cls = g_uri_unescape_string(path.c_str() + 13, nullptr);
    const NodeSpec *s = cls ? find_spec(cls) : nullptr;
    if (s) w.k(s->name).raw(class_info_json(*s));
    g_free(cls);
  }
  w.oe();
  reply_json(msg, 200, w.str());
}

// The queue position: the client's "number" as a float, else the counter (negated with "front").
// False when "number" cannot be converted (the server answers 500, as float() raises).
bool Simulator::Impl::assign_number(JsonObject *jd, Num &number) {
  if (json_object_has_member(jd, "number")) {
    double d = 0;
    std::string err;
    if (!py_float_conv(json_object_get_member(jd, "number"), d, err)) return false;
    number.v = d;
    number.is_float = true;
    return true;
  }
  number.v = static_cast<double>(number_counter);
  JsonNode *fr = json_object_get_member(jd, "front");
  if (fr && JSON_NODE_HOLDS_VALUE(fr) && json_node_get_value_type(fr) == G_TYPE_BOOLEAN && json_node_get_boolean(fr))
    number.v = -number.v;
  ++number_counter;
  return true;
}

// A validated prompt joins the queue, with extra_data (client_id and create_time merged in).
void Simulator::Impl::queue_job(JsonObject *jd, const Num &number, const std::string &prompt_id, const std::string &client_id,
                                const std::vector<std::string> &good) {
  JsonObject *extra = json_object_new();
  JsonNode *ed = json_object_get_member(jd, "extra_data");
  if (ed && JSON_NODE_HOLDS_OBJECT(ed)) {
    JsonObject *src = json_node_get_object(ed);
    GList *members = json_object_get_members(src);
    for (GList *l = members; l; l = l->next) {
      const char *k = static_cast<const char *>(l->data);
      json_object_set_member(extra, k, json_node_copy(json_object_get_member(src, k)));
    }
    g_list_free(members);
  }
  JsonNode *client = json_object_get_member(jd, "client_id");
  if (client) json_object_set_member(extra, "client_id", json_node_copy(client));
  const int64_t create_time = now_ms();
  json_object_set_int_member(extra, "create_time", create_time);
  JsonNode *extra_node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(extra_node, extra);

  JsonNode *prompt_node = json_object_get_member(jd, "prompt");
  auto job = std::make_unique<Job>();
  job->number = number;
  job->seq = ++seq_counter;
  job->id = prompt_id;
  job->client_id = client_id;
  job->prompt = JsonNodePtr(json_node_copy(prompt_node));
  job->prompt_raw = node_to_json(prompt_node);
  job->extra_raw = node_to_json(extra_node);
  json_node_unref(extra_node);
  job->outputs = good;
  job->create_time = create_time;
  queue.push_back(std::move(job));
}

// POST /prompt: number assignment, validation, queueing (server.py post_prompt).
void Simulator::Impl::post_prompt(SoupServerMessage *msg) {
  std::string body = body_of(msg);
  PromptRecord rec;
  rec.body = body;
  rec.received_us = g_get_monotonic_time();
  auto record = [&]() {
    std::lock_guard<std::mutex> l(mu);
    prompts.push_back(rec);
    cv.notify_all();
  };
  JsonNodePtr root(parse_json(body.data(), body.size(), "request body"));
  if (!root.n || !JSON_NODE_HOLDS_OBJECT(root.n)) {
    record();
    return reply_500(msg);
  }
  JsonObject *jd = json_node_get_object(root.n);
  Num number;
  if (!assign_number(jd, number)) {
    record();
    return reply_500(msg);
  }
  JsonNode *client = json_object_get_member(jd, "client_id");
  std::string client_id = client && is_string(client) ? json_node_get_string(client) : (client && !JSON_NODE_HOLDS_NULL(client) ? py_str(client) : "");
  rec.client_id = client_id;
  if (!json_object_has_member(jd, "prompt")) {
    record();
    std::string e = err_obj("no_prompt", "No prompt provided", "No prompt provided");
    return reply_json(msg, 400, "{\"error\": " + e + ", \"node_errors\": {}}");
  }
  JsonNode *pid = json_object_get_member(jd, "prompt_id");
  std::string prompt_id;
  if (pid && !JSON_NODE_HOLDS_NULL(pid)) {
    prompt_id = py_str(pid);
  } else {
    char *u = g_uuid_string_random();
    prompt_id = u;
    g_free(u);
  }
  rec.prompt_id = prompt_id;
  record();

  JsonNode *prompt_node = json_object_get_member(jd, "prompt");
  std::vector<std::string> partial;
  bool has_partial = false;
  JsonNode *pet = json_object_get_member(jd, "partial_execution_targets");
  if (pet && JSON_NODE_HOLDS_ARRAY(pet)) {
    has_partial = true;
    JsonArray *a = json_node_get_array(pet);
    for (guint i = 0; i < json_array_get_length(a); ++i) partial.push_back(py_str(json_array_get_element(a, i)));
  }

  std::vector<std::string> good;
  std::string error_json, node_errors_json;
  if (!validate_prompt(prompt_node, has_partial ? &partial : nullptr, good, error_json, node_errors_json)) {
    return reply_json(msg, 400, "{\"error\": " + error_json + ", \"node_errors\": " + node_errors_json + "}");
  }

  queue_job(jd, number, prompt_id, client_id, good);
  reply_json(msg, 200, "{\"prompt_id\": " + json_escape(prompt_id) + ", \"number\": " + number.json() +
                           ", \"node_errors\": " + node_errors_json + "}");
  send_status();
  schedule_start_next();
}

void Simulator::Impl::view(SoupServerMessage *msg, GHashTable *query, const Faults &f) {
  bool has_fn = false;
  std::string fn = qget(query, "filename", nullptr, &has_fn);
  if (!has_fn) return reply_empty(msg, 404);
  auto [name, ann] = split_annotation(fn);
  if (name.empty()) return reply_empty(msg, 400);
  if (name[0] == '/' || name.find("..") != std::string::npos) return reply_empty(msg, 400);
  std::string dir = ann.empty() ? dir_for_type(qget(query, "type", "output")) : dir_for_type(ann);
  if (dir.empty()) return reply_empty(msg, 400);
  bool has_sub = false;
  std::string sub = qget(query, "subfolder", nullptr, &has_sub);
  if (has_sub && !sub.empty()) {
    std::string norm;
    if (sub[0] == '/' || !normalize_rel(sub, norm)) return reply_empty(msg, 403);
    if (!norm.empty()) dir += "/" + norm;
  }
  std::string base = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
  std::string path = dir + "/" + base;
  std::string content;
  if (!g_file_test(path.c_str(), G_FILE_TEST_IS_REGULAR) || !read_file(path, content)) return reply_empty(msg, 404);
  auto serve = [msg, content, base]() {
    soup_server_message_set_status(msg, 200, nullptr);
    SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
    soup_message_headers_replace(h, "Content-Disposition", ("filename=\"" + base + "\"").c_str());
    soup_message_headers_replace(h, "Accept-Ranges", "bytes");
    char *etag = g_compute_checksum_for_data(G_CHECKSUM_MD5, reinterpret_cast<const guchar *>(content.data()), content.size());
    soup_message_headers_replace(h, "Etag", (std::string("\"") + etag + "\"").c_str());
    g_free(etag);
    const bool png = base.size() > 4 && g_ascii_strcasecmp(base.c_str() + base.size() - 4, ".png") == 0;
    soup_server_message_set_response(msg, png ? "image/png" : "application/octet-stream", SOUP_MEMORY_COPY,
                                     content.data(), content.size());
  };
  if (f.view_delay_ms > 0) {
    // The client may give up meanwhile: never touch a message whose connection is gone.
    auto gone = std::make_shared<bool>(false);
    auto *flag = new std::shared_ptr<bool>(gone);
    g_object_ref(msg);
    gulong h = g_signal_connect_data(
        msg, "disconnected", G_CALLBACK(+[](SoupServerMessage *, gpointer p) { **static_cast<std::shared_ptr<bool> *>(p) = true; }),
        flag, [](gpointer p, GClosure *) { delete static_cast<std::shared_ptr<bool> *>(p); }, static_cast<GConnectFlags>(0));
    soup_server_message_pause(msg);
    delayed_views[msg] = h;
    schedule(f.view_delay_ms, [this, msg, serve, gone]() {
      auto it = delayed_views.find(msg);
      if (it == delayed_views.end()) return;  // already released by the shutdown
      g_signal_handler_disconnect(msg, it->second);
      delayed_views.erase(it);
      if (!*gone) {
        serve();
        soup_server_message_unpause(msg);
      }
      g_object_unref(msg);
    });
    return;
  }
  serve();
}

// Drops the references held by /view answers still waiting for their delay (their timer
// never fires once the loop has stopped); the server's disconnect then frees the messages.
void Simulator::Impl::release_delayed_views() {
  for (auto &kv : delayed_views) {
    g_signal_handler_disconnect(kv.first, kv.second);
    g_object_unref(kv.first);
  }
  delayed_views.clear();
}

void Simulator::Impl::interrupt(SoupServerMessage *msg) {
  std::string body = body_of(msg);
  JsonNodePtr root(parse_json(body.data(), body.size(), "request body"));
  std::string target;
  if (root.n && JSON_NODE_HOLDS_OBJECT(root.n)) {
    JsonNode *p = json_object_get_member(json_node_get_object(root.n), "prompt_id");
    if (p && !JSON_NODE_HOLDS_NULL(p)) target = py_str(p);
  }
  if (running && (target.empty() || target == running->id)) running->interrupt = true;
  reply_empty(msg, 200);
}

void Simulator::Impl::free_mem(SoupServerMessage *msg) {
  std::string body = body_of(msg);
  JsonNodePtr root(parse_json(body.data(), body.size(), "request body"));
  if (root.n && JSON_NODE_HOLDS_OBJECT(root.n)) {
    JsonNode *fm = json_object_get_member(json_node_get_object(root.n), "free_memory");
    if (fm && JSON_NODE_HOLDS_VALUE(fm) && json_node_get_value_type(fm) == G_TYPE_BOOLEAN && json_node_get_boolean(fm))
      cache.clear();
  }
  reply_empty(msg, 200);
}

}  // namespace dw::sim
