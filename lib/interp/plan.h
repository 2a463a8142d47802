// dw::interp planning: every decision vaeinterp and the interpolation backends make about the frames
// between two keyframes, as plain functions with unit tests (tests/unit/test_interp.cpp). No
// GStreamer, no OpenCV, no LibTorch. Times are nanoseconds in int64 (kNoTime = unknown), like
// GstClockTime but signed so that "unknown" cannot be confused with a huge value.
//
//  - PairPlanner: for a new keyframe B after the held keyframe A, how many in-betweens, at which t,
//    with which timestamps and durations; whether the pair is a discontinuity (B flagged DISCONT, or
//    a gap much longer than the recent keyframe period) that gets a short transition instead of
//    seconds of interpolation (issue 13); the keyframe period estimate behind the latency query.
//  - bisection_schedule(): the order of midpoint calls for models that can only make t = 1/2
//    (RIFE-style), keeping O(log N) images alive for N in-betweens (used by lib/interp/vfi).
//  - Residual carry (issue 10): frame_t = D(slerp(zA, zB, t)) + (1-t)(A - D(zA)) + t(B - D(zB)),
//    so in-betweens next to a keyframe are as sharp as the keyframe (no pop).
//  - Occlusion maths for the flow backend: forward-backward consistency, blend weights at t, and
//    the flows from t to each keyframe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "image/image.h"

namespace dw::interp {

constexpr int64_t kNoTime = -1;
constexpr int64_t kSecond = 1000000000;
constexpr int kMaxFrames = 240;     // in-betweens per pair, upper bound (frames property range)
constexpr int kDefaultFrames = 7;   // when frames=-1 cannot be resolved (no interval)

/* ---------------------------------------------------------------------------------------------- */
/* Pair planning                                                                                  */

struct PlanSettings {
  int frames = kDefaultFrames;  // in-betweens per pair; -1 = auto: round(interval * target_fps) - 1
  double target_fps = 0;        // output rate (frames/s); 0 = none
  // After a discontinuity, the in-betweens cover only the last max_gap_transition ns before B (A is
  // held until then); 0 = a cut (no in-betweens).
  int64_t max_gap_transition = kSecond / 2;
  // A pair whose interval exceeds gap_ratio times the recent keyframe period (and min_gap) is a gap
  // (an outage upstream), planned like a DISCONT keyframe.
  double gap_ratio = 4.0;
  int64_t min_gap = 2 * kSecond;
  // Weight of a new interval in the keyframe-period moving average.
  double period_ema_weight = 0.3;
};

struct PairInput {
  bool have_a = false;           // a keyframe A is held
  bool a_usable = false;         // A can be interpolated from (same size as B, its set-up worked)
  int64_t a_pts = kNoTime;
  int64_t b_pts = kNoTime;
  int64_t a_duration = kNoTime;  // A's own buffer duration (used when no interval is known)
  bool b_discont = false;        // B carries the DISCONT flag (first keyframe after an outage)
};

enum class PairKind {
  First,        // no A: B is only held
  Restart,      // A is pushed alone (not usable, timestamps not increasing); no in-betweens
  Interpolate,  // in-betweens spread over the whole interval
  Transition,   // discontinuity: A held, then a short transition just before B
};
const char *pair_kind_name(PairKind kind);

struct PairPlan {
  PairKind kind = PairKind::First;
  int64_t interval = kNoTime;    // b_pts - a_pts when both known and increasing
  int64_t a_duration = kNoTime;  // duration to put on A when it is pushed
  std::vector<double> ts;        // in-between positions, ascending, each in (0, 1)
  std::vector<int64_t> pts;      // their timestamps (kNoTime when the interval is unknown)
  std::vector<int64_t> durations;
  std::string reason;            // why the pair is a Restart or a Transition (for logs)
  size_t count() const { return ts.size(); }
};

// Number of in-betweens for an interval: frames when >= 0; else round(interval * fps) - 1 clamped
// to [0, kMaxFrames]; kDefaultFrames when neither is known.
int pick_frames(const PlanSettings &s, int64_t interval);

// n evenly spaced positions k / (n + 1), k = 1..n.
std::vector<double> even_positions(int n);

class PairPlanner {
 public:
  explicit PairPlanner(PlanSettings settings = {}) : settings_(settings) {}
  void set_settings(const PlanSettings &s) { settings_ = s; }
  const PlanSettings &settings() const { return settings_; }

  // Plans pair (A, B) and updates the period estimate (gaps and restarts are not period samples).
  PairPlan plan(const PairInput &in);

  // Recent keyframe period (EMA over planned intervals), kNoTime before the first one.
  int64_t period() const { return period_; }
  // Spacing of the last planned pair's frames (a held keyframe pushed alone at EOS gets it).
  int64_t last_spacing() const { return last_spacing_; }
  void reset();

 private:
  bool is_gap(const PairInput &in, int64_t interval) const;
  PlanSettings settings_;
  int64_t period_ = kNoTime;
  int64_t last_spacing_ = kNoTime;
};

// True when a newly measured period moved more than ratio away from the one reported in the
// latency query (or none was reported): time to post a latency message.
bool latency_moved(int64_t period, int64_t reported, double ratio = 0.2);

/* ---------------------------------------------------------------------------------------------- */
/* Bisection for midpoint-only models                                                             */

// One step of a bisection schedule. Slots hold images: slot 0 = A (t = 0), slot 1 = B (t = 1),
// slots >= 2 are intermediates, reused after Release.
struct BisectStep {
  enum class Op {
    Compute,  // slots[out] = model(slots[left], slots[right]); t = its position
    Emit,     // output frame `frame` (index into the ts given) is a copy of slots[out] (made at t)
    Release,  // slots[out] is no longer needed
  };
  Op op = Op::Compute;
  int out = 0;
  int left = 0, right = 0;  // Compute only
  double t = 0;             // position of slots[out]
  size_t frame = 0;         // Emit only
};

// Schedule of midpoint calls making the in-betweens at ts (each in (0, 1)); frames are emitted in
// ascending t (depth-first, left half first), so each can be pushed as soon as it is made, and at
// most 2 + ceil(log2(1 / tolerance)) slots are alive at once. A target is served by the first
// computed position within `tolerance` of it (exact for dyadic t such as k / 2^m); tolerance <= 0
// = a quarter of the smallest distance between targets (and to 0 and 1).
std::vector<BisectStep> bisection_schedule(const std::vector<double> &ts, double tolerance = 0);
// Largest number of slots alive at once in a schedule (including A and B).
int bisection_peak_slots(const std::vector<BisectStep> &schedule);

/* ---------------------------------------------------------------------------------------------- */
/* Residual carry for latent backends                                                             */

// original - decoded, per RGB sample (decoded resized to the original's size by the caller).
struct Residual {
  int width = 0, height = 0;
  std::vector<int16_t> data;  // width * height * 3
  bool empty() const { return data.empty(); }
};
struct ResidualWeights {
  double a = 0, b = 0;
};
// The weights of A's and B's residuals at t: (1 - t, t). At t = 0 the frame is exactly A.
ResidualWeights residual_weights(double t);
// Throws Error when the sizes differ or an image is not RGB/RGBA.
Residual make_residual(const Image &original, const Image &decoded);
// frame += wa * ra + wb * rb (rounded, clamped to 0..255); frame must be RGB of the residuals' size.
void add_residuals(Image &frame, const Residual &ra, const Residual &rb, double t);
// frame += r (clamped to 0..255): a residual already weighted and moved to t (flow.h PairWarper).
void add_residual(Image &frame, const Residual &r);

// How much of the change from A to B the pair's motion does not explain: mean |A - B_A| over mean
// |A - B|, where B_A is B moved into A's geometry along the flow (0 = pure motion, ~1 = nothing
// moved, the content changed: a morph). 0 when A == B. Throws Error on size/channel mismatch.
double unexplained_change(const Image &a, const Image &b, const Image &b_in_a);
// Above this the flow of a pair is not trusted to carry a latent backend's morph: the latents are
// slerped in place (residual carry in place), as without OpenCV. Measured on the bench's sequences
// with the raw alignment (no occlusion fill): pan 0.01, zoom+rotate 0.11-0.12, two unrelated photos
// 0.86-0.90.
constexpr double kMaxUnexplainedChange = 0.5;
inline bool pair_is_motion(double unexplained) { return unexplained <= kMaxUnexplainedChange; }

/* ---------------------------------------------------------------------------------------------- */
/* Occlusion maths for the flow backend                                                           */

// Forward-backward consistency (Sundaram et al. 2010): for a pixel with flow w (A -> B) and the
// backward flow w_back found where it lands, err2 = |w + w_back|^2 and mag2 = |w|^2 + |w_back|^2.
// Returns the occlusion in [0, 1]: 0 while err2 <= 0.01 * mag2 + 0.5 (consistent), rising linearly
// to 1 at twice that threshold.
inline float occlusion_from_consistency(float err2, float mag2) {
  const float threshold = 0.01f * mag2 + 0.5f;
  const float u = (err2 - threshold) / threshold;
  return u < 0.0f ? 0.0f : u > 1.0f ? 1.0f : u;
}

struct BlendWeights {
  float a = 0, b = 0;  // sum to 1
};
// Weights of A's and B's warped samples at t, given how occluded each sample is (uA: A's pixel has
// no match in B, so it is being covered: trust A; uB: B's pixel has no match in A, so it is being
// uncovered: trust B). With no occlusion: (1 - t, t).
// Inline: the flow backend calls these once per pixel and frame.
inline BlendWeights occlusion_blend(double t, float occ_a, float occ_b) {
  const float tf = t < 0.0 ? 0.0f : t > 1.0 ? 1.0f : static_cast<float>(t);
  // A's sample loses weight where B's sample is new content (uncovered) and A's is not being
  // covered, and the other way round; both or neither occluded: the plain (1 - t, t) blend.
  const float a = (1.0f - tf) * (1.0f - occ_b * (1.0f - occ_a));
  const float b = tf * (1.0f - occ_a * (1.0f - occ_b));
  const float sum = a + b;
  if (sum <= 1e-6f) return {1.0f - tf, tf};
  return {a / sum, b / sum};
}

// Flows from the in-between at t back to A and to B from the pair's flows (Super SloMo's linear
// approximation): F_t->A = -t(1-t) F_AB + t^2 F_BA, F_t->B = (1-t)^2 F_AB - t(1-t) F_BA.
struct FlowCoefs {
  float to_a_from_ab = 0, to_a_from_ba = 0;
  float to_b_from_ab = 0, to_b_from_ba = 0;
};
FlowCoefs intermediate_flow_coefs(double t);

}  // namespace dw::interp
