// flightbuffer with GstHarness and a test clock: the prototype's failure (pre-buffer never reached),
// bursty input paced on an exact grid, adaptive rate vs. fixed rate with slow input, backpressure and
// flush, drop-inbetween, batches, EOS, queries, downstream framerate, state cycling, distinct-frame
// counting (issue 10) and the return to the target fill after an outage (issue 13).
#include <gst/check/gstharness.h>
#include <gst/check/gsttestclock.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dwmeta.h"

namespace {

constexpr guint64 MS = GST_MSECOND;

// A 4x4 RGBA frame carrying `index` in its first four bytes.
GstBuffer *make_frame(guint32 index, GstClockTime pts, GstClockTime duration, int kind = -1) {
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, 64, nullptr);
  gst_buffer_memset(buf, 0, 0, 64);
  gst_buffer_fill(buf, 0, &index, sizeof(index));
  GST_BUFFER_PTS(buf) = pts;
  GST_BUFFER_DURATION(buf) = duration;
  // The plugin and this test each link dwmeta; the meta is registered once, by name, and shared.
  if (kind >= 0) dw_buffer_add_frame_meta(buf, static_cast<DwFrameKind>(kind), index, 0.0);
  return buf;
}

guint32 marker(GstBuffer *buf) {
  guint32 v = 0;
  gst_buffer_extract(buf, 0, &v, sizeof(v));
  return v;
}

GstHarness *make_harness(const char *props) {
  std::string desc = std::string("flightbuffer ") + props;
  GError *err = nullptr;
  GstElement *e = gst_parse_launch(desc.c_str(), &err);
  EXPECT_TRUE(e != nullptr) << (err ? err->message : "");
  if (err) g_error_free(err);
  GstHarness *h = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGBA,width=4,height=4,framerate=0/1");
  gst_harness_play(h);
  return h;
}

GstStructure *stats_of(GstHarness *h) {
  GstStructure *st = nullptr;
  g_object_get(h->element, "stats", &st, nullptr);
  return st;
}

guint64 stat_u64(GstHarness *h, const char *field) {
  GstStructure *st = stats_of(h);
  guint64 v = 0;
  gst_structure_get_uint64(st, field, &v);
  gst_structure_free(st);
  return v;
}

std::string stat_state(GstHarness *h) {
  GstStructure *st = stats_of(h);
  std::string s = gst_structure_get_string(st, "state");
  gst_structure_free(st);
  return s;
}

GstClockTime clock_now(GstHarness *h) {
  GstTestClock *c = gst_harness_get_testclock(h);
  GstClockTime t = gst_clock_get_time(GST_CLOCK(c));
  gst_object_unref(c);
  return t;
}

// Polls (bounded) until the element reports `state`.
bool wait_state(GstHarness *h, const char *state) {
  for (int i = 0; i < 2000; ++i) {
    if (stat_state(h) == state) return true;
    g_usleep(5000);
  }
  return false;
}

// Cranks one clock wait and waits until the element has registered its next one (so its iteration
// after the crank is complete).
void crank_and_settle(GstHarness *h) {
  ASSERT_TRUE(gst_harness_crank_single_clock_wait(h));
  GstTestClock *c = gst_harness_get_testclock(h);
  gst_test_clock_wait_for_next_pending_id(c, nullptr);
  gst_object_unref(c);
}

// Pops element messages named dreamwindow-buffer until one has event == `event`.
GstStructure *wait_buffer_message(GstBus *bus, const char *event, GstClockTime timeout = 10 * GST_SECOND) {
  for (;;) {
    GstMessage *m = gst_bus_timed_pop_filtered(bus, timeout, GST_MESSAGE_ELEMENT);
    if (!m) return nullptr;
    const GstStructure *st = gst_message_get_structure(m);
    if (gst_structure_has_name(st, "dreamwindow-buffer") && g_strcmp0(gst_structure_get_string(st, "event"), event) == 0) {
      GstStructure *copy = gst_structure_copy(st);
      gst_message_unref(m);
      return copy;
    }
    gst_message_unref(m);
  }
}

}  // namespace

/* ------------------------------------------------------------------------------------------------ */
/* The prototype's failure: prebuffer 10 s, upstream delivers 6 s then stalls.                      */

namespace {
struct StallCtx {
  GstHarness *h = nullptr;
  GMainLoop *loop = nullptr;
  std::atomic<guint> ticks{0};          // main-loop timeout fires
  std::atomic<bool> warning_seen{false};
  std::atomic<bool> started_seen{false};
  std::string started_reason;           // main thread only until done
  std::atomic<bool> done{false};
  std::vector<std::string> failures;    // worker thread only until done
  guint32 first_out = 0xffffffff;
  GstClockTime start_time = GST_CLOCK_TIME_NONE;
};

// Waits (bounded) until the main loop's timeout has fired `n` more times: the application's loop is
// alive while the element is stalled.
bool main_loop_alive(StallCtx *c, guint n) {
  guint start = c->ticks.load();
  for (int i = 0; i < 2000 && c->ticks.load() < start + n; ++i) g_usleep(5000);
  return c->ticks.load() >= start + n;
}

gpointer stall_worker(gpointer data) {
  auto *c = static_cast<StallCtx *>(data);
  GstHarness *h = c->h;
  for (guint32 i = 0; i < 60; ++i) gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS));
  if (!main_loop_alive(c, 3)) c->failures.push_back("main loop stopped while buffering");
  if (gst_harness_buffers_received(h) != 0) c->failures.push_back("output before pre-buffer or timeout");
  // Nothing more arrives: crank the element's waits until output has started.
  for (int i = 0; i < 10 && stat_state(h) == "prebuffering"; ++i) crank_and_settle(h);
  c->start_time = clock_now(h);
  if (stat_state(h) != "playing") c->failures.push_back("still " + stat_state(h) + " after the timeout");
  for (int i = 0; i < 2000 && !(c->warning_seen && c->started_seen); ++i) g_usleep(5000);
  if (!c->warning_seen) c->failures.push_back("no warning");
  if (!c->started_seen) c->failures.push_back("no started message");
  // Output runs from what there is.
  for (int i = 0; i < 5; ++i) {
    crank_and_settle(h);
    GstBuffer *b = gst_harness_pull(h);
    if (!b) {
      c->failures.push_back("no output");
      break;
    }
    if (i == 0) c->first_out = marker(b);
    gst_buffer_unref(b);
  }
  if (!main_loop_alive(c, 3)) c->failures.push_back("main loop stopped while playing");
  c->done = true;
  g_main_loop_quit(c->loop);
  return nullptr;
}

gboolean stall_bus(GstBus *, GstMessage *m, gpointer data) {
  auto *c = static_cast<StallCtx *>(data);
  if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING) c->warning_seen = true;
  if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ELEMENT) {
    const GstStructure *st = gst_message_get_structure(m);
    if (gst_structure_has_name(st, "dreamwindow-buffer") &&
        g_strcmp0(gst_structure_get_string(st, "event"), "started") == 0) {
      c->started_reason = gst_structure_get_string(st, "reason");
      c->started_seen = true;
    }
  }
  return G_SOURCE_CONTINUE;
}
}  // namespace

TEST(FlightBuffer, PrototypeFailureStartsAfterTimeoutWithWarning) {
  StallCtx c;
  c.h = make_harness("prebuffer-time=10000000000 prebuffer-timeout=2000000000 max-size-time=20000000000 "
                     "output-fps=10/1 adaptive=false stats-interval=500000000");
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(c.h->element, bus);
  c.loop = g_main_loop_new(nullptr, FALSE);
  guint watch = gst_bus_add_watch(bus, stall_bus, &c);
  guint timeout = g_timeout_add(5, [](gpointer d) -> gboolean {
    static_cast<StallCtx *>(d)->ticks++;
    return G_SOURCE_CONTINUE;
  }, &c);
  GThread *worker = g_thread_new("stall-worker", stall_worker, &c);
  g_main_loop_run(c.loop);
  g_thread_join(worker);
  g_source_remove(timeout);
  g_source_remove(watch);

  for (const std::string &f : c.failures) ADD_FAILURE() << f;
  EXPECT_TRUE(c.done);
  EXPECT_EQ(c.started_reason, "timeout");
  EXPECT_EQ(c.start_time, 2 * GST_SECOND);  // last data at 0 + prebuffer-timeout
  EXPECT_EQ(c.first_out, 0u);
  EXPECT_EQ(stat_u64(c.h, "prebuffer-incomplete"), 1u);
  g_main_loop_unref(c.loop);
  gst_element_set_bus(c.h->element, nullptr);
  gst_object_unref(bus);
  gst_harness_teardown(c.h);
}

/* ------------------------------------------------------------------------------------------------ */

TEST(FlightBuffer, BurstyInputIsPushedOnAnExactGrid) {
  // 11 frames at once every 2 s; output 5.5 fps = 2/11 s per frame.
  GstHarness *h = make_harness("prebuffer-time=3000000000 output-fps=11/2 adaptive=false stats-interval=0");
  guint32 next_index = 0;
  auto push_burst = [&](int b) {
    for (int i = 0; i < 11; ++i, ++next_index)
      gst_harness_push(h, make_frame(next_index, gst_util_uint64_scale(next_index, 2 * GST_SECOND, 11),
                                     GST_CLOCK_TIME_NONE, i == 0 ? DW_FRAME_KIND_KEYFRAME : DW_FRAME_KIND_INBETWEEN));
    (void)b;
  };
  push_burst(0);
  gst_harness_set_time(h, 2 * GST_SECOND);
  push_burst(1);  // 4 s queued >= 3 s: output starts now
  int next_burst = 2;
  std::vector<GstClockTime> push_times, ptses;
  for (int n = 0; n < 99; ++n) {
    while (clock_now(h) >= static_cast<GstClockTime>(next_burst) * 2 * GST_SECOND && next_burst < 12)
      push_burst(next_burst++);
    ASSERT_TRUE(gst_harness_crank_single_clock_wait(h));
    GstBuffer *b = gst_harness_pull(h);
    ASSERT_NE(b, nullptr);
    push_times.push_back(clock_now(h));
    ptses.push_back(GST_BUFFER_PTS(b));
    EXPECT_EQ(marker(b), static_cast<guint32>(n)) << "every input frame exactly once, in order";
    EXPECT_EQ(GST_BUFFER_DURATION(b), gst_util_uint64_scale(n + 1, 2 * GST_SECOND, 11) -
                                          gst_util_uint64_scale(n, 2 * GST_SECOND, 11));
    gst_buffer_unref(b);
  }
  EXPECT_EQ(push_times[0], 2 * GST_SECOND);
  for (size_t n = 0; n < push_times.size(); ++n) {
    EXPECT_EQ(push_times[n] - push_times[0], gst_util_uint64_scale(n, 2 * GST_SECOND, 11)) << n;
    EXPECT_EQ(ptses[n] - ptses[0], gst_util_uint64_scale(n, 2 * GST_SECOND, 11)) << n;
  }
  EXPECT_EQ(stat_u64(h, "underruns"), 0u);
  gst_harness_teardown(h);
}

/* ------------------------------------------------------------------------------------------------ */
/* Truthful rates (issue 10): a repeat of the previous output is never a new picture.              */

TEST(FlightBuffer, DistinctFramesNeverCountRepeats) {
  // 10 fps out, fixed rate: each 300 ms frame goes out on three ticks. A is pushed twice (the same
  // buffer), B twice (a deep copy: other memory, same DwFrameMeta), then C; then the queue runs dry
  // and the hold policy repeats C.
  GstHarness *h = make_harness("prebuffer-time=0 output-fps=10/1 adaptive=false stats-interval=0");
  GstBuffer *a = make_frame(1, 0, 300 * MS, DW_FRAME_KIND_KEYFRAME);
  GstBuffer *b = make_frame(2, 600 * MS, 300 * MS, DW_FRAME_KIND_KEYFRAME);
  GstBuffer *b_copy = gst_buffer_copy_deep(b);
  GST_BUFFER_PTS(b_copy) = 900 * MS;
  gst_harness_push(h, gst_buffer_ref(a));
  gst_harness_push(h, a);
  gst_harness_push(h, b);
  gst_harness_push(h, b_copy);
  gst_harness_push(h, make_frame(3, 1200 * MS, 300 * MS, DW_FRAME_KIND_KEYFRAME));
  std::vector<guint32> markers;
  for (int n = 0; n < 20; ++n) {
    ASSERT_TRUE(gst_harness_crank_single_clock_wait(h));
    GstBuffer *out = gst_harness_pull(h);
    ASSERT_NE(out, nullptr);
    markers.push_back(marker(out));
    gst_buffer_unref(out);
  }
  const std::vector<guint32> expected = {1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  EXPECT_EQ(markers, expected);
  EXPECT_EQ(stat_u64(h, "frames-out"), 20u);
  EXPECT_EQ(stat_u64(h, "frames-distinct"), 3u);
  EXPECT_EQ(stat_u64(h, "frames-repeated"), 5u);
  GstStructure *st = stats_of(h);
  double distinct = -1, output = -1;
  EXPECT_TRUE(gst_structure_get_double(st, "distinct-rate", &distinct));
  EXPECT_TRUE(gst_structure_get_double(st, "output-rate", &output));
  EXPECT_LT(distinct, output / 4) << "3 pictures in 2 s against 10 frames/s";
  gst_structure_free(st);
  gst_harness_teardown(h);
}

/* ------------------------------------------------------------------------------------------------ */
/* Input at 0.8x real time (8 frames of 100 ms every second, at once) into a 10 fps output.         */

namespace {
struct SlowRun {
  guint64 underruns = 0;
  guint64 repeated = 0;
  double mean_fill_tail = 0;  // mean fill over the last 30 s
  double rate_tail = 0;
  bool repeats_are_last_frame = true;
  guint64 underrun_ticks_seen = 0;
};

SlowRun run_slow_input(const char *props, int seconds) {
  SlowRun r;
  GstHarness *h = make_harness(props);
  guint32 idx = 0;
  auto push_burst = [&]() {
    for (int i = 0; i < 8; ++i, ++idx) gst_harness_push(h, make_frame(idx, idx * 100 * MS, 100 * MS));
  };
  push_burst();
  gst_harness_set_time(h, 1 * GST_SECOND);
  push_burst();
  gst_harness_set_time(h, 2 * GST_SECOND);
  push_burst();  // 2.4 s >= 2 s: starts
  GstClockTime next_burst = 3 * GST_SECOND;
  guint32 prev_marker = 0xffffffff;
  double fill_sum = 0, rate_sum = 0;
  int tail_samples = 0;
  const int ticks = seconds * 10;
  for (int n = 0; n < ticks; ++n) {
    while (clock_now(h) >= next_burst) {
      push_burst();
      next_burst += GST_SECOND;
    }
    if (!gst_harness_crank_single_clock_wait(h)) break;
    GstBuffer *b = gst_harness_pull(h);
    if (!b) break;
    guint64 repeated_before = r.repeated;
    GstStructure *st = stats_of(h);
    gst_structure_get_uint64(st, "frames-repeated", &r.repeated);
    if (r.repeated > repeated_before) {
      r.underrun_ticks_seen++;
      if (marker(b) != prev_marker) r.repeats_are_last_frame = false;
    }
    if (n >= ticks - 300) {
      guint64 fill = 0;
      double rate = 0;
      gst_structure_get_uint64(st, "fill-time", &fill);
      gst_structure_get_double(st, "playback-rate", &rate);
      fill_sum += static_cast<double>(fill) / GST_SECOND;
      rate_sum += rate;
      tail_samples++;
    }
    gst_structure_free(st);
    prev_marker = marker(b);
    gst_buffer_unref(b);
  }
  r.underruns = stat_u64(h, "underruns");
  r.repeated = stat_u64(h, "frames-repeated");
  if (tail_samples) {
    r.mean_fill_tail = fill_sum / tail_samples;
    r.rate_tail = rate_sum / tail_samples;
  }
  gst_harness_teardown(h);
  return r;
}
}  // namespace

TEST(FlightBuffer, SlowInputAdaptiveHoldsTargetFillWithoutUnderrun) {
  SlowRun r = run_slow_input("prebuffer-time=2000000000 target-fill=2000000000 output-fps=10/1 adaptive=true "
                             "min-rate=0.5 max-rate=1.5 max-rate-change=0.05 stats-interval=0",
                             150);
  EXPECT_EQ(r.underruns, 0u);
  EXPECT_EQ(r.repeated, 0u);
  // The fill saw-tooths by 0.8 s per burst around its mean; the mean converges to the target.
  EXPECT_NEAR(r.mean_fill_tail, 2.0, 0.3);
  EXPECT_NEAR(r.rate_tail, 0.8, 0.05);
}

TEST(FlightBuffer, SlowInputFixedRateUnderrunsAndHoldsTheLastFrame) {
  SlowRun r = run_slow_input("prebuffer-time=2000000000 output-fps=10/1 adaptive=false underrun-policy=hold "
                             "stats-interval=0",
                             30);
  EXPECT_GE(r.underruns, 1u);
  EXPECT_GE(r.repeated, 10u);
  EXPECT_EQ(r.underrun_ticks_seen, r.repeated);
  EXPECT_TRUE(r.repeats_are_last_frame);
}

// Issue 13: after a 30 s outage (no input; hold repeats the last frame) the fill comes back to
// target-fill within a few seconds instead of growing far past it, and output never stops.
TEST(FlightBuffer, AfterAnOutageTheFillReturnsToTarget) {
  GstHarness *h = make_harness("prebuffer-time=2000000000 target-fill=3000000000 output-fps=10/1 adaptive=true "
                               "stats-interval=0");
  guint32 idx = 0;
  auto push_burst = [&]() {
    for (int i = 0; i < 10; ++i, ++idx) gst_harness_push(h, make_frame(idx, idx * 100 * MS, 100 * MS));
  };
  push_burst();
  gst_harness_set_time(h, 1 * GST_SECOND);
  push_burst();  // 2 s: starts
  GstClockTime next_burst = 2 * GST_SECOND;
  const GstClockTime outage_start = 40 * GST_SECOND, outage_end = 70 * GST_SECOND;
  guint64 max_fill_after = 0, last_fill = 0, pulled = 0;
  for (int n = 0; n < 1000; ++n) {
    while (clock_now(h) >= next_burst) {
      if (next_burst < outage_start || next_burst >= outage_end) push_burst();
      next_burst += GST_SECOND;
    }
    if (!gst_harness_crank_single_clock_wait(h)) break;
    GstBuffer *b = gst_harness_pull(h);
    ASSERT_NE(b, nullptr);
    pulled++;
    gst_buffer_unref(b);
    last_fill = stat_u64(h, "fill-time");
    if (clock_now(h) >= outage_end) max_fill_after = std::max(max_fill_after, last_fill);
  }
  EXPECT_EQ(pulled, 1000u) << "hold keeps pushing through the outage and the refill";
  EXPECT_EQ(stat_u64(h, "discontinuities"), 1u);
  EXPECT_LT(max_fill_after, 5 * GST_SECOND) << "fill ran away after the outage";
  EXPECT_NEAR(static_cast<double>(last_fill) / GST_SECOND, 3.0, 1.2);
  gst_harness_teardown(h);
}

TEST(FlightBuffer, UnderrunPauseWaitsForRebufferTime) {
  GstHarness *h = make_harness("prebuffer-time=500000000 rebuffer-time=300000000 output-fps=10/1 adaptive=false "
                               "underrun-policy=pause stats-interval=0");
  for (guint32 i = 0; i < 5; ++i) gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS));
  for (int n = 0; n < 5; ++n) {
    crank_and_settle(h);
    gst_buffer_unref(gst_harness_pull(h));
  }
  ASSERT_TRUE(gst_harness_crank_single_clock_wait(h));  // empty: underrun, output stops
  EXPECT_TRUE(wait_state(h, "underrun"));
  EXPECT_EQ(stat_u64(h, "underruns"), 1u);
  EXPECT_EQ(gst_harness_try_pull(h), nullptr);
  gst_harness_push(h, make_frame(5, 500 * MS, 100 * MS));  // 0.1 s < rebuffer-time: still paused
  gst_harness_push(h, make_frame(6, 600 * MS, 100 * MS));
  EXPECT_EQ(stat_state(h), "underrun");
  gst_harness_push(h, make_frame(7, 700 * MS, 100 * MS));  // 0.3 s: resumes
  crank_and_settle(h);
  GstBuffer *b = gst_harness_pull(h);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(marker(b), 5u);
  gst_buffer_unref(b);
  EXPECT_EQ(stat_u64(h, "frames-repeated"), 0u);
  gst_harness_teardown(h);
}

/* ------------------------------------------------------------------------------------------------ */

namespace {
struct Pusher {
  GstHarness *h;
  guint32 count;
  std::atomic<guint32> pushed{0};
  std::atomic<bool> finished{false};
  GstFlowReturn last = GST_FLOW_OK;
};
gpointer pusher_thread(gpointer data) {
  auto *p = static_cast<Pusher *>(data);
  for (guint32 i = 0; i < p->count; ++i) {
    p->last = gst_harness_push(p->h, make_frame(i, i * 100 * MS, 100 * MS));
    if (p->last != GST_FLOW_OK) break;
    p->pushed++;
  }
  p->finished = true;
  return nullptr;
}
bool wait_for(const std::atomic<bool> &flag) {
  for (int i = 0; i < 2000 && !flag.load(); ++i) g_usleep(5000);
  return flag.load();
}
}  // namespace

TEST(FlightBuffer, FullBufferBlocksUpstreamAndFlushUnblocksIt) {
  GstHarness *h = make_harness("max-size-time=1000000000 prebuffer-time=500000000 output-fps=10/1 stats-interval=0");
  Pusher p{h, 20};
  GThread *t = g_thread_new("pusher", pusher_thread, &p);
  for (int i = 0; i < 2000 && p.pushed.load() < 10; ++i) g_usleep(5000);
  EXPECT_EQ(p.pushed.load(), 10u);
  g_usleep(100 * 1000);  // give a non-blocking chain() the chance to show itself
  EXPECT_FALSE(p.finished.load()) << "chain() did not block on a full queue";
  EXPECT_EQ(p.pushed.load(), 10u);
  EXPECT_EQ(stat_u64(h, "fill-time"), GST_SECOND);
  // A consumed frame makes room for exactly one more.
  crank_and_settle(h);
  gst_buffer_unref(gst_harness_pull(h));
  for (int i = 0; i < 2000 && p.pushed.load() < 11; ++i) g_usleep(5000);
  EXPECT_EQ(p.pushed.load(), 11u);
  // flush-start unblocks at once.
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_start()));
  EXPECT_TRUE(wait_for(p.finished));
  g_thread_join(t);
  EXPECT_EQ(p.last, GST_FLOW_FLUSHING);
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_stop(TRUE)));
  EXPECT_EQ(stat_u64(h, "fill-time"), 0u);
  EXPECT_EQ(stat_state(h), "prebuffering");
  // Works again after the flush; the first output is DISCONT.
  GstSegment seg;
  gst_segment_init(&seg, GST_FORMAT_TIME);
  gst_harness_push_event(h, gst_event_new_segment(&seg));
  for (guint32 i = 100; i < 106; ++i) EXPECT_EQ(gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS)), GST_FLOW_OK);
  crank_and_settle(h);
  GstBuffer *b = gst_harness_pull(h);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(marker(b), 100u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_DISCONT));
  gst_buffer_unref(b);
  gst_harness_teardown(h);
}

TEST(FlightBuffer, DropInbetweenKeepsKeyframes) {
  GstHarness *h = make_harness("max-size-buffers=5 max-size-time=0 overrun-policy=drop-inbetween prebuffer-time=0 "
                               "output-fps=10/1 adaptive=false stats-interval=0");
  // K0 I1 I2 K3 I4 fill the queue; then K5 I6 I7 K8 K9 arrive (never blocking).
  const int kinds[] = {0, 1, 1, 0, 1, 0, 1, 1, 0, 0};
  for (guint32 i = 0; i < 10; ++i)
    EXPECT_EQ(gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS, kinds[i])), GST_FLOW_OK);
  EXPECT_EQ(stat_u64(h, "dropped-keyframes"), 0u);
  EXPECT_EQ(stat_u64(h, "dropped-inbetweens"), 5u);
  std::vector<guint32> out;
  for (int n = 0; n < 5; ++n) {
    crank_and_settle(h);
    GstBuffer *b = gst_harness_pull(h);
    ASSERT_NE(b, nullptr);
    out.push_back(marker(b));
    gst_buffer_unref(b);
  }
  EXPECT_EQ(out, (std::vector<guint32>{0, 3, 5, 8, 9}));
  // Frames without DwFrameMeta count as keyframes: with only keyframes queued, the oldest behind
  // the head goes.
  gst_harness_teardown(h);
}

TEST(FlightBuffer, BatchModePushesPacedLists) {
  GstHarness *h = make_harness("batch-size=4 prebuffer-time=1000000000 output-fps=10/1 adaptive=false stats-interval=0");
  static std::atomic<guint> lists{0}, list_len{0};
  lists = 0;
  gst_pad_add_probe(h->sinkpad, GST_PAD_PROBE_TYPE_BUFFER_LIST,
                    [](GstPad *, GstPadProbeInfo *info, gpointer) -> GstPadProbeReturn {
                      lists++;
                      list_len = gst_buffer_list_length(GST_PAD_PROBE_INFO_BUFFER_LIST(info));
                      return GST_PAD_PROBE_OK;
                    },
                    nullptr, nullptr);
  for (guint32 i = 0; i < 20; ++i) gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS));
  GstClockTime first = GST_CLOCK_TIME_NONE;
  for (int batch = 0; batch < 4; ++batch) {
    crank_and_settle(h);
    if (batch == 0) first = clock_now(h);
    EXPECT_EQ(clock_now(h) - first, batch * 400 * MS);
    for (int k = 0; k < 4; ++k) {
      GstBuffer *b = gst_harness_pull(h);
      ASSERT_NE(b, nullptr);
      EXPECT_EQ(marker(b), static_cast<guint32>(batch * 4 + k));
      EXPECT_EQ(GST_BUFFER_PTS(b), first + (batch * 4 + k) * 100 * MS);
      gst_buffer_unref(b);
    }
    EXPECT_EQ(lists.load(), static_cast<guint>(batch + 1));
    EXPECT_EQ(list_len.load(), 4u);
  }
  gst_harness_teardown(h);
}

TEST(FlightBuffer, EosDrainsInOrderAfterAnIncompletePrebuffer) {
  GstHarness *h = make_harness("prebuffer-time=10000000000 output-fps=10/1 adaptive=false stats-interval=0");
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(h->element, bus);
  for (guint32 i = 0; i < 5; ++i) gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS));
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_eos()));
  EXPECT_EQ(gst_harness_push(h, make_frame(99, 0, 100 * MS)), GST_FLOW_EOS);
  // The warning is posted first, then the message.
  GstMessage *w = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND, GST_MESSAGE_WARNING);
  EXPECT_NE(w, nullptr);
  if (w) gst_message_unref(w);
  GstStructure *started = wait_buffer_message(bus, "started");
  ASSERT_NE(started, nullptr);
  EXPECT_STREQ(gst_structure_get_string(started, "reason"), "eos");
  gst_structure_free(started);
  for (guint32 n = 0; n < 5; ++n) {
    crank_and_settle(h);
    GstBuffer *b = gst_harness_pull(h);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(marker(b), n);
    gst_buffer_unref(b);
  }
  ASSERT_TRUE(gst_harness_crank_single_clock_wait(h));
  // Sticky events in order, then EOS.
  std::vector<GstEventType> types;
  for (;;) {
    GstEvent *e = gst_harness_pull_event(h);
    ASSERT_NE(e, nullptr);
    types.push_back(GST_EVENT_TYPE(e));
    if (GST_EVENT_TYPE(e) == GST_EVENT_CAPS) {
      GstCaps *caps = nullptr;
      gst_event_parse_caps(e, &caps);
      gint n = 0, d = 0;
      EXPECT_TRUE(gst_structure_get_fraction(gst_caps_get_structure(caps, 0), "framerate", &n, &d));
      EXPECT_EQ(n, 10);
      EXPECT_EQ(d, 1);
    }
    bool eos = GST_EVENT_TYPE(e) == GST_EVENT_EOS;
    gst_event_unref(e);
    if (eos) break;
  }
  EXPECT_EQ(types, (std::vector<GstEventType>{GST_EVENT_STREAM_START, GST_EVENT_CAPS, GST_EVENT_SEGMENT, GST_EVENT_EOS}));
  EXPECT_EQ(stat_state(h), "eos");
  gst_element_set_bus(h->element, nullptr);
  gst_object_unref(bus);
  gst_harness_teardown(h);
}

TEST(FlightBuffer, QueriesLatencyPositionSegment) {
  GstHarness *h = make_harness("prebuffer-time=700000000 output-fps=10/1 adaptive=false stats-interval=0");
  GstQuery *q = gst_query_new_latency();
  ASSERT_TRUE(gst_pad_peer_query(h->sinkpad, q));
  gboolean live = FALSE;
  GstClockTime min = 0, max = 0;
  gst_query_parse_latency(q, &live, &min, &max);
  EXPECT_TRUE(live);
  EXPECT_GE(min, 700 * MS);
  gst_query_unref(q);

  for (guint32 i = 0; i < 10; ++i) gst_harness_push(h, make_frame(i, i * 100 * MS, 100 * MS));
  crank_and_settle(h);
  crank_and_settle(h);
  GstBuffer *b1 = gst_harness_pull(h);
  GstBuffer *b2 = gst_harness_pull(h);
  gint64 pos = -1;
  q = gst_query_new_position(GST_FORMAT_TIME);
  ASSERT_TRUE(gst_pad_peer_query(h->sinkpad, q));
  gst_query_parse_position(q, nullptr, &pos);
  EXPECT_EQ(pos, static_cast<gint64>(GST_BUFFER_PTS(b2)));
  gst_query_unref(q);
  q = gst_query_new_segment(GST_FORMAT_TIME);
  ASSERT_TRUE(gst_pad_peer_query(h->sinkpad, q));
  GstFormat fmt;
  gint64 start = -1;
  gst_query_parse_segment(q, nullptr, &fmt, &start, nullptr);
  EXPECT_EQ(fmt, GST_FORMAT_TIME);
  EXPECT_EQ(start, 0);
  gst_query_unref(q);
  gst_buffer_unref(b1);
  gst_buffer_unref(b2);
  gst_harness_teardown(h);
}

TEST(FlightBuffer, DownstreamFramerateWins) {
  GstElement *e = gst_element_factory_make("flightbuffer", nullptr);
  g_object_set(e, "prebuffer-time", G_GUINT64_CONSTANT(0), "stats-interval", G_GUINT64_CONSTANT(0), nullptr);
  GstHarness *h = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_sink_caps_str(h, "video/x-raw,format=RGBA,width=4,height=4,framerate=30/1");
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGBA,width=4,height=4,framerate=0/1");
  gst_harness_play(h);
  gst_harness_push(h, make_frame(0, 0, GST_CLOCK_TIME_NONE));
  gst_harness_push(h, make_frame(1, 33 * MS, GST_CLOCK_TIME_NONE));
  crank_and_settle(h);
  crank_and_settle(h);
  GstBuffer *b0 = gst_harness_pull(h);
  GstBuffer *b1 = gst_harness_pull(h);
  EXPECT_EQ(GST_BUFFER_DURATION(b0), gst_util_uint64_scale(1, GST_SECOND, 30));
  EXPECT_EQ(GST_BUFFER_PTS(b1) - GST_BUFFER_PTS(b0), gst_util_uint64_scale(1, GST_SECOND, 30));
  gst_buffer_unref(b0);
  gst_buffer_unref(b1);
  gst_harness_teardown(h);
}

TEST(FlightBuffer, StateCyclingLeavesNothingBehind) {
  // A live source into a small, full buffer (upstream blocked) and a syncing sink, cycled through
  // every transition; then the same with an idle upstream.
  const char *descs[] = {
      "videotestsrc is-live=true ! video/x-raw,format=RGBA,width=16,height=16,framerate=50/1 ! "
      "flightbuffer prebuffer-time=100000000 max-size-time=200000000 output-fps=10/1 stats-interval=50000000 ! "
      "fakesink sync=true",
      "videotestsrc is-live=true num-buffers=3 ! video/x-raw,format=RGBA,width=16,height=16,framerate=5/1 ! "
      "flightbuffer prebuffer-time=5000000000 prebuffer-timeout=100000000 ! fakesink sync=true",
  };
  for (const char *desc : descs) {
    GError *err = nullptr;
    GstElement *pipeline = gst_parse_launch(desc, &err);
    ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
    const GstState states[] = {GST_STATE_READY, GST_STATE_PAUSED, GST_STATE_PLAYING, GST_STATE_PAUSED,
                               GST_STATE_PLAYING, GST_STATE_READY, GST_STATE_PLAYING, GST_STATE_NULL,
                               GST_STATE_PLAYING, GST_STATE_PAUSED, GST_STATE_NULL};
    for (GstState s : states) {
      GstStateChangeReturn ret = gst_element_set_state(pipeline, s);
      EXPECT_NE(ret, GST_STATE_CHANGE_FAILURE);
      if (ret == GST_STATE_CHANGE_ASYNC) gst_element_get_state(pipeline, nullptr, nullptr, 5 * GST_SECOND);
      g_usleep(150 * 1000);
    }
    gst_object_unref(pipeline);
  }
}

TEST(FlightBuffer, InspectPageIsComplete) {
  GstElementFactory *factory = gst_element_factory_find("flightbuffer");
  ASSERT_NE(factory, nullptr);
  GstElement *element = gst_element_factory_create(factory, nullptr);
  guint n = 0;
  GParamSpec **specs = g_object_class_list_properties(G_OBJECT_GET_CLASS(element), &n);
  for (guint i = 0; i < n; ++i) {
    if (specs[i]->owner_type != G_OBJECT_TYPE(element)) continue;
    EXPECT_GT(strlen(g_param_spec_get_blurb(specs[i])), 10u) << g_param_spec_get_name(specs[i]);
  }
  g_free(specs);
  GstStructure *st = nullptr;
  g_object_get(element, "stats", &st, nullptr);
  ASSERT_NE(st, nullptr);
  EXPECT_TRUE(gst_structure_has_name(st, "application/x-flightbuffer-stats"));
  EXPECT_STREQ(gst_structure_get_string(st, "state"), "prebuffering");
  gst_structure_free(st);
  gst_object_unref(element);
  gst_object_unref(factory);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  {
    // Let the plugin register DwFrameMeta first (its chain() looks the meta up).
    GstHarness *h = gst_harness_new("flightbuffer");
    gst_harness_play(h);
    gst_harness_set_src_caps_str(h, "video/x-raw,format=RGBA,width=4,height=4,framerate=0/1");
    gst_harness_push(h, make_frame(0, 0, GST_SECOND));
    gst_harness_teardown(h);
    g_assert(g_type_from_name("DwFrameMetaAPI") != 0);
  }
  ::testing::InitGoogleTest(&argc, argv);
  int ret = RUN_ALL_TESTS();
  gst_deinit();  // lets GST_TRACERS=leaks report
  return ret;
}
