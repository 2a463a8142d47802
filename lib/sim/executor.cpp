// The job queue and execution: order, caching, per-node messages, job ends (execution.py).

#include "sim/internal.h"

#include <algorithm>

namespace dw::sim {

void Simulator::Impl::schedule_start_next() {
  if (start_scheduled) return;
  start_scheduled = true;
  schedule(0, [this]() {
    start_scheduled = false;
    start_next();
  });
}

uint32_t Simulator::Impl::job_latency() {
  uint32_t lat, jit;
  {
    std::lock_guard<std::mutex> l(mu);
    lat = latency_ms;
    jit = jitter_ms;
  }
  int64_t v = lat;
  if (jit > 0) v += g_rand_int_range(rand, -static_cast<gint32>(jit), static_cast<gint32>(jit) + 1);
  return static_cast<uint32_t>(std::max<int64_t>(0, v));
}

JsonObject *Simulator::Impl::node_obj(const Job &j, const std::string &id) const {
  JsonNode *n = json_object_get_member(json_node_get_object(j.prompt.n), id.c_str());
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : nullptr;
}

std::string Simulator::Impl::class_of(const Job &j, const std::string &id) const {
  JsonObject *o = node_obj(j, id);
  JsonNode *c = o ? json_object_get_member(o, "class_type") : nullptr;
  return c ? py_str(c) : "";
}

JsonObject *Simulator::Impl::inputs_of(const Job &j, const std::string &id) const {
  JsonObject *o = node_obj(j, id);
  JsonNode *i = o ? json_object_get_member(o, "inputs") : nullptr;
  return i && JSON_NODE_HOLDS_OBJECT(i) ? json_node_get_object(i) : nullptr;
}

// Cache signature: class, inputs (links replaced by the upstream signature), LoadImage file hash.
std::string Simulator::Impl::signature(Job &j, const std::string &id, int depth) {
  auto it = j.sigs.find(id);
  if (it != j.sigs.end()) return it->second;
  if (depth > 200) return "!cycle";
  std::string cls = class_of(j, id);
  std::string sig = cls + "{";
  if (cls == "SaveImageWebsocket") sig += "t=" + std::to_string(g_get_monotonic_time()) + ";" + std::to_string(++seq_counter);
  JsonObject *in = inputs_of(j, id);
  if (in) {
    GList *members = json_object_get_members(in);
    std::vector<std::string> names;
    for (GList *l = members; l; l = l->next) names.push_back(static_cast<const char *>(l->data));
    g_list_free(members);
    std::sort(names.begin(), names.end());
    for (auto &n : names) {
      JsonNode *v = json_object_get_member(in, n.c_str());
      sig += n + "=";
      if (JSON_NODE_HOLDS_ARRAY(v) && json_array_get_length(json_node_get_array(v)) == 2 &&
          is_string(json_array_get_element(json_node_get_array(v), 0))) {
        JsonArray *a = json_node_get_array(v);
        std::string src = json_node_get_string(json_array_get_element(a, 0));
        sig += "@(" + (node_obj(j, src) ? signature(j, src, depth + 1) : std::string("?")) + ")." +
               py_str(json_array_get_element(a, 1));
      } else {
        sig += node_to_json(v);
      }
      sig += ";";
    }
    if (cls == "LoadImage") {
      JsonNode *v = json_object_get_member(in, "image");
      std::string content;
      std::string p = v ? resolve_image_path(py_str(v)) : "";
      if (!p.empty() && read_file(p, content)) {
        char *h = g_compute_checksum_for_data(G_CHECKSUM_SHA256, reinterpret_cast<const guchar *>(content.data()), content.size());
        sig += std::string("#") + h;
        g_free(h);
      } else {
        sig += "#missing";
      }
    }
  }
  sig += "}";
  // Keep keys short.
  char *h = g_compute_checksum_for_string(G_CHECKSUM_SHA256, sig.c_str(), static_cast<gssize>(sig.size()));
  std::string out = h;
  g_free(h);
  j.sigs[id] = out;
  return out;
}

void Simulator::Impl::visit(Job &j, const std::string &id, std::set<std::string> &seen) {
  if (seen.count(id)) return;
  seen.insert(id);
  JsonObject *in = inputs_of(j, id);
  const NodeSpec *spec = find_spec(class_of(j, id));
  if (in && spec) {
    for (auto &s : spec->inputs) {
      JsonNode *v = json_object_get_member(in, s.name.c_str());
      if (v && JSON_NODE_HOLDS_ARRAY(v) && json_array_get_length(json_node_get_array(v)) == 2) {
        JsonNode *src = json_array_get_element(json_node_get_array(v), 0);
        if (is_string(src) && node_obj(j, json_node_get_string(src))) visit(j, json_node_get_string(src), seen);
      }
    }
  }
  j.order.push_back(id);
}

std::vector<std::string> Simulator::Impl::prompt_ids(const Job &j) const {
  std::vector<std::string> ids;
  GList *members = json_object_get_members(json_node_get_object(j.prompt.n));
  for (GList *l = members; l; l = l->next) ids.push_back(static_cast<const char *>(l->data));
  g_list_free(members);
  return ids;
}

void Simulator::Impl::add_message(Job &j, const std::string &name, const std::string &data, bool broadcast_if_none) {
  j.messages.push_back("[" + json_escape(name) + ", " + data + "]");
  send_to(j.client_id, typed(name, data), broadcast_if_none);
}

std::string Simulator::Impl::progress_state_json(const Job &j) const {
  JW w;
  w.ob().k("prompt_id").s(j.id).k("nodes").ob();
  for (auto &s : j.states) {
    w.k(s.id).ob();
    if (s.ints) w.k("value").i(static_cast<int64_t>(s.value)).k("max").i(static_cast<int64_t>(s.max));
    else w.k("value").d(s.value).k("max").d(s.max);
    w.k("state").s(s.finished ? "finished" : "running").k("node_id").s(s.id).k("prompt_id").s(j.id)
        .k("display_node_id").s(s.id).k("parent_node_id").null().k("real_node_id").s(s.id).oe();
  }
  w.oe().oe();
  return w.str();
}

NodeState &Simulator::Impl::state_of(Job &j, const std::string &id) {
  for (auto &s : j.states)
    if (s.id == id) return s;
  j.states.push_back(NodeState{id});
  return j.states.back();
}

void Simulator::Impl::start_next() {
  if (running || queue.empty()) return;
  auto it = std::min_element(queue.begin(), queue.end(), [](const std::unique_ptr<Job> &a, const std::unique_ptr<Job> &b) {
    return a->number.v != b->number.v ? a->number.v < b->number.v : a->seq < b->seq;
  });
  running = std::move(*it);
  queue.erase(it);
  Job &j = *running;
  j.serial = ++serial_counter;
  j.job_index = ++jobs_started;
  j.start_ms = now_ms();
  send_status();

  JW d;
  d.ob().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
  add_message(j, "execution_start", d.str(), false);

  std::set<std::string> seen;
  for (auto &o : j.outputs) visit(j, o, seen);
  for (auto &id : j.order) {
    const std::string sig = signature(j, id);
    if (cache.count(sig) && class_of(j, id) != "SaveImageWebsocket") j.cached.insert(id);
  }
  // execution_cached lists every prompt node whose output is cached.
  JW c;
  c.ob().k("nodes").ab();
  for (auto &id : prompt_ids(j)) {
    if (!seen.count(id)) continue;
    if (j.cached.count(id)) c.s(id);
  }
  c.ae().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
  add_message(j, "execution_cached", c.str(), false);

  // Replay cached outputs.
  for (auto &id : j.order) {
    if (!j.cached.count(id)) continue;
    CacheEntry &e = cache[j.sigs[id]];
    j.results[id] = e.outs;
    if (!e.ui.empty()) {
      j.outputs_ui.emplace_back(id, e.ui);
      JW x;
      x.ob().k("node").s(id).k("display_node").s(id).k("output").raw(e.ui).k("prompt_id").s(j.id).oe();
      send_to(j.client_id, typed("executed", x.str()), false);
      NodeState &s = state_of(j, id);
      s.ints = true;
      s.value = 1;
      s.max = 1;
      s.finished = true;
    }
  }
  size_t to_run = 0;
  for (auto &id : j.order)
    if (!j.cached.count(id)) ++to_run;
  const uint32_t lat = job_latency();
  node_delay_ = to_run ? lat / static_cast<uint32_t>(to_run) : 0;
  log("job %d %s: %zu nodes, %zu cached, latency %u ms", j.job_index, j.id.c_str(), j.order.size(), j.cached.size(), lat);
  Faults f = get_faults();
  if (f.ws_drop_on_job == j.job_index && to_run == 0) {
    j.dropped = true;
    drop_all_ws();
  }
  const uint64_t serial = j.serial;
  schedule(0, [this, serial]() { step(serial); });
}

void Simulator::Impl::step(uint64_t serial) {
  if (!running || running->serial != serial) return;
  if (get_faults().hang) {  // a stopped process computes nothing
    schedule(20, [this, serial]() { step(serial); });
    return;
  }
  Job &j = *running;
  while (j.pos < j.order.size() && j.cached.count(j.order[j.pos])) ++j.pos;
  if (j.pos >= j.order.size()) return finish_success();
  const std::string id = j.order[j.pos];
  const std::string cls = class_of(j, id);
  NodeState &s = state_of(j, id);
  s.value = 0;
  s.max = 1;
  send_progress_state(j);
  j.current_node = id;
  if (!j.client_id.empty()) {
    JW e;
    e.ob().k("node").s(id).k("display_node").s(id).k("prompt_id").s(j.id).oe();
    send_to(j.client_id, typed("executing", e.str()), false);
  }
  if (j.interrupt) return finish_interrupted(id, cls);
  Faults f = get_faults();
  if (f.execution_error_always || (f.execution_error_on_job > 0 && f.execution_error_on_job == j.job_index))
    return finish_error(id, cls, "RuntimeError", "comfy-sim: injected execution error (fault)\n");
  std::string etype, emsg;
  const int64_t compute_start = g_get_monotonic_time();
  if (!execute_node(j, id, cls, f, etype, emsg)) return finish_error(id, cls, etype, emsg);
  // The configured latency is the node's whole time: the work done here counts towards it.
  const uint32_t compute_ms = static_cast<uint32_t>((g_get_monotonic_time() - compute_start) / 1000);
  const uint32_t delay = node_delay_ > compute_ms ? node_delay_ - compute_ms : 0;
  j.executed.push_back(id);
  if (f.ws_drop_on_job == j.job_index && !j.dropped) {
    j.dropped = true;
    drop_all_ws();
  }
  schedule(delay, [this, serial, id]() { node_done(serial, id); });
}

// The running node's time is up: progress_state finished, its executed message, the next node.
void Simulator::Impl::node_done(uint64_t serial, const std::string &id) {
  if (!running || running->serial != serial) return;
  if (get_faults().hang) {
    schedule(20, [this, serial, id]() { node_done(serial, id); });
    return;
  }
  Job &j = *running;
  NodeState &st = state_of(j, id);
  st.value = 1;
  st.max = 1;
  st.finished = true;
  send_progress_state(j);
  for (auto &u : j.outputs_ui)
    if (u.first == id) {
      JW x;
      x.ob().k("node").s(id).k("display_node").s(id).k("output").raw(u.second).k("prompt_id").s(j.id).oe();
      send_to(j.client_id, typed("executed", x.str()), false);
    }
  ++j.pos;
  step(serial);
}

void Simulator::Impl::clean_cache(Job &j) {
  std::set<std::string> keep;
  for (auto &kv : j.sigs) keep.insert(kv.second);
  for (auto it = cache.begin(); it != cache.end();) {
    if (!keep.count(it->first)) it = cache.erase(it);
    else ++it;
  }
}

void Simulator::Impl::finish(bool success) {
  Job &j = *running;
  clean_cache(j);
  std::unique_ptr<Job> done = std::move(running);
  {
    std::lock_guard<std::mutex> l(mu);
    ++completed;
    if (success) ++succeeded;
    cv.notify_all();
  }
  send_status();
  if (!done->client_id.empty()) {
    JW e;
    e.ob().k("node").null().k("prompt_id").s(done->id).oe();
    send_to(done->client_id, typed("executing", e.str()), false);
  }
  log("job %s finished (%s)", done->id.c_str(), success ? "success" : "error");
  schedule_start_next();
}

void Simulator::Impl::finish_success() {
  Job &j = *running;
  send_progress_state(j);
  JW d;
  d.ob().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
  add_message(j, "execution_success", d.str(), false);
  write_history(j, true, "success");
  finish(true);
}

void Simulator::Impl::finish_error(const std::string &id, const std::string &cls, const std::string &etype, const std::string &emsg) {
  Job &j = *running;
  JsonObject *in = inputs_of(j, id);
  JW ci;
  ci.ob();
  if (in) {
    GList *members = json_object_get_members(in);
    for (GList *l = members; l; l = l->next) {
      const char *k = static_cast<const char *>(l->data);
      JsonNode *v = json_object_get_member(in, k);
      if (JSON_NODE_HOLDS_ARRAY(v)) continue;
      ci.k(k).ab().raw(node_to_json(v)).ae();
    }
    g_list_free(members);
  }
  ci.oe();
  JW d;
  d.ob().k("prompt_id").s(j.id).k("node_id").s(id).k("node_type").s(cls).k("executed").raw(executed_json(j))
      .k("exception_message").s(emsg).k("exception_type").s(etype).k("traceback").ab()
      .s("  File \"<comfyui>/execution.py\", line 518, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n")
      .s("  File \"<comfy-sim>\", line 1, in " + cls + "\n    raise " + etype + "\n")
      .ae().k("current_inputs").raw(ci.str()).k("current_outputs").raw(current_outputs_json(j)).k("timestamp").i(now_ms()).oe();
  add_message(j, "execution_error", d.str(), false);
  j.outputs_ui.clear();
  write_history(j, false, "error");
  finish(false);
}

void Simulator::Impl::finish_interrupted(const std::string &id, const std::string &cls) {
  Job &j = *running;
  JW d;
  d.ob().k("prompt_id").s(j.id).k("node_id").s(id).k("node_type").s(cls).k("executed").raw(executed_json(j))
      .k("timestamp").i(now_ms()).oe();
  add_message(j, "execution_interrupted", d.str(), true);
  write_history(j, false, "error");
  finish(false);
}

}  // namespace dw::sim
