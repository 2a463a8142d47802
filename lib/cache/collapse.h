// Feedback-loop collapse detection for cachetap. GStreamer-free.
//
// Over the last `window` keyframes (window - 1 consecutive pairs):
//   stagnating  every consecutive similarity is above `threshold`
//   frozen      every consecutive similarity is above `frozen` (nothing changes any more)
//   runaway     the colour statistics drift one way: mean luma or saturation moved by more than
//               luma_drift / saturation_drift (mostly monotonically), contrast changed by more than
//               contrast_change (relative: washed out or burnt), or sharpness fell by more than
//               sharpness_drop (relative: blurrier)
// Level: severe = stagnating and (runaway or frozen); mild = stagnating, or at least half the pairs
// above threshold with runaway; none otherwise (and always while fewer than `window` keyframes).
#pragma once

#include <cstddef>
#include <deque>
#include <string>

#include "cache/embedding.h"

namespace dw::cache {

enum class CollapseLevel { None = 0, Mild = 1, Severe = 2 };
const char *collapse_level_name(CollapseLevel level);

struct CollapseConfig {
  size_t window = 6;
  double threshold = 0.95;
  double frozen = 0.995;
  double luma_drift = 0.06;
  double saturation_drift = 0.08;
  double contrast_change = 0.25;
  double sharpness_drop = 0.3;
};

struct CollapseState {
  CollapseLevel level = CollapseLevel::None;
  size_t samples = 0;            // keyframes in the window
  double mean_similarity = 0;    // of consecutive pairs
  double min_similarity = 0;
  double last_similarity = 0;    // newest pair
  double luma_drift = 0;         // last - first
  double saturation_drift = 0;
  double contrast_change = 0;    // relative, last / first - 1
  double sharpness_change = 0;
  bool stagnating = false;
  bool frozen = false;
  bool runaway = false;
  std::string reason;            // e.g. "stagnating+luma-drift"
};

class CollapseDetector {
 public:
  explicit CollapseDetector(CollapseConfig config = {}) : config_(config) {}
  void set_config(const CollapseConfig &config);
  const CollapseConfig &config() const { return config_; }
  // Adds the newest keyframe and re-evaluates the window.
  const CollapseState &push(const Embedding &embedding);
  const CollapseState &state() const { return state_; }
  // The window's embeddings, oldest first.
  const std::deque<Embedding> &window() const { return window_; }
  // Forgets the window (after an injection the loop starts from a new image).
  void reset();

 private:
  void evaluate();
  CollapseConfig config_;
  std::deque<Embedding> window_;
  std::deque<double> sims_;  // sims_[i] = similarity(window_[i], window_[i + 1])
  CollapseState state_;
};

}  // namespace dw::cache
