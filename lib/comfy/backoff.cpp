#include "comfy/backoff.h"

#include <algorithm>
#include <cmath>

namespace dw::comfy {

static uint64_t seed_or_random(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

Backoff::Backoff(uint32_t initial_ms, uint32_t max_ms, double jitter, uint64_t seed)
    : initial_ms_(std::max<uint32_t>(1, initial_ms)),
      max_ms_(std::max<uint32_t>(1, max_ms)),
      jitter_(std::isfinite(jitter) ? std::clamp(jitter, 0.0, 1.0) : 0.0),
      rng_(seed_or_random(seed)) {
  if (initial_ms_ > max_ms_) initial_ms_ = max_ms_;
}

uint32_t Backoff::next_ms() {
  // initial * 2^attempt, computed in double so large attempts cannot overflow.
  double base = static_cast<double>(initial_ms_) * std::ldexp(1.0, static_cast<int>(std::min<uint32_t>(attempt_, 62)));
  base = std::min(base, static_cast<double>(max_ms_));
  double delay = base;
  if (jitter_ > 0) {
    std::uniform_real_distribution<double> u(-jitter_ / 2, jitter_ / 2);
    delay = base * (1.0 + u(rng_));
  }
  if (attempt_ < 1000) attempt_++;
  delay = std::clamp(delay, 1.0, static_cast<double>(max_ms_));
  return static_cast<uint32_t>(std::lround(delay));
}

}  // namespace dw::comfy
