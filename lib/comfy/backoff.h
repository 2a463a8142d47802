// Exponential backoff with full jitter, capped. Deterministic for a given seed (tests).
#pragma once

#include <cstdint>
#include <random>

namespace dw::comfy {

class Backoff {
 public:
  Backoff(uint32_t initial_ms = 250, uint32_t max_ms = 10000, double jitter = 0.5, uint64_t seed = 0);
  // Delay before the next attempt: initial * 2^attempt, capped at max, with +-jitter/2 of it
  // randomised; never below 1 ms and never above max_ms.
  uint32_t next_ms();
  void reset() { attempt_ = 0; }
  uint32_t attempt() const { return attempt_; }

 private:
  uint32_t initial_ms_, max_ms_;
  double jitter_;
  uint32_t attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace dw::comfy
