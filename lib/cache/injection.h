// When cachetap injects a cached keyframe into the feedback loop. GStreamer-free, deterministic
// for a given seed (the mild-collapse coin), not thread-safe (cachetap's worker is its only user).
//
// For each analysed keyframe (not itself an injection), given the collapse detector's state:
//   no collapse or injection off     -> nothing
//   fewer than `cooldown` keyframes since the last accepted injection -> "cooldown"
//   mild collapse                    -> injects only with probability mild_probability
//   the best candidate (the cached entry least similar to the recent window) is still at least
//   max_similarity similar           -> "no-candidate" (injecting it would not break the loop)
//   otherwise                        -> inject that entry.
// The cooldown counts keyframes from the last injection that upstream *accepted* (on_injected()).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>

#include "cache/cache.h"
#include "cache/collapse.h"

namespace dw::cache {

struct InjectionConfig {
  bool enabled = true;
  uint32_t cooldown = 8;          // keyframes after an injection before the next one
  double mild_probability = 0.5;  // chance to inject on a mild collapse
  double max_similarity = 0.95;   // a candidate this similar to the window is no help (collapse threshold)
};

enum class InjectionVerdict { NoCollapse, Disabled, Cooldown, MildSkipped, NoCandidate, Inject };
const char *injection_verdict_name(InjectionVerdict v);

struct InjectionDecision {
  InjectionVerdict verdict = InjectionVerdict::NoCollapse;
  std::optional<Pick> pick;  // Inject: the entry; NoCandidate: the best there was (if any)
  std::string reason;        // Inject: "collapse-<level>:<detector reason>", for the event and message
};

class InjectionPolicy {
 public:
  explicit InjectionPolicy(InjectionConfig config = {}, uint32_t seed = 0x5eedca7e);
  void set_config(const InjectionConfig &config) { config_ = config; }
  const InjectionConfig &config() const { return config_; }

  // Start over: no injection yet (so none is in cooldown), the coin re-seeded.
  void reset(uint32_t seed = 0x5eedca7e);
  // Decides for the newest keyframe. `pick` finds the candidate; it is called only when needed.
  // Also counts the keyframe towards the cooldown.
  InjectionDecision decide(const CollapseState &state, const std::function<std::optional<Pick>()> &pick);
  // Upstream accepted the injection: the cooldown starts now.
  void on_injected() { since_ = 0; }
  // Keyframes since the last accepted injection; UINT64_MAX = none yet.
  uint64_t since_injection() const { return since_; }

 private:
  InjectionConfig config_;
  std::mt19937 rng_;
  uint64_t since_ = UINT64_MAX;
};

}  // namespace dw::cache
