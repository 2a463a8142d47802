// Egress against real servers on loopback: nginx with Debian's RTMP module (started here on a free
// port, killed and restarted mid-stream), an HLS directory played back through hlsdemux, and SRT to a
// listening srtsrc. The main pipeline is the app's encode tail (H.264 tee); it must never see an error.
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <functional>
#include <string>

#include "egress.h"

namespace {

const char *kNginxModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

uint16_t free_port() {
  GSocketListener *l = g_socket_listener_new();
  guint16 port = g_socket_listener_add_any_inet_port(l, nullptr, nullptr);
  g_socket_listener_close(l);
  g_object_unref(l);
  return port;
}

std::string tmpdir() {
  gchar *d = g_dir_make_tmp("dw-egress-XXXXXX", nullptr);
  std::string s = d;
  g_free(d);
  return s;
}

// nginx-rtmp on 127.0.0.1:port, one process in the foreground (no daemon, no workers to reap).
struct Nginx {
  std::string dir;
  uint16_t port;
  GPid pid = 0;
  Nginx(std::string d, uint16_t p) : dir(std::move(d)), port(p) {
    std::string conf = "load_module " + std::string(kNginxModule) +
                       ";\ndaemon off;\nmaster_process off;\nerror_log " + dir +
                       "/error.log info;\npid " + dir + "/nginx.pid;\nevents { worker_connections 64; }\n"
                       "rtmp { server { listen 127.0.0.1:" + std::to_string(port) +
                       "; application live { live on; } } }\n";
    g_file_set_contents((dir + "/nginx.conf").c_str(), conf.c_str(), -1, nullptr);
  }
  bool start() {
    std::string conf = dir + "/nginx.conf", err = dir + "/error.log";
    const gchar *argv[] = {"nginx", "-p", dir.c_str(), "-c", conf.c_str(), "-e", err.c_str(), nullptr};
    GError *e = nullptr;
    if (!g_spawn_async(nullptr, const_cast<gchar **>(argv), nullptr,
                       GSpawnFlags(G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD), nullptr, nullptr, &pid, &e)) {
      g_clear_error(&e);
      return false;
    }
    for (int i = 0; i < 100; ++i) {  // listening within 5 s
      GSocketClient *c = g_socket_client_new();
      GSocketConnection *conn = g_socket_client_connect_to_host(c, "127.0.0.1", port, nullptr, nullptr);
      g_object_unref(c);
      if (conn) {
        g_object_unref(conn);
        return true;
      }
      g_usleep(50000);
    }
    return false;
  }
  void kill_now() {
    if (!pid) return;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    g_spawn_close_pid(pid);
    pid = 0;
  }
  ~Nginx() { kill_now(); }
};

// The app's encode tail: live test video -> H.264 (as the app encodes it) -> tee.
struct MainPipeline {
  GstElement *pipeline = nullptr, *tee = nullptr;
  MainPipeline() {
    const char *enc = gst_element_factory_find("openh264enc") ? "openh264enc gop-size=25 complexity=low"
                                                              : "x264enc tune=zerolatency key-int-max=25";
    std::string desc = std::string("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 ! ") +
                       enc + " ! video/x-h264,stream-format=byte-stream ! h264parse ! "
                       "tee name=webrtctee allow-not-linked=true ! queue leaky=downstream ! fakesink sync=false async=false";
    pipeline = gst_parse_launch(desc.c_str(), nullptr);
    tee = gst_bin_get_by_name(GST_BIN(pipeline), "webrtctee");
  }
  void play() { gst_element_set_state(pipeline, GST_STATE_PLAYING); }
  // Any ERROR posted on the main bus so far (it must stay empty whatever happens to the outputs).
  std::string errors() {
    std::string out;
    GstBus *bus = gst_element_get_bus(pipeline);
    while (GstMessage *m = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
      GError *e = nullptr;
      gst_message_parse_error(m, &e, nullptr);
      out += e ? e->message : "error";
      g_clear_error(&e);
      gst_message_unref(m);
    }
    gst_object_unref(bus);
    return out;
  }
  ~MainPipeline() {
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(tee);
    gst_object_unref(pipeline);
  }
};

// Runs a playback pipeline until `want` decoded frames reached the fakesink named "out" or timeout.
unsigned pull_frames(const std::string &desc, unsigned want, unsigned timeout_ms) {
  GError *err = nullptr;
  GstElement *p = gst_parse_launch(desc.c_str(), &err);
  if (!p) {
    ADD_FAILURE() << "cannot build " << desc << ": " << (err ? err->message : "?");
    g_clear_error(&err);
    return 0;
  }
  g_clear_error(&err);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(p), "out");
  static std::atomic<unsigned> counter;
  counter = 0;
  GstPad *pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER,
                    [](GstPad *, GstPadProbeInfo *, gpointer) {
                      counter++;
                      return GST_PAD_PROBE_OK;
                    },
                    nullptr, nullptr);
  gst_object_unref(pad);
  gst_element_set_state(p, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(p);
  gint64 end = g_get_monotonic_time() + gint64(timeout_ms) * 1000;
  while (counter < want && g_get_monotonic_time() < end) {
    GstMessage *m = gst_bus_timed_pop_filtered(bus, 50 * GST_MSECOND, GstMessageType(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
    if (m) {  // e.g. nothing published yet: try again
      gst_message_unref(m);
      gst_element_set_state(p, GST_STATE_NULL);
      g_usleep(200000);
      gst_element_set_state(p, GST_STATE_PLAYING);
    }
  }
  unsigned got = counter;
  gst_object_unref(bus);
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(p);
  return got;
}

const dw::app::Egress::OutputStatus *find(const std::vector<dw::app::Egress::OutputStatus> &v, const char *kind) {
  for (const auto &s : v)
    if (s.kind == kind) return &s;
  return nullptr;
}

bool wait_for(const std::function<bool()> &cond, unsigned timeout_ms) {
  gint64 end = g_get_monotonic_time() + gint64(timeout_ms) * 1000;
  while (g_get_monotonic_time() < end) {
    if (cond()) return true;
    g_usleep(50000);
  }
  return cond();
}

bool have(const char *name) {
  GstElementFactory *f = gst_element_factory_find(name);
  if (f) gst_object_unref(f);
  return f != nullptr;
}

}  // namespace

TEST(Egress, ValidatesConfiguration) {
  dw::app::EgressConfig c;
  c.rtmp_urls = {"http://example/live/key"};
  EXPECT_NE(dw::app::validate_egress(c).find("not an rtmp://"), std::string::npos);
  c.rtmp_urls.clear();
  c.srt_uris = {"udp://127.0.0.1:1"};
  EXPECT_NE(dw::app::validate_egress(c).find("not an srt://"), std::string::npos);
  c.srt_uris.clear();
  c.hls_dir = "/proc/dw-no-such-dir/x";
  EXPECT_NE(dw::app::validate_egress(c).find("--hls"), std::string::npos);
  EXPECT_EQ(dw::app::mask_stream_key("rtmp://a.example/live/sekret"), "rtmp://a.example/live/****");
  EXPECT_EQ(dw::app::mask_stream_key("rtmp://a.example/live"), "rtmp://a.example/live");
}

TEST(Egress, RtmpSurvivesIngestRestart) {
  if (!g_file_test(kNginxModule, G_FILE_TEST_EXISTS) || !g_find_program_in_path("nginx"))
    GTEST_SKIP() << "nginx with libnginx-mod-rtmp is not installed";
  if (!have("rtmp2sink") || !have("rtmp2src") || !have("avdec_h264")) GTEST_SKIP() << "rtmp2/avdec_h264 missing";
  std::string dir = tmpdir();
  uint16_t port = free_port();
  Nginx nginx(dir, port);
  ASSERT_TRUE(nginx.start()) << "nginx did not start; see " << dir << "/error.log";
  std::string url = "rtmp://127.0.0.1:" + std::to_string(port) + "/live/dreamwindow";
  MainPipeline main;
  dw::app::EgressConfig cfg;
  cfg.rtmp_urls = {url};
  cfg.backoff_initial_ms = 200;
  cfg.backoff_max_ms = 1000;
  dw::app::Egress egress(cfg);
  std::string error;
  ASSERT_TRUE(egress.attach(main.pipeline, main.tee, &error)) << error;
  main.play();
  const std::string pull = "rtmp2src location=" + url + " ! flvdemux ! h264parse ! avdec_h264 ! fakesink name=out sync=false";
  EXPECT_GE(pull_frames(pull, 50, 15000), 50u) << "frames pulled back from nginx-rtmp";

  nginx.kill_now();  // the ingest dies mid-stream
  EXPECT_TRUE(wait_for([&] { auto s = egress.status(); return find(s, "rtmp")->failures >= 1; }, 10000))
      << "the output noticed the dead ingest";
  EXPECT_EQ(main.errors(), "") << "the main pipeline must not see egress errors";
  GstState state;
  gst_element_get_state(main.pipeline, &state, nullptr, GST_SECOND);
  EXPECT_EQ(state, GST_STATE_PLAYING);

  ASSERT_TRUE(nginx.start());
  EXPECT_GE(pull_frames(pull, 50, 20000), 50u) << "egress resumed after the ingest came back";
  auto st = egress.status();
  EXPECT_GE(find(st, "rtmp")->starts, 2u);
  EXPECT_EQ(main.errors(), "");
  egress.detach();
  g_autofree gchar *cmd = g_strdup_printf("rm -rf '%s'", dir.c_str());
  (void)!system(cmd);
}

TEST(Egress, HlsPlaylistAndSegmentsDecode) {
  if (!have("hlssink2") || !have("hlsdemux") || !have("avdec_h264")) GTEST_SKIP() << "hlssink2/hlsdemux/avdec_h264 missing";
  std::string dir = tmpdir();
  MainPipeline main;
  dw::app::EgressConfig cfg;
  cfg.hls_dir = dir + "/hls";
  cfg.hls_target_duration_s = 1;
  dw::app::Egress egress(cfg);
  std::string error;
  ASSERT_TRUE(egress.attach(main.pipeline, main.tee, &error)) << error;
  main.play();
  std::string playlist = cfg.hls_dir + "/playlist.m3u8";
  ASSERT_TRUE(wait_for([&] {
    return g_file_test(playlist.c_str(), G_FILE_TEST_EXISTS) &&
           g_file_test((cfg.hls_dir + "/segment00002.ts").c_str(), G_FILE_TEST_EXISTS);
  }, 20000)) << "playlist and three segments written";
  EXPECT_TRUE(g_file_test((cfg.hls_dir + "/index.html").c_str(), G_FILE_TEST_EXISTS));
  gchar *text = nullptr;
  ASSERT_TRUE(g_file_get_contents(playlist.c_str(), &text, nullptr, nullptr));
  EXPECT_NE(std::string(text).find("#EXTM3U"), std::string::npos);
  EXPECT_NE(std::string(text).find("segment0000"), std::string::npos);
  g_free(text);
  g_autofree gchar *uri = g_filename_to_uri(playlist.c_str(), nullptr, nullptr);
  std::string pull = std::string("uridecodebin uri=") + uri + " ! videoconvert ! fakesink name=out sync=false";
  EXPECT_GE(pull_frames(pull, 25, 20000), 25u) << "HLS decoded through hlsdemux";
  EXPECT_EQ(main.errors(), "");
  egress.detach();
  g_autofree gchar *cmd = g_strdup_printf("rm -rf '%s'", dir.c_str());
  (void)!system(cmd);
}

TEST(Egress, SrtToListener) {
  if (!have("srtsink") || !have("srtsrc") || !have("tsdemux") || !have("avdec_h264"))
    GTEST_SKIP() << "srt/tsdemux/avdec_h264 missing";
  uint16_t port = free_port();
  MainPipeline main;
  dw::app::EgressConfig cfg;
  cfg.srt_uris = {"srt://127.0.0.1:" + std::to_string(port)};
  cfg.backoff_initial_ms = 200;
  cfg.backoff_max_ms = 1000;
  dw::app::Egress egress(cfg);
  std::string error;
  ASSERT_TRUE(egress.attach(main.pipeline, main.tee, &error)) << error;
  main.play();
  std::string pull = "srtsrc uri=srt://127.0.0.1:" + std::to_string(port) +
                     "?mode=listener ! tsdemux ! h264parse ! avdec_h264 ! fakesink name=out sync=false";
  EXPECT_GE(pull_frames(pull, 25, 20000), 25u) << "frames received over SRT";
  EXPECT_EQ(main.errors(), "");
  egress.detach();
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
