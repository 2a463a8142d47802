#include <gtest/gtest.h>

#include "comfy/backoff.h"

using dw::comfy::Backoff;

TEST(Backoff, GrowsExponentiallyWithoutJitter) {
  Backoff b(100, 100000, 0.0, 1);
  EXPECT_EQ(b.next_ms(), 100u);
  EXPECT_EQ(b.next_ms(), 200u);
  EXPECT_EQ(b.next_ms(), 400u);
  EXPECT_EQ(b.next_ms(), 800u);
  EXPECT_EQ(b.attempt(), 4u);
}

TEST(Backoff, CappedAtMax) {
  Backoff b(250, 1000, 0.0, 1);
  EXPECT_EQ(b.next_ms(), 250u);
  EXPECT_EQ(b.next_ms(), 500u);
  EXPECT_EQ(b.next_ms(), 1000u);
  for (int i = 0; i < 2000; i++) EXPECT_EQ(b.next_ms(), 1000u);  // no overflow after many attempts
}

TEST(Backoff, JitterStaysInBounds) {
  Backoff b(100, 10000, 0.5, 42);
  for (int i = 0; i < 200; i++) {
    uint32_t base = std::min<uint64_t>(10000, 100ull << std::min(i, 20));
    uint32_t d = b.next_ms();
    EXPECT_GE(d, static_cast<uint32_t>(base * 0.75) - 1) << i;
    EXPECT_LE(d, std::min<uint32_t>(10000, static_cast<uint32_t>(base * 1.25) + 1)) << i;
    EXPECT_GE(d, 1u);
  }
}

TEST(Backoff, JitterActuallyVaries) {
  Backoff b(1000, 1000, 0.5, 7);
  uint32_t first = b.next_ms();
  bool differs = false;
  for (int i = 0; i < 20; i++) differs |= b.next_ms() != first;
  EXPECT_TRUE(differs);
}

TEST(Backoff, Reset) {
  Backoff b(10, 1000, 0.0, 1);
  b.next_ms();
  b.next_ms();
  b.next_ms();
  EXPECT_EQ(b.attempt(), 3u);
  b.reset();
  EXPECT_EQ(b.attempt(), 0u);
  EXPECT_EQ(b.next_ms(), 10u);
}

TEST(Backoff, DeterministicBySeed) {
  Backoff a(100, 5000, 0.5, 1234), b(100, 5000, 0.5, 1234), c(100, 5000, 0.5, 999);
  bool any_diff = false;
  for (int i = 0; i < 30; i++) {
    uint32_t x = a.next_ms(), y = b.next_ms(), z = c.next_ms();
    EXPECT_EQ(x, y);
    any_diff |= x != z;
  }
  EXPECT_TRUE(any_diff);
}

TEST(Backoff, DegenerateParameters) {
  Backoff b(0, 0, 5.0, 3);  // clamped: initial/max >= 1, jitter <= 1
  for (int i = 0; i < 10; i++) EXPECT_EQ(b.next_ms(), 1u);
  Backoff c(5000, 100, 0.0, 3);  // initial above max
  EXPECT_EQ(c.next_ms(), 100u);
}
