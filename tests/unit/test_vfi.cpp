// Tests for lib/interp/vfi (learned frame interpolation as TorchScript) and lib/interp/latent_pair
// (latent slerp with residual carry). The VFI models are tiny TorchScript modules defined here
// (torch::jit::Module::define) and saved to a temp dir, so loading from a path is tested too; their
// outputs are known exactly (a linear blend, a midpoint), so bisection results are checkable.
#include <gtest/gtest.h>

#include <torch/script.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "config.h"
#include "image/image.h"
#include "interp/latent_pair.h"
#include "interp/plan.h"
#include "interp/vfi.h"
#include "latent/codec.h"
#include "latent/raw.h"

using dw::Image;
using namespace dw::interp;

namespace {

std::string temp_dir() {
  static const std::string dir = [] {
    std::string d = ::testing::TempDir() + "/dw_vfi_" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir;
}

std::vector<std::string> &temp_files() {
  static std::vector<std::string> files;
  return files;
}

// Removes what the tests wrote to the temp dir.
struct TempCleanup : ::testing::Environment {
  void TearDown() override {
    for (const std::string &f : temp_files()) std::remove(f.c_str());
    ::rmdir(temp_dir().c_str());
  }
};
const auto *const kCleanup = ::testing::AddGlobalTestEnvironment(new TempCleanup);

// Saves a TorchScript module with the given source and returns its path.
std::string save_model(const std::string &name, const std::string &source) {
  torch::jit::Module m(name);
  m.define(source);
  const std::string path = temp_dir() + "/" + name + ".pt";
  m.save(path);
  temp_files().push_back(path);
  return path;
}

// forward(img0, img1, t) = img0 (1 - t) + img1 t with t of shape Bx1 (FILM's convention).
const char *kLinearColumn = R"(
def forward(self, img0, img1, t):
    tt = t.view(-1, 1, 1, 1)
    return img0 * (1 - tt) + img1 * tt
)";
// Same with t of shape Bx1xHxW (RIFE's timestep map), refusing unpadded input like real models.
const char *kLinearMap = R"(
def forward(self, img0, img1, t):
    assert img0.size(2) % 32 == 0 and img0.size(3) % 32 == 0, "input not padded to a multiple of 32"
    return img0 * (1 - t) + img1 * t
)";
const char *kLinearFloat = R"(
def forward(self, img0, img1, t: float):
    return img0 * (1.0 - t) + img1 * t
)";
// Midpoint-only, returning a tuple like many exports.
const char *kMidpoint = R"(
def forward(self, img0, img1):
    return ((img0 + img1) * 0.5, img0)
)";
// Shifts img0 right by one pixel, wrapping: column 0 of the output is the padded column W_p - 1,
// i.e. the replicated last column when padding is replicate (black with zero padding).
const char *kRoll = R"(
def forward(self, img0, img1, t):
    return torch.roll(img0, 1, 3)
)";

Image pattern(int w, int h, uint32_t seed) {
  Image img(w, h, 3);
  uint32_t s = seed;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        s = s * 1664525u + 1013904223u;
        const int base = ((x * (c + 1) * 3 + y * 2 + static_cast<int>(seed) * 40) % 200) + 20;
        img.row(y)[x * 3 + c] = static_cast<uint8_t>(std::clamp(base + static_cast<int>((s >> 24) % 31) - 15, 0, 255));
      }
  return img;
}

// What a float crossfade gives after the model's 8-bit output conversion.
Image crossfade(const Image &a, const Image &b, double t) {
  Image out(a.width, a.height, 3);
  for (size_t i = 0; i < out.pixels.size(); ++i) {
    const float v = static_cast<float>(a.pixels[i]) / 255.0f * static_cast<float>(1.0 - t) +
                    static_cast<float>(b.pixels[i]) / 255.0f * static_cast<float>(t);
    out.pixels[i] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
  }
  return out;
}

int max_abs_diff(const Image &x, const Image &y) {
  EXPECT_EQ(x.width, y.width);
  EXPECT_EQ(x.height, y.height);
  EXPECT_EQ(x.channels, y.channels);
  if (x.pixels.size() != y.pixels.size()) return 256;
  int m = 0;
  for (size_t i = 0; i < x.pixels.size(); ++i) m = std::max(m, std::abs(int(x.pixels[i]) - int(y.pixels[i])));
  return m;
}

double mean_abs_diff(const Image &x, const Image &y) {
  double s = 0;
  for (size_t i = 0; i < x.pixels.size(); ++i) s += std::abs(int(x.pixels[i]) - int(y.pixels[i]));
  return s / static_cast<double>(x.pixels.size());
}

double psnr(const Image &x, const Image &y) {
  double se = 0;
  for (size_t i = 0; i < x.pixels.size(); ++i) {
    const double d = double(x.pixels[i]) - double(y.pixels[i]);
    se += d * d;
  }
  const double mse = se / static_cast<double>(x.pixels.size());
  return mse <= 0 ? 99.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

// The t a frame was made at, if it is a crossfade of a and b (least squares).
double fitted_t(const Image &f, const Image &a, const Image &b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < f.pixels.size(); ++i) {
    const double d = double(b.pixels[i]) - double(a.pixels[i]);
    num += (double(f.pixels[i]) - double(a.pixels[i])) * d;
    den += d * d;
  }
  return num / den;
}

std::string error_of(const VfiConfig &c) {
  try {
    VfiInterpolator v(c);
  } catch (const Error &e) {
    return e.what();
  } catch (const std::exception &e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no error";
}

VfiConfig config_for(const std::string &path) {
  VfiConfig c;
  c.model_path = path;
  c.threads = 2;
  return c;
}

}  // namespace

// ---- Loading, probing and errors ----

TEST(Vfi, DetectsTimeConvention) {
  struct Case {
    const char *name, *src;
    VfiTimeInput want;
  } cases[] = {{"VfiColumn", kLinearColumn, VfiTimeInput::Column},
               {"VfiMap", kLinearMap, VfiTimeInput::Map},
               {"VfiFloat", kLinearFloat, VfiTimeInput::Scalar},
               {"VfiMid", kMidpoint, VfiTimeInput::Midpoint}};
  for (const Case &c : cases) {
    VfiInterpolator v(config_for(save_model(c.name, c.src)));
    EXPECT_EQ(v.time_input(), c.want) << c.name << ": " << v.describe();
    EXPECT_NE(v.describe().find(std::string(c.name) + ".pt"), std::string::npos) << v.describe();
    EXPECT_NE(v.describe().find("fp32"), std::string::npos) << v.describe();
  }
}

TEST(Vfi, ErrorsNameTheFileAndProblem) {
  const std::string missing = temp_dir() + "/nope.pt";
  std::string e = error_of(config_for(missing));
  EXPECT_NE(e.find(missing), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;

  const std::string junk = temp_dir() + "/junk.pt";
  std::ofstream(junk) << "this is not a TorchScript archive";
  temp_files().push_back(junk);
  e = error_of(config_for(junk));
  EXPECT_NE(e.find(junk), std::string::npos) << e;
  EXPECT_NE(e.find("cannot load"), std::string::npos) << e;

  const std::string one_input = save_model("VfiOneInput", "def forward(self, x):\n    return x\n");
  e = error_of(config_for(one_input));
  EXPECT_NE(e.find(one_input), std::string::npos) << e;
  EXPECT_NE(e.find("forward takes 1 inputs"), std::string::npos) << e;

  const std::string gray = save_model("VfiGray", "def forward(self, img0, img1):\n    return img0[:, 0:1]\n");
  e = error_of(config_for(gray));
  EXPECT_NE(e.find(gray), std::string::npos) << e;
  EXPECT_NE(e.find("expected 1x3x64x96"), std::string::npos) << e;

  const std::string col = save_model("VfiColumn", kLinearColumn);
  VfiConfig c = config_for(col);
  c.time_input = VfiTimeInput::Midpoint;
  e = error_of(c);
  EXPECT_NE(e.find("midpoint-only but forward takes a t"), std::string::npos) << e;
  // A Bx1 t is refused by a model that broadcasts it against HxW: the probe uses a batch of two.
  c = config_for(save_model("VfiMap", kLinearMap));
  c.time_input = VfiTimeInput::Column;
  e = error_of(c);
  EXPECT_NE(e.find("does not follow forward(img0, img1[, t])"), std::string::npos) << e;

  c = config_for(col);
  c.precision = dw::latent::Precision::Fp16;
  e = error_of(c);
  EXPECT_NE(e.find("fp16 needs a CUDA device"), std::string::npos) << e;
  c = config_for(col);
  c.device = "tpu";
  e = error_of(c);
  EXPECT_NE(e.find("invalid device 'tpu'"), std::string::npos) << e;
  c = config_for(col);
  c.pad_multiple = 0;
  e = error_of(c);
  EXPECT_NE(e.find("pad multiple"), std::string::npos) << e;
  if (!dw::latent::cuda_available()) {
    c = config_for(col);
    c.device = "cuda:0";
    e = error_of(c);
    EXPECT_NE(e.find("CUDA requested"), std::string::npos) << e;
  }
}

TEST(Vfi, UsageErrors) {
  VfiInterpolator v(config_for(save_model("VfiColumn", kLinearColumn)));
  EXPECT_THROW(v.frames({0.5}), Error);  // before set_pair
  EXPECT_THROW(v.set_pair(pattern(64, 64, 1), pattern(64, 32, 2)), Error);
  v.set_pair(pattern(64, 64, 1), pattern(64, 64, 2));
  EXPECT_THROW(v.frames({0.0}), Error);
  EXPECT_THROW(v.frames({1.5}), Error);
  EXPECT_TRUE(v.frames({}).empty());
  EXPECT_EQ(v.stats().live_intermediates, 0u);
}

// ---- t models ----

TEST(Vfi, TModelsGiveTheBlendAtEachTAnyBatch) {
  const Image a = pattern(96, 64, 1), b = pattern(96, 64, 7);
  const std::vector<double> ts = {0.9, 0.1, 0.5, 0.3, 0.7};  // any order: results follow it
  for (const char *src : {kLinearColumn, kLinearMap, kLinearFloat})
    for (int batch : {1, 2, 4}) {
      VfiConfig c = config_for(save_model("VfiT", src));
      c.batch_size = batch;
      VfiInterpolator v(c);
      v.set_pair(a, b);
      auto out = v.frames(ts);
      ASSERT_EQ(out.size(), ts.size());
      for (size_t i = 0; i < ts.size(); ++i)
        EXPECT_LE(max_abs_diff(out[i], crossfade(a, b, ts[i])), 1)
            << v.describe() << " batch " << batch << " t " << ts[i];
      EXPECT_EQ(v.stats().live_intermediates, 0u);
      // Float models take one frame per call; the others batch_size.
      const size_t per_call = v.time_input() == VfiTimeInput::Scalar ? 1 : static_cast<size_t>(batch);
      EXPECT_LE(v.stats().peak_live_intermediates, per_call);
    }
}

TEST(Vfi, PadsToTheMultipleAndCropsBack) {
  // 100x70: neither a multiple of 32. The map model raises on unpadded input.
  const Image a = pattern(100, 70, 3), b = pattern(100, 70, 4);
  VfiInterpolator v(config_for(save_model("VfiMap", kLinearMap)));
  v.set_pair(a, b);
  auto out = v.frames({0.25});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].width, 100);
  EXPECT_EQ(out[0].height, 70);
  EXPECT_EQ(out[0].channels, 3);
  EXPECT_LE(max_abs_diff(out[0], crossfade(a, b, 0.25)), 1);

  // Replicate padding: the wrapped-around column is a's last column, not black.
  VfiInterpolator roll(config_for(save_model("VfiRoll", kRoll)));
  roll.set_pair(a, b);
  Image r = roll.frames({0.5}).at(0);
  for (int y = 0; y < a.height; ++y)
    for (int c = 0; c < 3; ++c) {
      ASSERT_EQ(r.row(y)[c], a.row(y)[(a.width - 1) * 3 + c]) << "row " << y;
      ASSERT_EQ(r.row(y)[3 + c], a.row(y)[c]) << "row " << y;
    }

  // Without padding (multiple 1) the map model sees 100x70 and refuses it: the probe is fine
  // (64x96), the real frame fails with an error naming the model.
  VfiConfig c = config_for(save_model("VfiMap", kLinearMap));
  c.pad_multiple = 1;
  VfiInterpolator unpadded(c);
  unpadded.set_pair(a, b);
  try {
    unpadded.frames({0.5});
    FAIL() << "unpadded input accepted";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("VfiMap.pt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not padded"), std::string::npos) << e.what();
  }
  EXPECT_EQ(unpadded.stats().live_intermediates, 0u);
}

TEST(Vfi, Bf16OnCpu) {
  const Image a = pattern(64, 64, 5), b = pattern(64, 64, 6);
  VfiConfig c = config_for(save_model("VfiColumn", kLinearColumn));
  c.precision = dw::latent::Precision::Bf16;
  VfiInterpolator v(c);
  EXPECT_NE(v.describe().find("bf16"), std::string::npos) << v.describe();
  v.set_pair(a, b);
  // bf16 keeps 8 significant bits: within a few levels of the float blend.
  EXPECT_LE(max_abs_diff(v.frames({0.3}).at(0), crossfade(a, b, 0.3)), 3);
}

// ---- Midpoint models: bisection ----

TEST(Vfi, BisectionOfAMidpointModelIsTheBlendForDyadicCounts) {
  const Image a = pattern(64, 32, 11), b = pattern(64, 32, 12);
  VfiInterpolator v(config_for(save_model("VfiMid", kMidpoint)));
  EXPECT_EQ(v.stats().model_calls, 0u) << "the load probe is not counted";
  for (int m : {1, 2, 3, 4}) {
    v.set_pair(a, b);  // a fresh pair: nothing kept from the last call
    const int n = (1 << m) - 1;
    const auto before = v.stats().model_calls;
    auto out = v.frames(even_positions(n));
    ASSERT_EQ(out.size(), static_cast<size_t>(n));
    for (int k = 1; k <= n; ++k)
      EXPECT_LE(max_abs_diff(out[k - 1], crossfade(a, b, double(k) / (n + 1))), 1) << "N " << n << " k " << k;
    EXPECT_EQ(v.stats().model_calls - before, static_cast<uint64_t>(n)) << "one model call per in-between";
  }
}

TEST(Vfi, BisectionForOtherCountsSnapsWithinTolerance) {
  // N = 5 (t = k/6): each frame is the first bisection point within 1/128 of its t (the default
  // tolerance's cap), ascending, all distinct.
  const Image a(64, 32, 3), b = [] {
    Image w(64, 32, 3);
    std::fill(w.pixels.begin(), w.pixels.end(), 255);
    return w;
  }();
  VfiInterpolator v(config_for(save_model("VfiMid", kMidpoint)));
  v.set_pair(a, b);
  const auto ts = even_positions(5);
  auto out = v.frames(ts);
  double prev = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const double got = fitted_t(out[i], a, b);
    EXPECT_LE(std::fabs(got - ts[i]), 1.0 / 128 + 1.0 / 255) << "t " << ts[i] << " made at " << got;
    EXPECT_GT(got, prev + 0.05);
    prev = got;
  }
}

TEST(Vfi, BisectionMemoryIsFlatInTheNumberOfInBetweens) {
  const Image a = pattern(64, 64, 21), b = pattern(64, 64, 22);
  VfiInterpolator v(config_for(save_model("VfiMid", kMidpoint)));
  struct Run {
    size_t peak, peak_bytes, frames;
    uint64_t calls;
  };
  auto run = [&](int n) {
    v.set_pair(a, b);
    v.reset_peak();
    const auto calls0 = v.stats().model_calls;
    size_t got = 0;
    double last_t = 0;
    const auto ts = even_positions(n);
    // Streamed: each frame arrives (ascending t) and is dropped here, nothing accumulates.
    v.each_frame(ts, [&](size_t i, Image &&img) {
      EXPECT_GT(ts[i], last_t);
      last_t = ts[i];
      EXPECT_EQ(img.width, 64);
      ++got;
    });
    // Left alive: only the path to the last frame (kept for a next chunk of this pair).
    EXPECT_LE(v.stats().live_intermediates, n == 7 ? 3u : 6u);
    return Run{v.stats().peak_live_intermediates, v.stats().peak_live_bytes, got, v.stats().model_calls - calls0};
  };
  const Run r7 = run(7), r63 = run(63);
  EXPECT_EQ(r7.frames, 7u);
  EXPECT_EQ(r63.frames, 63u);
  EXPECT_EQ(r7.calls, 7u);
  EXPECT_EQ(r63.calls, 63u);
  // O(log N): log2(8) = 3 and log2(64) = 6 intermediates at most, not 7 and 63.
  EXPECT_LE(r7.peak, 3u);
  EXPECT_LE(r63.peak, 6u);
  EXPECT_GE(r63.peak, 4u) << "the counter must see the bisection stack";
  const size_t frame_bytes = 64 * 64 * 3 * sizeof(float);
  EXPECT_LE(r63.peak_bytes, 6 * frame_bytes);
  EXPECT_LE(r63.peak_bytes, 2 * r7.peak_bytes);
  std::printf("bisection peak live intermediates: N=7: %zu (%zu bytes), N=63: %zu (%zu bytes)\n", r7.peak,
              r7.peak_bytes, r63.peak, r63.peak_bytes);
  // The plan's own bound agrees.
  EXPECT_LE(bisection_peak_slots(bisection_schedule(even_positions(63))), 2 + 6);
}

TEST(Vfi, ChunkedCallsAndStreamingMatchOneCall) {
  const Image a = pattern(64, 64, 31), b = pattern(64, 64, 32), c = pattern(64, 64, 33);
  VfiInterpolator v(config_for(save_model("VfiMid", kMidpoint)));
  v.set_pair(a, b);
  const auto ts = even_positions(7);
  auto whole = v.frames(ts);
  // Ascending chunks (as an element pushing early asks): the same frames, and each node is made
  // once: the path to the last frame of a chunk is kept for the next one.
  v.set_pair(a, b);
  v.reset_peak();
  const auto calls0 = v.stats().model_calls;
  auto first = v.frames({ts.begin(), ts.begin() + 3});
  auto rest = v.frames({ts.begin() + 3, ts.end()});
  EXPECT_EQ(v.stats().model_calls - calls0, 7u);
  EXPECT_LE(v.stats().peak_live_intermediates, 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(max_abs_diff(first[i], whole[i]), 0);
  for (size_t i = 3; i < ts.size(); ++i) EXPECT_EQ(max_abs_diff(rest[i - 3], whole[i]), 0);
  // One t per call (batch-size 1): the same frames for N = 15 (t = 7/16 alone must not snap to 1/2).
  const auto ts15 = even_positions(15);
  v.set_pair(a, b);
  auto whole15 = v.frames(ts15);
  for (size_t i = 0; i < ts15.size(); ++i) {
    EXPECT_EQ(max_abs_diff(v.frames({ts15[i]}).at(0), whole15[i]), 0) << "t " << ts15[i];
    EXPECT_LE(max_abs_diff(whole15[i], crossfade(a, b, ts15[i])), 1) << "t " << ts15[i];
  }
  // Out of order (descending) still right, just recomputed.
  auto back = v.frames({ts[1]});
  EXPECT_EQ(max_abs_diff(back.at(0), whole[1]), 0);
  // The next pair (b, c): a stream's b becomes a; results are those of (b, c).
  v.set_pair(b, c);
  EXPECT_LE(max_abs_diff(v.frames({0.5}).at(0), crossfade(b, c, 0.5)), 1);
  v.reset();
  EXPECT_EQ(v.stats().live_intermediates, 0u);
  EXPECT_THROW(v.frames({0.5}), Error);
}

// ---- Latent pair with residual carry ----

namespace {

std::shared_ptr<dw::latent::SharedCodec> blend_codec() {
  dw::latent::CodecConfig c;
  c.backend = dw::latent::Backend::Blend;
  return dw::latent::ModelRegistry::acquire(c);
}

std::string shared_dir() {
  const char *d = std::getenv("DW_SHARED_DIR");
  return d ? d : DW_SHARED_DIR;
}

bool file_exists(const std::string &p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

Image load_png(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Image img;
  std::string err;
  EXPECT_TRUE(dw::decode_png(bytes.data(), bytes.size(), img, &err)) << path << ": " << err;
  return dw::convert_channels(img, 3);
}

Image crop(const Image &src, int x0, int y0, int w, int h) {
  Image out(w, h, 3);
  for (int y = 0; y < h; ++y)
    std::copy_n(src.row(y0 + y) + x0 * 3, static_cast<size_t>(w) * 3, out.row(y));
  return out;
}

}  // namespace

TEST(LatentPair, BlendCodecReusesKeyframesAndCrossfades) {
  LatentPairInterpolator lp(blend_codec());
  EXPECT_TRUE(lp.residual_carry());
  EXPECT_NE(lp.describe().find("residual carry"), std::string::npos) << lp.describe();
  EXPECT_THROW(lp.frames({0.5}), Error);
  const Image a = pattern(48, 32, 1), b = pattern(48, 32, 2), c = pattern(48, 32, 3);
  LatentPairInterpolator plain(blend_codec(), LatentPairConfig{false, 4});
  plain.set_pair(a, b);
  EXPECT_EQ(plain.stats().keyframe_decodes, 0u);
  lp.set_pair(a, b);
  lp.set_pair(b, c);  // b is reused, not encoded again
  EXPECT_EQ(lp.stats().encodes, 3u);
  EXPECT_EQ(lp.stats().reused, 1u);
  EXPECT_EQ(lp.stats().keyframe_decodes, 3u);
  auto out = lp.frames({0.25, 0.75});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_LE(max_abs_diff(out[0], crossfade(b, c, 0.25)), 1);
  EXPECT_LE(max_abs_diff(out[1], crossfade(b, c, 0.75)), 1);
  EXPECT_THROW(lp.frames({1.0}), Error);
  EXPECT_THROW(lp.set_pair(a, pattern(32, 32, 4)), Error);
  EXPECT_THROW(LatentPairInterpolator(nullptr), Error);
  lp.reset();
  EXPECT_THROW(lp.frames({0.5}), Error);
}

class LatentPairTaef2 : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { codec_.reset(); }
  void SetUp() override {
    if (!dw::latent::torch_available()) GTEST_SKIP() << "built without LibTorch";
    if (codec_) return;
    const std::string m = shared_dir() + "/models";
    dw::latent::CodecConfig c;
    c.backend = dw::latent::Backend::Taesd;
    c.encoder_path = m + "/taef2_encoder.safetensors";
    c.decoder_path = m + "/taef2_decoder.safetensors";
    c.precision = dw::latent::Precision::Fp32;
    c.threads = 2;
    if (!file_exists(c.encoder_path) || !file_exists(c.decoder_path))
      GTEST_SKIP() << "TAEF2 weights not found in " << m << " (set DW_SHARED_DIR)";
    codec_ = dw::latent::ModelRegistry::acquire(c);  // once: the registry holds it only weakly
    photo_ = load_png(shared_dir() + "/images/astronaut.png");
  }
  static std::shared_ptr<dw::latent::SharedCodec> codec_;
  static Image photo_;
};
std::shared_ptr<dw::latent::SharedCodec> LatentPairTaef2::codec_;
Image LatentPairTaef2::photo_;

TEST_F(LatentPairTaef2, ResidualCarryReproducesTheKeyframeAtSmallT) {
  const Image a = crop(photo_, 160, 96, 128, 128), b = crop(photo_, 176, 96, 128, 128);
  LatentPairInterpolator lp(codec_);
  lp.set_pair(a, b);
  // a and b, plus each aligned to the other when the pair's motion is compensated (OpenCV builds).
  const uint64_t keys = dw::interp::flow_available() ? 4u : 2u;
  EXPECT_EQ(lp.stats().keyframe_decodes, keys);
  const Image with_carry = lp.frames({0.001}).at(0);
  // Switchable live: off gives the plain decode of the same latents.
  lp.set_residual_carry(false);
  EXPECT_NE(lp.describe().find("no residual carry"), std::string::npos);
  const Image plain = lp.frames({0.001}).at(0);
  const double p_carry = psnr(with_carry, a), p_plain = psnr(plain, a);
  std::printf("t=0.001 vs A: residual carry %.1f dB, plain decode %.1f dB\n", p_carry, p_plain);
  EXPECT_GT(p_carry, 40.0);
  EXPECT_LT(p_plain, 36.0);
  EXPECT_EQ(lp.stats().encodes, keys);
}

TEST_F(LatentPairTaef2, ResidualCarryRemovesThePopOnAPan) {
  // A pan: keyframes 8 px apart, 7 in-betweens (the true in-between k is shifted by k px).
  const int size = 128, step = 8, n = 7;
  std::vector<Image> keys;
  for (int k = 0; k < 3; ++k) keys.push_back(crop(photo_, 120 + k * step, 100, size, size));
  // One interpolator, both sequences: the same latents decoded with and without the residuals.
  LatentPairConfig config;
  config.batch_size = 8;
  config.motion_compensated_latents = false;  // the plain latent slerp, with and without its residuals
  LatentPairInterpolator lp(codec_, config);
  std::vector<Image> seq_carry{keys[0]}, seq_plain{keys[0]};
  for (size_t k = 1; k < keys.size(); ++k) {
    lp.set_pair(keys[k - 1], keys[k]);
    lp.set_residual_carry(true);
    for (auto &f : lp.frames(even_positions(n))) seq_carry.push_back(std::move(f));
    lp.set_residual_carry(false);
    for (auto &f : lp.frames(even_positions(n))) seq_plain.push_back(std::move(f));
    seq_carry.push_back(keys[k]);
    seq_plain.push_back(keys[k]);
  }
  EXPECT_EQ(lp.stats().encodes, 3u);  // each keyframe once
  EXPECT_EQ(lp.stats().reused, 1u);
  auto pop_of = [&](const std::vector<Image> &seq) {
    // Change across the middle keyframe (index 8) vs mean change between in-betweens.
    const size_t kf = n + 1;
    const double boundary = 0.5 * (mean_abs_diff(seq[kf - 1], seq[kf]) + mean_abs_diff(seq[kf], seq[kf + 1]));
    double inside = 0;
    int count = 0;
    for (size_t i = 1; i + 1 < seq.size(); ++i) {
      if (i % kf == 0 || (i + 1) % kf == 0) continue;  // a keyframe is one of the two
      inside += mean_abs_diff(seq[i], seq[i + 1]);
      ++count;
    }
    return boundary / (inside / count);
  };
  const double pop_carry = pop_of(seq_carry), pop_plain = pop_of(seq_plain);
  std::printf("pan pop (boundary / inside change): residual carry %.2f, plain %.2f\n", pop_carry, pop_plain);
  EXPECT_LT(pop_carry, pop_plain);
  EXPECT_LT(pop_carry, 1.25);
}

namespace {
// Correlation of the fine detail (Laplacian of the grey image) of x and y, interior only: 1 when x
// has y's detail where y has it. PSNR would mostly measure the latent crossfade's ghosting.
double detail_correlation(const Image &x, const Image &y) {
  auto lap = [](const Image &img) {
    std::vector<double> g(static_cast<size_t>(img.width) * img.height), l;
    for (size_t i = 0; i < g.size(); ++i)
      g[i] = 0.299 * img.pixels[3 * i] + 0.587 * img.pixels[3 * i + 1] + 0.114 * img.pixels[3 * i + 2];
    for (int yy = 4; yy < img.height - 4; ++yy)
      for (int xx = 4; xx < img.width - 4; ++xx) {
        const size_t i = static_cast<size_t>(yy) * img.width + xx;
        l.push_back(g[i - 1] + g[i + 1] + g[i - img.width] + g[i + img.width] - 4 * g[i]);
      }
    return l;
  };
  const auto a = lap(x), b = lap(y);
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb + 1e-12);
}
}  // namespace

TEST_F(LatentPairTaef2, MotionCompensatedCarryPutsTheDetailWhereItMoved) {
  if (!dw::interp::flow_available()) GTEST_SKIP() << "built without OpenCV (residuals stay in place)";
  // A pan 12 px per keyframe: in place, the residuals of A and B put each detail at two places
  // mid-pair; warped along the flow, at the one where the truth has it.
  const int size = 128, step = 12;
  const Image a = crop(photo_, 120, 100, size, size), b = crop(photo_, 120 + step, 100, size, size);
  const Image truth = crop(photo_, 120 + step / 2, 100, size, size);
  LatentPairConfig config;
  config.motion_compensated_latents = false;  // residuals warped onto the plain latent slerp
  LatentPairInterpolator lp(codec_, config);
  EXPECT_TRUE(lp.motion_compensated_residuals());
  EXPECT_NE(lp.describe().find("motion-compensated"), std::string::npos) << lp.describe();
  lp.set_pair(a, b);
  EXPECT_EQ(lp.stats().flows, 1u);
  const Image warped = lp.frames({0.5}).at(0);
  lp.set_motion_compensated_residuals(false);
  const Image in_place = lp.frames({0.5}).at(0);
  EXPECT_EQ(lp.stats().flows, 1u);  // once per pair
  const double c_warped = detail_correlation(warped, truth), c_in_place = detail_correlation(in_place, truth);
  std::printf("pan mid-pair detail correlation with the truth: warped residuals %.3f, in place %.3f\n", c_warped,
              c_in_place);
  EXPECT_GT(c_warped, c_in_place + 0.1);
}

TEST_F(LatentPairTaef2, MotionCompensatedLatentsFollowAPanAndKeepAMorphInPlace) {
  if (!dw::interp::flow_available()) GTEST_SKIP() << "built without OpenCV";
  // The default: the latent morph is made in each keyframe's geometry and warped along the flow, so
  // the in-between of a pan is where the truth is (not a crossfade of two poses).
  const int size = 128, step = 12;
  const Image a = crop(photo_, 120, 100, size, size), b = crop(photo_, 120 + step, 100, size, size);
  const Image truth = crop(photo_, 120 + step / 2, 100, size, size);
  LatentPairInterpolator lp(codec_);
  EXPECT_TRUE(lp.motion_compensated_latents());
  EXPECT_NE(lp.describe().find("latents and residual carry motion-compensated"), std::string::npos) << lp.describe();
  lp.set_pair(a, b);
  EXPECT_EQ(lp.stats().aligned_pairs, 1u);
  EXPECT_EQ(lp.stats().encodes, 4u);  // a, b and both aligned keyframes
  const Image moved = lp.frames({0.5}).at(0);
  lp.set_motion_compensated_latents(false);
  lp.set_pair(a, b);  // takes effect at the next pair
  const Image slerped = lp.frames({0.5}).at(0);
  const double p_moved = psnr(moved, truth), p_slerped = psnr(slerped, truth);
  std::printf("pan mid-pair vs truth: motion-compensated latents %.1f dB, latent slerp + warped residuals %.1f dB\n",
              p_moved, p_slerped);
  EXPECT_GT(p_moved, 35.0);
  EXPECT_GT(p_moved, p_slerped + 8.0);

  // Two unrelated pictures: no flow explains the change, so the pair is carried in place (the same
  // frames as with motion compensation off) instead of warping two morphs along noise.
  const Image other = crop(photo_, 300, 300, size, size);
  LatentPairInterpolator on(codec_), off(codec_, [] {
    LatentPairConfig c;
    c.motion_compensated_latents = false;
    c.motion_compensated_residuals = false;
    return c;
  }());
  on.set_pair(a, other);
  off.set_pair(a, other);
  EXPECT_EQ(on.stats().morph_pairs, 1u);
  EXPECT_EQ(on.stats().aligned_pairs, 0u);
  EXPECT_GT(on.last_unexplained_change(), dw::interp::kMaxUnexplainedChange);
  const auto f_on = on.frames({0.25, 0.75}), f_off = off.frames({0.25, 0.75});
  EXPECT_EQ(f_on[0].pixels, f_off[0].pixels);
  EXPECT_EQ(f_on[1].pixels, f_off[1].pixels);

  // Residual carry switched on after a motion pair was set up without it: same frames as if it had
  // been on from the start (the aligned keyframes get their residuals late).
  LatentPairConfig no_carry;
  no_carry.residual_carry = false;
  LatentPairInterpolator late(codec_, no_carry), early(codec_);
  late.set_pair(a, b);
  early.set_pair(a, b);
  late.set_residual_carry(true);
  EXPECT_EQ(late.frames({0.5}).at(0).pixels, early.frames({0.5}).at(0).pixels);
}

TEST(LatentPairTorchScript, MotionCompensationOnOddSizesWithAnyLatentCodec) {
  if (!dw::latent::torch_available()) GTEST_SKIP() << "built without LibTorch";
  if (!dw::interp::flow_available()) GTEST_SKIP() << "built without OpenCV";
  // A user's encoder/decoder pair (here the tiny test pair: 8x average pool / nearest upsample) on
  // a frame size that is not a multiple of its grid: the aligned keyframes are padded and cropped
  // like the keyframes, the in-betweens come back at the frame's size and follow the pan.
  const std::string enc = ::testing::TempDir() + "/dw_vfi_ts_encoder.pt";
  const std::string dec = ::testing::TempDir() + "/dw_vfi_ts_decoder.pt";
  dw::latent::write_test_torchscript_pair(enc, dec);
  dw::latent::CodecConfig c;
  c.encoder_path = enc;
  c.decoder_path = dec;
  c.precision = dw::latent::Precision::Fp32;
  const Image photo = load_png(shared_dir() + "/images/astronaut.png");
  ASSERT_FALSE(photo.empty());
  const int w = 70, h = 45;
  const Image a = crop(photo, 200, 180, w, h), b = crop(photo, 206, 180, w, h), truth = crop(photo, 203, 180, w, h);
  LatentPairInterpolator lp(dw::latent::ModelRegistry::acquire(c));
  EXPECT_TRUE(lp.motion_compensated_latents()) << lp.describe();
  lp.set_pair(a, b);
  EXPECT_EQ(lp.stats().aligned_pairs, 1u);
  const Image mid = lp.frames({0.5}).at(0);
  ASSERT_EQ(mid.width, w);
  ASSERT_EQ(mid.height, h);
  lp.set_motion_compensated_latents(false);
  lp.set_motion_compensated_residuals(false);
  const Image crossfade = lp.frames({0.5}).at(0);
  const double p_moved = psnr(mid, truth), p_crossfade = psnr(crossfade, truth);
  std::printf("70x45 pan, test TorchScript codec: motion-compensated %.1f dB, in place %.1f dB\n", p_moved, p_crossfade);
  EXPECT_GT(p_moved, p_crossfade + 5.0);
}
