// dw::pacing with synthetic clocks: the input-rate estimator under steady and bursty arrival and
// stalls, the playback-rate controller (convergence, clamping, rate limit), the output grid and the
// per-tick frame selection.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "pacing/pacing.h"

using namespace dw::pacing;

TEST(RateEstimator, UnknownUntilTwoArrivals) {
  RateEstimator est(10.0);
  EXPECT_FALSE(est.rate(0.0).has_value());
  est.add(0.0, 0.5);
  EXPECT_FALSE(est.rate(0.1).has_value());
  est.add(1.0, 0.5);
  ASSERT_TRUE(est.rate(1.0).has_value());
  EXPECT_NEAR(*est.rate(1.0), 0.5, 1e-9);
}

TEST(RateEstimator, SteadyInput) {
  RateEstimator est(5.0);
  // 25 frames/s of 1/25 s content at 0.8x real time: one frame every 0.05 s.
  double t = 0;
  for (int i = 0; i < 400; ++i, t += 0.05) est.add(t, 0.04);
  EXPECT_NEAR(*est.rate(t - 0.05), 0.8, 1e-6);
}

TEST(RateEstimator, BurstsGiveTheMeanRateAtAnyPhase) {
  RateEstimator est(6.0);
  // 11 frames of 2/11 s at once every 2.5 s: 2 s of content per 2.5 s = 0.8.
  double next = 0;
  for (double now = 0; now < 60.0; now += 0.1) {
    if (now + 1e-9 >= next) {
      for (int i = 0; i < 11; ++i) est.add(now, 2.0 / 11.0);
      next += 2.5;
    }
    if (now > 10.0) {
      auto r = est.rate(now);
      ASSERT_TRUE(r.has_value());
      EXPECT_NEAR(*r, 0.8, 0.05) << "at " << now;
    }
  }
}

TEST(RateEstimator, DecaysWhenInputStalls) {
  RateEstimator est(4.0);
  for (int i = 0; i <= 20; ++i) est.add(i * 0.5, 0.5);  // 1.0 until t = 10
  EXPECT_NEAR(*est.rate(10.0), 1.0, 1e-9);
  EXPECT_LT(*est.rate(12.0), 0.8);
  EXPECT_DOUBLE_EQ(*est.rate(14.5), 0.0);
  est.reset();
  EXPECT_FALSE(est.rate(20.0).has_value());
}

namespace {
// Fill dynamics: fill += (input - rate) * dt, with the controller fed the true input rate.
struct Sim {
  RateController ctl;
  double fill;
  explicit Sim(ControllerParams p, double fill0) : ctl(p), fill(fill0) {}
  void run(double seconds, double input_rate, double dt = 0.04, double *max_step = nullptr) {
    for (double t = 0; t < seconds; t += dt) {
      double before = ctl.rate();
      double r = ctl.update(dt, fill, input_rate);
      if (max_step) *max_step = std::max(*max_step, std::fabs(r - before) / dt);
      fill = std::max(0.0, fill + (input_rate - r) * dt);
    }
  }
};
}  // namespace

TEST(RateController, ConvergesToTargetFillWhenInputIsSlower) {
  ControllerParams p;
  p.target_fill_s = 4.0;
  Sim sim(p, 6.0);
  sim.run(120.0, 0.7);
  EXPECT_NEAR(sim.fill, 4.0, 0.1);
  EXPECT_NEAR(sim.ctl.rate(), 0.7, 0.02);
}

TEST(RateController, ConvergesToTargetFillWhenInputIsFaster) {
  ControllerParams p;
  p.target_fill_s = 3.0;
  Sim sim(p, 1.0);
  sim.run(120.0, 1.3);
  EXPECT_NEAR(sim.fill, 3.0, 0.1);
  EXPECT_NEAR(sim.ctl.rate(), 1.3, 0.02);
}

TEST(RateController, ClampsToMinAndMax) {
  ControllerParams p;
  p.min_rate = 0.6;
  p.max_rate = 1.2;
  Sim slow(p, 4.0);
  slow.run(60.0, 0.1);
  EXPECT_DOUBLE_EQ(slow.ctl.rate(), 0.6);
  Sim fast(p, 4.0);
  fast.run(60.0, 3.0);
  EXPECT_DOUBLE_EQ(fast.ctl.rate(), 1.2);
  EXPECT_LE(fast.ctl.desired(), 1.2);
}

TEST(RateController, ChangePerSecondIsBounded) {
  ControllerParams p;
  p.max_change_per_s = 0.02;
  p.min_rate = 0.1;
  p.max_rate = 4.0;
  Sim sim(p, 0.0);
  double max_step = 0;
  sim.run(10.0, 0.3, 0.04, &max_step);
  EXPECT_LE(max_step, 0.02 + 1e-9);
  EXPECT_NEAR(sim.ctl.rate(), 1.0 - 0.2, 0.01);  // 10 s at 0.02/s from 1.0, still heading down
}

TEST(RateController, UnknownInputRateUsesRealTimeAsFeedForward) {
  RateController ctl;
  for (int i = 0; i < 1000; ++i) ctl.update(0.1, ctl.params().target_fill_s, std::nullopt);
  EXPECT_NEAR(ctl.rate(), 1.0, 1e-9);
  ctl.reset(7.0);
  EXPECT_DOUBLE_EQ(ctl.rate(), ctl.params().max_rate);
  EXPECT_DOUBLE_EQ(ctl.update(0.0, 0.0, 0.5), ctl.params().max_rate);  // dt 0: no step
}

TEST(OutputGrid, ExactTimesWithoutDrift) {
  OutputGrid g(11, 2, 1000);  // 5.5 fps
  EXPECT_EQ(g.time(0), 1000);
  EXPECT_EQ(g.time(11), 1000 + 2000000000LL);
  EXPECT_EQ(g.time(11 * 100000), 1000 + 200000LL * 1000000000LL);
  EXPECT_EQ(g.interval(), 181818181);
  OutputGrid ntsc(30000, 1001, 0);
  EXPECT_EQ(ntsc.time(30000), 1001LL * 1000000000LL);
  for (int64_t t : {-5LL, 0LL, 1000LL, 1001LL, 181819181LL, 181819182LL, 5000000000LL}) {
    uint64_t n = g.index_at_or_after(t);
    EXPECT_GE(g.time(n), t);
    if (n > 0) {
      EXPECT_LT(g.time(n - 1), t);
    }
  }
}

TEST(PlanStep, RateOneShowsEveryFrameOnce) {
  std::vector<int64_t> d = {40, 40, 40};
  auto dur = [&](size_t i) { return d[i]; };
  Step s = plan_step(d.size(), dur, 0, 40);
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 1u);
  EXPECT_EQ(s.offset, 0);
  // Durations off by a nanosecond (PTS rounding) still pick the next frame.
  std::vector<int64_t> r = {39, 41, 40};
  s = plan_step(r.size(), [&](size_t i) { return r[i]; }, 0, 40);
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 1u);
  EXPECT_EQ(s.offset, 1);
  s = plan_step(r.size() - 1, [&](size_t i) { return r[i + 1]; }, 1, 40);
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 1u);
  EXPECT_EQ(s.offset, 0);
}

TEST(PlanStep, SlowRateRepeatsFastRateSkips) {
  std::vector<int64_t> d = {40, 40, 40, 40};
  auto dur = [&](size_t i) { return d[i]; };
  Step s = plan_step(d.size(), dur, 0, 20);  // half speed
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 0u);
  EXPECT_EQ(s.offset, 20);
  s = plan_step(d.size(), dur, 20, 20);
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 1u);
  s = plan_step(d.size(), dur, 0, 80);  // double speed: shows the second, uses up two
  EXPECT_EQ(s.show, 1u);
  EXPECT_EQ(s.consumed, 2u);
  EXPECT_EQ(s.advanced, 80);
}

TEST(PlanStep, RunsOutOfContent) {
  std::vector<int64_t> d = {10};
  Step s = plan_step(1, [&](size_t i) { return d[i]; }, 4, 40);
  EXPECT_EQ(s.show, 0u);
  EXPECT_EQ(s.consumed, 1u);
  EXPECT_EQ(s.offset, 0);
  EXPECT_EQ(s.advanced, 6);
}
