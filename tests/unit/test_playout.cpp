// dw::pacing::Playout without GStreamer: pre-buffer start rules, ticks, underrun (hold / pause),
// overrun dropping, late ticks, distinct-frame counting, guessed durations and the recovery after
// an outage (issue 13), all on synthetic clocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "pacing/playout.h"

using namespace dw::pacing;

namespace {

constexpr int64_t MS = 1'000'000;
constexpr int64_t S = 1000 * MS;

PlayoutParams params(int64_t prebuffer = 3 * S) {
  PlayoutParams p;
  p.prebuffer_ns = prebuffer;
  p.adaptive = false;
  return p;
}

QueuedFrame frame(uint64_t id, int64_t duration, int64_t pts = -1, bool keyframe = true) {
  QueuedFrame f;
  f.duration = duration;
  f.pts = pts;
  f.keyframe = keyframe;
  f.key.identity = id;
  return f;
}

void add(Playout &p, QueuedFrame f, int64_t now) {
  p.admit(f, now);
  p.push(f, now);
}

std::string reason(const BufferingPlan &b) { return b.start_reason ? b.start_reason : ""; }

}  // namespace

TEST(Playout, StartsWhenThePrebufferIsReached) {
  Playout p(params(1 * S));
  EXPECT_EQ(reason(p.plan_buffering(0)), "");
  add(p, frame(1, 400 * MS), 0);
  add(p, frame(2, 400 * MS), 10 * MS);
  BufferingPlan b = p.plan_buffering(20 * MS);
  EXPECT_EQ(reason(b), "");
  EXPECT_EQ(b.wake_at, 10 * MS + p.params().prebuffer_timeout_ns);
  add(p, frame(3, 400 * MS), 30 * MS);
  EXPECT_EQ(reason(p.plan_buffering(40 * MS)), "prebuffered");
  StartInfo s = p.start("prebuffered", 40 * MS);
  EXPECT_TRUE(s.first);
  EXPECT_FALSE(s.incomplete);
  EXPECT_EQ(s.origin, 40 * MS);
  EXPECT_EQ(p.state(), PlayoutState::Playing);
}

TEST(Playout, TimeoutFullAndEosStartIncomplete) {
  {
    Playout p(params());
    add(p, frame(1, 100 * MS), 1 * S);
    EXPECT_EQ(reason(p.plan_buffering(1 * S + p.params().prebuffer_timeout_ns - 1)), "");
    EXPECT_EQ(reason(p.plan_buffering(1 * S + p.params().prebuffer_timeout_ns)), "timeout");
    StartInfo s = p.start("timeout", 6 * S);
    EXPECT_TRUE(s.incomplete);
    EXPECT_EQ(p.counters().prebuffer_incomplete, 1u);
  }
  {
    PlayoutParams pp = params();
    pp.max_size_frames = 2;
    Playout p(pp);
    add(p, frame(1, 100 * MS), 0);
    EXPECT_FALSE(p.full());
    add(p, frame(2, 100 * MS), 0);
    EXPECT_TRUE(p.full());
    EXPECT_EQ(reason(p.plan_buffering(0)), "full");
  }
  {
    Playout p(params());
    p.set_eos();
    EXPECT_EQ(reason(p.plan_buffering(0)), "eos");
  }
}

TEST(Playout, TicksWalkTheQueueOnTheGrid) {
  Playout p(params(0));
  p.set_framerate(25, 1);
  for (uint64_t i = 1; i <= 5; ++i) add(p, frame(i, 40 * MS), 0);
  p.start("prebuffered", 1 * S);
  for (uint64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(p.next_tick_deadline(), 1 * S + static_cast<int64_t>(i) * 40 * MS);
    TickPlan t = p.plan_tick(p.next_tick_deadline());
    ASSERT_EQ(t.action, TickPlan::Action::Show);
    EXPECT_EQ(t.show, 0u);
    EXPECT_EQ(t.consumed, 1u);
    EXPECT_TRUE(t.distinct);
    EXPECT_EQ(t.pts, 1 * S + static_cast<int64_t>(i) * 40 * MS);
  }
  EXPECT_EQ(p.size(), 0u);
  EXPECT_EQ(p.counters().frames_out, 5u);
  EXPECT_EQ(p.counters().frames_distinct, 5u);
}

TEST(Playout, HoldRepeatsTheLastFrameWithoutCountingItAsNew) {
  Playout p(params(0));
  add(p, frame(1, 40 * MS), 0);
  p.start("prebuffered", 0);
  EXPECT_EQ(p.plan_tick(0).action, TickPlan::Action::Show);
  TickPlan t = p.plan_tick(40 * MS);
  EXPECT_EQ(t.action, TickPlan::Action::Repeat);
  EXPECT_STREQ(t.event, "underrun");
  EXPECT_FALSE(t.distinct);
  EXPECT_EQ(p.state(), PlayoutState::Underrun);
  for (int i = 2; i < 10; ++i) EXPECT_EQ(p.plan_tick(i * 40 * MS).action, TickPlan::Action::Repeat);
  add(p, frame(2, 40 * MS), 400 * MS);
  t = p.plan_tick(400 * MS);
  EXPECT_EQ(t.action, TickPlan::Action::Show);
  EXPECT_STREQ(t.event, "recovered");
  EXPECT_TRUE(t.distinct);
  EXPECT_EQ(p.counters().frames_out, 11u);
  EXPECT_EQ(p.counters().frames_repeated, 9u);
  EXPECT_EQ(p.counters().frames_distinct, 2u);
  EXPECT_EQ(p.counters().underruns, 1u);
}

TEST(Playout, PauseRebuffersBeforePlayingOn) {
  PlayoutParams pp = params(0);
  pp.pause_on_underrun = true;
  pp.rebuffer_ns = 200 * MS;
  Playout p(pp);
  add(p, frame(1, 40 * MS), 0);
  p.start("prebuffered", 0);
  p.plan_tick(0);
  TickPlan t = p.plan_tick(40 * MS);
  EXPECT_EQ(t.action, TickPlan::Action::Nothing);
  EXPECT_STREQ(t.event, "underrun");
  EXPECT_TRUE(p.buffering());
  add(p, frame(2, 100 * MS), 50 * MS);
  EXPECT_EQ(reason(p.plan_buffering(60 * MS)), "");
  add(p, frame(3, 100 * MS), 70 * MS);
  EXPECT_EQ(reason(p.plan_buffering(80 * MS)), "rebuffered");
  StartInfo s = p.start("rebuffered", 80 * MS);
  EXPECT_FALSE(s.first);
  EXPECT_EQ(s.origin, 80 * MS);  // after the last pushed tick (0) + one interval
}

TEST(Playout, OverrunDropsInbetweensFirstAndNeverTheHead) {
  PlayoutParams pp = params();
  pp.drop_inbetweens = true;
  pp.max_size_frames = 3;
  Playout p(pp);
  add(p, frame(1, 40 * MS, -1, false), 0);  // head in-between
  add(p, frame(2, 40 * MS, -1, true), 0);
  add(p, frame(3, 40 * MS, -1, false), 0);
  ASSERT_TRUE(p.full());
  OverrunPlan o = p.on_full(true);
  EXPECT_EQ(o.action, OverrunPlan::Action::DroppedQueued);
  EXPECT_EQ(o.index, 2u);
  add(p, frame(4, 40 * MS, -1, true), 0);
  o = p.on_full(true);  // only the head is an in-between now
  EXPECT_EQ(o.index, 0u);
  add(p, frame(5, 40 * MS, -1, true), 0);
  EXPECT_EQ(p.on_full(false).action, OverrunPlan::Action::DropIncoming);
  o = p.on_full(true);  // all keyframes: drop the one after the head
  EXPECT_EQ(o.action, OverrunPlan::Action::DroppedQueued);
  EXPECT_EQ(o.index, 1u);
  EXPECT_EQ(p.counters().dropped_inbetweens, 3u);
  EXPECT_EQ(p.counters().dropped_keyframes, 1u);
  EXPECT_EQ(p.fill(), 80 * MS);
  PlayoutParams block = pp;
  block.drop_inbetweens = false;
  p.set_params(block);
  EXPECT_EQ(p.on_full(true).action, OverrunPlan::Action::Block);
}

TEST(Playout, LateTicksAreSkippedNotBurst) {
  Playout p(params(0));
  for (uint64_t i = 1; i <= 20; ++i) add(p, frame(i, 40 * MS), 0);
  p.start("prebuffered", 0);
  p.plan_tick(0);
  TickPlan t = p.plan_tick(400 * MS);  // woke 10 ticks late
  EXPECT_EQ(t.pts, 360 * MS);
  EXPECT_EQ(p.counters().late_ticks, 8u);
}

// Slow content (each frame lasts three ticks, fixed rate): every frame goes out three times, and
// only the first of them is a new picture; upstream duplicates (same DwFrameMeta, another buffer)
// are not new either.
TEST(Playout, DistinctFramesCountPicturesNotPushes) {
  Playout p(params(0));
  p.set_framerate(25, 1);
  for (uint64_t i = 1; i <= 100; ++i) add(p, frame(i, 120 * MS), 0);
  QueuedFrame a = frame(1000, 120 * MS), b = frame(1001, 120 * MS);
  a.key.has_meta = b.key.has_meta = true;
  a.key.index = b.key.index = 7;
  a.key.position = b.key.position = 0.5;
  add(p, a, 0);
  add(p, b, 0);
  p.start("prebuffered", 0);
  int64_t now = 0;
  while (p.size() > 0) {
    p.plan_tick(now);
    now += 40 * MS;
  }
  EXPECT_EQ(p.counters().frames_out, 306u);
  EXPECT_EQ(p.counters().frames_distinct, 101u);
  EXPECT_NEAR(p.output_rate(now), 25.0, 0.5);
  EXPECT_NEAR(p.distinct_rate(now), 25.0 / 3.0, 0.5);
}

TEST(Playout, GuessedDurationFollowsThePtsButNotAcrossAnOutage) {
  Playout p(params());
  p.set_framerate(25, 1);
  add(p, frame(1, 0, 0), 0);  // no duration: one output interval for now
  EXPECT_EQ(p.fill(), 40 * MS);
  add(p, frame(2, 0, 500 * MS), 500 * MS);
  EXPECT_EQ(p.fill(), 540 * MS);  // frame 1 lasts until frame 2's pts
  for (int i = 3; i <= 6; ++i) add(p, frame(i, 0, (i - 1) * 500 * MS), (i - 1) * 500 * MS);
  const int64_t before = p.fill();
  QueuedFrame late = frame(7, 0, 32 * S);  // 30 s outage
  add(p, late, 32 * S);
  EXPECT_EQ(p.fill(), before + 40 * MS) << "the outage must not become content";
  EXPECT_EQ(p.counters().discontinuities, 1u);
}

namespace {

struct OutageRun {
  int64_t max_fill_after = 0;        // after the outage
  int64_t settle_time = 0;           // from the end of the outage until the fill stays within 1 s of target
  uint64_t silent_ticks = 0;         // ticks after the outage that pushed nothing (hold must keep pushing)
  uint64_t discontinuities = 0;
};

// A whole run: bursts of 8 frames (1 s of content) every second, 25 fps output, target 4 s,
// a 30 s outage at t = 60 s; 150 s in all.
OutageRun run_outage(double gap_factor, bool flag_discont) {
  PlayoutParams pp;
  pp.prebuffer_ns = 3 * S;
  pp.gap_factor = gap_factor;
  pp.controller.target_fill_s = 4.0;
  Playout p(pp);
  p.set_framerate(25, 1);
  OutageRun r;
  uint64_t id = 0;
  int64_t pts = 0;
  const int64_t outage_start = 60 * S, outage_end = 90 * S;
  int64_t next_burst = 0;
  for (int64_t now = 0; now < 150 * S; now += 5 * MS) {
    if (now >= next_burst) {
      const bool first_after = now >= outage_end && now < outage_end + 1 * S;
      if (now < outage_start || now >= outage_end) {
        for (int k = 0; k < 8; ++k) {
          QueuedFrame f = frame(++id, 125 * MS, pts, k == 0);
          f.discont = flag_discont && first_after && k == 0;
          pts += 125 * MS;
          p.admit(f, now);
          if (!p.full()) p.push(f, now);
        }
      }
      next_burst += 1 * S;
    }
    if (p.buffering()) {
      BufferingPlan b = p.plan_buffering(now);
      if (b.start_reason) p.start(b.start_reason, now);
    } else {
      while (!p.buffering() && p.state() != PlayoutState::Done && p.next_tick_deadline() <= now) {
        const TickPlan t = p.plan_tick(now);
        if (now >= outage_end && t.action == TickPlan::Action::Nothing) r.silent_ticks++;
      }
    }
    if (now >= outage_end) {
      r.max_fill_after = std::max(r.max_fill_after, p.fill());
      if (std::abs(p.fill() - 4 * S) > 1 * S) r.settle_time = now - outage_end;
    }
  }
  r.discontinuities = p.counters().discontinuities;
  return r;
}

}  // namespace

// Issue 13: after an outage the fill must come back to the target in a few seconds, not grow to
// ~17 s. The control run (discontinuity detection off) shows the failure this guards against.
TEST(Playout, ReturnsToTargetFillAfterAnOutage) {
  OutageRun control = run_outage(0.0, false);
  fprintf(stderr, "control: max %.2f s settle %.2f s\n", control.max_fill_after / 1e9, control.settle_time / 1e9);
  EXPECT_GT(control.max_fill_after, 7 * S) << "control run no longer overshoots: revisit this test";
  EXPECT_GT(control.settle_time, 20 * S);

  for (bool flagged : {false, true}) {
    OutageRun r = run_outage(flagged ? 0.0 : 4.0, flagged);
    fprintf(stderr, "fixed: max %.2f s settle %.2f s\n", r.max_fill_after / 1e9, r.settle_time / 1e9);
    EXPECT_EQ(r.discontinuities, 1u);
    EXPECT_LT(r.max_fill_after, 6 * S) << (flagged ? "discont flag" : "gap");
    EXPECT_LT(r.settle_time, 8 * S) << (flagged ? "discont flag" : "gap");
    EXPECT_EQ(r.silent_ticks, 0u) << "hold repeats the last frame while refilling";
  }
}

// In-betweens that trickle in (one every 40 ms after each keyframe, a keyframe every 3 s) make many
// short arrival gaps: the long gap between keyframes must not look like an outage, a 30 s one must.
TEST(Playout, TricklingInbetweensAreNoOutage) {
  Playout p(params());
  uint64_t id = 0;
  int64_t now = 0;
  for (int kf = 0; kf < 20; ++kf, now += 3 * S)
    for (int k = 0; k < 8; ++k) add(p, frame(++id, 375 * MS), now + k * 40 * MS);
  EXPECT_EQ(p.counters().discontinuities, 0u);
  add(p, frame(++id, 375 * MS), now + 30 * S);
  EXPECT_EQ(p.counters().discontinuities, 1u);
  // The outage does not count as an arrival gap for the next test.
  for (int k = 1; k < 8; ++k) add(p, frame(++id, 375 * MS), now + 30 * S + k * 40 * MS);
  add(p, frame(++id, 375 * MS), now + 33 * S);
  add(p, frame(++id, 375 * MS), now + 36 * S);
  EXPECT_EQ(p.counters().discontinuities, 1u);
}

TEST(FrameKey, SamePicture) {
  FrameKey a, b;
  a.identity = 1;
  b.identity = 2;
  EXPECT_FALSE(a.same_picture(b));
  b.identity = 1;
  EXPECT_TRUE(a.same_picture(b));
  b.identity = 2;
  a.has_meta = b.has_meta = true;
  a.index = b.index = 3;
  a.position = b.position = 0.25;
  EXPECT_TRUE(a.same_picture(b));
  b.position = 0.5;
  EXPECT_FALSE(a.same_picture(b));
  FrameKey unknown;
  EXPECT_FALSE(unknown.same_picture(FrameKey()));
}

// A freed frame's memory address is handed to the next frame by the allocator: with meta on both,
// the meta decides, so a new in-between at a reused address is still a new picture.
TEST(FrameKey, ReusedAddressWithNewMetaIsANewPicture) {
  FrameKey prev, next;
  prev.identity = next.identity = 0x7f00dead0000;
  prev.has_meta = next.has_meta = true;
  prev.kind = next.kind = 1;
  prev.index = next.index = 4;
  prev.position = 0.25;
  next.position = 0.375;
  EXPECT_FALSE(next.same_picture(prev));
  next.position = 0.25;  // the same in-between again (a copy, a hold repeat)
  EXPECT_TRUE(next.same_picture(prev));
}
