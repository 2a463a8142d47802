/* dw::pacing: the GStreamer-free maths behind flightbuffer.
 *
 *  - RateEstimator: seconds of content produced per second of clock time, over a sliding window.
 *    Robust to bursty arrival (a keyframe interval's worth of frames at once).
 *  - RateController: steers the playback rate (content seconds consumed per second) so that the
 *    fill level converges to a target, with a bounded change per second and clamped to
 *    [min-rate, max-rate].
 *  - OutputGrid: exact integer output times origin + n / fps (no accumulated rounding).
 *  - plan_step(): which queued frame one output tick shows and how many frames it uses up, given
 *    the content each tick advances (rate / fps).
 *
 * All times are plain numbers: seconds as double for the estimator and the controller, nanoseconds
 * as int64 for the grid and the cursor. Nothing here reads a clock; callers pass "now".
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>

namespace dw::pacing {

class RateEstimator {
 public:
  /* window_s: how much history the estimate covers. merge_s: arrivals closer than this to the
   * start of the current group count as one burst (so a burst is one sample, not many). */
  explicit RateEstimator(double window_s = 10.0, double merge_s = 0.01);

  void set_window(double window_s);
  double window() const { return window_; }
  void reset();

  /* content_s seconds of content arrived at now_s. now_s must not go backwards (it is clamped). */
  void add(double now_s, double content_s);

  /* Content seconds per second at now_s, or nullopt while fewer than two arrival groups are known.
   * Decays towards 0 when arrivals stop, and is 0 once the last arrival is older than the window. */
  std::optional<double> rate(double now_s) const;

  /* Total content seen since reset. */
  double total() const { return total_; }

 private:
  struct Sample {
    double t;        // start of the arrival group
    double content;  // content that arrived in it
  };
  void prune(double now_s);
  std::deque<Sample> samples_;
  double window_;
  double merge_;
  double last_t_ = 0.0;
  double total_ = 0.0;
  bool seen_ = false;
};

struct ControllerParams {
  double target_fill_s = 4.0;      // fill level to hold
  double min_rate = 0.5;           // playback-rate clamp
  double max_rate = 1.5;
  double max_change_per_s = 0.05;  // |d rate / dt| bound
  double correction_time_s = 8.0;  // a fill error of E seconds asks for E / correction_time extra rate
};

class RateController {
 public:
  explicit RateController(ControllerParams params = {});

  void set_params(const ControllerParams &params);
  const ControllerParams &params() const { return params_; }

  /* Back to `rate` (clamped), e.g. at (re)start. */
  void reset(double rate = 1.0);

  /* One control step after dt_s seconds with the current fill and, when known, the measured input
   * rate (the feed-forward term: the rate at which the fill would stay constant). Returns the new
   * rate. */
  double update(double dt_s, double fill_s, std::optional<double> input_rate);

  double rate() const { return rate_; }
  /* The rate the last update wanted before the slew limit (clamped to [min, max]). */
  double desired() const { return desired_; }

 private:
  double clamp(double r) const;
  ControllerParams params_;
  double rate_ = 1.0;
  double desired_ = 1.0;
};

class OutputGrid {
 public:
  OutputGrid() = default;
  OutputGrid(int fps_n, int fps_d, int64_t origin_ns) { reset(fps_n, fps_d, origin_ns); }

  /* fps_n / fps_d must be > 0. */
  void reset(int fps_n, int fps_d, int64_t origin_ns);

  int64_t origin() const { return origin_; }
  int fps_n() const { return fps_n_; }
  int fps_d() const { return fps_d_; }

  /* origin + floor(n * fps_d * 1e9 / fps_n). */
  int64_t time(uint64_t n) const;
  /* time(n + 1) - time(n). */
  int64_t duration(uint64_t n) const { return time(n + 1) - time(n); }
  /* Nominal tick length, rounded down. */
  int64_t interval() const { return time(1) - time(0); }
  /* The first n with time(n) >= t (0 when t <= origin). */
  uint64_t index_at_or_after(int64_t t) const;

 private:
  int fps_n_ = 25;
  int fps_d_ = 1;
  int64_t origin_ = 0;
};

/* One output tick over a queue of frames with content durations (ns).
 *   offset:  content of the first frame already used up (0 <= offset < duration(0))
 *   advance: content this tick consumes (rate * tick length)
 * The frame shown is the one covering the middle of the advanced span (offset + advance / 2); when
 * the queue ends before it, the last frame. `consumed` frames at the head are used up afterwards
 * (their end lies at or before offset + advance) and `offset` is the new offset into the first
 * remaining one. `advanced` is the content actually consumed (less than `advance` when the queue
 * ran out). Requires count > 0. */
struct Step {
  size_t show = 0;
  size_t consumed = 0;
  int64_t offset = 0;
  int64_t advanced = 0;
};
Step plan_step(size_t count, const std::function<int64_t(size_t)> &duration_of, int64_t offset, int64_t advance);

}  // namespace dw::pacing
