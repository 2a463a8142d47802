#include "comfy/client.h"

#include <libsoup/soup.h>

#include <algorithm>
#include <map>
#include <set>

#include "comfy/backoff.h"
#include "comfy/protocol.h"
#include "comfy/url.h"
#include "json/json.h"

namespace dw::comfy {

const char *health_name(Health h) {
  switch (h) {
    case Health::Unknown: return "unknown";
    case Health::Ok: return "ok";
    case Health::Unreachable: return "unreachable";
    case Health::Unresponsive: return "unresponsive";
    case Health::Degraded: return "degraded";
  }
  return "unknown";
}

std::string ImageRef::load_image_value() const {
  if (type == "output" || type == "temp") return filename + " [" + type + "]";
  if (subfolder.empty()) return filename;
  return subfolder + "/" + filename;
}

namespace {

constexpr guint64 kMaxWsPayload = 64ull * 1024 * 1024;
constexpr guint kKeepaliveSeconds = 5;
// While polling, check every this many unfinished answers that the prompt is still queued.
constexpr uint32_t kVerifyEveryPolls = 8;
// ...but not more often than this (fast polling would otherwise read /queue every few ms).
constexpr int64_t kVerifyMinGapUs = 1000000;

// Pushes a context as thread-default for the scope (so libsoup attaches its sources there).
struct CtxGuard {
  GMainContext *ctx;
  explicit CtxGuard(GMainContext *c) : ctx(c) { g_main_context_push_thread_default(ctx); }
  ~CtxGuard() { g_main_context_pop_thread_default(ctx); }
};

int64_t now_us() { return g_get_monotonic_time(); }

std::string gerror_text(const GError *e) { return e && e->message ? e->message : "unknown error"; }

// Health changes and outages are what an operator must see: WARNING, not the debug log.
constexpr const char *kLogDomain = "dw-comfy";

void destroy_source(GSource **s) {
  if (*s) {
    g_source_destroy(*s);
    g_source_unref(*s);
    *s = nullptr;
  }
}

// The exception boundary for every GLib/libsoup callback that runs C++ code: nothing escapes into C.
template <typename F>
void guarded(const char *where, F &&f) {
  try {
    f();
  } catch (const std::exception &e) {
    g_log(kLogDomain, G_LOG_LEVEL_WARNING, "%s: unexpected exception: %s", where, e.what());
  } catch (...) {
    g_log(kLogDomain, G_LOG_LEVEL_WARNING, "%s: unexpected non-standard exception", where);
  }
}

// What a finished request says about the server.
enum class Contact { None, Answered, Refused, Silent, Failed };

}  // namespace


namespace {

// One HTTP request in flight.
struct Req {
  Client::Impl *impl = nullptr;
  std::weak_ptr<int> alive;
  GCancellable *cancel = nullptr;
  SoupMessage *msg = nullptr;
  GSource *timer = nullptr;         // whole request (timeout_ms > 0)
  GSource *header_timer = nullptr;  // no response headers within header_ms: the server is unresponsive
  gulong headers_handler = 0;
  bool timed_out = false;
  bool header_timed_out = false;
  bool got_headers = false;
  bool probe = false;  // a health probe (GET /prompt), not part of a job
  uint32_t timeout_ms = 0;
  uint32_t header_ms = 0;
  std::string job_id;  // empty for non-job requests
  std::string what;    // "GET http://.../history/x" for messages
  // Called with the status, body (may be null) and transport error (may be null) — only while the
  // client is alive.
  std::function<void(int status, GBytes *body, const Error &transport)> done;
  ~Req() {
    destroy_source(&timer);
    destroy_source(&header_timer);
    if (msg && headers_handler) g_signal_handler_disconnect(msg, headers_handler);
    if (cancel) g_object_unref(cancel);
    if (msg) g_object_unref(msg);
  }
};

}  // namespace

struct Job {
  enum class Phase { Starting, Uploading, Queueing, Executing, Downloading };
  std::string id;
  JobSpec spec;
  JobCallbacks cb;
  Phase phase = Phase::Starting;
  GSource *idle = nullptr;
  GSource *phase_timer = nullptr;
  std::string phase_name;
  uint32_t phase_ms = 0;
  std::string client_id;  // the client_id the prompt was queued with
  bool posted = false;    // POST /prompt sent (server may know the job)
  bool queued = false;    // POST /prompt answered 200
  bool terminal = false;  // execution_success seen (websocket) or history finished
  bool history_inflight = false;
  uint64_t ws_msgs_at_post = 0;  // websocket messages received before POST /prompt was sent
  uint32_t unfinished_polls = 0;  // /history said "not finished" this many times
  // How well this job's finish time is known, for the generation-time estimate (see succeed()):
  // late_seen: queued while the websocket was thought to talk, then found silent, so nothing
  // followed it for up to ws_silence_ms; done_at_first_poll: the first blind poll (made at 70 % of
  // the estimate) already found it finished, so it may have finished well before.
  bool late_seen = false;
  bool done_at_first_poll = false;
  int64_t last_history_us = 0;
  std::vector<proto::OutputImage> executed;  // from executed messages
  std::vector<uint8_t> ws_image;
  std::string ws_image_node;
  JobResult result;
};

struct Client::Impl {
  ClientConfig cfg;
  GMainContext *ctx = nullptr;
  SoupSession *session = nullptr;
  std::shared_ptr<int> alive = std::make_shared<int>(1);
  ServerUrl server;
  std::string base;  // server.base(): "http://host:port[/prefix]"
  std::string url_error;
  Backoff backoff;
  ClientStats st;
  std::function<void(bool, const Error &)> conn_cb;
  std::function<void(const HealthEvent &)> health_cb;

  // Health: `link` is what the last contact said (Unknown/Ok/Unreachable/Unresponsive); ws_silent
  // turns an Ok link into Degraded. `reported` is the last state given to health_cb.
  Health link = Health::Unknown;
  std::string link_msg;
  bool ws_silent = false;
  std::string silent_msg;
  HealthEvent reported;
  bool probe_inflight = false;
  GSource *probe_timer = nullptr;  // recovery probes when there is no websocket to retry
  uint32_t poll_timer_ms = 0;
  int64_t last_verify_us = 0;

  std::map<std::string, std::unique_ptr<Job>> jobs;
  std::set<Req *> inflight;

  // websocket
  bool started = false;
  bool ever_connected = false;
  SoupWebsocketConnection *ws = nullptr;
  GCancellable *ws_cancel = nullptr;
  GSource *ws_connect_timer = nullptr;
  GSource *reconnect_timer = nullptr;
  GSource *poll_timer = nullptr;
  int64_t last_ws_msg_us = 0;
  std::string pending_client_id;  // of the connection being made
  std::string stable_client_id;   // used when the websocket is down
  std::string running_prompt;     // last execution_start seen

  Impl(ClientConfig c, GMainContext *context)
      : cfg(std::move(c)),
        ctx(context ? g_main_context_ref(context) : g_main_context_ref_thread_default()),
        backoff(cfg.backoff_initial_ms, cfg.backoff_max_ms, 0.5, cfg.rng_seed) {
    if (std::optional<ServerUrl> u = parse_server_url(cfg.server_url, &url_error)) {
      server = *u;
      base = server.base();
    } else {
      base = cfg.server_url;
    }
    stable_client_id = new_uuid();
    st.client_id = stable_client_id;
    CtxGuard g(ctx);
    session = soup_session_new_with_options("max-conns", 32, "max-conns-per-host", 16, "user-agent", "gst-dreamwindow/0.1",
                                            nullptr);
  }

  ~Impl() {
    CtxGuard g(ctx);
    alive.reset();  // any callback still queued sees this and does nothing
    std::vector<GCancellable *> cancels;
    for (Req *r : inflight) {
      r->impl = nullptr;
      destroy_source(&r->timer);
      destroy_source(&r->header_timer);
      cancels.push_back(G_CANCELLABLE(g_object_ref(r->cancel)));
    }
    inflight.clear();
    for (GCancellable *c : cancels) {
      g_cancellable_cancel(c);  // may free the Req synchronously
      g_object_unref(c);
    }
    for (auto &kv : jobs) drop_job_sources(*kv.second);
    jobs.clear();
    destroy_source(&ws_connect_timer);
    destroy_source(&reconnect_timer);
    destroy_source(&poll_timer);
    destroy_source(&probe_timer);
    if (ws_cancel) {
      g_cancellable_cancel(ws_cancel);
      g_object_unref(ws_cancel);
      ws_cancel = nullptr;
    }
    close_ws(false);
    soup_session_abort(session);
    g_object_unref(session);
    g_main_context_unref(ctx);
  }

  static std::string new_uuid() {
    gchar *u = g_uuid_string_random();
    std::string s = u;
    g_free(u);
    return s;
  }

  // A timeout / idle source on our context calling fn (while the client is alive).
  GSource *add_timer(uint32_t ms, std::function<gboolean()> fn, bool idle = false) {
    GSource *s = idle ? g_idle_source_new() : g_timeout_source_new(ms);
    auto *f = new std::function<gboolean()>(std::move(fn));
    g_source_set_callback(
        s,
        [](gpointer d) -> gboolean {
          gboolean again = G_SOURCE_REMOVE;
          guarded("dw-comfy timer", [&] { again = (*static_cast<std::function<gboolean()> *>(d))(); });
          return again;
        },
        f,
        [](gpointer d) { delete static_cast<std::function<gboolean()> *>(d); });
    g_source_attach(s, ctx);
    return s;  // caller owns the returned reference
  }

  std::string current_client_id() const { return ws && st.ws_connected ? st.client_id : stable_client_id; }

  // ------------------------------------------------------------------------------------------
  // HTTP

  static Error transport_error(const GError *e, const std::string &what) {
    if (e->domain == G_IO_ERROR && e->code == G_IO_ERROR_TIMED_OUT)
      return Error(ErrorKind::Timeout, what + ": " + gerror_text(e));
    if (e->domain == SOUP_SESSION_ERROR)
      return Error(ErrorKind::Protocol, what + ": " + gerror_text(e));
    return Error(ErrorKind::Unreachable, "cannot reach " + what + ": " + gerror_text(e));
  }

  std::string url(const std::string &path) const { return base + path; }

  // Sends msg; `done` runs on the context with the status (0 on transport errors), the body and
  // the transport error. Every request must see response headers within connect_ms, or the server
  // counts as unresponsive; timeout_ms > 0 also bounds the whole exchange.
  void send(SoupMessage *msg, const std::string &job_id, uint32_t timeout_ms,
            std::function<void(int, GBytes *, const Error &)> done, bool probe = false) {
    auto *r = new Req();
    r->impl = this;
    r->alive = alive;
    r->cancel = g_cancellable_new();
    r->msg = msg;
    r->job_id = job_id;
    r->timeout_ms = timeout_ms;
    r->header_ms = cfg.timeouts.connect_ms;
    r->probe = probe;
    {
      GUri *u = soup_message_get_uri(msg);
      char *us = g_uri_to_string_partial(u, G_URI_HIDE_PASSWORD);
      r->what = std::string(soup_message_get_method(msg)) + " " + us;
      g_free(us);
    }
    r->done = std::move(done);
    inflight.insert(r);
    if (timeout_ms > 0) {
      r->timer = add_timer(timeout_ms, [r]() {
        g_source_unref(r->timer);
        r->timer = nullptr;
        r->timed_out = true;
        g_cancellable_cancel(r->cancel);  // may free r synchronously: touch nothing after
        return G_SOURCE_REMOVE;
      });
    }
    if (r->header_ms > 0) {
      r->header_timer = add_timer(r->header_ms, [r]() {
        g_source_unref(r->header_timer);
        r->header_timer = nullptr;
        r->header_timed_out = true;
        g_cancellable_cancel(r->cancel);
        return G_SOURCE_REMOVE;
      });
      r->headers_handler = g_signal_connect(msg, "got-headers", G_CALLBACK(&Impl::on_got_headers), r);
    }
    CtxGuard g(ctx);
    soup_session_send_and_read_async(session, msg, G_PRIORITY_DEFAULT, r->cancel, &Impl::on_sent, r);
  }

  static void on_got_headers(SoupMessage *, gpointer data) noexcept {
    auto *r = static_cast<Req *>(data);
    r->got_headers = true;
    destroy_source(&r->header_timer);  // GLib only: cannot throw
  }

  static void on_sent(GObject *src, GAsyncResult *res, gpointer data) {
    std::unique_ptr<Req> r(static_cast<Req *>(data));
    GError *err = nullptr;
    GBytes *body = soup_session_send_and_read_finish(SOUP_SESSION(src), res, &err);
    if (!r->alive.expired() && r->impl) {
      Impl *self = r->impl;
      guarded("dw-comfy HTTP callback", [&] { self->finish_request(std::move(r), body, err); });
    }
    if (body) g_bytes_unref(body);
    g_clear_error(&err);
  }

  void finish_request(std::unique_ptr<Req> r, GBytes *body, const GError *err) {
    inflight.erase(r.get());
    destroy_source(&r->timer);
    destroy_source(&r->header_timer);
    Error terr;
    int status = 0;
    Contact contact = Contact::None;
    if (err) {
      if (r->header_timed_out || (r->timed_out && !r->got_headers)) {
        terr = Error(ErrorKind::Unreachable, r->what + ": no answer within " + std::to_string(r->header_ms) +
                                                 " ms (the server accepts connections but does not respond)");
        terr.retry_free = true;
        contact = Contact::Silent;
      } else if (r->timed_out) {
        terr = Error(ErrorKind::Timeout, r->what + " got no answer within " + std::to_string(r->timeout_ms) + " ms");
      } else if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        terr = Error(ErrorKind::Cancelled, r->what + " cancelled");
      } else {
        terr = transport_error(err, r->what);
        if (terr.kind == ErrorKind::Unreachable) {
          terr.retry_free = true;
          contact = g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED) ? Contact::Refused : Contact::Failed;
        }
      }
    } else {
      status = static_cast<int>(soup_message_get_status(r->msg));
      contact = Contact::Answered;
    }
    bool probe = r->probe;
    if (probe) probe_inflight = false;
    auto done = std::move(r->done);
    r.reset();
    std::weak_ptr<int> a = alive;
    // The request's own job first (it gets the specific error), then what it says about the server.
    if (done) done(status, body, terr);
    if (a.expired()) return;
    note_contact(contact, terr, probe);
  }

  // ------------------------------------------------------------------------------------------
  // Health

  static bool is_down(Health h) { return h == Health::Unreachable || h == Health::Unresponsive; }

  Health effective_health() const { return link == Health::Ok && ws_silent ? Health::Degraded : link; }

  // Reports a change of the effective health, once per change.
  void update_health() {
    Health h = effective_health();
    if (h == reported.health) return;
    bool recovered = is_down(reported.health) && !is_down(h);
    reported.health = h;
    reported.since_us = now_us();
    reported.message = h == Health::Degraded ? silent_msg : link_msg;
    st.health = h;
    st.health_message = reported.message;
    if (is_down(h) || h == Health::Degraded)
      g_log(kLogDomain, G_LOG_LEVEL_WARNING, "%s", reported.message.c_str());
    else if (recovered)
      g_log(kLogDomain, G_LOG_LEVEL_MESSAGE, "%s", reported.message.c_str());
    if (health_cb) {
      auto cb = health_cb;  // the callback may replace itself
      HealthEvent ev = reported;
      guarded("dw-comfy health callback", [&] { cb(ev); });
    }
  }

  void note_contact(Contact c, const Error &e, bool probe) {
    switch (c) {
      case Contact::None:
        return;
      case Contact::Answered:
        return link_up("ComfyUI at " + base + " answers");
      case Contact::Refused:
        return link_down(Health::Unreachable, "ComfyUI at " + base + " is unreachable: " + e.message);
      case Contact::Silent:
        return link_down(Health::Unresponsive, "ComfyUI at " + base + " is unresponsive: " + e.message);
      case Contact::Failed:
        // A reset or closed connection can be a blip: confirm with a probe before calling it an outage.
        if (probe || is_down(link))
          return link_down(Health::Unreachable, "ComfyUI at " + base + " is unreachable: " + e.message);
        return start_probe();
    }
  }

  void link_up(const std::string &msg) {
    if (link == Health::Ok) return;
    bool was_down = is_down(link);
    link = Health::Ok;
    link_msg = was_down ? "ComfyUI at " + base + " is reachable again" : msg;
    backoff.reset();
    destroy_source(&probe_timer);
    std::weak_ptr<int> a = alive;
    update_health();
    if (a.expired()) return;
    // Reconnect the websocket now rather than at the end of its backoff.
    if (was_down && started && cfg.use_websocket && !ws && !ws_cancel) {
      destroy_source(&reconnect_timer);
      connect_ws();
    }
  }

  void link_down(Health h, const std::string &msg) {
    if (link != h) {
      if (!is_down(link)) st.outages++;
      link = h;
      link_msg = msg;
      std::weak_ptr<int> a = alive;
      update_health();
      if (a.expired()) return;
      fail_posted_jobs(msg);
      if (a.expired()) return;
    }
    ensure_recovery();
  }

  // Jobs the server had (or was being sent) cannot finish there any more: fail them now, not at the
  // execute timeout, flagged retry_free. Jobs not posted yet fail on their own requests.
  void fail_posted_jobs(const std::string &why) {
    std::vector<std::string> ids;
    for (auto &kv : jobs)
      if (kv.second->posted) ids.push_back(kv.first);
    std::weak_ptr<int> a = alive;
    for (const auto &id : ids) {
      if (a.expired()) return;
      if (!find_job(id)) continue;
      st.jobs_failed_by_outage++;
      Error e(ErrorKind::Unreachable, "prompt " + id + " lost: " + why);
      e.retry_free = true;
      fail(id, e);
    }
  }

  // While down, keep knocking: the websocket's own reconnects, or probes when there is no websocket.
  void ensure_recovery() {
    if (!is_down(link) || !started) return;
    if (cfg.use_websocket) {
      if (!ws && !ws_cancel) schedule_reconnect();
      return;
    }
    if (probe_inflight || probe_timer) return;
    probe_timer = add_timer(backoff.next_ms(), [this]() {
      g_source_unref(probe_timer);
      probe_timer = nullptr;
      start_probe();
      return G_SOURCE_REMOVE;
    });
  }

  // GET /prompt ({"exec_info": ...}): the cheapest request that proves the server answers.
  void start_probe() {
    if (probe_inflight || !url_error.empty()) return;
    SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, url("/prompt").c_str());
    if (!msg) return;
    probe_inflight = true;
    send(msg, "", cfg.timeouts.connect_ms, [](int, GBytes *, const Error &) {}, true);
  }

  // The websocket routes our job messages again: no longer degraded.
  void ws_heard_job() {
    if (!ws_silent) return;
    ws_silent = false;
    update_health();
  }

  void cancel_job_requests(const std::string &job_id) {
    std::vector<GCancellable *> cancels;
    for (Req *r : inflight)
      if (r->job_id == job_id) cancels.push_back(G_CANCELLABLE(g_object_ref(r->cancel)));
    for (GCancellable *c : cancels) {
      g_cancellable_cancel(c);
      g_object_unref(c);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Jobs

  Job *find_job(const std::string &id) {
    auto it = jobs.find(id);
    return it == jobs.end() ? nullptr : it->second.get();
  }

  void drop_job_sources(Job &j) {
    destroy_source(&j.idle);
    destroy_source(&j.phase_timer);
  }

  // Removes the job and returns it; the caller then invokes its callback last.
  std::unique_ptr<Job> take_job(const std::string &id) {
    auto it = jobs.find(id);
    if (it == jobs.end()) return nullptr;
    std::unique_ptr<Job> j = std::move(it->second);
    jobs.erase(it);
    drop_job_sources(*j);
    cancel_job_requests(id);
    update_poll_timer();
    return j;
  }

  void fail(const std::string &id, Error e) {
    std::unique_ptr<Job> j = take_job(id);
    if (!j) return;
    st.jobs_failed++;
    // The server may still run a job we gave up on: tell it to drop it.
    if (j->posted && (e.kind == ErrorKind::Timeout || e.kind == ErrorKind::InvalidPrompt || e.kind == ErrorKind::BadImage))
      tell_server_cancel(id);
    // A throwing callback is the caller's bug; it must not derail the client's own state machine.
    if (j->cb.on_error) guarded("dw-comfy on_error callback", [&] { j->cb.on_error(e); });
  }

  void succeed(const std::string &id) {
    std::unique_ptr<Job> j = take_job(id);
    if (!j) return;
    st.jobs_succeeded++;
    j->result.finished_us = now_us();
    if (j->result.queued_us > 0 && !j->late_seen) {
      // The estimate gates blind polling (poll_due), so an estimate that is too high feeds itself:
      // a job found finished at the first poll looks as long as 70 % of the estimate. Such a time
      // is only an upper bound: take it as is (the estimate drops ~30 % per job, not 7.5 % as an
      // average would) until a poll finds a job unfinished again. A job seen late because the
      // silence was still being detected says nothing about the server: skipped (it once held a
      // silent-websocket pipeline at 3x the keyframe period for 20 keyframes).
      double ms = double(j->result.finished_us - j->result.queued_us) / 1000.0;
      if (st.generation_ms <= 0)
        st.generation_ms = ms;
      else if (j->done_at_first_poll)
        st.generation_ms = std::min(st.generation_ms, ms);
      else
        st.generation_ms = 0.75 * st.generation_ms + 0.25 * ms;
    }
    if (j->cb.on_done) guarded("dw-comfy on_done callback", [&] { j->cb.on_done(std::move(j->result)); });
  }

  void set_phase(Job &j, Job::Phase p, const char *name, uint32_t ms) {
    j.phase = p;
    destroy_source(&j.phase_timer);
    j.phase_name = name;
    j.phase_ms = ms;
    if (ms == 0) return;
    std::string id = j.id;
    j.phase_timer = add_timer(ms, [this, id]() {
      Job *jj = find_job(id);
      if (jj) {
        g_source_unref(jj->phase_timer);
        jj->phase_timer = nullptr;
        fail(id, Error(ErrorKind::Timeout, "prompt " + id + ": timed out in phase '" + jj->phase_name + "' after " +
                                               std::to_string(jj->phase_ms) + " ms"));
      }
      return G_SOURCE_REMOVE;
    });
  }

  std::string submit(JobSpec spec, JobCallbacks cbs) {
    auto j = std::make_unique<Job>();
    j->id = new_uuid();
    j->spec = std::move(spec);
    j->cb = std::move(cbs);
    j->result.prompt_id = j->id;
    j->result.submitted_us = now_us();
    std::string id = j->id;
    st.jobs_submitted++;
    Job *jp = j.get();
    jobs[id] = std::move(j);
    set_phase(*jp, Job::Phase::Starting, "queue", cfg.timeouts.queue_ms);
    jp->idle = add_timer(0, [this, id]() {
      Job *jj = find_job(id);
      if (jj) {
        g_source_unref(jj->idle);
        jj->idle = nullptr;
        start_job(id);
      }
      return G_SOURCE_REMOVE;
    }, true);
    return id;
  }

  void start_job(const std::string &id) {
    Job *j = find_job(id);
    if (!j) return;
    if (!url_error.empty()) return fail(id, Error(ErrorKind::Unreachable, url_error));
    if (!j->spec.build_prompt) return fail(id, Error(ErrorKind::InvalidWorkflow, "job has no build_prompt function"));
    if (!j->spec.upload_png.empty()) return start_upload(id);
    post_prompt(id, j->spec.input_value);
  }

  void start_upload(const std::string &id) {
    Job *j = find_job(id);
    j->phase = Job::Phase::Uploading;
    std::string name = j->spec.upload_name.empty() ? "dw_" + id.substr(0, 8) + ".png" : j->spec.upload_name;
    const char *mime = proto::is_jpeg(j->spec.upload_png.data(), j->spec.upload_png.size()) ? "image/jpeg" : "image/png";
    SoupMultipart *mp = soup_multipart_new(SOUP_FORM_MIME_TYPE_MULTIPART);
    GBytes *bytes = g_bytes_new(j->spec.upload_png.data(), j->spec.upload_png.size());
    soup_multipart_append_form_file(mp, "image", name.c_str(), mime, bytes);
    g_bytes_unref(bytes);
    soup_multipart_append_form_string(mp, "overwrite", "true");
    soup_multipart_append_form_string(mp, "type", "input");
    SoupMessage *msg = soup_message_new_from_multipart(url("/upload/image").c_str(), mp);
    soup_multipart_free(mp);
    if (!msg) return fail(id, Error(ErrorKind::Unreachable, "cannot build a request for " + url("/upload/image")));
    send(msg, id, 0, [this, id](int status, GBytes *body, const Error &terr) {
      if (!find_job(id)) return;
      if (terr) return fail(id, terr);
      gsize n = 0;
      const char *d = body ? static_cast<const char *>(g_bytes_get_data(body, &n)) : nullptr;
      if (status != 200)
        return fail(id, Error(ErrorKind::HttpStatus,
                              "HTTP " + std::to_string(status) + " from POST " + url("/upload/image") +
                                  (n ? ": " + proto::excerpt(d, n) : std::string()),
                              status));
      ImageRef ref;
      if (Error e = proto::parse_upload_response(d, n, &ref)) return fail(id, e);
      post_prompt(id, ref.load_image_value());
    });
  }

  void post_prompt(const std::string &id, const std::string &image_value) {
    Job *j = find_job(id);
    if (!j) return;
    j->phase = Job::Phase::Queueing;
    JsonNode *prompt = nullptr;
    try {
      prompt = j->spec.build_prompt(image_value);
    } catch (...) {
      prompt = nullptr;
    }
    if (!find_job(id)) {  // build_prompt cancelled the job
      if (prompt) json_node_unref(prompt);
      return;
    }
    if (!prompt || !JSON_NODE_HOLDS_OBJECT(prompt)) {
      if (prompt) json_node_unref(prompt);
      return fail(id, Error(ErrorKind::InvalidWorkflow, "build_prompt did not return a JSON object graph"));
    }
    j->client_id = current_client_id();
    j->ws_msgs_at_post = st.ws_messages;
    std::string body = proto::build_prompt_body(prompt, j->client_id, id);
    json_node_unref(prompt);
    SoupMessage *msg = soup_message_new(SOUP_METHOD_POST, url("/prompt").c_str());
    if (!msg) return fail(id, Error(ErrorKind::Unreachable, "cannot build a request for " + url("/prompt")));
    GBytes *b = g_bytes_new(body.data(), body.size());
    soup_message_set_request_body_from_bytes(msg, "application/json", b);
    g_bytes_unref(b);
    j->posted = true;
    send(msg, id, 0, [this, id](int status, GBytes *body, const Error &terr) {
      Job *jj = find_job(id);
      if (!jj) return;
      if (terr) return fail(id, terr);
      gsize n = 0;
      const char *d = body ? static_cast<const char *>(g_bytes_get_data(body, &n)) : nullptr;
      proto::PromptResponse pr;
      if (Error e = proto::parse_prompt_response(status, d, n, jj->spec.output_nodes, &pr)) {
        if (e.kind == ErrorKind::HttpStatus || e.kind == ErrorKind::Protocol) e.message += " (" + url("/prompt") + ")";
        return fail(id, e);
      }
      if (pr.prompt_id != id)
        g_debug("dw-comfy: server answered prompt_id %s for our %s", pr.prompt_id.c_str(), id.c_str());
      jj->queued = true;
      jj->result.queued_us = now_us();
      // The websocket may already have finished the job (fast servers answer after executing).
      if (jj->phase == Job::Phase::Queueing) set_phase(*jj, Job::Phase::Executing, "execute", cfg.timeouts.execute_ms);
      update_poll_timer();
    });
  }

  // Follow-up after a finished prompt: pick the image source.
  void complete(const std::string &id, const std::vector<proto::OutputImage> *history_outputs) {
    Job *j = find_job(id);
    if (!j || j->phase == Job::Phase::Downloading) return;
    j->terminal = true;
    // 1. a SaveImageWebsocket frame
    if (!j->ws_image.empty()) {
      set_phase(*j, Job::Phase::Downloading, "download", cfg.timeouts.download_ms);
      if (Error e = proto::validate_image(j->ws_image.data(), j->ws_image.size(),
                                          "websocket image frame of prompt " + id))
        return fail(id, e);
      j->result.image = std::move(j->ws_image);
      j->result.from_websocket = true;
      j->result.node_id = j->ws_image_node;
      return succeed(id);
    }
    // 2. images named by executed messages or by history
    const proto::OutputImage *pick = nullptr;
    for (const auto &oi : j->executed)
      if (proto::wanted_node(j->spec.output_nodes, oi.node_id)) {
        pick = &oi;
        break;
      }
    if (!pick && history_outputs)
      for (const auto &oi : *history_outputs)
        if (proto::wanted_node(j->spec.output_nodes, oi.node_id)) {
          pick = &oi;
          break;
        }
    if (pick) return download(id, *pick);
    if (history_outputs)
      return fail(id, Error(ErrorKind::BadImage,
                            "prompt " + id + " finished but no image output was received: the server's history lists "
                            "no file output" + (j->spec.output_nodes.empty() ? std::string() : " of the wanted nodes") +
                            ", and a SaveImageWebsocket image exists only as a websocket frame, which was lost "
                            "(websocket down or silent); it cannot be recovered from /history"));
    // 3. ask /history (we may have missed executed messages)
    fetch_history(id, true);
  }

  void download(const std::string &id, const proto::OutputImage &oi) {
    Job *j = find_job(id);
    if (!j) return;
    set_phase(*j, Job::Phase::Downloading, "download", cfg.timeouts.download_ms);
    j->result.ref = oi.ref;
    j->result.node_id = oi.node_id;
    char *q = soup_form_encode("filename", oi.ref.filename.c_str(), "subfolder", oi.ref.subfolder.c_str(), "type",
                               oi.ref.type.empty() ? "output" : oi.ref.type.c_str(), nullptr);
    std::string u = url("/view") + "?" + q;
    g_free(q);
    SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, u.c_str());
    if (!msg) return fail(id, Error(ErrorKind::Protocol, "cannot build a /view request for '" + oi.ref.filename + "'"));
    send(msg, id, 0, [this, id, u](int status, GBytes *body, const Error &terr) {
      Job *jj = find_job(id);
      if (!jj) return;
      if (terr) return fail(id, terr);
      gsize n = 0;
      const uint8_t *d = body ? static_cast<const uint8_t *>(g_bytes_get_data(body, &n)) : nullptr;
      if (status != 200)
        return fail(id, Error(ErrorKind::HttpStatus, "HTTP " + std::to_string(status) + " from GET " + u, status));
      if (Error e = proto::validate_image(d, n, "GET " + u)) return fail(id, e);
      jj->result.image.assign(d, d + n);
      succeed(id);
    });
  }

  // A restarted server forgets its queue and history: a prompt that is neither queued nor finished
  // will never finish. The queue is read first, then history, so a prompt finishing in between is
  // seen finished rather than lost.
  void verify_outstanding() {
    SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, url("/queue").c_str());
    if (!msg) return;
    send(msg, "", cfg.timeouts.connect_ms, [this](int status, GBytes *body, const Error &terr) {
      if (terr || status != 200) return;  // the next check retries
      gsize n = 0;
      const char *d = body ? static_cast<const char *>(g_bytes_get_data(body, &n)) : nullptr;
      std::vector<std::string> known;
      if (proto::parse_queue(d, n, &known)) return;
      std::set<std::string> queued(known.begin(), known.end());
      std::vector<std::string> ids;
      for (auto &kv : jobs)
        if (kv.second->queued && !queued.count(kv.first)) ids.push_back(kv.first);
      for (const auto &id : ids) fetch_history(id, false, true);
    });
  }

  void fetch_history(const std::string &id, bool after_terminal, bool lost_if_unfinished = false) {
    Job *j = find_job(id);
    if (!j || j->history_inflight || j->phase == Job::Phase::Downloading) return;
    j->history_inflight = true;
    j->last_history_us = now_us();
    st.history_polls++;
    char *esc = g_uri_escape_string(id.c_str(), nullptr, FALSE);
    std::string u = url("/history/") + esc;
    g_free(esc);
    SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, u.c_str());
    if (!msg) return fail(id, Error(ErrorKind::Protocol, "cannot build a /history request"));
    send(msg, id, cfg.timeouts.connect_ms, [this, id, u, lost_if_unfinished](int status, GBytes *body, const Error &terr) {
      Job *jj = find_job(id);
      if (!jj) return;
      jj->history_inflight = false;
      if (terr || status != 200) {
        // Transient: the next poll retries; the execute timeout bounds it.
        g_debug("dw-comfy: GET %s failed: %s", u.c_str(), terr ? terr.message.c_str() : std::to_string(status).c_str());
        update_poll_timer();
        return;
      }
      gsize n = 0;
      const char *d = body ? static_cast<const char *>(g_bytes_get_data(body, &n)) : nullptr;
      proto::HistoryEntry he;
      if (Error e = proto::parse_history(d, n, id, &he)) return fail(id, e);
      switch (he.state) {
        case proto::HistoryEntry::State::NotFinished:
          if (lost_if_unfinished && !jj->terminal)
          {
            Error e(ErrorKind::Unreachable, "prompt " + id + " is no longer known to " + base +
                                                " (neither queued nor in history: the server restarted?)");
            e.retry_free = true;
            return fail(id, e);
          }
          if (++jj->unfinished_polls % kVerifyEveryPolls == 0 && now_us() - last_verify_us >= kVerifyMinGapUs) {
            last_verify_us = now_us();
            verify_outstanding();
          }
          update_poll_timer();
          return;
        case proto::HistoryEntry::State::Error:
        case proto::HistoryEntry::State::Interrupted:
          return fail(id, proto::error_from_execution_message(he.last_message));
        case proto::HistoryEntry::State::Success:
          if (!jj->terminal && jj->unfinished_polls == 0 && ws_blind(*jj)) jj->done_at_first_poll = true;
          return complete(id, &he.outputs);
      }
    });
  }

  // Fast polling period: 1/32 of the measured generation time keeps the added latency near 2 % of
  // a keyframe period (a silent websocket once cost a whole ws_silence_ms per keyframe). Polling
  // starts at 70 % of the generation time (see poll_due), so a job costs about ten polls.
  uint32_t fast_poll_ms() const {
    uint32_t cap = std::max<uint32_t>(5, cfg.poll_interval_ms);
    if (st.generation_ms <= 0) return std::min<uint32_t>(cap, 50);
    return std::clamp<uint32_t>(static_cast<uint32_t>(st.generation_ms / 32), 5, cap);
  }

  bool polling_mode() const { return !cfg.use_websocket || !ws || !st.ws_connected || ws_silent; }

  // Whether the websocket cannot tell us about j at all (down, off, degraded, or another socket).
  bool ws_blind(const Job &j) const {
    return !cfg.use_websocket || !ws || !st.ws_connected || ws_silent || j.client_id != st.client_id;
  }

  // The period j is polled at (0 = not polled): fast while the websocket is blind, else only as a
  // fallback after ws_silence_ms without any message.
  uint32_t poll_period(const Job &j, int64_t now) const {
    if (!j.queued || j.phase == Job::Phase::Downloading) return 0;
    if (j.terminal) return fast_poll_ms();  // finished but outputs unknown
    if (ws_blind(j)) {
      // A job waiting behind others must not cost hundreds of requests: slow down as polls say
      // "not yet", up to poll_interval_ms.
      uint32_t p = fast_poll_ms() * std::max<uint32_t>(1, j.unfinished_polls / 16);
      return std::min<uint32_t>(p, std::max<uint32_t>(fast_poll_ms(), cfg.poll_interval_ms));
    }
    int64_t since = std::max(last_ws_msg_us, j.result.queued_us);
    return now - since >= int64_t(cfg.ws_silence_ms) * 1000 ? cfg.poll_interval_ms : 0;
  }

  // A connected websocket that received nothing at all since before our POST /prompt, for
  // ws_silence_ms, is silent: ComfyUI broadcasts a status message for every queued prompt.
  void detect_silence(int64_t now) {
    if (ws_silent || !ws || !st.ws_connected || !cfg.use_websocket) return;
    for (auto &kv : jobs) {
      const Job &j = *kv.second;
      if (!j.queued || j.client_id != st.client_id || st.ws_messages != j.ws_msgs_at_post) continue;
      if (now - j.result.queued_us < int64_t(cfg.ws_silence_ms) * 1000) continue;
      ws_silent = true;
      for (auto &kv2 : jobs)
        if (kv2.second->queued && kv2.second->client_id == st.client_id) kv2.second->late_seen = true;
      silent_msg = "ComfyUI at " + base + ": the websocket is connected but silent (nothing within " +
                   std::to_string(cfg.ws_silence_ms) + " ms of queueing prompt " + kv.first +
                   "); following jobs by polling /history every " + std::to_string(fast_poll_ms()) + " ms";
      update_health();
      return;
    }
  }

  bool poll_due(const Job &j, int64_t now) const {
    uint32_t period = poll_period(j, now);
    if (period == 0 || j.history_inflight || now - j.last_history_us < int64_t(period) * 1000 - 2000) return false;
    // Blind: nothing can be finished before most of a generation time has passed.
    if (!j.terminal && ws_blind(j) && st.generation_ms > 0 &&
        now - j.result.queued_us < int64_t(st.generation_ms * 0.7 * 1000))
      return false;
    return true;
  }

  void poll_tick() {
    int64_t now = now_us();
    std::weak_ptr<int> a = alive;
    detect_silence(now);
    if (a.expired()) return;
    std::vector<std::string> due;
    for (auto &kv : jobs)
      if (poll_due(*kv.second, now)) due.push_back(kv.first);
    for (const auto &id : due) {
      if (a.expired()) return;
      fetch_history(id, false);
    }
    if (!a.expired()) update_poll_timer();
  }

  // The tick runs while any job is queued, at the fastest period a job needs (250 ms at most, so
  // silence is noticed in time).
  void update_poll_timer() {
    bool any = false;
    uint32_t period = std::max<uint32_t>(10, std::min<uint32_t>(cfg.poll_interval_ms, 250));
    int64_t now = now_us();
    for (auto &kv : jobs) {
      if (!kv.second->queued) continue;
      any = true;
      uint32_t p = poll_period(*kv.second, now);
      if (p > 0) period = std::min(period, std::max<uint32_t>(10, p));
    }
    if (poll_timer && (!any || period != poll_timer_ms)) destroy_source(&poll_timer);
    if (any && !poll_timer) {
      poll_timer_ms = period;
      poll_timer = add_timer(period, [this]() {
        poll_tick();
        return G_SOURCE_CONTINUE;
      });
    }
  }

  void recheck_all() {
    std::vector<std::string> ids;
    for (auto &kv : jobs)
      if (kv.second->queued) ids.push_back(kv.first);
    for (const auto &id : ids) fetch_history(id, false);
    if (!ids.empty()) verify_outstanding();
  }

  void tell_server_cancel(const std::string &id) {
    post_json("/queue", proto::build_queue_delete({id}));
    post_json("/interrupt", proto::build_interrupt(id));
  }

  void post_json(const std::string &path, const std::string &body) {
    SoupMessage *msg = soup_message_new(SOUP_METHOD_POST, url(path).c_str());
    if (!msg) return;
    GBytes *b = g_bytes_new(body.data(), body.size());
    soup_message_set_request_body_from_bytes(msg, "application/json", b);
    g_bytes_unref(b);
    send(msg, "", cfg.timeouts.connect_ms, [path](int status, GBytes *, const Error &terr) {
      if (terr || status != 200)
        g_debug("dw-comfy: POST %s: %s", path.c_str(), terr ? terr.message.c_str() : std::to_string(status).c_str());
    });
  }

  void cancel(const std::string &id, bool tell_server) {
    std::unique_ptr<Job> j = take_job(id);
    if (!j) return;
    if (tell_server && j->posted) tell_server_cancel(id);
  }

  // ------------------------------------------------------------------------------------------
  // Websocket

  std::string ws_url(const std::string &client_id) const {
    std::string u = server.ws_base();
    char *q = soup_form_encode("clientId", client_id.c_str(), nullptr);
    u += std::string("/ws?") + q;
    g_free(q);
    return u;
  }

  void notify_connection(bool connected, const Error &e) {
    if (conn_cb) {
      auto cb = conn_cb;  // the callback may replace itself
      guarded("dw-comfy connection callback", [&] { cb(connected, e); });
    }
  }

  void connect_ws() {
    if (!started || !cfg.use_websocket || ws || ws_cancel) return;
    if (!url_error.empty()) return;
    pending_client_id = new_uuid();
    SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, ws_url(pending_client_id).c_str());
    if (!msg) return;
    ws_cancel = g_cancellable_new();
    destroy_source(&ws_connect_timer);
    GCancellable *c = ws_cancel;
    ws_connect_timer = add_timer(cfg.timeouts.connect_ms, [this, c]() {
      g_cancellable_cancel(c);
      g_source_unref(ws_connect_timer);
      ws_connect_timer = nullptr;
      return G_SOURCE_REMOVE;
    });
    auto *holder = new std::pair<Impl *, std::weak_ptr<int>>(this, alive);
    CtxGuard g(ctx);
    soup_session_websocket_connect_async(session, msg, nullptr /* no Origin */, nullptr, G_PRIORITY_DEFAULT, ws_cancel,
                                         &Impl::on_ws_connected, holder);
    g_object_unref(msg);
  }

  static void on_ws_connected(GObject *src, GAsyncResult *res, gpointer data) {
    std::unique_ptr<std::pair<Impl *, std::weak_ptr<int>>> h(static_cast<std::pair<Impl *, std::weak_ptr<int>> *>(data));
    GError *err = nullptr;
    SoupWebsocketConnection *conn = soup_session_websocket_connect_finish(SOUP_SESSION(src), res, &err);
    if (h->second.expired()) {
      if (conn) {
        soup_websocket_connection_close(conn, SOUP_WEBSOCKET_CLOSE_GOING_AWAY, nullptr);
        g_object_unref(conn);
      }
      g_clear_error(&err);
      return;
    }
    Impl *self = h->first;
    guarded("dw-comfy websocket connect", [&] { self->ws_connected(conn, err); });
    g_clear_error(&err);
  }

  void ws_connected(SoupWebsocketConnection *conn, const GError *err) {
    bool timed_out = ws_connect_timer == nullptr && err && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    destroy_source(&ws_connect_timer);
    g_clear_object(&ws_cancel);
    std::weak_ptr<int> a = alive;
    if (!conn) {
      Error e(timed_out ? ErrorKind::Timeout : ErrorKind::Unreachable,
              (timed_out ? "websocket connect to " + base + "/ws got no answer within " +
                               std::to_string(cfg.timeouts.connect_ms) + " ms"
                         : "cannot open websocket " + base + "/ws: " + gerror_text(err)));
      Contact c = Contact::Failed;
      if (timed_out)
        c = Contact::Silent;
      else if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED))
        c = Contact::Refused;
      else if (err && (err->domain == SOUP_WEBSOCKET_ERROR || err->domain == SOUP_SESSION_ERROR))
        c = Contact::Answered;  // the server spoke HTTP, it just refused the upgrade
      schedule_reconnect();
      notify_connection(false, e);
      if (a.expired()) return;
      note_contact(c, e, false);
      return;
    }
    ws = conn;
    st.client_id = pending_client_id;
    st.ws_connected = true;
    last_ws_msg_us = now_us();
    ws_silent = false;  // a new socket gets a new chance (a deaf clientId is cured by a fresh one)
    soup_websocket_connection_set_max_incoming_payload_size(conn, kMaxWsPayload);
    soup_websocket_connection_set_keepalive_interval(conn, kKeepaliveSeconds);
    g_signal_connect(conn, "message", G_CALLBACK(&Impl::on_ws_message), this);
    g_signal_connect(conn, "closed", G_CALLBACK(&Impl::on_ws_closed), this);
    g_signal_connect(conn, "error", G_CALLBACK(&Impl::on_ws_error), this);
    {
      CtxGuard g(ctx);
      std::string ff = proto::build_feature_flags();
      soup_websocket_connection_send_text(conn, ff.c_str());
    }
    bool reconnect = ever_connected;
    if (reconnect) st.reconnects++;
    ever_connected = true;
    link_up("ComfyUI at " + base + " answers (websocket connected)");
    if (a.expired()) return;
    update_health();  // a cleared silence
    if (a.expired()) return;
    if (reconnect) recheck_all();
    notify_connection(true, Error());
  }

  static void on_ws_error(SoupWebsocketConnection *, GError *err, gpointer) {
    guarded("dw-comfy websocket error", [&] { g_debug("dw-comfy: websocket error: %s", gerror_text(err).c_str()); });
  }

  static void on_ws_closed(SoupWebsocketConnection *conn, gpointer data) {
    Impl *self = static_cast<Impl *>(data);
    if (conn != self->ws) return;
    guarded("dw-comfy websocket closed", [&] { self->ws_closed(conn); });
  }

  void ws_closed(SoupWebsocketConnection *conn) {
    gushort code = soup_websocket_connection_get_close_code(conn);
    close_ws(false);
    Error e(ErrorKind::Unreachable, "websocket to " + base + "/ws closed (code " + std::to_string(code) + ")");
    g_debug("dw-comfy: %s", e.message.c_str());
    schedule_reconnect();
    update_poll_timer();
    // A killed server closes with 1006: find out now whether it is gone (GET fails at once) rather
    // than when a job times out.
    start_probe();
    notify_connection(false, e);
  }

  void close_ws(bool graceful) {
    if (!ws) return;
    SoupWebsocketConnection *c = ws;
    ws = nullptr;
    st.ws_connected = false;
    g_signal_handlers_disconnect_by_data(c, this);
    if (soup_websocket_connection_get_state(c) == SOUP_WEBSOCKET_STATE_OPEN) {
      CtxGuard g(ctx);
      soup_websocket_connection_close(c, graceful ? SOUP_WEBSOCKET_CLOSE_NORMAL : SOUP_WEBSOCKET_CLOSE_GOING_AWAY, nullptr);
    }
    g_object_unref(c);
  }

  void schedule_reconnect() {
    if (!started || reconnect_timer) return;
    uint32_t ms = backoff.next_ms();
    reconnect_timer = add_timer(ms, [this]() {
      g_source_unref(reconnect_timer);
      reconnect_timer = nullptr;
      connect_ws();
      return G_SOURCE_REMOVE;
    });
  }

  static void on_ws_message(SoupWebsocketConnection *conn, gint type, GBytes *message, gpointer data) {
    Impl *self = static_cast<Impl *>(data);
    if (conn != self->ws) return;
    guarded("dw-comfy websocket message", [&] {
      self->st.ws_messages++;
      self->last_ws_msg_us = now_us();
      self->backoff.reset();  // the server talks to us: the connection is good
      gsize n = 0;
      const char *d = message ? static_cast<const char *>(g_bytes_get_data(message, &n)) : nullptr;
      if (type == SOUP_WEBSOCKET_DATA_TEXT)
        self->on_text(d, n);
      else
        self->on_binary(reinterpret_cast<const uint8_t *>(d), n);
    });
  }

  void on_text(const char *d, size_t n) {
    proto::WsMessage m;
    if (Error e = proto::parse_ws_text(d, n, &m)) {
      g_debug("dw-comfy: ignoring bad websocket message: %s", e.message.c_str());
      return;
    }
    using proto::MsgType;
    if (m.type == MsgType::ExecutionStart) running_prompt = m.prompt_id;
    if (m.prompt_id.empty()) return;  // status, feature_flags, executing after a reconnect: nothing to route
    Job *j = find_job(m.prompt_id);
    if (!j) {
      if (m.type == MsgType::Executing && m.node_is_null && running_prompt == m.prompt_id) running_prompt.clear();
      return;
    }
    std::string id = m.prompt_id;
    if (ws_silent) {
      std::weak_ptr<int> a = alive;
      ws_heard_job();
      if (a.expired() || !(j = find_job(id))) return;
    }
    switch (m.type) {
      case MsgType::Progress:
        if (j->cb.on_progress) {
          Progress p{id, m.node, m.value, m.max};
          auto cb = j->cb.on_progress;
          guarded("dw-comfy on_progress callback", [&] { cb(p); });
        }
        break;
      case MsgType::Executing:
        if (!m.node_is_null && j->cb.on_progress) {
          Progress p{id, m.node, 0, 0};
          auto cb = j->cb.on_progress;
          guarded("dw-comfy on_progress callback", [&] { cb(p); });
        } else if (m.node_is_null) {
          if (running_prompt == id) running_prompt.clear();
          if (!j->terminal) complete(id, nullptr);  // missed the terminal message: decide via history
        }
        break;
      case MsgType::Executed:
        for (auto &oi : m.images) j->executed.push_back(oi);
        break;
      case MsgType::ExecutionSuccess:
        complete(id, nullptr);
        break;
      case MsgType::ExecutionError:
      case MsgType::ExecutionInterrupted:
        fail(id, proto::error_from_execution_message(m));
        break;
      default:
        break;
    }
  }

  void on_binary(const uint8_t *d, size_t n) {
    proto::BinaryFrame f;
    if (Error e = proto::parse_ws_binary(d, n, &f)) {
      g_debug("dw-comfy: ignoring bad binary frame: %s", e.message.c_str());
      return;
    }
    if (f.event_type != proto::kBinPreviewImage && f.event_type != proto::kBinPreviewWithMetadata) return;
    Job *j = nullptr;
    if (f.has_metadata) {
      j = find_job(f.prompt_id);
      if (j && !proto::wanted_node(j->spec.output_nodes, f.node_id)) return;
    } else {
      // Legacy frame without prompt_id: attribute it to the running job, if it is ours and unique.
      if (!running_prompt.empty()) {
        j = find_job(running_prompt);
      } else {
        Job *only = nullptr;
        int count = 0;
        for (auto &kv : jobs)
          if (kv.second->queued && kv.second->phase == Job::Phase::Executing && kv.second->client_id == st.client_id) {
            only = kv.second.get();
            count++;
          }
        if (count == 1) j = only;
      }
    }
    if (!j || j->phase == Job::Phase::Downloading || !j->ws_image.empty()) return;
    j->ws_image = std::move(f.image);
    j->ws_image_node = f.node_id;
  }
};

// ---------------------------------------------------------------------------------------------

Client::Client(ClientConfig config, GMainContext *context) : impl_(std::make_unique<Impl>(std::move(config), context)) {}

Client::~Client() = default;

void Client::start() {
  if (impl_->started) return;
  impl_->started = true;
  impl_->connect_ws();
}

std::string Client::submit(JobSpec spec, JobCallbacks callbacks) {
  return impl_->submit(std::move(spec), std::move(callbacks));
}

void Client::cancel(const std::string &prompt_id, bool tell_server) { impl_->cancel(prompt_id, tell_server); }

size_t Client::outstanding() const { return impl_->jobs.size(); }

void Client::system_stats(std::function<void(JsonNode *stats, const Error &)> callback) {
  Impl *self = impl_.get();
  if (!self->url_error.empty()) {
    // Still asynchronous, so the callback never runs inside this call.
    auto cb = std::make_shared<std::function<void(JsonNode *, const Error &)>>(std::move(callback));
    std::weak_ptr<int> a = self->alive;
    std::string msg = self->url_error;
    GSource *s = self->add_timer(0, [a, cb, msg]() {
      if (!a.expired() && *cb) (*cb)(nullptr, Error(ErrorKind::Unreachable, msg));
      return G_SOURCE_REMOVE;
    }, true);
    g_source_unref(s);
    return;
  }
  std::string u = self->url("/system_stats");
  SoupMessage *msg = soup_message_new(SOUP_METHOD_GET, u.c_str());
  self->send(msg, "", self->cfg.timeouts.connect_ms, [u, callback](int status, GBytes *body, const Error &terr) {
    if (!callback) return;
    if (terr) return callback(nullptr, terr);
    if (status != 200) return callback(nullptr, Error(ErrorKind::HttpStatus, "HTTP " + std::to_string(status) + " from GET " + u, status));
    gsize n = 0;
    const char *d = body ? static_cast<const char *>(g_bytes_get_data(body, &n)) : nullptr;
    dw::json::NodePtr root;
    try {
      root = dw::json::parse_object(std::string_view(d ? d : "", n), "ComfyUI GET /system_stats response");
    } catch (const dw::json::Error &e) {
      return callback(nullptr, Error(ErrorKind::Protocol, "GET " + u + ": " + e.what()));
    }
    callback(root.get(), Error());
  });
}

void Client::interrupt(const std::string &prompt_id) {
  if (!impl_->url_error.empty()) return;
  impl_->post_json("/interrupt", proto::build_interrupt(prompt_id));
}

void Client::set_connection_callback(std::function<void(bool connected, const Error &)> callback) {
  impl_->conn_cb = std::move(callback);
}

void Client::set_health_callback(std::function<void(const HealthEvent &)> callback) {
  impl_->health_cb = std::move(callback);
}

Health Client::health() const { return impl_->reported.health; }

HealthEvent Client::health_event() const { return impl_->reported; }

ClientStats Client::stats() const {
  ClientStats s = impl_->st;
  s.poll_period_ms = impl_->polling_mode() ? impl_->fast_poll_ms() : 0;
  return s;
}

const ClientConfig &Client::config() const { return impl_->cfg; }

}  // namespace dw::comfy
