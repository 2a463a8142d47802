#include "pacing/playout.h"

#include <algorithm>
#include <cmath>

namespace dw::pacing {

namespace {
constexpr double kNs = 1e9;
double to_s(int64_t ns) { return static_cast<double>(ns) / kNs; }
/* Arrivals closer than this belong to one burst (a keyframe and its in-betweens). */
constexpr int64_t kBurstNs = 10'000'000;
/* Arrival gaps remembered for the discontinuity test. */
constexpr size_t kGapHistory = 64;
}  // namespace

const char *playout_state_name(PlayoutState s) {
  switch (s) {
    case PlayoutState::Prebuffering: return "prebuffering";
    case PlayoutState::Playing: return "playing";
    case PlayoutState::Underrun:
    case PlayoutState::Rebuffering:
    case PlayoutState::Refilling: return "underrun";
    case PlayoutState::Done: return "eos";
  }
  return "unknown";
}

bool FrameKey::same_picture(const FrameKey &o) const {
  // The frame meta names the picture exactly. A memory address does not: once the previous frame is
  // freed downstream, the allocator may hand the same address to the next one, so identity decides
  // only for frames without meta (the element keeps its last output alive for those).
  if (has_meta && o.has_meta) return kind == o.kind && index == o.index && position == o.position;
  return identity != 0 && identity == o.identity;
}

Playout::Playout(PlayoutParams params) : params_(params), controller_(params.controller) {
  grid_.reset(25, 1, 0);
}

void Playout::set_params(const PlayoutParams &params) {
  params_ = params;
  controller_.set_params(params.controller);
}

void Playout::reset(bool reset_counters) {
  frames_.clear();
  state_ = PlayoutState::Prebuffering;
  total_ = offset_ = 0;
  eos_ = start_full_ = false;
  arrived_ = false;
  last_input_ = -1;
  gaps_.clear();
  tick_ = 0;
  rate_ = 1.0;
  controller_.reset(1.0);
  input_rate_.reset();
  output_rate_.reset();
  distinct_rate_.reset();
  have_last_ = false;
  last_pts_ = -1;
  if (reset_counters) counters_ = PlayoutCounters();
}

void Playout::set_framerate(int fps_n, int fps_d, int64_t at_ns) {
  if (fps_n <= 0 || fps_d <= 0) return;
  if (fps_n == grid_.fps_n() && fps_d == grid_.fps_d()) return;
  grid_.reset(fps_n, fps_d, at_ns >= 0 ? at_ns : grid_.origin());
  tick_ = 0;
}

int64_t Playout::frame_interval() const { return grid_.interval(); }

int64_t Playout::fill() const { return std::max<int64_t>(0, total_ - offset_); }

bool Playout::full() const {
  if (params_.max_size_ns > 0 && fill() >= params_.max_size_ns) return true;
  return params_.max_size_frames > 0 && frames_.size() >= params_.max_size_frames;
}

/* ---------------------------------------------------------------------------------------------- */
/* Input side                                                                                     */

bool Playout::is_discontinuity(const QueuedFrame &f, int64_t now) const {
  if (f.discont) return true;
  if (params_.gap_factor <= 0 || now < 0 || last_input_ < 0 || gaps_.empty()) return false;
  /* Only against a history longer than min_gap: right after a start or an outage the history may
   * hold nothing but the short gaps between in-betweens, and the first keyframe period would look
   * like an outage. */
  int64_t span = 0;
  for (int64_t g : gaps_) span += g;
  if (span < params_.min_gap_ns) return false;
  const int64_t gap = now - last_input_;
  const int64_t longest = *std::max_element(gaps_.begin(), gaps_.end());
  return gap > params_.min_gap_ns && static_cast<double>(gap) > params_.gap_factor * static_cast<double>(longest);
}

/* Why (issue 13): during an outage the input-rate estimate decays to 0 and the controller, steering
 * an emptying queue, slews the playback rate down to min-rate. When frames come back, the estimate
 * still spans the outage (about 0 for a whole window) and the rate starts from min-rate, so the
 * controller lets the fill grow until the fill error alone asks for 1.0 (target + correction time,
 * 12 s by default) and then drains it at max-rate: ~17 s of fill, upstream throttled for ~40 s.
 * A discontinuity therefore starts the estimate afresh, puts the rate back to 1.0, and, if the
 * queue had run dry (holding the last frame), re-buffers to the target fill before playing on: the
 * picture is frozen already, a few more seconds restore the cushion in one go. */
void Playout::on_discontinuity() {
  counters_.discontinuities++;
  input_rate_.reset();
  gaps_.clear();
  last_input_ = -1;  // the outage is not an arrival gap to compare the next ones with
  controller_.reset(1.0);
  rate_ = 1.0;
  const int64_t refill = params_.adaptive ? static_cast<int64_t>(params_.controller.target_fill_s * kNs)
                                          : params_.prebuffer_ns;
  if (state_ == PlayoutState::Underrun) {
    /* Hold keeps repeating the last frame while the queue refills (encoders downstream keep getting
     * frames); pause keeps pausing, only for longer. */
    state_ = PlayoutState::Refilling;
    rebuffer_threshold_ = refill;
  } else if (state_ == PlayoutState::Rebuffering) {
    rebuffer_threshold_ = std::max(rebuffer_threshold_, refill);
  }
}

void Playout::fix_provisional_tail(const QueuedFrame &next) {
  if (frames_.empty()) return;
  QueuedFrame &tail = frames_.back();
  if (!tail.provisional || next.pts < 0 || tail.pts < 0 || next.pts <= tail.pts) return;
  int64_t d = next.pts - tail.pts;
  if (params_.max_size_ns > 0) d = std::min(d, params_.max_size_ns);
  total_ += d - tail.duration;
  tail.duration = d;
  tail.provisional = false;
}

void Playout::admit(QueuedFrame &frame, int64_t now) {
  if (frame.duration <= 0) {
    frame.duration = frame_interval();
    frame.provisional = true;
  }
  const bool disc = is_discontinuity(frame, now);
  if (disc && arrived_) {
    /* The gap is not content: the frame before it keeps its guessed duration. */
    if (!frames_.empty()) frames_.back().provisional = false;
    on_discontinuity();
  } else {
    fix_provisional_tail(frame);
  }
}

void Playout::push(QueuedFrame frame, int64_t now) {
  total_ += frame.duration;
  counters_.frames_in++;
  arrived_ = true;
  if (now >= 0) {
    if (last_input_ >= 0 && now - last_input_ > kBurstNs) {
      gaps_.push_back(now - last_input_);
      if (gaps_.size() > kGapHistory) gaps_.pop_front();
    }
    input_rate_.add(to_s(now), to_s(frame.duration));
    last_input_ = now;
  }
  frames_.push_back(frame);
}

void Playout::erase(size_t i) {
  total_ -= frames_[i].duration;
  if (i == 0) offset_ = 0;
  frames_.erase(frames_.begin() + static_cast<std::ptrdiff_t>(i));
}

/* Overrun with drop_inbetweens: in-betweens go first (never the head, which may be on screen, while
 * another is left), then the incoming in-between, and only then keyframes. */
OverrunPlan Playout::on_full(bool incoming_keyframe) {
  OverrunPlan plan;
  if (!params_.drop_inbetweens) return plan;
  auto dropped = [&](size_t i, bool keyframe) {
    erase(i);
    (keyframe ? counters_.dropped_keyframes : counters_.dropped_inbetweens)++;
    plan.action = OverrunPlan::Action::DroppedQueued;
    plan.index = i;
    return plan;
  };
  for (size_t i = 1; i < frames_.size(); ++i)
    if (!frames_[i].keyframe) return dropped(i, false);
  if (!frames_.empty() && !frames_[0].keyframe) return dropped(0, false);
  if (!incoming_keyframe || frames_.empty()) {
    (incoming_keyframe ? counters_.dropped_keyframes : counters_.dropped_inbetweens)++;
    plan.action = OverrunPlan::Action::DropIncoming;
    return plan;
  }
  return dropped(frames_.size() > 1 ? 1 : 0, true);
}

/* ---------------------------------------------------------------------------------------------- */
/* Buffering                                                                                      */

int64_t Playout::threshold() const {
  return state_ == PlayoutState::Prebuffering ? params_.prebuffer_ns : rebuffer_threshold_;
}

/* Why (pre/re-)buffering may end now, or nullptr. */
const char *Playout::ready_reason(int64_t now) {
  const bool any = !frames_.empty();
  if (any && last_input_ < 0) last_input_ = now;
  if (eos_) return "eos";
  if (start_full_ || (any && full())) return "full";
  if (any && fill() >= threshold()) return state_ == PlayoutState::Prebuffering ? "prebuffered" : "rebuffered";
  if (any && now >= 0 && last_input_ >= 0 && now >= last_input_ + params_.prebuffer_timeout_ns) return "timeout";
  return nullptr;
}

BufferingPlan Playout::plan_buffering(int64_t now) {
  BufferingPlan plan;
  plan.start_reason = ready_reason(now);
  if (!plan.start_reason && !frames_.empty() && last_input_ >= 0)
    plan.wake_at = last_input_ + params_.prebuffer_timeout_ns;
  return plan;
}

StartInfo Playout::start(const char *reason, int64_t now) {
  (void)reason;
  StartInfo info;
  info.first = state_ == PlayoutState::Prebuffering;
  info.threshold = threshold();
  info.fill = fill();
  state_ = PlayoutState::Playing;
  start_full_ = false;
  if (info.first) {
    controller_.reset(1.0);
    rate_ = 1.0;
  }
  if (info.first && info.fill < info.threshold && !frames_.empty()) {
    info.incomplete = true;
    counters_.prebuffer_incomplete++;
  }
  /* The output starts now on the sink's timeline (it renders at pts + latency), never before the
   * tick after the last one pushed. */
  int64_t origin = (now >= 0 && now > latency_) ? now - latency_ : 0;
  if (last_pts_ >= 0) origin = std::max(origin, last_pts_ + frame_interval());
  grid_.reset(grid_.fps_n(), grid_.fps_d(), origin);
  tick_ = 0;
  info.origin = origin;
  return info;
}

/* ---------------------------------------------------------------------------------------------- */
/* Ticks                                                                                          */

int64_t Playout::next_tick_deadline() const { return grid_.time(tick_) + latency_; }

int64_t Playout::next_tick_time() const { return grid_.time(tick_); }

/* More than a tick late (downstream blocked): jump to the current tick; the content stays. */
void Playout::skip_late_ticks(int64_t now) {
  if (now < 0) return;
  const int64_t target = grid_.time(tick_) + latency_;
  if (now <= target + grid_.duration(tick_)) return;
  const uint64_t cur = grid_.index_at_or_after(now - latency_);
  if (cur > tick_ + 1) {
    counters_.late_ticks += cur - 1 - tick_;
    tick_ = cur - 1;
  }
}

void Playout::steer(int64_t dur, int64_t now) {
  if (!params_.adaptive) {
    controller_.reset(1.0);
    rate_ = 1.0;
    return;
  }
  controller_.set_params(params_.controller);
  rate_ = controller_.update(to_s(dur), to_s(fill()), input_rate(now));
}

void Playout::stamp(TickPlan &plan, const FrameKey &key, int64_t now) {
  const double now_s = now >= 0 ? to_s(now) : 0.0;
  plan.distinct = plan.action == TickPlan::Action::Show && (!have_last_ || !key.same_picture(last_key_));
  counters_.frames_out++;
  output_rate_.add(now_s, 1.0);
  if (plan.distinct) {
    counters_.frames_distinct++;
    distinct_rate_.add(now_s, 1.0);
  }
  last_key_ = key;
  have_last_ = true;
  last_pts_ = plan.pts;
}

TickPlan Playout::plan_empty_tick(int64_t now) {
  TickPlan plan;
  plan.pts = grid_.time(tick_);
  plan.duration = grid_.duration(tick_);
  if (eos_) {
    state_ = PlayoutState::Done;
    plan.action = TickPlan::Action::Eos;
    return plan;
  }
  if (state_ == PlayoutState::Playing) {
    counters_.underruns++;
    plan.event = "underrun";
    if (params_.pause_on_underrun) {
      state_ = PlayoutState::Rebuffering;
      rebuffer_threshold_ = params_.rebuffer_ns;
    } else {
      state_ = PlayoutState::Underrun;
    }
  }
  if (state_ == PlayoutState::Rebuffering) return plan;  // Nothing; back to buffering
  return plan_hold_tick(plan, now);
}

/* Hold: the last frame again (nothing before the first output), on to the next tick. */
TickPlan Playout::plan_hold_tick(TickPlan plan, int64_t now) {
  if (have_last_) {
    plan.action = TickPlan::Action::Repeat;
    counters_.frames_repeated++;
    stamp(plan, last_key_, now);
  }
  tick_++;
  return plan;
}

TickPlan Playout::plan_show_tick(int64_t now) {
  TickPlan plan;
  plan.action = TickPlan::Action::Show;
  plan.pts = grid_.time(tick_);
  plan.duration = grid_.duration(tick_);
  if (state_ == PlayoutState::Underrun) {
    state_ = PlayoutState::Playing;
    plan.event = "recovered";
  }
  steer(plan.duration, now);
  const int64_t advance = std::llround(rate_ * static_cast<double>(plan.duration));
  const Step step = plan_step(
      frames_.size(), [this](size_t i) { return frames_[i].duration; }, offset_, advance);
  plan.show = step.show;
  plan.consumed = step.consumed;
  frames_[step.show].shown = true;
  const FrameKey key = frames_[step.show].key;
  for (size_t i = 0; i < step.consumed; ++i) {
    if (!frames_.front().shown) counters_.frames_skipped++;
    total_ -= frames_.front().duration;
    frames_.pop_front();
  }
  offset_ = frames_.empty() ? 0 : step.offset;
  if (frames_.empty()) total_ = 0;
  stamp(plan, key, now);
  tick_++;
  return plan;
}

TickPlan Playout::plan_tick(int64_t now) {
  skip_late_ticks(now);
  if (state_ == PlayoutState::Refilling) {
    if (!ready_reason(now)) {
      TickPlan plan;
      plan.pts = grid_.time(tick_);
      plan.duration = grid_.duration(tick_);
      return plan_hold_tick(plan, now);
    }
    state_ = PlayoutState::Underrun;  // refilled: the show tick reports "recovered"
  }
  return frames_.empty() ? plan_empty_tick(now) : plan_show_tick(now);
}

/* ---------------------------------------------------------------------------------------------- */
/* Reporting                                                                                      */

std::optional<double> Playout::input_rate(int64_t now) const { return input_rate_.rate(now >= 0 ? to_s(now) : 0.0); }

double Playout::output_rate(int64_t now) const { return output_rate_.rate(now >= 0 ? to_s(now) : 0.0).value_or(0.0); }

double Playout::distinct_rate(int64_t now) const {
  return distinct_rate_.rate(now >= 0 ? to_s(now) : 0.0).value_or(0.0);
}

}  // namespace dw::pacing
