#include "cache/injection.h"

namespace dw::cache {

const char *injection_verdict_name(InjectionVerdict v) {
  switch (v) {
    case InjectionVerdict::NoCollapse: return "no-collapse";
    case InjectionVerdict::Disabled: return "disabled";
    case InjectionVerdict::Cooldown: return "cooldown";
    case InjectionVerdict::MildSkipped: return "mild-skipped";
    case InjectionVerdict::NoCandidate: return "no-candidate";
    case InjectionVerdict::Inject: return "inject";
  }
  return "unknown";
}

InjectionPolicy::InjectionPolicy(InjectionConfig config, uint32_t seed) : config_(config), rng_(seed) {}

void InjectionPolicy::reset(uint32_t seed) {
  rng_.seed(seed);
  since_ = UINT64_MAX;
}

InjectionDecision InjectionPolicy::decide(const CollapseState &state,
                                          const std::function<std::optional<Pick>()> &pick) {
  InjectionDecision d;
  if (since_ != UINT64_MAX) since_++;
  if (state.level == CollapseLevel::None) return d;
  if (!config_.enabled) {
    d.verdict = InjectionVerdict::Disabled;
    return d;
  }
  if (since_ < config_.cooldown) {
    d.verdict = InjectionVerdict::Cooldown;
    return d;
  }
  if (state.level == CollapseLevel::Mild) {
    /* Drawn only for mild collapses, so the sequence does not depend on how many were severe. */
    const double coin = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    if (coin >= config_.mild_probability) {
      d.verdict = InjectionVerdict::MildSkipped;
      return d;
    }
  }
  d.pick = pick ? pick() : std::nullopt;
  if (!d.pick || d.pick->similarity >= config_.max_similarity) {
    d.verdict = InjectionVerdict::NoCandidate;
    return d;
  }
  d.verdict = InjectionVerdict::Inject;
  d.reason = std::string("collapse-") + collapse_level_name(state.level) + ":" + state.reason;
  return d;
}

}  // namespace dw::cache
