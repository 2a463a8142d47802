#include "viewer.h"


#include <agent.h>
#include <gst/sdp/sdp.h>
#include <gst/video/video.h>
#include <gst/webrtc/webrtc.h>
#include <interfaces.h>
#include "json_writer.h"

GST_DEBUG_CATEGORY_EXTERN(dreamwindow_app_debug);
#define GST_CAT_DEFAULT dreamwindow_app_debug

namespace dw::app {

namespace {

using WeakViewer = std::weak_ptr<Viewer>;

WeakViewer *new_weak(const std::shared_ptr<Viewer> &v) { return new WeakViewer(v); }
void free_weak(gpointer data, GClosure *) { delete static_cast<WeakViewer *>(data); }
void free_weak_notify(gpointer data) { delete static_cast<WeakViewer *>(data); }

std::string enum_nick(GObject *obj, const char *prop) {
  GParamSpec *ps = obj ? g_object_class_find_property(G_OBJECT_GET_CLASS(obj), prop) : nullptr;
  if (!ps || !G_TYPE_IS_ENUM(ps->value_type)) return "unknown";
  GValue v = G_VALUE_INIT;
  g_value_init(&v, ps->value_type);
  g_object_get_property(obj, prop, &v);
  std::string nick = "unknown";
  GEnumClass *klass = G_ENUM_CLASS(g_type_class_ref(ps->value_type));
  GEnumValue *ev = g_enum_get_value(klass, g_value_get_enum(&v));
  if (ev) nick = ev->value_nick;
  g_type_class_unref(klass);
  g_value_unset(&v);
  return nick;
}

/* Loopback-only machines gather no candidates unless the loopback address is added explicitly, and
 * once any address is added libnice uses only those: add every local address, loopback included. */
void add_local_addresses(GstElement *webrtc) {
  GObject *ice = nullptr;
  g_object_get(webrtc, "ice-agent", &ice, nullptr);
  if (!ice) return;
  NiceAgent *agent = nullptr;
  if (g_object_class_find_property(G_OBJECT_GET_CLASS(ice), "agent")) g_object_get(ice, "agent", &agent, nullptr);
  if (agent) {
    GList *ips = nice_interfaces_get_local_ips(TRUE);
    for (GList *l = ips; l; l = l->next) {
      NiceAddress addr;
      if (nice_address_set_from_string(&addr, static_cast<const char *>(l->data)))
        nice_agent_add_local_address(agent, &addr);
    }
    g_list_free_full(ips, g_free);
    g_object_unref(agent);
  } else {
    GST_WARNING("webrtcbin ice-agent has no NiceAgent: loopback-only machines will gather no candidates");
  }
  g_object_unref(ice);
}

}  // namespace

struct ViewerCallbacks {
  static void on_negotiation_needed(GstElement *, gpointer user) {
    if (auto v = static_cast<WeakViewer *>(user)->lock()) v->on_negotiation_needed();
  }

  static void on_ice_candidate(GstElement *, guint mline, gchar *candidate, gpointer user) {
    auto v = static_cast<WeakViewer *>(user)->lock();
    if (!v) return;
    JsonWriter w;
    v->send(w.begin_object()
                .set("type", "ice")
                .set("candidate", candidate ? candidate : "")
                .set("sdpMLineIndex", static_cast<int64_t>(mline))
                .end_object()
                .to_string());
  }

  static void on_offer_created(GstPromise *promise, gpointer user) {
    auto v = static_cast<WeakViewer *>(user)->lock();
    if (!v || gst_promise_wait(promise) != GST_PROMISE_RESULT_REPLIED) {
      gst_promise_unref(promise);
      return;
    }
    const GstStructure *reply = gst_promise_get_reply(promise);
    GstWebRTCSessionDescription *offer = nullptr;
    if (reply) gst_structure_get(reply, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, nullptr);
    gst_promise_unref(promise);
    if (!offer) {
      GST_WARNING("viewer %" G_GUINT64_FORMAT ": create-offer gave no offer", v->id());
      return;
    }
    gchar *sdp = gst_sdp_message_as_text(offer->sdp);
    JsonWriter w;
    const std::string text = w.begin_object().set("type", "offer").set("sdp", sdp).end_object().to_string();
    g_free(sdp);
    // Queue the offer first so that every candidate follows it.
    v->send(text);
    g_signal_emit_by_name(v->webrtc_, "set-local-description", offer, nullptr);
    gst_webrtc_session_description_free(offer);
  }

  static GstPadProbeReturn on_idle(GstPad *pad, GstPadProbeInfo *, gpointer user) {
    auto v = static_cast<WeakViewer *>(user)->lock();
    if (!v) return GST_PAD_PROBE_REMOVE;
    GstPad *peer = gst_pad_get_peer(pad);
    if (peer) {
      gst_pad_unlink(pad, peer);
      gst_object_unref(peer);
    }
    // Finish on the app's context, never inside this probe (it may run on the pad's thread).
    GSource *s = g_idle_source_new();
    g_source_set_callback(
        s,
        [](gpointer d) -> gboolean {
          if (auto vv = static_cast<WeakViewer *>(d)->lock()) vv->finish_detach();
          return G_SOURCE_REMOVE;
        },
        new_weak(v), free_weak_notify);
    g_source_attach(s, v->context_);
    g_source_unref(s);
    return GST_PAD_PROBE_REMOVE;
  }
};

Viewer::Viewer(uint64_t id, SoupWebsocketConnection *ws, GMainContext *context)
    : id_(id), ws_(SOUP_WEBSOCKET_CONNECTION(g_object_ref(ws))), context_(g_main_context_ref(context)),
      connected_us_(g_get_monotonic_time()) {}

Viewer::~Viewer() {
  if (ws_) g_object_unref(ws_);
  if (tee_pad_) gst_object_unref(tee_pad_);
  for (GstElement *e : {queue_, pay_, capsfilter_, webrtc_})
    if (e) gst_object_unref(e);
  if (tee_) gst_object_unref(tee_);
  if (pipeline_) gst_object_unref(pipeline_);
  g_main_context_unref(context_);
}

void Viewer::send(std::string text) {
  {
    std::lock_guard<std::mutex> l(out_lock_);
    out_.push_back(std::move(text));
  }
  GSource *s = g_idle_source_new();
  g_source_set_priority(s, G_PRIORITY_DEFAULT);
  g_source_set_callback(
      s,
      [](gpointer d) -> gboolean {
        if (auto v = static_cast<WeakViewer *>(d)->lock()) v->flush();
        return G_SOURCE_REMOVE;
      },
      new_weak(shared_from_this()), free_weak_notify);
  g_source_attach(s, context_);
  g_source_unref(s);
}

void Viewer::flush() {
  std::deque<std::string> pending;
  {
    std::lock_guard<std::mutex> l(out_lock_);
    pending.swap(out_);
  }
  if (!ws_ || soup_websocket_connection_get_state(ws_) != SOUP_WEBSOCKET_STATE_OPEN) return;
  for (const std::string &t : pending) soup_websocket_connection_send_text(ws_, t.c_str());
}

void Viewer::close(unsigned short code, const std::string &reason) {
  if (ws_ && soup_websocket_connection_get_state(ws_) == SOUP_WEBSOCKET_STATE_OPEN) {
    flush();
    soup_websocket_connection_close(ws_, code, reason.c_str());
  }
}

bool Viewer::attach(GstElement *pipeline, GstElement *tee, const std::string &codec, std::string *error) {
  auto fail = [&](const std::string &why) {
    if (error) *error = why;
    return false;
  };
  pipeline_ = GST_ELEMENT(gst_object_ref(pipeline));
  tee_ = GST_ELEMENT(gst_object_ref(tee));
  const bool h264 = codec == "h264";
  queue_ = gst_element_factory_make("queue", nullptr);
  pay_ = gst_element_factory_make(h264 ? "rtph264pay" : "rtpvp8pay", nullptr);
  capsfilter_ = gst_element_factory_make("capsfilter", nullptr);
  webrtc_ = gst_element_factory_make("webrtcbin", nullptr);
  if (!queue_ || !pay_ || !capsfilter_ || !webrtc_) {
    for (GstElement **e : {&queue_, &pay_, &capsfilter_, &webrtc_})
      if (*e) gst_clear_object(e);
    return fail(std::string("missing GStreamer element (queue, ") + (h264 ? "rtph264pay" : "rtpvp8pay") +
                ", capsfilter or webrtcbin)");
  }
  for (GstElement *e : {queue_, pay_, capsfilter_, webrtc_}) gst_object_ref_sink(e);
  gst_util_set_object_arg(G_OBJECT(queue_), "leaky", "downstream");
  g_object_set(queue_, "max-size-buffers", 0u, "max-size-bytes", 0u, "max-size-time", static_cast<guint64>(GST_SECOND),
               nullptr);
  GstCaps *caps;
  if (h264) {
    g_object_set(pay_, "pt", 102u, "config-interval", -1, nullptr);
    gst_util_set_object_arg(G_OBJECT(pay_), "aggregate-mode", "zero-latency");
    caps = gst_caps_from_string(
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f");
  } else {
    g_object_set(pay_, "pt", 96u, nullptr);
    caps = gst_caps_from_string("application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000");
  }
  g_object_set(capsfilter_, "caps", caps, nullptr);
  gst_caps_unref(caps);
  gst_util_set_object_arg(G_OBJECT(webrtc_), "bundle-policy", "max-bundle");
  add_local_addresses(webrtc_);

  gst_bin_add_many(GST_BIN(pipeline_), queue_, pay_, capsfilter_, webrtc_, nullptr);
  bool ok = gst_element_link_many(queue_, pay_, capsfilter_, nullptr);
  GstPad *src = gst_element_get_static_pad(capsfilter_, "src");
  GstPad *sink = ok ? gst_element_request_pad_simple(webrtc_, "sink_%u") : nullptr;
  ok = ok && sink && gst_pad_link(src, sink) == GST_PAD_LINK_OK;
  gst_object_unref(src);
  if (sink) gst_object_unref(sink);
  if (ok) {
    GstWebRTCRTPTransceiver *trans = nullptr;
    g_signal_emit_by_name(webrtc_, "get-transceiver", 0, &trans);
    if (trans) {
      g_object_set(trans, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDONLY, nullptr);
      gst_object_unref(trans);
    }
    auto self = shared_from_this();
    g_signal_connect_data(webrtc_, "on-negotiation-needed", G_CALLBACK(ViewerCallbacks::on_negotiation_needed),
                          new_weak(self), free_weak, GConnectFlags(0));
    g_signal_connect_data(webrtc_, "on-ice-candidate", G_CALLBACK(ViewerCallbacks::on_ice_candidate),
                          new_weak(self), free_weak, GConnectFlags(0));
    for (GstElement *e : {queue_, pay_, capsfilter_, webrtc_}) ok = ok && gst_element_sync_state_with_parent(e);
  }
  // Only now link the tee: linking before the branch is PLAYING stalled the shared source.
  if (ok) {
    tee_pad_ = gst_element_request_pad_simple(tee_, "src_%u");
    GstPad *qsink = gst_element_get_static_pad(queue_, "sink");
    ok = tee_pad_ && gst_pad_link(tee_pad_, qsink) == GST_PAD_LINK_OK;
    gst_object_unref(qsink);
  }
  if (!ok) {
    if (tee_pad_) {
      gst_element_release_request_pad(tee_, tee_pad_);
      gst_clear_object(&tee_pad_);
    }
    for (GstElement *e : {queue_, pay_, capsfilter_, webrtc_}) {
      gst_element_set_state(e, GST_STATE_NULL);
      gst_bin_remove(GST_BIN(pipeline_), e);
    }
    return fail("could not build the viewer's WebRTC branch");
  }
  // A joining viewer needs a keyframe now, not at the next keyframe-max-dist.
  gst_pad_send_event(tee_pad_, gst_video_event_new_upstream_force_key_unit(GST_CLOCK_TIME_NONE, TRUE, 0));
  GST_INFO("viewer %" G_GUINT64_FORMAT " attached", id_);
  return true;
}

void Viewer::on_negotiation_needed() {
  GstPromise *promise = gst_promise_new_with_change_func(ViewerCallbacks::on_offer_created,
                                                         new_weak(shared_from_this()), free_weak_notify);
  g_signal_emit_by_name(webrtc_, "create-offer", nullptr, promise);
}

void Viewer::on_signal(const SignalMessage &m) {
  if (!webrtc_) return;
  if (m.type == SignalMessage::Type::Answer) {
    GstSDPMessage *sdp = nullptr;
    if (gst_sdp_message_new_from_text(m.sdp.c_str(), &sdp) == GST_SDP_OK) {
      GstWebRTCSessionDescription *answer = gst_webrtc_session_description_new(GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
      g_signal_emit_by_name(webrtc_, "set-remote-description", answer, nullptr);
      gst_webrtc_session_description_free(answer);
    } else {
      if (sdp) gst_sdp_message_free(sdp);
      GST_WARNING("viewer %" G_GUINT64_FORMAT ": unparsable SDP answer", id_);
    }
  } else if (!m.candidate.empty()) {
    g_signal_emit_by_name(webrtc_, "add-ice-candidate", m.mline, m.candidate.c_str());
  }
}

void Viewer::detach(std::function<void()> done) {
  if (detaching_) return;
  detaching_ = true;
  detach_done_ = std::move(done);
  if (!tee_pad_) {
    finish_detach();
    return;
  }
  gst_pad_add_probe(tee_pad_, GST_PAD_PROBE_TYPE_IDLE, ViewerCallbacks::on_idle, new_weak(shared_from_this()),
                    free_weak_notify);
}

void Viewer::finish_detach() {
  auto keep = shared_from_this();
  if (tee_pad_) {
    GstPad *peer = gst_pad_get_peer(tee_pad_);
    if (peer) {  // the idle probe did not run (pad never linked): unlink here
      gst_pad_unlink(tee_pad_, peer);
      gst_object_unref(peer);
    }
    gst_element_release_request_pad(tee_, tee_pad_);
    gst_clear_object(&tee_pad_);
  }
  for (GstElement *e : {webrtc_, capsfilter_, pay_, queue_}) {
    if (!e) continue;
    gst_element_set_state(e, GST_STATE_NULL);
    if (GST_OBJECT_PARENT(e) == GST_OBJECT(pipeline_)) gst_bin_remove(GST_BIN(pipeline_), e);
  }
  GST_INFO("viewer %" G_GUINT64_FORMAT " detached", id_);
  if (detach_done_) {
    auto done = std::move(detach_done_);
    detach_done_ = nullptr;
    done();
  }
}

std::string Viewer::ice_state() const { return enum_nick(G_OBJECT(webrtc_), "ice-connection-state"); }
std::string Viewer::connection_state() const { return enum_nick(G_OBJECT(webrtc_), "connection-state"); }

}  // namespace dw::app
