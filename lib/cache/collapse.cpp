// Collapse detection over a sliding window of keyframe embeddings.
#include "cache/collapse.h"

#include <algorithm>
#include <cmath>

namespace dw::cache {

const char *collapse_level_name(CollapseLevel level) {
  switch (level) {
    case CollapseLevel::None: return "none";
    case CollapseLevel::Mild: return "mild";
    case CollapseLevel::Severe: return "severe";
  }
  return "?";
}

void CollapseDetector::set_config(const CollapseConfig &config) {
  config_ = config;
  config_.window = std::max<size_t>(2, config_.window);
  while (window_.size() > config_.window) {
    window_.pop_front();
    if (!sims_.empty()) sims_.pop_front();
  }
  evaluate();
}

void CollapseDetector::reset() {
  window_.clear();
  sims_.clear();
  state_ = CollapseState();
}

const CollapseState &CollapseDetector::push(const Embedding &embedding) {
  if (!window_.empty()) sims_.push_back(similarity(window_.back(), embedding));
  window_.push_back(embedding);
  const size_t w = std::max<size_t>(2, config_.window);
  while (window_.size() > w) {
    window_.pop_front();
    sims_.pop_front();
  }
  evaluate();
  return state_;
}

namespace {

// Fraction of the steps of a series that go the same way as its total change.
template <typename Get>
double monotonic_fraction(const std::deque<Embedding> &w, Get get) {
  if (w.size() < 2) return 0;
  const double total = get(w.back()) - get(w.front());
  size_t same = 0;
  for (size_t i = 1; i < w.size(); ++i) {
    const double step = get(w[i]) - get(w[i - 1]);
    if ((total >= 0 && step >= 0) || (total < 0 && step <= 0)) same++;
  }
  return static_cast<double>(same) / static_cast<double>(w.size() - 1);
}

}  // namespace

void CollapseDetector::evaluate() {
  CollapseState st;
  st.samples = window_.size();
  if (!sims_.empty()) {
    double sum = 0, mn = 1.0;
    size_t above = 0;
    for (double s : sims_) {
      sum += s;
      mn = std::min(mn, s);
      if (s > config_.threshold) above++;
    }
    st.mean_similarity = sum / sims_.size();
    st.min_similarity = mn;
    st.last_similarity = sims_.back();
    const ColourStats &a = window_.front().colour, &b = window_.back().colour;
    st.luma_drift = b.luma - a.luma;
    st.saturation_drift = b.saturation - a.saturation;
    st.contrast_change = a.contrast > 1e-6 ? b.contrast / a.contrast - 1.0 : 0.0;
    st.sharpness_change = a.sharpness > 1e-6 ? b.sharpness / a.sharpness - 1.0 : 0.0;

    if (window_.size() >= std::max<size_t>(2, config_.window)) {
      st.stagnating = above == sims_.size();
      st.frozen = mn > config_.frozen;
      std::string why;
      auto add = [&](const char *r) { why += std::string(why.empty() ? "" : "+") + r; };
      if (std::fabs(st.luma_drift) >= config_.luma_drift &&
          monotonic_fraction(window_, [](const Embedding &e) { return e.colour.luma; }) >= 0.75)
        add(st.luma_drift < 0 ? "darkening" : "brightening");
      if (std::fabs(st.saturation_drift) >= config_.saturation_drift &&
          monotonic_fraction(window_, [](const Embedding &e) { return e.colour.saturation; }) >= 0.75)
        add(st.saturation_drift < 0 ? "desaturating" : "oversaturating");
      if (std::fabs(st.contrast_change) >= config_.contrast_change)
        add(st.contrast_change < 0 ? "washing-out" : "burning");
      if (-st.sharpness_change >= config_.sharpness_drop) add("blurring");
      st.runaway = !why.empty();
      const bool partial = above * 2 >= sims_.size();
      if (st.stagnating && (st.runaway || st.frozen))
        st.level = CollapseLevel::Severe;
      else if (st.stagnating || (partial && st.runaway))
        st.level = CollapseLevel::Mild;
      std::string base = st.frozen ? "frozen" : st.stagnating ? "stagnating" : partial ? "converging" : "";
      st.reason = base;
      if (!why.empty()) st.reason += (base.empty() ? "" : "+") + why;
    }
  }
  state_ = st;
}

}  // namespace dw::cache
