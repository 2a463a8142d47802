// dw::comfy::Scheduler (the feedback-loop scheduler of comfykeyframesrc) driven with fake time and
// fake job results: no GStreamer, no network.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "comfy/scheduler.h"
#include "comfy/sourcesetup.h"

using namespace dw::comfy;

namespace {

constexpr int64_t kMs = 1000;
constexpr int64_t kS = 1000000;

std::vector<uint8_t> bytes(const std::string &s) { return std::vector<uint8_t>(s.begin(), s.end()); }

SchedulerConfig config(size_t backends = 1, bool bootstrap = false) {
  SchedulerConfig c;
  c.backends = backends;
  c.bootstrap = bootstrap;
  c.rng_seed = 42;
  c.upload_prefix = "up_";
  return c;
}

LoopParams params(unsigned max_in_flight = 1, unsigned max_retries = 3) {
  LoopParams p;
  p.prompt = "a forest";
  p.denoise = 0.4;
  p.seed = 100;
  p.max_in_flight = max_in_flight;
  p.max_retries = max_retries;
  return p;
}

Error unreachable(bool retry_free = true) {
  Error e(ErrorKind::Unreachable, "connection refused");
  e.retry_free = retry_free;
  return e;
}

}  // namespace

TEST(Scheduler, StrictFeedbackLoopChainsEachKeyframeIntoTheNextJob) {
  Scheduler s(config(1, true), params(), bytes("seed"));
  auto jobs = s.plan(0, {});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].job_index, 0u);
  EXPECT_TRUE(jobs[0].bootstrap);
  EXPECT_DOUBLE_EQ(jobs[0].denoise, 1.0);  // generated first input: txt2img-like
  EXPECT_EQ(jobs[0].upload_png, bytes("seed"));
  EXPECT_EQ(jobs[0].upload_name, "up_0.png");
  EXPECT_TRUE(jobs[0].input_value.empty());
  s.started(jobs[0].ticket, "p0");
  EXPECT_TRUE(s.plan(10 * kMs, {}).empty()) << "max-in-flight 1 admits one job";

  Delivery d = s.succeeded(jobs[0].ticket, 1 * kS, bytes("kf0"), "kf0.png [output]", 1 * kS);
  ASSERT_TRUE(d.accepted);
  EXPECT_EQ(d.prompt, "a forest");
  EXPECT_EQ(d.seed, 100);
  EXPECT_FALSE(d.discont);
  // Keyframe 0 waits downstream: job 1 may start (it overlaps downstream work), job 2 may not.
  jobs = s.plan(1 * kS, {1, 0});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].job_index, 1u);
  EXPECT_FALSE(jobs[0].bootstrap);
  EXPECT_DOUBLE_EQ(jobs[0].denoise, 0.4);
  EXPECT_EQ(jobs[0].seed, 101);  // increment mode: seed + job index
  EXPECT_EQ(jobs[0].input_value, "kf0.png [output]");
  EXPECT_TRUE(jobs[0].upload_png.empty());
  EXPECT_TRUE(s.plan(1 * kS, {1, 0}).empty());
  EXPECT_EQ(d.index, 0u);
  EXPECT_EQ(d.parent, -1) << "keyframe 0 comes from the seed image";
  Delivery d1 = s.succeeded(jobs[0].ticket, 2 * kS, bytes("kf1"), "kf1.png [output]", 1 * kS);
  EXPECT_EQ(d1.index, 1u);
  EXPECT_EQ(d1.parent, 0) << "a strict chain";
  EXPECT_EQ(s.stats().jobs_queued, 2u);
  EXPECT_EQ(s.stats().in_flight, 0u);
}

TEST(Scheduler, BackpressureAndNumKeyframesBoundAdmission) {
  LoopParams p = params(2);
  Scheduler s(config(), p, bytes("seed"));
  EXPECT_EQ(s.plan(0, {3, 0}).size(), 0u) << "three keyframes wait downstream: nothing more";
  EXPECT_EQ(s.plan(0, {2, 0}).size(), 1u) << "one job may run while max-in-flight keyframes wait";
  EXPECT_EQ(s.plan(0, {0, 0}).size(), 1u);
  EXPECT_EQ(s.outstanding(), 2u);
  EXPECT_EQ(s.plan(0, {0, 0}).size(), 0u) << "max-in-flight";
  p.num_keyframes = 3;
  Scheduler s2(config(), p, bytes("seed"));
  EXPECT_EQ(s2.plan(0, {0, 3}).size(), 0u);
  EXPECT_EQ(s2.plan(0, {1, 1}).size(), 1u) << "pushed + ready + outstanding never exceeds num-keyframes";
  EXPECT_EQ(s2.outstanding(), 1u);
}

TEST(Scheduler, PromptRotationAndSeedModes) {
  LoopParams p = params(1);
  p.prompts = {"a", "b", "c"};
  p.prompt_interval = 2;
  p.seed_mode = SeedMode::Fixed;
  Scheduler s(config(), p, bytes("seed"));
  std::vector<std::string> seen;
  for (int i = 0; i < 7; ++i) {
    auto jobs = s.plan(i * kS, {});
    ASSERT_EQ(jobs.size(), 1u);
    seen.push_back(jobs[0].prompt);
    EXPECT_EQ(jobs[0].seed, 100);
    s.succeeded(jobs[0].ticket, i * kS + 1, bytes("k"), "", 1);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "a", "b", "b", "c", "c", "a"}));
  EXPECT_EQ(s.next_prompt(), "a");

  p.seed_mode = SeedMode::Random;
  s.set_params(p);
  std::set<int64_t> seeds;
  for (int i = 0; i < 5; ++i) {
    auto jobs = s.plan(100 * kS + i, {});
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_GE(jobs[0].seed, 0);
    seeds.insert(jobs[0].seed);
    s.succeeded(jobs[0].ticket, 100 * kS + i, bytes("k"), "", 1);
  }
  EXPECT_EQ(seeds.size(), 5u);
}

TEST(Scheduler, CountedRetriesWaitTheirBackoffThenBecomeFatal) {
  Scheduler s(config(), params(1, 2), bytes("seed"));
  auto jobs = s.plan(0, {});
  uint64_t ticket = jobs[0].ticket;
  int64_t now = 0;
  uint32_t last_delay = 0;
  for (unsigned attempt = 1; attempt <= 2; ++attempt) {
    Failure f = s.failed(ticket, now, Error(ErrorKind::ExecutionError, "node 3 exploded"));
    ASSERT_EQ(f.action, Failure::Action::Retry);
    EXPECT_TRUE(f.counted);
    EXPECT_EQ(f.attempt, attempt);
    EXPECT_EQ(f.max_retries, 2u);
    // Backoff: 250 ms doubling, +-25 % jitter.
    uint32_t base = 250u << (attempt - 1);
    EXPECT_GE(f.delay_ms, base * 3 / 4);
    EXPECT_LE(f.delay_ms, base * 5 / 4);
    EXPECT_GT(f.delay_ms, last_delay);
    last_delay = f.delay_ms;
    EXPECT_EQ(s.next_wakeup_us(), now + f.delay_ms * kMs);
    EXPECT_TRUE(s.plan(now + f.delay_ms * kMs - 1, {}).empty()) << "not before its delay";
    now += f.delay_ms * kMs;
    jobs = s.plan(now, {});
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].attempt, attempt);
    EXPECT_EQ(jobs[0].job_index, 0u) << "a retry keeps its job index, prompt and seed";
    EXPECT_EQ(jobs[0].ticket, ticket);
  }
  Failure f = s.failed(ticket, now, Error(ErrorKind::ExecutionError, "again"));
  EXPECT_EQ(f.action, Failure::Action::Fatal);
  EXPECT_EQ(f.fatal, Failure::Fatal::RetriesExhausted);
  EXPECT_NE(f.message.find("again"), std::string::npos);
  EXPECT_EQ(s.stats().jobs_retried, 2u);
  EXPECT_EQ(s.stats().jobs_failed, 3u);
}

TEST(Scheduler, RejectedWorkflowIsFatalAtOnce) {
  Scheduler s(config(), params(1, 5), bytes("seed"));
  auto jobs = s.plan(0, {});
  Failure f = s.failed(jobs[0].ticket, 0, Error(ErrorKind::InvalidPrompt, "NoSuchSampler"));
  EXPECT_EQ(f.action, Failure::Action::Fatal);
  EXPECT_EQ(f.fatal, Failure::Fatal::Rejected);
}

TEST(Scheduler, AnUnknownTicketIsIgnored) {
  Scheduler s(config(), params(), bytes("seed"));
  EXPECT_EQ(s.failed(77, 0, Error(ErrorKind::ExecutionError, "x")).action, Failure::Action::Ignore);
  EXPECT_FALSE(s.succeeded(77, 0, bytes("x"), "", 1).accepted);
}

TEST(Scheduler, ADownServerIsRetriedForeverWithBackoffWithoutSpendingRetries) {
  Scheduler s(config(), params(1, 0), bytes("seed"));
  auto jobs = s.plan(0, {});
  int64_t now = 0;
  uint32_t max_delay = 0;
  for (int i = 0; i < 30; ++i) {
    Failure f = s.failed(jobs[0].ticket, now, unreachable(i % 2 == 0));
    ASSERT_EQ(f.action, Failure::Action::Retry) << "attempt " << i;
    EXPECT_FALSE(f.counted);
    EXPECT_GT(f.delay_ms, 0u) << "no other backend: wait";
    EXPECT_LE(f.delay_ms, 10000u);
    max_delay = std::max(max_delay, f.delay_ms);
    now += f.delay_ms * kMs;
    jobs = s.plan(now, {});
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].attempt, 0u);
  }
  EXPECT_GT(max_delay, 5000u) << "the backoff grew";
  auto notices = s.take_notices();
  ASSERT_EQ(notices.size(), 1u) << "one warning per outage, not per attempt";
  EXPECT_EQ(notices[0].health, Health::Unreachable);
  EXPECT_TRUE(s.stats().outage);
  // A timeout is "unresponsive": same policy.
  Failure f = s.failed(jobs[0].ticket, now, Error(ErrorKind::Timeout, "execute timed out"));
  EXPECT_EQ(f.action, Failure::Action::Retry);
  EXPECT_FALSE(f.counted);
  // It answers again.
  now += f.delay_ms * kMs;
  jobs = s.plan(now, {});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_TRUE(s.succeeded(jobs[0].ticket, now + kS, bytes("k"), "", kS).accepted);
  notices = s.take_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].health, Health::Ok);
  EXPECT_GT(notices[0].down_us, 60 * kS);
  EXPECT_FALSE(s.stats().outage);
}

TEST(Scheduler, AJobTheServerForgotIsRetriedFreeWithoutMarkingItDown) {
  Scheduler s(config(), params(1, 0), bytes("seed"));
  auto jobs = s.plan(0, {});
  Error forgot(ErrorKind::Interrupted, "prompt vanished from /history after a restart");
  forgot.retry_free = true;
  Failure f = s.failed(jobs[0].ticket, 0, forgot);
  EXPECT_EQ(f.action, Failure::Action::Retry) << "max-retries 0, yet retried";
  EXPECT_FALSE(f.counted);
  EXPECT_GT(f.delay_ms, 0u) << "paced by the job's backoff";
  EXPECT_TRUE(s.take_notices().empty()) << "the server is up: no outage warning";
  EXPECT_TRUE(s.backend_stats()[0].available);
  auto again = s.plan(f.delay_ms * kMs, {});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt, 0u);
}

TEST(Scheduler, MaxOutageMakesALongOutageFatal) {
  LoopParams p = params();
  p.max_outage_s = 20;
  Scheduler s(config(), p, bytes("seed"));
  auto jobs = s.plan(0, {});
  int64_t now = 0;
  Failure f;
  for (int i = 0; i < 100; ++i) {
    f = s.failed(jobs[0].ticket, now, Error(ErrorKind::Timeout, "no answer"));
    if (f.action == Failure::Action::Fatal) break;
    now += f.delay_ms * kMs;
    jobs = s.plan(now, {});
  }
  EXPECT_EQ(f.action, Failure::Action::Fatal);
  EXPECT_EQ(f.fatal, Failure::Fatal::OutageTooLong);
  EXPECT_GT(now, 20 * kS);
  EXPECT_LT(now, 35 * kS);
}

TEST(Scheduler, HealthDownRequeuesTheJobAndRecoveryRetriesAtOnce) {
  Scheduler s(config(), params(), bytes("seed"));
  auto jobs = s.plan(0, {});
  s.started(jobs[0].ticket, "p-1");
  s.health_changed(0, Health::Unreachable, 2 * kS, "websocket closed");
  auto cancels = s.take_cancels();
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].prompt_id, "p-1");
  EXPECT_FALSE(cancels[0].tell_server);
  auto notices = s.take_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].health, Health::Unreachable);
  EXPECT_EQ(notices[0].message, "websocket closed");
  EXPECT_GT(s.next_wakeup_us(), 2 * kS);
  EXPECT_TRUE(s.plan(2 * kS, {}).empty());
  EXPECT_EQ(s.stats().pending, 1u);
  EXPECT_EQ(s.failed(jobs[0].ticket, 2 * kS, unreachable()).action, Failure::Action::Ignore) << "forgotten";

  s.health_changed(0, Health::Ok, 5 * kS, "");
  notices = s.take_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].health, Health::Ok);
  EXPECT_EQ(notices[0].down_us, 3 * kS);
  auto again = s.plan(5 * kS, {});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].job_index, 0u);
  EXPECT_EQ(again[0].attempt, 0u);
  EXPECT_EQ(s.stats().jobs_retried, 1u);
}

TEST(Scheduler, MissingInputReuploadsItsOwnCopyOfTheKeyframe) {
  Scheduler s(config(), params(1, 0), bytes("seed"));
  auto jobs = s.plan(0, {});
  s.succeeded(jobs[0].ticket, kS, bytes("keyframe-0-png"), "dw_00163_.png [output]", kS);
  jobs = s.plan(kS, {1, 0});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].input_value, "dw_00163_.png [output]");
  Error missing(ErrorKind::MissingInput, "LoadImage: Invalid image file: dw_00163_.png [output]");
  Failure f = s.failed(jobs[0].ticket, kS, missing);
  EXPECT_EQ(f.action, Failure::Action::Retry);
  EXPECT_FALSE(f.counted) << "max-retries 0 and still not fatal";
  EXPECT_EQ(f.delay_ms, 0u);
  jobs = s.plan(kS, {1, 0});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_TRUE(jobs[0].input_value.empty());
  EXPECT_EQ(jobs[0].upload_png, bytes("keyframe-0-png"));
  EXPECT_FALSE(jobs[0].upload_name.empty());
}

TEST(Scheduler, InjectionCancelsTheOldLineageAndFeedsTheNextJob) {
  Scheduler s(config(), params(2), bytes("seed"));
  auto jobs = s.plan(0, {});
  ASSERT_EQ(jobs.size(), 2u);
  s.started(jobs[0].ticket, "a");
  s.started(jobs[1].ticket, "b");
  auto cancels = s.inject(bytes("injected"));
  ASSERT_EQ(cancels.size(), 2u);
  EXPECT_TRUE(cancels[0].tell_server);
  EXPECT_EQ(s.stats().jobs_discarded, 2u);
  EXPECT_EQ(s.stats().injections, 1u);
  EXPECT_FALSE(s.succeeded(jobs[0].ticket, kS, bytes("stale"), "x [output]", kS).accepted);
  auto next = s.plan(kS, {1, 0});
  ASSERT_EQ(next.size(), 2u);
  for (const auto &j : next) EXPECT_EQ(j.upload_png, bytes("injected"));
  EXPECT_EQ(next[0].job_index, 2u) << "job indices keep counting";
}

TEST(Scheduler, PoolSendsEachJobToTheBackendThatFinishesFirst) {
  Scheduler s(config(3), params(1), bytes("seed"));
  // Backend 0 takes 1 s, 1 takes 0.2 s, 2 takes 3 s. Untried backends count as fast as the fastest
  // known one, so the strict loop tries each once while learning.
  const int64_t cost[3] = {1 * kS, 200 * kMs, 3 * kS};
  int64_t now = 0;
  std::set<size_t> used;
  for (int i = 0; i < 3; ++i) {
    auto jobs = s.plan(now, {});
    ASSERT_EQ(jobs.size(), 1u);
    size_t b = jobs[0].backend;
    EXPECT_EQ(used.count(b), 0u) << "backend " << b << " tried twice while another is untried";
    used.insert(b);
    now += cost[b];
    ASSERT_TRUE(s.succeeded(jobs[0].ticket, now, bytes("k"), "k.png [output]", cost[b]).accepted);
  }
  auto stats = s.backend_stats();
  EXPECT_EQ(stats[0].generation_us, 1 * kS);
  EXPECT_EQ(stats[1].generation_us, 200 * kMs);
  EXPECT_EQ(stats[2].generation_us, 3 * kS);
  for (int i = 0; i < 3; ++i) {
    auto jobs = s.plan(now, {});
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].backend, 1u) << "the strict loop stays on the fastest backend";
    now += 200 * kMs;
    s.succeeded(jobs[0].ticket, now, bytes("k"), "k.png [output]", 200 * kMs);
  }
  // Four at once: queued on 1 they finish at +0.2, +0.4, +0.6 and +0.8 s, each before 0 could
  // (+1 s): all four go to 1.
  s.set_params(params(4));
  auto jobs = s.plan(now, {});
  ASSERT_EQ(jobs.size(), 4u);
  std::vector<size_t> where;
  for (const auto &j : jobs) where.push_back(j.backend);
  EXPECT_EQ(where, (std::vector<size_t>{1, 1, 1, 1}));
  // Backend 1 down: its jobs move, first to 0 (1 s, then 2 s), then the 3 s one takes its turn.
  s.health_changed(1, Health::Unreachable, now, "gone");
  auto moved = s.plan(now, {});
  ASSERT_EQ(moved.size(), 4u);
  for (const auto &j : moved) EXPECT_NE(j.backend, 1u);
  EXPECT_EQ(moved[0].backend, 0u);
}

TEST(Scheduler, PoolWithEqualBackendsKeepsOneJobOnEach) {
  Scheduler s(config(3), params(3), bytes("seed"));
  auto jobs = s.plan(0, {});
  ASSERT_EQ(jobs.size(), 3u);
  std::set<size_t> backends;
  for (const auto &j : jobs) backends.insert(j.backend);
  EXPECT_EQ(backends.size(), 3u);
  // The newest keyframe is a reference on backend 0's output: other backends get the bytes.
  size_t b0 = jobs[0].backend;
  s.succeeded(jobs[0].ticket, kS, bytes("kf0"), "kf0.png [output]", kS);
  auto next = s.plan(kS, {0, 1});
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].backend, b0) << "the only free backend";
  EXPECT_EQ(next[0].input_value, "kf0.png [output]");
  Delivery d1 = s.succeeded(jobs[1].ticket, kS + 10, bytes("kf1"), "kf1.png [output]", kS);
  EXPECT_EQ(d1.index, 1u);
  EXPECT_EQ(d1.parent, -1) << "queued together, siblings of the seed image";
  next = s.plan(kS + 10, {0, 2});
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].backend, jobs[1].backend);
  EXPECT_EQ(next[0].input_value, "kf1.png [output]") << "each job starts from the newest keyframe";
  Delivery d2 = s.succeeded(jobs[2].ticket, kS + 20, bytes("kf2"), "", kS);
  EXPECT_EQ(d2.index, 2u);
  Delivery d3 = s.succeeded(next[0].ticket, 2 * kS, bytes("kf3"), "", kS);
  EXPECT_EQ(d3.index, 3u);
  EXPECT_EQ(d3.parent, 1) << "made from the newest keyframe when it was queued, two behind";
}

TEST(Scheduler, PoolMovesADeadBackendsJobElsewhereAtOnceAndLetsItRejoin) {
  Scheduler s(config(3), params(3), bytes("seed"));
  auto jobs = s.plan(0, {});
  ASSERT_EQ(jobs.size(), 3u);
  for (const auto &j : jobs) s.started(j.ticket, "p" + std::to_string(j.ticket));
  // Backend of job 1 dies; its client fails the job as retry-free.
  size_t dead = jobs[1].backend;
  Failure f = s.failed(jobs[1].ticket, kS, unreachable());
  EXPECT_EQ(f.action, Failure::Action::Retry);
  EXPECT_EQ(f.delay_ms, 0u) << "other backends are up: at once";
  EXPECT_FALSE(s.stats().outage);
  auto moved = s.plan(kS, {});
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_NE(moved[0].backend, dead);
  EXPECT_EQ(moved[0].job_index, jobs[1].job_index);
  EXPECT_FALSE(s.backend_stats()[dead].available);
  // The health callback confirms; then it answers again and rejoins.
  s.health_changed(dead, Health::Unreachable, kS + 1, "connect failed");
  EXPECT_TRUE(s.take_cancels().empty()) << "nothing of ours ran there any more";
  s.health_changed(dead, Health::Ok, 5 * kS, "");
  EXPECT_TRUE(s.backend_stats()[dead].available);
  auto notices = s.take_notices();
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(notices[0].backend, dead);
  EXPECT_EQ(notices[1].health, Health::Ok);
  s.succeeded(jobs[0].ticket, 6 * kS, bytes("k"), "", kS);
  auto next = s.plan(6 * kS, {0, 1});
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].backend, dead) << "the idle rejoined backend finishes first";
  EXPECT_FALSE(next[0].upload_png.empty()) << "a websocket image is uploaded";
}

TEST(Scheduler, ASlowFirstMeasurementDoesNotExcludeABackendForGood) {
  Scheduler s(config(2), params(1), bytes("seed"));
  int64_t now = 0;
  // Backend 0 measures 1 s (a cold start), backend 1 200 ms.
  auto j = s.plan(now, {});
  ASSERT_EQ(j[0].backend, 0u);
  now += kS;
  s.succeeded(j[0].ticket, now, bytes("k"), "", kS);
  for (int i = 0; i < 3; ++i) {
    j = s.plan(now, {});
    ASSERT_EQ(j.size(), 1u);
    EXPECT_EQ(j[0].backend, 1u);
    now += 200 * kMs;
    s.succeeded(j[0].ticket, now, bytes("k"), "", 200 * kMs);
  }
  // Passed over for 10 of its estimates, backend 0 is tried again.
  bool retried = false;
  for (int i = 0; i < 60 && !retried; ++i) {
    j = s.plan(now, {});
    retried = j[0].backend == 0u;
    now += 200 * kMs;
    s.succeeded(j[0].ticket, now, bytes("k"), "", 200 * kMs);
  }
  EXPECT_TRUE(retried);
  // The new measurement (200 ms) pulls its estimate down: it converges instead of staying at 1 s.
  EXPECT_LT(s.backend_stats()[0].generation_us, 800 * kMs);
}

TEST(Scheduler, ABackendBackFromAnOutageIsMeasuredAfresh) {
  Scheduler s(config(2), params(2), bytes("seed"));
  auto j = s.plan(0, {});
  ASSERT_EQ(j.size(), 2u);
  s.succeeded(j[0].ticket, 900 * kMs, bytes("k"), "", 900 * kMs);
  s.succeeded(j[1].ticket, 300 * kMs, bytes("k"), "", 300 * kMs);
  EXPECT_EQ(s.backend_stats()[j[0].backend].generation_us, 900 * kMs);
  s.health_changed(j[0].backend, Health::Unreachable, kS, "restart");
  s.health_changed(j[0].backend, Health::Ok, 2 * kS, "");
  EXPECT_EQ(s.backend_stats()[j[0].backend].generation_us, -1);
}

TEST(Scheduler, AllBackendsDownBehavesLikeOneServer) {
  Scheduler s(config(2), params(1), bytes("seed"));
  s.health_changed(0, Health::Unreachable, 0, "down");
  s.health_changed(1, Health::Unreachable, 0, "down");
  EXPECT_TRUE(s.stats().outage);
  EXPECT_EQ(s.stats().outages, 1u);
  int64_t now = 0;
  std::set<size_t> probed;
  auto j = s.plan(now, {});
  ASSERT_EQ(j.size(), 1u) << "a job still goes out: it probes the pool";
  for (int i = 0; i < 6; ++i) {
    probed.insert(j[0].backend);
    Failure f = s.failed(j[0].ticket, now, unreachable());
    EXPECT_EQ(f.action, Failure::Action::Retry);
    EXPECT_GT(f.delay_ms, 0u);
    int64_t wake = s.next_wakeup_us();
    ASSERT_GT(wake, now);
    EXPECT_TRUE(s.plan(wake - 1, {}).empty());
    now = wake;
    j = s.plan(now, {});
    ASSERT_EQ(j.size(), 1u);
  }
  EXPECT_EQ(probed.size(), 2u) << "probes alternate between the dead backends";
  s.failed(j[0].ticket, now, unreachable());
  s.health_changed(1, Health::Ok, now + kS, "");
  j = s.plan(now + kS, {});
  ASSERT_EQ(j.size(), 1u) << "recovery retries at once";
  EXPECT_EQ(j[0].backend, 1u);
}

TEST(Scheduler, FirstKeyframeAfterAnOutageGapIsADiscontinuity) {
  Scheduler s(config(), params(), bytes("seed"));
  int64_t now = 0;
  auto step = [&](int64_t gen) {
    auto jobs = s.plan(now, {});
    EXPECT_EQ(jobs.size(), 1u);
    now += gen;
    return s.succeeded(jobs[0].ticket, now, bytes("k"), "", gen);
  };
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(step(kS).discont);
  // A short blip inside one period is no gap.
  s.health_changed(0, Health::Unreachable, now + 100 * kMs, "blip");
  s.health_changed(0, Health::Ok, now + 200 * kMs, "");
  now += 200 * kMs;
  EXPECT_FALSE(step(kS).discont);
  // A 30 s outage is.
  ASSERT_EQ(s.plan(now, {}).size(), 1u);
  s.health_changed(0, Health::Unreachable, now + kS, "down");
  s.health_changed(0, Health::Ok, now + 30 * kS, "");
  now += 30 * kS;
  EXPECT_TRUE(step(kS).discont);
  EXPECT_FALSE(step(kS).discont);
}

// Random outcomes on a pool: every job index is delivered exactly once, none lost, none twice.
TEST(Scheduler, RandomFaultsNeverLoseOrRepeatAJob) {
  LoopParams p = params(3, 1000);
  p.num_keyframes = 200;
  Scheduler s(config(3), p, bytes("seed"));
  std::mt19937 rng(7);
  std::map<uint64_t, JobPlan> running;
  std::map<uint64_t, int> delivered;  // job index -> times
  uint64_t pushed = 0;
  int64_t now = 0;
  for (int step = 0; step < 20000 && pushed < 200; ++step) {
    now += 50 * kMs;
    for (const Cancel &c : s.take_cancels())
      for (auto it = running.begin(); it != running.end(); ++it)
        if ("p" + std::to_string(it->first) == c.prompt_id) {
          running.erase(it);
          break;
        }
    s.take_notices();
    for (JobPlan &j : s.plan(now, {0, pushed})) {
      s.started(j.ticket, "p" + std::to_string(j.ticket));
      running[j.ticket] = j;
    }
    if (rng() % 7 == 0) {
      size_t b = rng() % 3;
      s.health_changed(b, rng() % 2 ? Health::Unreachable : Health::Ok, now, "flap");
    }
    if (running.empty()) continue;
    auto it = running.begin();
    std::advance(it, rng() % running.size());
    uint64_t ticket = it->first;
    running.erase(it);
    switch (rng() % 5) {
      case 0: s.failed(ticket, now, unreachable()); break;
      case 1: s.failed(ticket, now, Error(ErrorKind::ExecutionError, "boom")); break;
      default: {
        Delivery d = s.succeeded(ticket, now, bytes("k"), "k [output]", kS);
        if (d.accepted) {
          delivered[d.job_index]++;
          pushed++;
        }
      }
    }
  }
  EXPECT_EQ(pushed, 200u);
  ASSERT_EQ(delivered.size(), 200u);
  uint64_t expect = 0;
  for (const auto &e : delivered) {
    EXPECT_EQ(e.first, expect++) << "no job index skipped";
    EXPECT_EQ(e.second, 1) << "job " << e.first << " delivered twice";
  }
}

TEST(SourceSetup, BindingsAreParsedOrRefusedByName) {
  BindingOverrides out;
  std::string error;
  EXPECT_TRUE(parse_bindings(" prompt = 6.text ; seed=3.seed", &out, &error)) << error;
  EXPECT_EQ(out[Param::Prompt], "6.text");
  EXPECT_EQ(out[Param::Seed], "3.seed");
  EXPECT_FALSE(parse_bindings("prompt", &out, &error));
  EXPECT_NE(error.find("'prompt'"), std::string::npos);
  EXPECT_FALSE(parse_bindings("colour=1.x", &out, &error));
  EXPECT_NE(error.find("'colour'"), std::string::npos);
}

TEST(SourceSetup, BootstrapImageIsDeterministicPerSeed) {
  dw::Image a = make_bootstrap_image(32, 16, 5), b = make_bootstrap_image(32, 16, 5), c = make_bootstrap_image(32, 16, 6);
  EXPECT_EQ(a.width, 32);
  EXPECT_EQ(a.height, 16);
  EXPECT_EQ(a.channels, 3);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_NE(a.pixels, c.pixels);
}

TEST(SourceSetup, UnboundSettingsAndJobSpecFollowTheWorkflow) {
  const char *dir = g_getenv("DW_SOURCE_DIR");
  std::string path = std::string(dir ? dir : ".") + "/tests/data/tiny_img2img.json";
  Error error;
  auto workflow = Workflow::load_file(path, BindingOverrides(), &error);
  ASSERT_TRUE(workflow) << error.message;
  EXPECT_EQ(unbound_settings(*workflow, false, false), "");
  BindingOverrides no_seed;
  no_seed[Param::Seed] = "none";
  auto unbound = Workflow::load_file(path, no_seed, &error);
  ASSERT_TRUE(unbound) << error.message;
  EXPECT_EQ(unbound_settings(*unbound, false, false).rfind("seed: ", 0), 0u) << unbound_settings(*unbound, false, false);

  JobPlan plan;
  plan.prompt = "a lake";
  plan.seed = 7;
  plan.denoise = 0.3;
  plan.upload_png = bytes("png");
  plan.upload_name = "up_1.png";
  JobParams base;
  base.negative_prompt = "blur";
  JobSpec spec = make_job_spec(plan, workflow.get(), base);
  EXPECT_EQ(spec.upload_png, bytes("png"));
  EXPECT_EQ(spec.upload_name, "up_1.png");
  EXPECT_TRUE(spec.input_value.empty());
  EXPECT_EQ(spec.output_nodes, workflow->output_nodes());
  JsonNode *graph = spec.build_prompt("up_1.png");
  ASSERT_NE(graph, nullptr);
  gchar *text = json_to_string(graph, FALSE);
  std::string json(text);
  g_free(text);
  json_node_unref(graph);
  EXPECT_NE(json.find("a lake"), std::string::npos) << json;
  EXPECT_NE(json.find("blur"), std::string::npos) << json;
  EXPECT_NE(json.find("up_1.png"), std::string::npos) << json;
}
