// Pair interpolation core: planning, bisection order, residual carry, occlusion maths (no GStreamer)
// and the optical-flow backend on synthetic and real images.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>

#include "image/image.h"
#include "interp/backend.h"
#include "interp/flow.h"
#include "interp/plan.h"

using namespace dw::interp;

namespace {

constexpr int64_t kMs = 1000000;

std::string shared_dir() {
  const char *d = std::getenv("DW_SHARED_DIR");
  return d ? d : "../shared";
}

dw::Image load_png(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  dw::Image img;
  std::string err;
  if (!dw::decode_png(bytes.data(), bytes.size(), img, &err)) return dw::Image();
  return dw::convert_channels(img, 3);
}

dw::Image crop(const dw::Image &src, int x0, int y0, int w, int h) {
  dw::Image out(w, h, 3);
  for (int y = 0; y < h; ++y) std::copy_n(src.row(y0 + y) + 3 * x0, 3 * w, out.row(y));
  return out;
}

// PSNR over the pixels at least `border` away from the edges (edges have no truth in the keyframes).
double psnr(const dw::Image &a, const dw::Image &b, int border = 0) {
  double se = 0;
  size_t n = 0;
  for (int y = border; y < a.height - border; ++y)
    for (int x = border; x < a.width - border; ++x)
      for (int c = 0; c < 3; ++c) {
        const double d = double(a.row(y)[3 * x + c]) - b.row(y)[3 * x + c];
        se += d * d;
        ++n;
      }
  const double mse = se / std::max<size_t>(n, 1);
  return mse <= 0 ? 99.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

// A smooth random texture (sum of a few sinusoids), large enough to crop shifted views from.
dw::Image texture(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> fq(0.02, 0.12), ph(0, 6.28);
  double f[6][3];
  for (auto &r : f) r[0] = fq(rng), r[1] = fq(rng), r[2] = ph(rng);
  dw::Image img(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = 0;
        for (int k = 0; k < 3; ++k) v += std::sin(f[2 * k + (c % 2)][0] * x + f[k + c][1] * y + f[k * 2][2] + c);
        img.row(y)[3 * x + c] = static_cast<uint8_t>(std::clamp(128.0 + 40.0 * v, 0.0, 255.0));
      }
  return img;
}

}  // namespace

/* -------------------------------------------------------------------------------------------- */
/* Pair planning                                                                                */

TEST(PickFrames, FixedAutoAndDefault) {
  PlanSettings s;
  s.frames = 5;
  EXPECT_EQ(pick_frames(s, kSecond), 5);
  s.frames = -1;
  s.target_fps = 24;
  EXPECT_EQ(pick_frames(s, kSecond), 23);
  EXPECT_EQ(pick_frames(s, 500 * kMs), 11);
  EXPECT_EQ(pick_frames(s, 60 * kSecond), kMaxFrames);
  EXPECT_EQ(pick_frames(s, 10 * kMs), 0);
  EXPECT_EQ(pick_frames(s, kNoTime), kDefaultFrames);
  s.target_fps = 0;
  EXPECT_EQ(pick_frames(s, kSecond), kDefaultFrames);
}

TEST(EvenPositions, SpacedInsideTheInterval) {
  auto ts = even_positions(3);
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_DOUBLE_EQ(ts[0], 0.25);
  EXPECT_DOUBLE_EQ(ts[1], 0.5);
  EXPECT_DOUBLE_EQ(ts[2], 0.75);
  EXPECT_TRUE(even_positions(0).empty());
}

TEST(PairPlanner, FirstKeyframeIsOnlyHeld) {
  PairPlanner p;
  PairInput in;
  in.b_pts = 0;
  auto plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::First);
  EXPECT_EQ(plan.count(), 0u);
}

TEST(PairPlanner, InterpolatesWithExactTimestamps) {
  PlanSettings s;
  s.frames = 2;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_pts = 1000;
  in.b_pts = 1000 + 1000 * kMs;
  auto plan = p.plan(in);
  ASSERT_EQ(plan.kind, PairKind::Interpolate);
  ASSERT_EQ(plan.count(), 2u);
  EXPECT_EQ(plan.interval, 1000 * kMs);
  EXPECT_EQ(plan.a_duration, 1000 * kMs / 3);
  EXPECT_EQ(plan.pts[0], 1000 + 1000 * kMs / 3);
  EXPECT_EQ(plan.pts[1], 1000 + 2000 * kMs / 3);
  // Durations tile the interval exactly up to B.
  EXPECT_EQ(plan.pts[1] + plan.durations[1], in.b_pts);
  EXPECT_EQ(plan.pts[0] + plan.durations[0], plan.pts[1]);
  EXPECT_EQ(p.period(), 1000 * kMs);
  EXPECT_EQ(p.last_spacing(), 1000 * kMs / 3);
}

TEST(PairPlanner, AutoFramesFollowTheInterval) {
  PlanSettings s;
  s.frames = -1;
  s.target_fps = 25;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_pts = 0;
  in.b_pts = 2 * kSecond;
  EXPECT_EQ(p.plan(in).count(), 49u);
}

TEST(PairPlanner, RestartsOnBadTimestampsOrUnusableA) {
  PlanSettings s;
  s.frames = 3;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_pts = 2 * kSecond;
  in.b_pts = kSecond;
  auto plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::Restart);
  EXPECT_EQ(plan.count(), 0u);
  EXPECT_NE(plan.reason.find("timestamps"), std::string::npos);

  in.b_pts = 3 * kSecond;
  in.a_usable = false;
  plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::Restart);
  EXPECT_EQ(plan.a_duration, kSecond);  // A still lasts until B
  EXPECT_EQ(p.period(), kNoTime);       // restarts are no period samples
}

TEST(PairPlanner, UnknownTimestampsUseFixedFrames) {
  PlanSettings s;
  s.frames = 4;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_duration = 77;
  auto plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::Interpolate);
  EXPECT_EQ(plan.count(), 4u);
  EXPECT_EQ(plan.pts[0], kNoTime);
  EXPECT_EQ(plan.a_duration, 77);
}

TEST(PairPlanner, DiscontKeyframeGetsAShortTransition) {
  PlanSettings s;
  s.frames = -1;
  s.target_fps = 24;
  s.max_gap_transition = 500 * kMs;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_pts = 10 * kSecond;
  in.b_pts = 40 * kSecond;  // a 30 s outage
  in.b_discont = true;
  auto plan = p.plan(in);
  ASSERT_EQ(plan.kind, PairKind::Transition);
  EXPECT_EQ(plan.count(), 11u);  // 0.5 s at 24 fps, not 240 frames over 30 s
  // A is held until the transition starts; the in-betweens fill the last 0.5 s before B.
  EXPECT_EQ(plan.a_duration, plan.pts[0] - in.a_pts);
  EXPECT_GE(plan.pts[0], in.b_pts - 500 * kMs);
  EXPECT_EQ(plan.pts.back() + plan.durations.back(), in.b_pts);
  EXPECT_EQ(p.period(), kNoTime);
}

TEST(PairPlanner, LongGapIsADiscontinuityEvenWithoutTheFlag) {
  PlanSettings s;
  s.frames = -1;
  s.target_fps = 24;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  int64_t t = 0;
  for (int i = 0; i < 5; ++i) {  // keyframes every 0.5 s
    in.a_pts = t;
    in.b_pts = t + 500 * kMs;
    EXPECT_EQ(p.plan(in).kind, PairKind::Interpolate);
    t += 500 * kMs;
  }
  EXPECT_EQ(p.period(), 500 * kMs);
  in.a_pts = t;
  in.b_pts = t + 1500 * kMs;  // 3x the period and under min_gap: still a pair
  EXPECT_EQ(p.plan(in).kind, PairKind::Interpolate);
  const int64_t period = p.period();
  in.a_pts = in.b_pts;
  in.b_pts = in.a_pts + 20 * kSecond;
  auto plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::Transition);
  EXPECT_LE(plan.count(), 11u);
  EXPECT_EQ(p.period(), period);  // the gap did not inflate the period
}

TEST(PairPlanner, ZeroTransitionIsACut) {
  PlanSettings s;
  s.frames = 7;
  s.max_gap_transition = 0;
  PairPlanner p(s);
  PairInput in;
  in.have_a = in.a_usable = true;
  in.a_pts = 0;
  in.b_pts = 30 * kSecond;
  in.b_discont = true;
  auto plan = p.plan(in);
  EXPECT_EQ(plan.kind, PairKind::Transition);
  EXPECT_EQ(plan.count(), 0u);
  EXPECT_EQ(plan.a_duration, 30 * kSecond);
}

TEST(LatencyMoved, TwentyPercent) {
  EXPECT_TRUE(latency_moved(100, 0));
  EXPECT_FALSE(latency_moved(110, 100));
  EXPECT_TRUE(latency_moved(130, 100));
  EXPECT_FALSE(latency_moved(kNoTime, 100));
}

/* -------------------------------------------------------------------------------------------- */
/* Bisection                                                                                    */

namespace {
// Runs a schedule on positions instead of images: the "model" returns the mean of its inputs.
// Checks that every input is alive, and returns the t emitted for each frame.
std::vector<double> run_schedule(const std::vector<BisectStep> &steps, size_t n, int *peak) {
  std::map<int, double> alive{{0, 0.0}, {1, 1.0}};
  std::vector<double> out(n, -1);
  *peak = 2;
  for (const auto &s : steps) {
    switch (s.op) {
      case BisectStep::Op::Compute:
        EXPECT_TRUE(alive.count(s.left) && alive.count(s.right));
        EXPECT_FALSE(alive.count(s.out));
        alive[s.out] = 0.5 * (alive[s.left] + alive[s.right]);
        EXPECT_DOUBLE_EQ(alive[s.out], s.t);
        *peak = std::max<int>(*peak, static_cast<int>(alive.size()));
        break;
      case BisectStep::Op::Emit:
        EXPECT_TRUE(alive.count(s.out));
        EXPECT_LT(s.frame, n);
        out[s.frame] = alive[s.out];
        break;
      case BisectStep::Op::Release:
        EXPECT_GE(s.out, 2);
        alive.erase(s.out);
        break;
    }
  }
  EXPECT_EQ(alive.size(), 2u);  // everything released
  return out;
}
}  // namespace

TEST(Bisection, DyadicPositionsAreExactWithOneCallEach) {
  const auto ts = even_positions(7);
  const auto steps = bisection_schedule(ts);
  int computes = 0;
  std::vector<size_t> emitted;
  for (const auto &s : steps) {
    if (s.op == BisectStep::Op::Compute) computes++;
    if (s.op == BisectStep::Op::Emit) emitted.push_back(s.frame);
  }
  EXPECT_EQ(computes, 7);
  EXPECT_EQ(emitted, (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6}));  // ascending: pushable at once
  int peak = 0;
  const auto got = run_schedule(steps, ts.size(), &peak);
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_DOUBLE_EQ(got[i], ts[i]);
  EXPECT_EQ(peak, 2 + 3);
  EXPECT_EQ(bisection_peak_slots(steps), peak);
}

TEST(Bisection, AnyCountIsServedWithinToleranceAndLogarithmicMemory) {
  for (int n : {1, 2, 5, 11, 23, 100, 239}) {
    const auto ts = even_positions(n);
    const double tol = 0.25 / (n + 1);
    const auto steps = bisection_schedule(ts);
    int peak = 0;
    const auto got = run_schedule(steps, ts.size(), &peak);
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_LE(std::fabs(got[i] - ts[i]), tol + 1e-12) << n << " " << i;
    // Flat memory: slots grow with log2 of the count, never with the count.
    EXPECT_LE(peak, 2 + static_cast<int>(std::ceil(std::log2(1.0 / tol)))) << n;
    // Emitted in ascending t.
    double last = 0;
    for (const auto &s : steps)
      if (s.op == BisectStep::Op::Emit) {
        EXPECT_GE(s.t, last);
        last = s.t;
      }
  }
}

TEST(Bisection, UnsortedInputEmitsInAscendingT) {
  const std::vector<double> ts{0.75, 0.25, 0.5};
  int peak = 0;
  const auto steps = bisection_schedule(ts);
  const auto got = run_schedule(steps, 3, &peak);
  EXPECT_DOUBLE_EQ(got[0], 0.75);
  EXPECT_DOUBLE_EQ(got[1], 0.25);
  std::vector<size_t> order;
  for (const auto &s : steps)
    if (s.op == BisectStep::Op::Emit) order.push_back(s.frame);
  EXPECT_EQ(order, (std::vector<size_t>{1, 2, 0}));
}

TEST(Bisection, RejectsPositionsOutsideTheInterval) {
  EXPECT_THROW(bisection_schedule({0.5, 1.0}), Error);
  EXPECT_THROW(bisection_schedule({0.0}), Error);
  EXPECT_TRUE(bisection_schedule({}).empty());
}

/* -------------------------------------------------------------------------------------------- */
/* Residual carry                                                                               */

TEST(Residual, CarriesEachKeyframesDetailToItsSide) {
  dw::Image a = texture(16, 8, 1), b = texture(16, 8, 2);
  dw::Image da = a, db = b;  // "decodes": a blurred/offset version
  for (auto &v : da.pixels) v = static_cast<uint8_t>(std::clamp(v / 2 + 60, 0, 255));
  for (auto &v : db.pixels) v = static_cast<uint8_t>(std::clamp(v / 3 + 20, 0, 255));
  const Residual ra = make_residual(a, da), rb = make_residual(b, db);
  // At t = 0 the decode of zA plus the carried residual is A exactly; at t = 1, B.
  dw::Image f0 = da;
  add_residuals(f0, ra, rb, 0.0);
  EXPECT_EQ(f0.pixels, a.pixels);
  dw::Image f1 = db;
  add_residuals(f1, ra, rb, 1.0);
  EXPECT_EQ(f1.pixels, b.pixels);
  // In between: the weights are (1 - t, t).
  const auto w = residual_weights(0.25);
  EXPECT_DOUBLE_EQ(w.a, 0.75);
  EXPECT_DOUBLE_EQ(w.b, 0.25);
  dw::Image mid(16, 8, 3);
  std::fill(mid.pixels.begin(), mid.pixels.end(), 100);
  add_residuals(mid, ra, rb, 0.25);
  const int expect = static_cast<int>(std::lround(100 + 0.75 * ra.data[5] + 0.25 * rb.data[5]));
  EXPECT_NEAR(mid.pixels[5], std::clamp(expect, 0, 255), 1);
}

TEST(Residual, SizeMismatchIsAnError) {
  EXPECT_THROW(make_residual(dw::Image(4, 4, 3), dw::Image(4, 5, 3)), Error);
  Residual r = make_residual(dw::Image(4, 4, 3), dw::Image(4, 4, 3));
  dw::Image wrong(5, 4, 3);
  EXPECT_THROW(add_residuals(wrong, r, r, 0.5), Error);
}

/* -------------------------------------------------------------------------------------------- */
/* Occlusion maths                                                                              */

TEST(Occlusion, ConsistentFlowIsVisible) {
  EXPECT_FLOAT_EQ(occlusion_from_consistency(0.0f, 200.0f), 0.0f);
  EXPECT_FLOAT_EQ(occlusion_from_consistency(2.5f, 200.0f), 0.0f);  // threshold 0.01*200+0.5
  EXPECT_FLOAT_EQ(occlusion_from_consistency(5.0f, 200.0f), 1.0f);
  EXPECT_GT(occlusion_from_consistency(3.5f, 200.0f), 0.0f);
  EXPECT_LT(occlusion_from_consistency(3.5f, 200.0f), 1.0f);
}

TEST(Occlusion, KeyframeThatSeesTheRegionWins) {
  auto w = occlusion_blend(0.3, 0, 0);
  EXPECT_FLOAT_EQ(w.a, 0.7f);
  EXPECT_FLOAT_EQ(w.b, 0.3f);
  w = occlusion_blend(0.3, 0, 1);  // B's pixel is uncovered content: only B has it
  EXPECT_FLOAT_EQ(w.a, 0.0f);
  EXPECT_FLOAT_EQ(w.b, 1.0f);
  w = occlusion_blend(0.7, 1, 0);  // A's pixel is being covered: only A has it
  EXPECT_FLOAT_EQ(w.a, 1.0f);
  EXPECT_FLOAT_EQ(w.b, 0.0f);
  w = occlusion_blend(0.3, 1, 1);
  EXPECT_FLOAT_EQ(w.a, 0.7f);
  w = occlusion_blend(0.5, 0.5f, 0.0f);
  EXPECT_NEAR(w.a + w.b, 1.0f, 1e-6f);
  EXPECT_GT(w.a, 0.5f);
}

TEST(Occlusion, IntermediateFlowOfAPanIsLinear) {
  // Pan by d: F_AB = d, F_BA = -d, so F_t->A = -t d and F_t->B = (1 - t) d.
  for (double t : {0.1, 0.5, 0.8}) {
    const auto c = intermediate_flow_coefs(t);
    const double d = 8.0;
    EXPECT_NEAR(c.to_a_from_ab * d + c.to_a_from_ba * -d, -t * d, 1e-5);
    EXPECT_NEAR(c.to_b_from_ab * d + c.to_b_from_ba * -d, (1 - t) * d, 1e-5);
  }
}

/* -------------------------------------------------------------------------------------------- */
/* Optical-flow backend                                                                         */

class Flow : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!flow_available()) GTEST_SKIP() << "built without OpenCV";
  }
};

TEST_F(Flow, RejectsBadInput) {
  auto f = create_flow_interpolator({});
  EXPECT_NE(f->describe().find("flow"), std::string::npos);
  EXPECT_THROW(f->frames({0.5}), Error);
  EXPECT_THROW(f->set_pair(dw::Image(8, 8, 3), dw::Image(8, 9, 3)), Error);
  EXPECT_THROW(f->set_pair(dw::Image(), dw::Image()), Error);
}

TEST_F(Flow, FollowsAPanOnASyntheticTexture) {
  const dw::Image big = texture(200, 160, 7);
  const dw::Image a = crop(big, 20, 20, 128, 96), b = crop(big, 28, 20, 128, 96);
  auto f = create_flow_interpolator({});
  f->set_pair(a, b);
  const auto frames = f->frames({0.25, 0.5, 0.75});
  ASSERT_EQ(frames.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const dw::Image truth = crop(big, 20 + 2 * (k + 1), 20, 128, 96);
    ASSERT_EQ(frames[k].width, 128);
    ASSERT_EQ(frames[k].channels, 3);
    const double p = psnr(frames[k], truth, 10);
    // A crossfade of the same pair, the reference the flow backend must beat by far.
    dw::Image blend = a;
    const double t = 0.25 * (k + 1);
    for (size_t i = 0; i < blend.pixels.size(); ++i)
      blend.pixels[i] = static_cast<uint8_t>(std::lround((1 - t) * a.pixels[i] + t * b.pixels[i]));
    EXPECT_GT(p, 35.0) << "t=" << t;
    EXPECT_GT(p, psnr(blend, truth, 10) + 10.0) << "t=" << t;
  }
}

TEST_F(Flow, FollowsAPanOnARealPhotoAndReusesTheSharedKeyframe) {
  const dw::Image photo = load_png(shared_dir() + "/images/astronaut.png");
  ASSERT_FALSE(photo.empty()) << "missing " << shared_dir() << "/images/astronaut.png";
  const dw::Image k0 = crop(photo, 100, 100, 256, 256), k1 = crop(photo, 108, 100, 256, 256),
                  k2 = crop(photo, 116, 100, 256, 256);
  for (FlowPreset preset : {FlowPreset::Ultrafast, FlowPreset::Fast, FlowPreset::Medium}) {
    FlowConfig cfg;
    cfg.preset = preset;
    auto f = create_flow_interpolator(cfg);
    f->set_pair(k0, k1);
    auto mid = f->frames({0.5});
    EXPECT_GT(psnr(mid[0], crop(photo, 104, 100, 256, 256), 12), 32.0) << flow_preset_name(preset);
    f->set_pair(k1, k2);  // k1's grey copy is reused: same result as a fresh interpolator
    mid = f->frames({0.5});
    auto g = create_flow_interpolator(cfg);
    g->set_pair(k1, k2);
    EXPECT_EQ(mid[0].pixels, g->frames({0.5})[0].pixels);
  }
}

TEST_F(Flow, MovingSquareOverAStillBackground) {
  // A flat-textured square moves right by 12 px over a textured background that stays still.
  const dw::Image bg = texture(160, 120, 3);
  const dw::Image fg = texture(40, 40, 9);
  auto scene = [&](int x0) {
    dw::Image img = bg;
    for (int y = 0; y < 40; ++y) std::copy_n(fg.row(y), 3 * 40, img.row(40 + y) + 3 * x0);
    return img;
  };
  const dw::Image a = scene(50), b = scene(62);
  double p[2];
  for (int occ = 0; occ < 2; ++occ) {
    FlowConfig cfg;
    cfg.preset = FlowPreset::Medium;
    cfg.occlusion = occ == 1;
    auto f = create_flow_interpolator(cfg);
    f->set_pair(a, b);
    p[occ] = 0;
    for (int k = 1; k <= 3; ++k) {
      // Only the rows the square crosses: where pixels are covered and uncovered.
      const dw::Image got = crop(f->frames({0.25 * k})[0], 0, 36, 160, 48);
      const dw::Image want = crop(scene(50 + 3 * k), 0, 36, 160, 48);
      p[occ] += psnr(got, want, 4) / 3;
    }
  }
  // Measured: ~33 dB with and without (the square and background are both textured, so DIS finds
  // good flow on both); the occlusion weights must not cost quality where pixels are covered and
  // uncovered.
  EXPECT_GT(p[1], 30.0);
  EXPECT_GE(p[1], p[0] - 0.5) << "occlusion handling made it worse";
}

// Motion-compensated residual carry: the detail of A and of B (their VAE residuals) must arrive
// where it is at t, not stay where it was in each keyframe.
TEST(Residual, AddResidualClampsAndChecksSize) {
  dw::Image f(2, 1, 3);
  f.pixels = {10, 250, 128, 0, 255, 7};
  Residual r;
  r.width = 2;
  r.height = 1;
  r.data = {-20, 10, 5, -3, -300, 0};
  add_residual(f, r);
  EXPECT_EQ(f.pixels, (std::vector<uint8_t>{0, 255, 133, 0, 0, 7}));
  dw::Image wrong(1, 2, 3);
  EXPECT_THROW(add_residual(wrong, r), Error);
}

namespace {
// Fine detail (a few px wide), as a residual: signed, mostly within +-30.
Residual detail_field(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-40, 40);
  std::vector<int> n(static_cast<size_t>(w) * h * 3);
  for (auto &v : n) v = d(rng);
  Residual r;
  r.width = w;
  r.height = h;
  r.data.resize(n.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        int sum = 0, cnt = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int xx = std::clamp(x + dx, 0, w - 1), yy = std::clamp(y + dy, 0, h - 1);
            sum += n[(static_cast<size_t>(yy) * w + xx) * 3 + c];
            ++cnt;
          }
        r.data[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<int16_t>(sum * 2 / cnt);
      }
  return r;
}
Residual crop_residual(const Residual &src, int x0, int y0, int w, int h) {
  Residual r;
  r.width = w;
  r.height = h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        r.data.push_back(src.data[(static_cast<size_t>(y0 + y) * src.width + x0 + x) * 3 + c]);
  return r;
}
// RMS difference over the interior (border px left out on each side).
double residual_rms(const Residual &a, const Residual &b, int border) {
  double se = 0;
  size_t n = 0;
  for (int y = border; y < a.height - border; ++y)
    for (int x = border; x < a.width - border; ++x)
      for (int c = 0; c < 3; ++c) {
        const size_t i = (static_cast<size_t>(y) * a.width + x) * 3 + c;
        se += double(a.data[i] - b.data[i]) * (a.data[i] - b.data[i]);
        ++n;
      }
  return std::sqrt(se / n);
}
}  // namespace

TEST_F(Flow, WarpedResidualsFollowAPureTranslation) {
  // The keyframes (what the flow is computed on) and their residuals (fine detail the VAE lost)
  // move together by 8 px; at t the truth is both shifted by 8t px.
  const dw::Image big = texture(200, 160, 7);
  const Residual detail = detail_field(200, 160, 11);
  const dw::Image a = crop(big, 20, 20, 128, 96), b = crop(big, 28, 20, 128, 96);
  const Residual ra = crop_residual(detail, 20, 20, 128, 96), rb = crop_residual(detail, 28, 20, 128, 96);
  auto w = create_pair_warper({});
  EXPECT_THROW(w->warp_residuals(ra, rb, 0.5), Error);  // before set_pair
  w->set_pair(a, b);
  EXPECT_THROW(w->warp_residuals(crop_residual(detail, 0, 0, 64, 64), rb, 0.5), Error);
  for (int k = 1; k <= 3; ++k) {
    const double t = 0.25 * k;
    const Residual truth = crop_residual(detail, 20 + 2 * k, 20, 128, 96);
    const Residual warped = w->warp_residuals(ra, rb, t);
    // In place (the carry without motion compensation): (1 - t) ra + t rb, detail doubled/ghosted.
    Residual in_place = ra;
    for (size_t i = 0; i < in_place.data.size(); ++i)
      in_place.data[i] = static_cast<int16_t>(std::lround((1 - t) * ra.data[i] + t * rb.data[i]));
    const double e_warped = residual_rms(warped, truth, 12), e_in_place = residual_rms(in_place, truth, 12);
    std::printf("t=%.2f residual RMS error: warped %.2f, in place %.2f\n", t, e_warped, e_in_place);
    EXPECT_LT(e_warped, 0.35 * e_in_place) << "t=" << t;
    EXPECT_LT(e_warped, 5.0) << "t=" << t;
  }
  // At the ends the warp is the identity on that keyframe's residual.
  EXPECT_LT(residual_rms(w->warp_residuals(ra, rb, 0.0), ra, 0), 0.5);
  EXPECT_LT(residual_rms(w->warp_residuals(ra, rb, 1.0), rb, 0), 0.5);
}

TEST_F(Flow, AlignsEachKeyframeToTheOtherAndWarpsImagesLikeItsInBetweens) {
  const dw::Image big = texture(200, 160, 7);
  const dw::Image a = crop(big, 20, 20, 128, 96), b = crop(big, 28, 20, 128, 96);
  auto w = create_pair_warper({});
  EXPECT_THROW(w->motion_field(0.5), Error);  // before set_pair
  w->set_pair(a, b);
  // B moved into A's geometry is A (but for the 8-px strip that is not in B: replicated border, or A
  // itself with the occlusion fill), and the other way round.
  EXPECT_GT(psnr(w->aligned_b(), a, 10), 35.0);
  EXPECT_GT(psnr(w->aligned_a(), b, 10), 35.0);
  EXPECT_LT(unexplained_change(a, b, w->aligned_b(true)), 0.1);
  const MotionField field = w->motion_field(0.5);
  ASSERT_TRUE(field.fits(128, 96));
  EXPECT_FALSE(field.fits(128, 95));
  // warp_images(A, B) is the flow backend's in-between; other images ride the same motion.
  auto f = create_flow_interpolator({});
  f->set_pair(a, b);
  EXPECT_EQ(w->warp_images(a, b, field).pixels, f->frames({0.5}).at(0).pixels);
  const dw::Image truth = crop(big, 24, 20, 128, 96);
  EXPECT_GT(psnr(w->warp_images(a, b, field), truth, 10), 35.0);
  EXPECT_THROW(w->warp_images(crop(big, 0, 0, 64, 64), b, field), Error);
  MotionField broken = field;
  broken.weight_a.pop_back();
  EXPECT_THROW(w->warp_images(a, b, broken), Error);
  // The field-based residual warp is the t-based one.
  const Residual detail = detail_field(200, 160, 11);
  const Residual ra = crop_residual(detail, 20, 20, 128, 96), rb = crop_residual(detail, 28, 20, 128, 96);
  EXPECT_EQ(w->warp_residuals(ra, rb, field).data, w->warp_residuals(ra, rb, 0.5).data);
}

TEST(UnexplainedChange, MotionIsExplainedAMorphIsNot) {
  const dw::Image a = texture(32, 16, 1), b = texture(32, 16, 2);
  EXPECT_DOUBLE_EQ(unexplained_change(a, a, a), 0.0);  // nothing changed
  EXPECT_DOUBLE_EQ(unexplained_change(a, b, a), 0.0);  // the alignment recovered A: all motion
  EXPECT_DOUBLE_EQ(unexplained_change(a, b, b), 1.0);  // the alignment moved nothing
  EXPECT_TRUE(pair_is_motion(0.2));
  EXPECT_FALSE(pair_is_motion(0.9));
  EXPECT_THROW(unexplained_change(a, b, texture(16, 16, 3)), Error);
  EXPECT_THROW(unexplained_change(a, dw::convert_channels(b, 4), a), Error);
}

/* -------------------------------------------------------------------------------------------- */
/* Backend choice and settings checks                                                           */

TEST(Backend, AutoMeansModelFilesThenFlowThenBlend) {
  BackendSettings s;
  EXPECT_EQ(resolve_backend(s), flow_available() ? BackendKind::Flow : BackendKind::Blend);
  s.model_dir = "/somewhere";
  EXPECT_EQ(resolve_backend(s), BackendKind::Auto);  // lib/latent picks taesd or torchscript
  s.kind = BackendKind::Blend;
  EXPECT_EQ(resolve_backend(s), BackendKind::Blend);
}

TEST(Backend, SettingsProblemsNameTheProperty) {
  BackendSettings s;
  s.kind = BackendKind::Vfi;
  auto p = check_backend_settings(s, BackendKind::Vfi);
  ASSERT_TRUE(p);
  EXPECT_NE(p->message.find("vfi-model"), std::string::npos);
  s.vfi_model = "/nonexistent/rife.pt";
  p = check_backend_settings(s, BackendKind::Vfi);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->kind, SettingsProblem::Kind::NotFound);
  EXPECT_NE(p->message.find("/nonexistent/rife.pt"), std::string::npos);

  BackendSettings t;
  t.kind = BackendKind::Taesd;
  p = check_backend_settings(t, BackendKind::Taesd);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->kind, SettingsProblem::Kind::Settings);
  EXPECT_NE(p->message.find("encoder"), std::string::npos);
  t.encoder = "/nonexistent/enc.safetensors";
  t.decoder = "/nonexistent/dec.safetensors";
  p = check_backend_settings(t, BackendKind::Taesd);
  ASSERT_TRUE(p);
  EXPECT_NE(p->message.find("/nonexistent/enc.safetensors"), std::string::npos);

  BackendSettings a;
  a.encoder = shared_dir() + "/images/astronaut.png";  // exists; decoder missing
  p = check_backend_settings(a, resolve_backend(a));
  ASSERT_TRUE(p);
  EXPECT_NE(p->message.find("only encoder"), std::string::npos);

  EXPECT_FALSE(check_backend_settings(BackendSettings{}, BackendKind::Blend));
  EXPECT_FALSE(check_backend_settings(BackendSettings{}, BackendKind::Flow));
  EXPECT_TRUE(backend_needs_torch(BackendKind::Vfi));
  EXPECT_FALSE(backend_needs_torch(BackendKind::Flow));
}

TEST(Backend, CreatesBlendAndFlow) {
  BackendSettings s;
  s.kind = BackendKind::Blend;
  Backend b = create_backend(s, BackendKind::Blend);
  ASSERT_TRUE(b.interp);
  EXPECT_TRUE(b.codec);
  EXPECT_EQ(static_cast<void *>(b.latent), static_cast<void *>(b.interp.get()));
  b.interp->set_pair(dw::Image(4, 4, 3), dw::Image(4, 4, 3));
  EXPECT_EQ(b.interp->frames({0.5}).size(), 1u);
  if (flow_available()) {
    Backend f = create_backend(s, BackendKind::Flow);
    EXPECT_NE(f.interp->describe().find("flow"), std::string::npos);
    EXPECT_FALSE(f.codec);
  }
}
