// The simulator's thread and GMainContext, listening and restarts, connection hygiene, and the
// public Simulator API (see sim/simulator.h).

#include "sim/internal.h"

#include <sys/socket.h>

#include <cerrno>
#include <chrono>

namespace dw::sim {

Faults Simulator::Impl::get_faults() const {
  std::lock_guard<std::mutex> l(mu);
  return faults;
}

void Simulator::Impl::log(const char *fmt, ...) {
  if (!cfg.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  char *s = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_printerr("comfy-sim: %s\n", s);
  g_free(s);
}

gboolean Simulator::Impl::call_cb(gpointer p) {
  static_cast<Call *>(p)->fn();
  return G_SOURCE_REMOVE;
}

void Simulator::Impl::schedule(uint32_t ms, std::function<void()> fn) {
  GSource *s = ms == 0 ? g_idle_source_new() : g_timeout_source_new(ms);
  g_source_set_callback(s, call_cb, new Call{std::move(fn)}, call_free);
  g_source_attach(s, ctx);
  g_source_unref(s);
}

// Runs fn on the server thread and waits for it.
void Simulator::Impl::run_sync(std::function<void()> fn) {
  if (!running_thread || g_thread_self() == thread) {
    fn();
    return;
  }
  struct Sync {
    std::function<void()> fn;
    std::mutex m;
    std::condition_variable c;
    bool done = false;
  };
  auto sy = std::make_shared<Sync>();
  sy->fn = std::move(fn);
  auto *holder = new std::shared_ptr<Sync>(sy);
  GSource *s = g_idle_source_new();
  g_source_set_priority(s, G_PRIORITY_HIGH);
  g_source_set_callback(
      s,
      [](gpointer p) -> gboolean {
        auto &x = *static_cast<std::shared_ptr<Sync> *>(p);
        x->fn();
        std::lock_guard<std::mutex> l(x->m);
        x->done = true;
        x->c.notify_all();
        return G_SOURCE_REMOVE;
      },
      holder, [](gpointer p) { delete static_cast<std::shared_ptr<Sync> *>(p); });
  g_source_attach(s, ctx);
  g_source_unref(s);
  std::unique_lock<std::mutex> l(sy->m);
  sy->c.wait_for(l, std::chrono::seconds(10), [&] { return sy->done; });
}

uint16_t Simulator::Impl::port_now() const {
  std::lock_guard<std::mutex> l(mu);
  return port;
}

void Simulator::Impl::unwatch_idle(GSocket *sock) {
  auto it = idle_watches.find(sock);
  if (it == idle_watches.end()) return;
  g_source_destroy(it->second);
  g_source_unref(it->second);
  idle_watches.erase(it);
}

gboolean Simulator::Impl::on_idle_socket(GSocket *sock, GIOCondition, gpointer user) {
  auto *self = static_cast<Impl *>(user);
  if (!g_socket_is_closed(sock)) {
    char byte;
    const ssize_t n = recv(g_socket_get_fd(sock), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return G_SOURCE_CONTINUE;
    if (n > 0) {
      // The next request is arriving: libsoup reads it and "request-started" follows.
      self->unwatch_idle(sock);
      return G_SOURCE_REMOVE;
    }
    self->log("closing a keep-alive connection the client closed");
    g_socket_close(sock, nullptr);
  }
  self->unwatch_idle(sock);
  return G_SOURCE_REMOVE;
}

void Simulator::Impl::on_request_started(SoupServer *, SoupServerMessage *msg, gpointer user) {
  GSocket *sock = soup_server_message_get_socket(msg);
  if (sock) static_cast<Impl *>(user)->unwatch_idle(sock);
}

void Simulator::Impl::on_request_finished(SoupServer *, SoupServerMessage *msg, gpointer user) {
  auto *self = static_cast<Impl *>(user);
  GSocket *sock = soup_server_message_get_socket(msg);
  if (!sock || g_socket_is_closed(sock)) return;  // a closing connection's watch ends at once
  self->unwatch_idle(sock);
  GSource *src = g_socket_create_source(sock, static_cast<GIOCondition>(G_IO_IN | G_IO_HUP | G_IO_ERR), nullptr);
  g_source_set_callback(src, G_SOURCE_FUNC(on_idle_socket), self, nullptr);
  g_source_attach(src, self->ctx);
  self->idle_watches[sock] = src;
}

void Simulator::Impl::unwatch_all_idle() {
  while (!idle_watches.empty()) unwatch_idle(idle_watches.begin()->first);
}

bool Simulator::Impl::listen(std::string *error) {
  GError *err = nullptr;
  GInetAddress *addr = g_inet_address_new_from_string(cfg.host.c_str());
  gboolean ok;
  uint16_t want;
  {
    std::lock_guard<std::mutex> l(mu);
    want = port ? port : cfg.port;
  }
  if (addr) {
    GSocketAddress *sa = g_inet_socket_address_new(addr, want);
    ok = soup_server_listen(server, sa, static_cast<SoupServerListenOptions>(0), &err);
    g_object_unref(sa);
    g_object_unref(addr);
  } else if (cfg.host == "localhost") {
    ok = soup_server_listen_local(server, want, SOUP_SERVER_LISTEN_IPV4_ONLY, &err);
  } else {
    ok = soup_server_listen_all(server, want, static_cast<SoupServerListenOptions>(0), &err);
  }
  if (!ok) {
    if (error) *error = err ? err->message : "listen failed";
    g_clear_error(&err);
    return false;
  }
  // The bound port from the listening socket itself: soup_server_get_uris() leaks the address it
  // caches in each listener (libsoup 3.2.3).
  GSList *listeners = soup_server_get_listeners(server);
  uint16_t bound = 0;
  for (GSList *l = listeners; l && !bound; l = l->next) {
    GSocketAddress *local = g_socket_get_local_address(G_SOCKET(l->data), nullptr);
    if (local && G_IS_INET_SOCKET_ADDRESS(local)) bound = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local));
    if (local) g_object_unref(local);
  }
  g_slist_free(listeners);
  {
    std::lock_guard<std::mutex> l(mu);
    port = bound;
  }
  listening = true;
  return true;
}

void Simulator::Impl::apply_refuse(bool refuse) {
  if (!server) return;
  if (refuse && listening) {
    unwatch_all_idle();
    drop_all_ws();
    soup_server_disconnect(server);
    listening = false;
    log("refusing connections");
  } else if (!refuse && !listening) {
    std::string err;
    for (int i = 0; i < 50 && !listen(&err); ++i) g_usleep(20000);
    log("listening again on port %u", port_now());
  }
}

void Simulator::Impl::hold(SoupServerMessage *msg, const std::string &path, GHashTable *query, bool websocket) {
  Held h;
  h.msg = SOUP_SERVER_MESSAGE(g_object_ref(msg));
  h.path = path;
  h.query = query ? g_hash_table_ref(query) : nullptr;
  h.websocket = websocket;
  h.gone = std::make_shared<bool>(false);
  h.on_disconnected = g_signal_connect_data(
      msg, "disconnected", G_CALLBACK(+[](SoupServerMessage *, gpointer p) { **static_cast<std::shared_ptr<bool> *>(p) = true; }),
      new std::shared_ptr<bool>(h.gone), [](gpointer p, GClosure *) { delete static_cast<std::shared_ptr<bool> *>(p); },
      static_cast<GConnectFlags>(0));
  soup_server_message_pause(msg);
  log("%s %s held (hang)", soup_server_message_get_method(msg), path.c_str());
  held.push_back(std::move(h));
}

// answer: handle each held request now (the websocket handshakes were already prepared by libsoup
// and just need unpausing); otherwise (shutdown) only drop the references.
void Simulator::Impl::release_held(bool answer) {
  std::vector<Held> all;
  all.swap(held);
  for (Held &h : all) {
    g_signal_handler_disconnect(h.msg, h.on_disconnected);
    if (answer && !*h.gone) {
      if (!h.websocket) handle(h.msg, h.path, h.query);
      soup_server_message_unpause(h.msg);
    }
    if (h.query) g_hash_table_unref(h.query);
    g_object_unref(h.msg);
  }
}

void Simulator::Impl::wipe_outputs() {
  for (const std::string *dir : {&output_dir, &temp_dir}) {
    if (dir->empty()) continue;
    remove_tree(*dir);
    g_mkdir_with_parents(dir->c_str(), 0755);
  }
}

void Simulator::Impl::restart() {
  queue.clear();
  running.reset();
  history.clear();
  cache.clear();
  number_counter = 0;
  drop_all_ws();
}

gpointer Simulator::Impl::thread_main(gpointer p) {
  auto *self = static_cast<Impl *>(p);
  g_main_context_push_thread_default(self->ctx);
  // A (re)start forgets everything held in memory, like a real server process.
  self->history.clear();
  self->cache.clear();
  self->number_counter = 0;
  self->http_count = 0;
  self->server = soup_server_new("server-header", "Python/3.11 aiohttp/3.8.4 ", nullptr);
  soup_server_add_handler(self->server, nullptr, on_request, self, nullptr);
  g_signal_connect(self->server, "request-started", G_CALLBACK(on_request_started), self);
  g_signal_connect(self->server, "request-finished", G_CALLBACK(on_request_finished), self);
  for (const char *path : {"/ws", "/api/ws"}) {
    soup_server_add_handler(self->server, path, on_ws_path, self, nullptr);
    soup_server_add_websocket_handler(self->server, path, nullptr, nullptr, on_websocket, self, nullptr);
  }
  std::string err;
  bool ok = self->listen(&err);
  {
    std::lock_guard<std::mutex> l(self->start_result->m);
    self->start_result->ok = ok;
    self->start_result->error = err;
    self->start_result->done = true;
    self->start_result->c.notify_all();
  }
  if (ok) {
    if (self->get_faults().refuse_connections) self->apply_refuse(true);
    g_main_loop_run(self->loop);
  }
  // Shutdown: sockets die with no close frame (1006), like a killed server.
  self->release_delayed_views();
  self->release_held(false);
  self->unwatch_all_idle();
  self->drop_all_ws();
  self->queue.clear();
  self->running.reset();
  soup_server_disconnect(self->server);
  g_object_unref(self->server);
  self->server = nullptr;
  self->listening = false;
  // Let pending sources run their destroy notifies.
  while (g_main_context_iteration(self->ctx, FALSE)) {
  }
  g_main_context_pop_thread_default(self->ctx);
  return nullptr;
}

// ================================================================================================

Simulator::Simulator(Config config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->latency_ms = impl_->cfg.latency_ms;
  impl_->jitter_ms = impl_->cfg.jitter_ms;
}

Simulator::~Simulator() {
  stop();
  if (impl_->own_data_dir && !impl_->data_dir.empty()) remove_tree(impl_->data_dir);
}

bool Simulator::start(std::string *error) {
  Impl &d = *impl_;
  if (d.running_thread) return true;
  if (d.data_dir.empty()) {
    if (d.cfg.data_dir.empty()) {
      char *tmp = g_dir_make_tmp("comfy-sim-XXXXXX", nullptr);
      if (!tmp) {
        if (error) *error = "cannot create a temporary data directory";
        return false;
      }
      d.data_dir = tmp;
      g_free(tmp);
      d.own_data_dir = true;
    } else {
      d.data_dir = d.cfg.data_dir;
    }
    d.input_dir = d.data_dir + "/input";
    d.output_dir = d.data_dir + "/output";
    d.temp_dir = d.data_dir + "/temp";
    for (auto *p : {&d.data_dir, &d.input_dir, &d.output_dir, &d.temp_dir}) {
      if (g_mkdir_with_parents(p->c_str(), 0755) != 0) {
        if (error) *error = "cannot create " + *p;
        return false;
      }
    }
  }
  if (!d.rand) d.rand = g_rand_new_with_seed(static_cast<guint32>(d.cfg.seed ^ (d.cfg.seed >> 32)));
  d.ctx = g_main_context_new();
  d.loop = g_main_loop_new(d.ctx, FALSE);
  StartResult res;
  d.start_result = &res;
  d.thread = g_thread_new("comfy-sim", Impl::thread_main, &d);
  {
    std::unique_lock<std::mutex> l(res.m);
    res.c.wait(l, [&] { return res.done; });
  }
  d.start_result = nullptr;
  if (!res.ok) {
    g_thread_join(d.thread);
    d.thread = nullptr;
    g_main_loop_unref(d.loop);
    g_main_context_unref(d.ctx);
    d.loop = nullptr;
    d.ctx = nullptr;
    if (error) *error = res.error;
    return false;
  }
  d.running_thread = true;
  return true;
}

void Simulator::stop() {
  Impl &d = *impl_;
  if (!d.running_thread) return;
  GMainLoop *loop = d.loop;
  d.run_sync([loop] { g_main_loop_quit(loop); });
  g_thread_join(d.thread);
  d.thread = nullptr;
  d.running_thread = false;
  g_main_loop_unref(d.loop);
  g_main_context_unref(d.ctx);
  d.loop = nullptr;
  d.ctx = nullptr;
  if (d.rand) {
    g_rand_free(d.rand);
    d.rand = nullptr;
  }
}

uint16_t Simulator::port() const { return impl_->port_now(); }

std::string Simulator::url() const { return "http://127.0.0.1:" + std::to_string(port()); }

void Simulator::set_faults(const Faults &faults) {
  bool refuse_changed, hang_cleared;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    refuse_changed = impl_->faults.refuse_connections != faults.refuse_connections;
    hang_cleared = impl_->faults.hang && !faults.hang;
    impl_->faults = faults;
  }
  if (!impl_->running_thread) return;
  Impl *d = impl_.get();
  if (refuse_changed) {
    bool refuse = faults.refuse_connections;
    d->run_sync([d, refuse] { d->apply_refuse(refuse); });
  }
  if (hang_cleared) d->run_sync([d] { d->release_held(true); });
}

Faults Simulator::faults() const { return impl_->get_faults(); }

void Simulator::set_latency(uint32_t latency_ms, uint32_t jitter_ms) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->latency_ms = latency_ms;
  impl_->jitter_ms = jitter_ms;
}

void Simulator::simulate_restart(bool wipe_outputs) {
  Impl *d = impl_.get();
  d->run_sync([d, wipe_outputs] {
    d->restart();
    if (wipe_outputs) d->wipe_outputs();
  });
}

void Simulator::clear_outputs() {
  Impl *d = impl_.get();
  d->run_sync([d] { d->wipe_outputs(); });
}

std::vector<PromptRecord> Simulator::prompts() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->prompts;
}

std::vector<UploadRecord> Simulator::uploads() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->uploads;
}

uint64_t Simulator::jobs_completed() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->completed;
}

uint64_t Simulator::jobs_succeeded() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->succeeded;
}

std::string Simulator::data_dir() const { return impl_->data_dir; }

bool Simulator::wait_for_prompts(size_t n, uint32_t timeout_ms) const {
  std::unique_lock<std::mutex> l(impl_->mu);
  return impl_->cv.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return impl_->prompts.size() >= n; });
}

}  // namespace dw::sim
