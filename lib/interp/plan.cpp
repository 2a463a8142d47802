// Pair planning, bisection order, residual carry and occlusion maths (see plan.h).
#include "interp/plan.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <functional>
#include <numeric>

#include "interp/interpolator.h"

namespace dw::interp {

const char *pair_kind_name(PairKind kind) {
  switch (kind) {
    case PairKind::First: return "first";
    case PairKind::Restart: return "restart";
    case PairKind::Interpolate: return "interpolate";
    case PairKind::Transition: return "transition";
  }
  return "?";
}

int pick_frames(const PlanSettings &s, int64_t interval) {
  if (s.frames >= 0) return std::min(s.frames, kMaxFrames);
  if (s.target_fps <= 0 || interval == kNoTime) return kDefaultFrames;
  const double frames = std::round(static_cast<double>(interval) / kSecond * s.target_fps) - 1.0;
  return static_cast<int>(std::clamp(frames, 0.0, static_cast<double>(kMaxFrames)));
}

std::vector<double> even_positions(int n) {
  std::vector<double> ts(std::max(n, 0));
  for (int i = 0; i < n; ++i) ts[i] = static_cast<double>(i + 1) / (n + 1);
  return ts;
}

// start + span * num / den without overflow for spans of hours (like gst_util_uint64_scale).
static int64_t scale(int64_t span, int64_t num, int64_t den) {
  return static_cast<int64_t>((static_cast<__int128>(span) * num) / den);
}

bool PairPlanner::is_gap(const PairInput &in, int64_t interval) const {
  if (in.b_discont) return true;
  if (interval == kNoTime || period_ == kNoTime) return false;
  return interval > settings_.min_gap && static_cast<double>(interval) > settings_.gap_ratio * period_;
}

PairPlan PairPlanner::plan(const PairInput &in) {
  const PlanSettings &s = settings_;
  PairPlan p;
  if (!in.have_a) {
    p.kind = PairKind::First;
    return p;
  }
  if (in.a_pts != kNoTime && in.b_pts != kNoTime && in.b_pts > in.a_pts) p.interval = in.b_pts - in.a_pts;
  const bool known_ts = in.a_pts != kNoTime || in.b_pts != kNoTime;
  if (p.interval == kNoTime && known_ts) {
    p.kind = PairKind::Restart;
    p.reason = "keyframe timestamps not increasing";
  } else if (!in.a_usable) {
    p.kind = PairKind::Restart;
    p.reason = "the previous keyframe cannot be interpolated from";
  } else if (is_gap(in, p.interval)) {
    p.kind = PairKind::Transition;
    p.reason = in.b_discont ? "keyframe flagged DISCONT" : "gap much longer than the keyframe period";
  } else {
    p.kind = PairKind::Interpolate;
  }

  if (p.kind == PairKind::Restart) {
    p.a_duration = p.interval != kNoTime ? p.interval : in.a_duration;
    if (p.interval != kNoTime) last_spacing_ = p.interval;
    return p;
  }

  if (p.kind == PairKind::Transition) {
    // Without an interval there is nothing to shorten: a cut.
    const int64_t span =
        p.interval == kNoTime ? 0 : std::min<int64_t>(std::max<int64_t>(s.max_gap_transition, 0), p.interval);
    int n = 0;
    if (span > 0) {
      n = s.target_fps > 0 ? pick_frames(PlanSettings{-1, s.target_fps}, span) : pick_frames(s, span);
      if (s.frames >= 0) n = std::min(n, s.frames);
    }
    p.ts = even_positions(n);
    const int64_t start = p.interval == kNoTime ? kNoTime : in.b_pts - span;
    p.a_duration = p.interval == kNoTime ? in.a_duration : start + scale(span, 1, n + 1) - in.a_pts;
    if (p.interval != kNoTime && span == 0) p.a_duration = p.interval;
    for (int i = 0; i < n; ++i) {
      const int64_t t0 = start + scale(span, i + 1, n + 1);
      p.pts.push_back(t0);
      p.durations.push_back(start + scale(span, i + 2, n + 1) - t0);
    }
    if (span > 0) last_spacing_ = span / (n + 1);
    return p;  // not a period sample: the gap would inflate the estimate for many keyframes
  }

  // Interpolate. With both timestamps unknown only a fixed frames count applies.
  const int n = (p.interval != kNoTime || s.frames >= 0) ? pick_frames(s, p.interval) : 0;
  p.ts = even_positions(n);
  if (p.interval != kNoTime) {
    const int64_t spacing = p.interval / (n + 1);
    p.a_duration = spacing;
    last_spacing_ = spacing;
    for (int i = 0; i < n; ++i) {
      const int64_t t0 = in.a_pts + scale(p.interval, i + 1, n + 1);
      p.pts.push_back(t0);
      p.durations.push_back(in.a_pts + scale(p.interval, i + 2, n + 1) - t0);
    }
    period_ = period_ == kNoTime
                  ? p.interval
                  : static_cast<int64_t>((1.0 - s.period_ema_weight) * period_ + s.period_ema_weight * p.interval);
  } else {
    p.a_duration = in.a_duration;
    p.pts.assign(n, kNoTime);
    p.durations.assign(n, kNoTime);
  }
  return p;
}

void PairPlanner::reset() {
  period_ = kNoTime;
  last_spacing_ = kNoTime;
}

bool latency_moved(int64_t period, int64_t reported, double ratio) {
  if (period == kNoTime) return false;
  if (reported <= 0) return true;
  return std::fabs(static_cast<double>(period - reported)) > ratio * static_cast<double>(reported);
}

/* ---------------------------------------------------------------------------------------------- */

std::vector<BisectStep> bisection_schedule(const std::vector<double> &ts, double tolerance) {
  for (double t : ts)
    if (!(t > 0.0 && t < 1.0)) throw Error("bisection: position " + std::to_string(t) + " is not inside (0, 1)");
  std::vector<size_t> order(ts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return ts[x] < ts[y]; });
  if (tolerance <= 0) {
    double gap = 1.0;
    double prev = 0.0;
    for (size_t i : order) {
      if (ts[i] - prev > 0) gap = std::min(gap, ts[i] - prev);
      prev = ts[i];
    }
    gap = std::min(gap, 1.0 - prev);
    tolerance = gap / 4.0;
  }
  // Stop halving long before doubles run out (targets closer than this to each other share a frame).
  tolerance = std::max(tolerance, 1e-6);

  std::vector<BisectStep> steps;
  std::vector<int> free_slots;
  int next_slot = 2;
  auto take = [&]() {
    if (free_slots.empty()) return next_slot++;
    int s = free_slots.back();
    free_slots.pop_back();
    return s;
  };
  // Targets are the sorted indices [first, last) lying in (lo_t, hi_t).
  std::function<void(int, double, int, double, size_t, size_t)> solve = [&](int lo, double lo_t, int hi, double hi_t,
                                                                            size_t first, size_t last) {
    if (first >= last) return;
    const double mid_t = 0.5 * (lo_t + hi_t);
    const int mid = take();
    BisectStep c;
    c.op = BisectStep::Op::Compute;
    c.out = mid;
    c.left = lo;
    c.right = hi;
    c.t = mid_t;
    steps.push_back(c);
    size_t split_lo = first;  // first target within tolerance of mid (or right of it)
    while (split_lo < last && ts[order[split_lo]] < mid_t - tolerance) ++split_lo;
    size_t split_hi = split_lo;  // first target right of mid's tolerance
    while (split_hi < last && ts[order[split_hi]] <= mid_t + tolerance) ++split_hi;
    solve(lo, lo_t, mid, mid_t, first, split_lo);
    for (size_t k = split_lo; k < split_hi; ++k) {
      BisectStep e;
      e.op = BisectStep::Op::Emit;
      e.out = mid;
      e.t = mid_t;
      e.frame = order[k];
      steps.push_back(e);
    }
    solve(mid, mid_t, hi, hi_t, split_hi, last);
    BisectStep r;
    r.op = BisectStep::Op::Release;
    r.out = mid;
    r.t = mid_t;
    steps.push_back(r);
    free_slots.push_back(mid);
  };
  solve(0, 0.0, 1, 1.0, 0, order.size());
  return steps;
}

int bisection_peak_slots(const std::vector<BisectStep> &schedule) {
  int alive = 2, peak = 2;
  for (const auto &s : schedule) {
    if (s.op == BisectStep::Op::Compute) peak = std::max(peak, ++alive);
    if (s.op == BisectStep::Op::Release) --alive;
  }
  return peak;
}

/* ---------------------------------------------------------------------------------------------- */

ResidualWeights residual_weights(double t) { return {1.0 - t, t}; }

Residual make_residual(const Image &original, const Image &decoded) {
  if (original.width != decoded.width || original.height != decoded.height)
    throw Error("residual: decoded image is " + std::to_string(decoded.width) + "x" + std::to_string(decoded.height) +
                ", keyframe is " + std::to_string(original.width) + "x" + std::to_string(original.height));
  if ((original.channels != 3 && original.channels != 4) || (decoded.channels != 3 && decoded.channels != 4))
    throw Error("residual: images must be RGB or RGBA");
  Residual r;
  r.width = original.width;
  r.height = original.height;
  const size_t n = static_cast<size_t>(r.width) * r.height;
  r.data.resize(n * 3);
  const int co = original.channels, cd = decoded.channels;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      r.data[3 * i + c] = static_cast<int16_t>(int(original.pixels[co * i + c]) - int(decoded.pixels[cd * i + c]));
  return r;
}

void add_residuals(Image &frame, const Residual &ra, const Residual &rb, double t) {
  if (frame.channels != 3 || frame.width != ra.width || frame.height != ra.height || ra.width != rb.width ||
      ra.height != rb.height || ra.data.size() != rb.data.size() || frame.pixels.size() != ra.data.size())
    throw Error("residual: frame and residuals differ in size");
  const ResidualWeights w = residual_weights(t);
  // Fixed point (16 fractional bits) keeps this a cheap integer loop.
  const int32_t wa = static_cast<int32_t>(std::lround(w.a * 65536.0));
  const int32_t wb = 65536 - wa;
  for (size_t i = 0; i < frame.pixels.size(); ++i) {
    const int32_t add = (wa * ra.data[i] + wb * rb.data[i] + 32768) >> 16;
    frame.pixels[i] = static_cast<uint8_t>(std::clamp<int32_t>(frame.pixels[i] + add, 0, 255));
  }
}

double unexplained_change(const Image &a, const Image &b, const Image &b_in_a) {
  if (a.width != b.width || a.height != b.height || a.channels != b.channels || b_in_a.width != a.width ||
      b_in_a.height != a.height || b_in_a.channels != a.channels)
    throw Error("unexplained_change: images differ in size or channels");
  uint64_t total = 0, left = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    total += static_cast<uint64_t>(std::abs(int(a.pixels[i]) - int(b.pixels[i])));
    left += static_cast<uint64_t>(std::abs(int(a.pixels[i]) - int(b_in_a.pixels[i])));
  }
  return total == 0 ? 0.0 : static_cast<double>(left) / static_cast<double>(total);
}

void add_residual(Image &frame, const Residual &r) {
  if (frame.channels != 3 || frame.width != r.width || frame.height != r.height || frame.pixels.size() != r.data.size())
    throw Error("residual: frame and residual differ in size");
  for (size_t i = 0; i < frame.pixels.size(); ++i)
    frame.pixels[i] = static_cast<uint8_t>(std::clamp<int32_t>(frame.pixels[i] + r.data[i], 0, 255));
}

/* ---------------------------------------------------------------------------------------------- */

FlowCoefs intermediate_flow_coefs(double t) {
  FlowCoefs c;
  c.to_a_from_ab = static_cast<float>(-t * (1.0 - t));
  c.to_a_from_ba = static_cast<float>(t * t);
  c.to_b_from_ab = static_cast<float>((1.0 - t) * (1.0 - t));
  c.to_b_from_ba = static_cast<float>(-t * (1.0 - t));
  return c;
}

}  // namespace dw::interp
