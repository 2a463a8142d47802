/* dw::pacing::Playout: flightbuffer's playout state machine, clock-free (like rtpjitterbuffer's
 * rtptimerqueue: pad-less, compiled straight into its own test).
 *
 * It holds the *shape* of the queue (one QueuedFrame per queued buffer: content duration, keyframe
 * or in-between, identity) and decides everything that can be stated without GStreamer:
 *  - admission: when the queue is full and, with drop_inbetweens, which frame to drop (on_full());
 *  - when output starts: pre-buffer reached, queue full, EOS, or prebuffer-timeout without data
 *    (plan_buffering()), and where the output grid starts (start());
 *  - each output tick (plan_tick(now)): which queued frame it shows, how many frames it uses up,
 *    underrun (hold = repeat the last frame, pause = re-buffer), recovery, EOS, late ticks, the
 *    playback rate (RateController steering the fill towards target_fill);
 *  - the rates it reports: input (content s/s), output (frames/s) and *distinct* output frames/s
 *    (a frame counts as new only when it is not a repeat of the previous output, see FrameKey);
 *  - discontinuities (issue 13): a frame flagged discont, or one arriving after a gap much longer
 *    than the recent arrival gaps, restarts the rate estimate and the playback rate instead of
 *    letting the outage steer them (see on_discontinuity in playout.cpp).
 *
 * The caller (gst/gstflightbuffer.cpp) keeps a parallel queue of the buffers and events in the same
 * order and applies exactly what the returned plans say (pop `consumed` from the head, erase the
 * dropped index). Times are nanoseconds of running time as int64; -1 = unknown. Not thread-safe: the
 * caller serialises calls under its own lock.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

#include "pacing/pacing.h"

namespace dw::pacing {

enum class PlayoutState {
  Prebuffering,  // waiting for prebuffer before the first output
  Playing,
  Underrun,      // hold policy: repeating the last frame
  Rebuffering,   // pause policy: waiting for rebuffer (reported as "underrun")
  Refilling,     // hold policy after an outage: repeating the last frame until the target fill is
                 // queued again (reported as "underrun")
  Done,          // EOS reached the output
};
const char *playout_state_name(PlayoutState s);

/* What makes two frames the same picture. When both carry DwFrameMeta, (kind, keyframe index,
 * position) decide (a hold repeat, a buffer pushed twice or a copy of it are equal; a new in-between
 * never is). Without meta, the same identity (the same memory: the buffer pushed again or a shallow
 * copy) makes a repeat; the element keeps the last output alive so its address cannot be reused. */
struct FrameKey {
  uint64_t identity = 0;  // 0 = unknown
  bool has_meta = false;
  int kind = 0;
  uint64_t index = 0;
  double position = 0.0;
  bool same_picture(const FrameKey &o) const;
};

struct QueuedFrame {
  int64_t duration = 0;      // content (ns); 0 = unknown (the nominal output interval is used)
  int64_t pts = -1;          // -1 = none
  bool keyframe = true;      // in-betweens are dropped first on overrun
  bool discont = false;      // the stream restarts here (e.g. after an outage)
  FrameKey key;
  /* Set by the playout. */
  bool provisional = false;  // duration guessed; fixed from the next frame's pts
  bool shown = false;
};

struct PlayoutParams {
  int64_t prebuffer_ns = 3'000'000'000;
  int64_t prebuffer_timeout_ns = 5'000'000'000;
  int64_t rebuffer_ns = 1'000'000'000;
  int64_t max_size_ns = 15'000'000'000;  // 0 = no limit
  uint32_t max_size_frames = 0;          // 0 = no limit
  bool pause_on_underrun = false;        // false = hold (repeat the last frame)
  bool drop_inbetweens = false;          // overrun: false = block upstream
  bool adaptive = true;
  ControllerParams controller;           // target fill, rate clamp, slew
  uint32_t batch = 1;
  /* An arrival gap longer than gap_factor x the longest of the recent arrival gaps (the last 64;
   * the longest, because in-betweens may trickle in between keyframes) and than min_gap_ns is a
   * discontinuity; gap_factor 0 = only frames flagged discont are. */
  double gap_factor = 4.0;
  int64_t min_gap_ns = 2'000'000'000;
};

struct PlayoutCounters {
  uint64_t frames_in = 0;
  uint64_t frames_out = 0;
  uint64_t frames_distinct = 0;  // outputs that are not a repeat of the previous output
  uint64_t frames_repeated = 0;  // hold-policy repeats during underrun
  uint64_t frames_skipped = 0;   // used up without being shown (playback rate > 1)
  uint64_t underruns = 0;
  uint64_t dropped_inbetweens = 0;
  uint64_t dropped_keyframes = 0;
  uint64_t late_ticks = 0;
  uint64_t prebuffer_incomplete = 0;
  uint64_t discontinuities = 0;
};

/* Overrun decision for one incoming frame while the queue is full. */
struct OverrunPlan {
  enum class Action { Block, DropIncoming, DroppedQueued } action = Action::Block;
  size_t index = 0;  // DroppedQueued: the caller erases its entry at this index (events move on)
};

/* What the output side does while (pre/re-)buffering. */
struct BufferingPlan {
  const char *start_reason = nullptr;  // non-null: call start() with it
  int64_t wake_at = -1;                // otherwise: sleep until then (running time), -1 = until woken
};

struct StartInfo {
  bool first = false;        // output starts for the first time (not after a re-buffer)
  bool incomplete = false;   // the pre-buffer was not reached: warn
  int64_t fill = 0;
  int64_t threshold = 0;
  int64_t origin = 0;        // grid origin (pts of the first output tick)
};

struct TickPlan {
  enum class Action {
    Show,     // push queued frame `show`, then pop `consumed` frames from the head
    Repeat,   // push the last output frame again (underrun, hold)
    Nothing,  // re-buffering: push nothing, go back to buffering
    Eos,      // queue drained after EOS: push the tail events and EOS
  } action = Action::Nothing;
  size_t show = 0;
  size_t consumed = 0;
  int64_t pts = 0;
  int64_t duration = 0;
  bool distinct = false;           // the pushed frame is a new picture
  const char *event = nullptr;     // "underrun" / "recovered": post a message
};

class Playout {
 public:
  explicit Playout(PlayoutParams params = {});

  /* New settings (property changes); the controller keeps its rate. */
  void set_params(const PlayoutParams &params);
  const PlayoutParams &params() const { return params_; }

  /* Back to an empty pre-buffering queue (flush, stop). Counters are kept unless reset_counters. */
  void reset(bool reset_counters);

  /* The output frame rate, the one place it lives. A change while playing rebases the grid so that
   * the next tick is at `at_ns` (the caps carrying it go out with the tick before). */
  void set_framerate(int fps_n, int fps_d, int64_t at_ns = -1);
  int fps_n() const { return grid_.fps_n(); }
  int fps_d() const { return grid_.fps_d(); }
  /* One output interval (ns), rounded down: the duration a frame without one gets. */
  int64_t frame_interval() const;

  /* Latency added to every grid time when waiting (the sink renders at pts + latency). */
  void set_latency(int64_t latency_ns) { latency_ = latency_ns > 0 ? latency_ns : 0; }

  /* ---- input side ---- */
  bool full() const;
  /* While full: block, drop the incoming frame, or drop a queued one (then call full() again). */
  OverrunPlan on_full(bool incoming_keyframe);
  /* First step for a frame arriving at `now` (-1 unknown), before the full() check: detects a
   * discontinuity (flag, or a gap much longer than the recent arrival period) and fixes the previous
   * frame's guessed duration from this one's pts (unless the gap is a discontinuity). */
  void admit(QueuedFrame &frame, int64_t now);
  /* Appends the admitted frame. */
  void push(QueuedFrame frame, int64_t now);
  void set_eos() { eos_ = true; }
  bool eos() const { return eos_; }
  /* The caller's queue filled up while buffering: start with what there is. */
  void mark_full_while_buffering() { start_full_ = true; }

  /* ---- output side ---- */
  PlayoutState state() const { return state_; }
  bool buffering() const { return state_ == PlayoutState::Prebuffering || state_ == PlayoutState::Rebuffering; }
  BufferingPlan plan_buffering(int64_t now);
  StartInfo start(const char *reason, int64_t now);
  /* Running time to wait for before the next plan_tick (grid time of the next tick + latency). */
  int64_t next_tick_deadline() const;
  /* Grid time (pts) of the next tick. */
  int64_t next_tick_time() const;
  /* One output tick. Call after waking at next_tick_deadline(), batch times in a row. */
  TickPlan plan_tick(int64_t now);

  /* ---- reporting ---- */
  size_t size() const { return frames_.size(); }
  int64_t fill() const;
  double playback_rate() const { return rate_; }
  /* Content s/s (nullopt unknown), output and distinct frames/s at `now`. */
  std::optional<double> input_rate(int64_t now) const;
  double output_rate(int64_t now) const;
  double distinct_rate(int64_t now) const;
  int64_t last_pts() const { return last_pts_; }
  const PlayoutCounters &counters() const { return counters_; }
  const QueuedFrame &frame(size_t i) const { return frames_[i]; }

 private:
  bool is_discontinuity(const QueuedFrame &f, int64_t now) const;
  void on_discontinuity();
  void fix_provisional_tail(const QueuedFrame &next);
  int64_t threshold() const;
  const char *ready_reason(int64_t now);
  TickPlan plan_hold_tick(TickPlan plan, int64_t now);
  void erase(size_t i);
  void steer(int64_t dur, int64_t now);
  TickPlan plan_empty_tick(int64_t now);
  TickPlan plan_show_tick(int64_t now);
  void stamp(TickPlan &plan, const FrameKey &key, int64_t now);
  void skip_late_ticks(int64_t now);

  PlayoutParams params_;
  std::deque<QueuedFrame> frames_;
  PlayoutState state_ = PlayoutState::Prebuffering;
  int64_t total_ = 0;   // content queued (ns), including the used-up offset
  int64_t offset_ = 0;  // content of frames_.front() already used up
  bool eos_ = false;
  bool start_full_ = false;
  int64_t rebuffer_threshold_ = 0;  // fill that ends Rebuffering
  bool arrived_ = false;     // a frame arrived since reset (a DISCONT on the first one is no outage)
  int64_t last_input_ = -1;  // running time of the last arrival
  std::deque<int64_t> gaps_;  // recent arrival gaps (ns), newest last
  int64_t latency_ = 0;
  OutputGrid grid_;
  uint64_t tick_ = 0;
  double rate_ = 1.0;
  RateController controller_;
  RateEstimator input_rate_{10.0};
  RateEstimator output_rate_{10.0, 0.0};
  RateEstimator distinct_rate_{10.0, 0.0};
  FrameKey last_key_;
  bool have_last_ = false;
  int64_t last_pts_ = -1;
  PlayoutCounters counters_;
};

}  // namespace dw::pacing
