// /queue, /history, /api/jobs and the history entries written when a job ends.

#include "sim/internal.h"

#include <algorithm>

namespace dw::sim {

std::string Simulator::Impl::queue_item(const Job &j) const {
  JW w;
  w.ab().raw(j.number.json()).s(j.id).raw(j.prompt_raw).raw(j.extra_raw).ab();
  for (auto &o : j.outputs) w.s(o);
  w.ae().ae();
  return w.str();
}

void Simulator::Impl::get_queue(SoupServerMessage *msg) {
  JW w;
  w.ob().k("queue_running").ab();
  if (running) w.raw(queue_item(*running));
  w.ae().k("queue_pending").ab();
  for (auto &j : queue) w.raw(queue_item(*j));
  w.ae().oe();
  reply_json(msg, 200, w.str());
}

ClearDelete Simulator::Impl::parse_clear_delete(SoupServerMessage *msg) {
  ClearDelete r;
  std::string body = body_of(msg);
  JsonNodePtr root(parse_json(body.data(), body.size(), "request body"));
  if (!root.n || !JSON_NODE_HOLDS_OBJECT(root.n)) return r;
  r.valid = true;
  JsonObject *o = json_node_get_object(root.n);
  JsonNode *c = json_object_get_member(o, "clear");
  r.clear = c && JSON_NODE_HOLDS_VALUE(c) && json_node_get_value_type(c) == G_TYPE_BOOLEAN && json_node_get_boolean(c);
  JsonNode *d = json_object_get_member(o, "delete");
  if (d && JSON_NODE_HOLDS_ARRAY(d)) {
    JsonArray *a = json_node_get_array(d);
    for (guint i = 0; i < json_array_get_length(a); ++i) r.ids.push_back(py_str(json_array_get_element(a, i)));
  }
  return r;
}

void Simulator::Impl::post_queue(SoupServerMessage *msg) {
  ClearDelete cd = parse_clear_delete(msg);
  if (cd.valid) {
    if (cd.clear) queue.clear();
    for (const auto &id : cd.ids)
      queue.erase(std::remove_if(queue.begin(), queue.end(), [&](const std::unique_ptr<Job> &j) { return j->id == id; }),
                  queue.end());
    send_status();
  }
  reply_empty(msg, 200);
}

void Simulator::Impl::get_history(SoupServerMessage *msg, GHashTable *query) {
  bool has_max = false;
  std::string mx = qget(query, "max_items", nullptr, &has_max);
  std::string off = qget(query, "offset", "0");
  size_t n = history.size();
  size_t max_items = n;
  if (has_max) {
    gint64 v = g_ascii_strtoll(mx.c_str(), nullptr, 10);
    max_items = v < 0 ? n : static_cast<size_t>(v);
  }
  gint64 offset = g_ascii_strtoll(off.c_str(), nullptr, 10);
  // The last max_items entries (before offset from the end).
  size_t end = n;
  if (offset > 0) end = static_cast<size_t>(offset) >= n ? 0 : n - static_cast<size_t>(offset);
  size_t begin = end > max_items ? end - max_items : 0;
  JW w;
  w.ob();
  for (size_t i = begin; i < end; ++i) w.k(history[i].id).raw(history[i].json);
  w.oe();
  reply_json(msg, 200, w.str());
}

void Simulator::Impl::get_history_id(SoupServerMessage *msg, const std::string &id_esc) {
  char *id = g_uri_unescape_string(id_esc.c_str(), nullptr);
  std::string sid = id ? id : "";
  g_free(id);
  for (auto &h : history)
    if (h.id == sid) return reply_json(msg, 200, "{" + json_escape(h.id) + ": " + h.json + "}");
  reply_json(msg, 200, "{}");
}

void Simulator::Impl::post_history(SoupServerMessage *msg) {
  ClearDelete cd = parse_clear_delete(msg);
  if (cd.clear) history.clear();
  for (const auto &id : cd.ids)
    history.erase(std::remove_if(history.begin(), history.end(), [&](const HistEntry &h) { return h.id == id; }),
                  history.end());
  reply_empty(msg, 200);
}

std::vector<JobView> Simulator::Impl::all_jobs() const {
  std::vector<JobView> v;
  for (auto &j : queue) v.push_back({j->id, "pending", j->number, j->create_time, 0, 0, 0});
  if (running) v.push_back({running->id, "in_progress", running->number, running->create_time, 0, running->start_ms, 0});
  for (auto &h : history)
    v.push_back({h.id, h.success ? "completed" : "failed", h.number, h.create_time, h.outputs_count, h.start_ms, h.end_ms});
  return v;
}

std::string Simulator::Impl::job_json(const JobView &j) {
  JW w;
  w.ob().k("id").s(j.id).k("status").s(j.status).k("priority").raw(j.priority.json()).k("create_time").i(j.create_time)
      .k("outputs_count").u(j.outputs_count);
  if (j.start) w.k("execution_start_time").i(j.start);
  if (j.end) w.k("execution_end_time").i(j.end);
  w.oe();
  return w.str();
}

void Simulator::Impl::jobs(SoupServerMessage *msg, GHashTable *query) {
  auto v = all_jobs();
  std::string st = qget(query, "status");
  if (!st.empty()) {
    std::vector<std::string> wanted;
    char **parts = g_strsplit(st.c_str(), ",", -1);
    for (char **p = parts; *p; ++p) wanted.push_back(g_strstrip(*p));
    g_strfreev(parts);
    v.erase(std::remove_if(v.begin(), v.end(), [&](const JobView &j) {
              return std::find(wanted.begin(), wanted.end(), j.status) == wanted.end();
            }), v.end());
  }
  const bool asc = qget(query, "sort_order", "desc") == "asc";
  const bool by_duration = qget(query, "sort_by") == "execution_duration";
  std::stable_sort(v.begin(), v.end(), [&](const JobView &a, const JobView &b) {
    int64_t ka = by_duration ? a.end - a.start : a.create_time, kb = by_duration ? b.end - b.start : b.create_time;
    return asc ? ka < kb : ka > kb;
  });
  int64_t offset = std::max<int64_t>(0, g_ascii_strtoll(qget(query, "offset", "0").c_str(), nullptr, 10));
  bool has_limit = false;
  std::string lim = qget(query, "limit", nullptr, &has_limit);
  int64_t limit = has_limit ? std::max<int64_t>(0, g_ascii_strtoll(lim.c_str(), nullptr, 10)) : static_cast<int64_t>(v.size());
  JW w;
  w.ob().k("jobs").ab();
  for (int64_t i = offset; i < static_cast<int64_t>(v.size()) && i < offset + limit; ++i) w.raw(job_json(v[static_cast<size_t>(i)]));
  w.ae().k("pagination").ob().k("offset").i(offset);
  if (has_limit) w.k("limit").i(limit);
  else w.k("limit").null();
  w.k("total").u(v.size()).k("has_more").b(offset + limit < static_cast<int64_t>(v.size())).oe().oe();
  reply_json(msg, 200, w.str());
}

void Simulator::Impl::job(SoupServerMessage *msg, const std::string &id_esc) {
  char *id = g_uri_unescape_string(id_esc.c_str(), nullptr);
  std::string sid = id ? id : "";
  g_free(id);
  for (auto &j : all_jobs())
    if (j.id == sid) return reply_json(msg, 200, job_json(j));
  reply_json(msg, 404, "{\"error\": \"Job not found\"}");
}

void Simulator::Impl::write_history(Job &j, bool success, const std::string &status_str) {
  JW w;
  w.ob().k("prompt").raw(queue_item(j)).k("outputs").ob();
  for (auto &u : j.outputs_ui) w.k(u.first).raw(u.second);
  w.oe().k("status").ob().k("status_str").s(status_str).k("completed").b(success).k("messages").ab();
  for (auto &m : j.messages) w.raw(m);
  w.ae().oe().k("meta").ob();
  for (auto &u : j.outputs_ui)
    w.k(u.first).ob().k("node_id").s(u.first).k("display_node").s(u.first).k("parent_node").null().k("real_node_id").s(u.first).oe();
  w.oe().oe();
  HistEntry h;
  h.id = j.id;
  h.json = w.str();
  h.success = success;
  h.number = j.number;
  h.create_time = j.create_time;
  h.start_ms = j.start_ms;
  h.end_ms = now_ms();
  h.outputs_count = j.outputs_ui.size();
  history.erase(std::remove_if(history.begin(), history.end(), [&](const HistEntry &e) { return e.id == j.id; }), history.end());
  history.push_back(std::move(h));
  if (history.size() > 10000) history.erase(history.begin());
}

std::string Simulator::Impl::current_outputs_json(Job &j) {
  JW w;
  w.ab();
  for (auto &id : prompt_ids(j)) {
    auto it = j.sigs.find(id);
    if (it != j.sigs.end() && cache.count(it->second)) w.s(id);
  }
  w.ae();
  return w.str();
}

std::string Simulator::Impl::executed_json(const Job &j) const {
  JW w;
  w.ab();
  for (auto &e : j.executed) w.s(e);
  w.ae();
  return w.str();
}

}  // namespace dw::sim
