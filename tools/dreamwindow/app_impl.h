// App::Impl, shared by the app's files: app.cpp (lifecycle), pipeline.cpp (build, bus, supervised
// restart, pause, video-sink check), status.cpp (status, metrics, history) and http.cpp (routes,
// control, auth, signalling websocket). Everything here runs on `ctx` (see app.h).
#pragma once

#include <gst/gst.h>
#include <libsoup/soup.h>

#include <condition_variable>
#include <cstdarg>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "app.h"
#include "comfy/backoff.h"
#include "sim/simulator.h"
#ifdef DW_HAVE_WEBRTC
#include "viewer.h"
#endif

GST_DEBUG_CATEGORY_EXTERN(dreamwindow_app_debug);

namespace dw::app {

class JsonWriter;

// The dreamwindow elements the app knows, in pipeline order.
extern const char *const kAllElements[4];

// One 1 Hz sample for the HUD plot (/api/history).
struct Sample {
  double t = 0;  // seconds since start
  double fill_s = -1, output_fps = 0, content_fps = -1, keyframe_fps = 0, interp_fps = 0;
  guint64 underruns = 0;
};

// A monotonically growing count sampled at 1 Hz, for rates over a window.
struct Counter {
  std::deque<std::pair<double, double>> points;
  double rate(double window = 5.0) const;
  void add(double t, double v);
};

// A number from a stats field of any numeric GType; false when absent or GST_CLOCK_TIME_NONE.
bool field_number(const GstStructure *s, const char *name, double *out);
// A string property of e; "" when e or the property is missing.
std::string get_string_prop(GstElement *e, const char *prop);
// The child sink autovideosink picked (ref'd), or null.
GstElement *auto_child(GstElement *auto_sink);

struct App::Impl {
  explicit Impl(Options o);
  ~Impl();

  Options opt;
  GMainContext *ctx = nullptr;
  GMainLoop *loop = nullptr;
  gint64 start_us = 0;
  int exit_code = 0;

  // ready
  mutable std::mutex ready_lock;
  std::condition_variable ready_cond;
  int ready = 0;  // 0 = starting, 1 = serving, -1 = failed
  std::string url;
  uint16_t port = 0;

  std::unique_ptr<dw::sim::Simulator> sim;
  std::string server_url;

  // pipeline (pipeline.cpp)
  GstElement *pipeline = nullptr;
  std::map<std::string, GstElement *> elements;  // factory -> element (dreamwindow elements only)
  GstElement *tee = nullptr;
  GstElement *auto_sink = nullptr;  // the autovideosink (--sink auto), not ref'd (the pipeline holds it)
  std::string video_sink;           // the factory autovideosink picked
  std::string description;
  guint bus_watch = 0;
  std::map<std::string, GstStructure *> last_message;  // message name -> copy
  std::map<std::string, guint64> message_count;
  std::map<std::string, std::string> health_error;  // factory -> error text
  std::map<std::string, std::pair<gint64, std::string>> health_warning;
  guint64 restarts = 0;
  guint restart_source = 0;
  dw::comfy::Backoff restart_backoff{2000, 30000, 0.0};
  guint32 restart_delay_ms = 0;  // of the pending restart
  gint64 last_restart_us = 0;
  std::string last_error;  // the error that caused the last restart
  bool fatal = false;      // a configuration error: exit non-zero
  bool paused = false;
  gulong pause_probe = 0;
  GstPad *pause_pad = nullptr;
  bool shutting_down = false;

  std::unique_ptr<Egress> egress;  // with --publish/--hls/--srt

  // sampling (status.cpp)
  guint sample_source = 0;
  std::deque<Sample> history;
  Counter output_counter, keyframe_counter, content_counter;

  // HTTP (http.cpp)
  SoupServer *server = nullptr;
#ifdef DW_HAVE_WEBRTC
  std::map<uint64_t, std::shared_ptr<Viewer>> viewers, detaching;
#endif
  uint64_t next_viewer = 1;
  guint64 viewers_total = 0, viewers_refused = 0;
  guint64 control_requests = 0, control_refused = 0, signalling_refused = 0;

  // app.cpp
  void log(const char *fmt, ...) G_GNUC_PRINTF(2, 3);
  void warn(const char *fmt, ...) G_GNUC_PRINTF(2, 3);
  double now_s() const { return (g_get_monotonic_time() - start_us) / 1e6; }
  guint attach_timeout(guint ms, GSourceFunc fn);
  void remove_source(guint &id);
  bool start(std::string *error);
  void begin_shutdown();
  void cleanup();

  // pipeline.cpp
  std::string sink_kind() const;
  bool wants_egress() const;
  bool attach_egress(std::string *error);
  void configure_source(GstElement *src, bool from_description);
  void configure_vaeinterp(GstElement *e);
  GstElement *make_encoder(std::vector<GstElement *> &chain);
  bool build_pipeline(std::string *error);
  bool build_from_description(std::string *error);
  bool check_video_sink(std::string *error);
  bool start_pipeline(std::string *error);
  void set_paused(bool pause);
  static gboolean on_bus(GstBus *, GstMessage *m, gpointer user);
  std::string factory_of(GstObject *obj) const;
  void handle_message(GstMessage *m);
  void on_error(GstMessage *m);
  void schedule_restart();
  void restart_now();
  GstElement *element_of(const char *factory) const;

  // status.cpp
  struct Snapshot {
    std::map<std::string, GstStructure *> stats;  // factory -> stats (owned)
    ~Snapshot();
    const GstStructure *get(const char *f) const;
  };
  void snapshot(Snapshot &snap) const;
  const GstStructure *msg(const char *name) const;
  void sample();
  std::string health(const std::string &factory, const Snapshot &snap) const;
  std::string state_name() const;
  std::string status_json();
  std::string history_json() const;
  std::string metrics_text();
  std::string sim_prompts_json() const;
  void write_sink_status(JsonWriter &w);

  // http.cpp
  bool listen(std::string *error);
  void handle_request(SoupServerMessage *msg, const std::string &path, GHashTable *query);
  void handle_control(SoupServerMessage *msg);
  void serve_resource(SoupServerMessage *msg, const std::string &name, const char *type);
  size_t viewer_count() const;
  void close_all_viewers(unsigned short code, const std::string &reason);
#ifdef DW_HAVE_WEBRTC
  void drop_viewer(uint64_t id, int code);
#endif
};

}  // namespace dw::app
