#include "pacing/pacing.h"

#include <algorithm>
#include <cmath>

namespace dw::pacing {

/* ---------------------------------------------------------------------------------------------- */
/* RateEstimator                                                                                  */

RateEstimator::RateEstimator(double window_s, double merge_s)
    : window_(window_s > 0 ? window_s : 1.0), merge_(merge_s > 0 ? merge_s : 0.0) {}

void RateEstimator::set_window(double window_s) { window_ = window_s > 0 ? window_s : 1.0; }

void RateEstimator::reset() {
  samples_.clear();
  last_t_ = 0.0;
  total_ = 0.0;
  seen_ = false;
}

void RateEstimator::prune(double now_s) {
  const double cutoff = now_s - window_;
  /* Keep the group that starts the window: its arrival time is the origin of the span. */
  while (samples_.size() > 1 && samples_[1].t <= cutoff) samples_.pop_front();
}

void RateEstimator::add(double now_s, double content_s) {
  if (seen_ && now_s < last_t_) now_s = last_t_;
  if (content_s < 0) content_s = 0;
  last_t_ = now_s;
  seen_ = true;
  total_ += content_s;
  if (!samples_.empty() && now_s - samples_.back().t < merge_) {
    samples_.back().content += content_s;
  } else {
    samples_.push_back({now_s, content_s});
  }
  prune(now_s);
}

std::optional<double> RateEstimator::rate(double now_s) const {
  if (!seen_) return std::nullopt;
  if (now_s < last_t_) now_s = last_t_;
  if (now_s - last_t_ >= window_) return 0.0;  // nothing arrived for a whole window
  /* Groups inside the window (the first one kept by prune() may start before it). */
  size_t first = 0;
  while (first + 1 < samples_.size() && samples_[first + 1].t <= now_s - window_) ++first;
  const size_t n = samples_.size() - first;
  if (n < 2) return std::nullopt;
  const double origin = samples_[first].t;
  double content = 0.0;
  for (size_t i = first + 1; i < samples_.size(); ++i) content += samples_[i].content;
  /* Arrivals at a steady period P give content / (last - origin) exactly. When arrivals stop the
   * span keeps growing (less the mean gap, so that the estimate does not sag between bursts). */
  const double arrivals = samples_.back().t - origin;
  const double mean_gap = arrivals / static_cast<double>(n - 1);
  const double span = std::max(arrivals, now_s - origin - mean_gap);
  if (span <= 0) return std::nullopt;
  return content / span;
}

/* ---------------------------------------------------------------------------------------------- */
/* RateController                                                                                 */

RateController::RateController(ControllerParams params) : params_(params) { reset(1.0); }

void RateController::set_params(const ControllerParams &params) {
  params_ = params;
  rate_ = clamp(rate_);
  desired_ = clamp(desired_);
}

double RateController::clamp(double r) const {
  const double lo = std::min(params_.min_rate, params_.max_rate);
  const double hi = std::max(params_.min_rate, params_.max_rate);
  if (!std::isfinite(r)) return std::clamp(1.0, lo, hi);
  return std::clamp(r, lo, hi);
}

void RateController::reset(double rate) {
  rate_ = clamp(rate);
  desired_ = rate_;
}

double RateController::update(double dt_s, double fill_s, std::optional<double> input_rate) {
  if (!(dt_s > 0)) return rate_;
  const double tau = params_.correction_time_s > 0 ? params_.correction_time_s : 1.0;
  double feed_forward = 1.0;
  if (input_rate && std::isfinite(*input_rate) && *input_rate >= 0) feed_forward = *input_rate;
  desired_ = clamp(feed_forward + (fill_s - params_.target_fill_s) / tau);
  const double step = std::max(0.0, params_.max_change_per_s) * dt_s;
  const double delta = std::clamp(desired_ - rate_, -step, step);
  rate_ = clamp(rate_ + delta);
  return rate_;
}

/* ---------------------------------------------------------------------------------------------- */
/* OutputGrid                                                                                     */

void OutputGrid::reset(int fps_n, int fps_d, int64_t origin_ns) {
  fps_n_ = fps_n > 0 ? fps_n : 25;
  fps_d_ = fps_d > 0 ? fps_d : 1;
  origin_ = origin_ns;
}

int64_t OutputGrid::time(uint64_t n) const {
  const unsigned __int128 num = static_cast<unsigned __int128>(n) * static_cast<unsigned>(fps_d_) * 1000000000u;
  return origin_ + static_cast<int64_t>(num / static_cast<unsigned>(fps_n_));
}

uint64_t OutputGrid::index_at_or_after(int64_t t) const {
  if (t <= origin_) return 0;
  const unsigned __int128 rel = static_cast<unsigned __int128>(t - origin_) * static_cast<unsigned>(fps_n_);
  const unsigned __int128 den = static_cast<unsigned __int128>(fps_d_) * 1000000000u;
  uint64_t n = static_cast<uint64_t>(rel / den);
  while (time(n) < t) ++n;
  while (n > 0 && time(n - 1) >= t) --n;
  return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* plan_step                                                                                      */

Step plan_step(size_t count, const std::function<int64_t(size_t)> &duration_of, int64_t offset, int64_t advance) {
  Step step;
  if (count == 0) return step;
  if (advance < 0) advance = 0;
  if (offset < 0) offset = 0;
  const int64_t centre = offset + advance / 2;
  const int64_t target = offset + advance;
  /* Frame covering the centre: the first whose end lies beyond it. */
  int64_t end = 0;
  size_t show = count - 1;
  for (size_t i = 0; i < count; ++i) {
    end += std::max<int64_t>(duration_of(i), 0);
    if (end > centre) {
      show = i;
      break;
    }
  }
  step.show = show;
  /* Use up every frame that ends at or before offset + advance. */
  int64_t start = 0;
  size_t consumed = 0;
  int64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const int64_t d = std::max<int64_t>(duration_of(i), 0);
    total += d;
    if (start + d <= target) {
      start += d;
      ++consumed;
    } else {
      break;
    }
  }
  step.consumed = consumed;
  if (consumed == count) {
    step.offset = 0;
    step.advanced = std::max<int64_t>(0, std::min(target, total) - offset);
  } else {
    step.offset = target - start;
    step.advanced = advance;
  }
  return step;
}

}  // namespace dw::pacing
