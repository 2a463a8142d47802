// Tests for lib/latent: blend backend, slerp, registry/SharedCodec, the hostile-file-proof
// safetensors reader, and (with LibTorch) the native TAESD backend against the float32 oracle
// tensors of taef2_reference.safetensors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "image/image.h"
#include "latent/codec.h"
#include "latent/raw.h"
#include "latent/safetensors.h"

using namespace dw::latent;

namespace {

std::string shared_dir() {
  const char *d = std::getenv("DW_SHARED_DIR");
  return d ? d : "../shared";
}
std::string models() { return shared_dir() + "/models"; }
std::string enc_path() { return models() + "/taef2_encoder.safetensors"; }
std::string dec_path() { return models() + "/taef2_decoder.safetensors"; }
std::string ref_path() { return models() + "/taef2_reference.safetensors"; }

std::vector<uint8_t> read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string temp_file(const std::string &name, const std::vector<uint8_t> &bytes) {
  std::string path = ::testing::TempDir() + "/dw_latent_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

dw::Image load_png(const std::string &path) {
  auto bytes = read_file(path);
  dw::Image img;
  std::string err;
  EXPECT_TRUE(dw::decode_png(bytes.data(), bytes.size(), img, &err)) << path << ": " << err;
  return dw::convert_channels(img, 3);
}

dw::Image solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  dw::Image img(w, h, 3);
  for (size_t i = 0; i < img.pixels.size(); i += 3) {
    img.pixels[i] = r;
    img.pixels[i + 1] = g;
    img.pixels[i + 2] = b;
  }
  return img;
}

// A safetensors file from a header string and a data section.
std::vector<uint8_t> make_st(const std::string &header, size_t data_bytes, int64_t header_len_override = -1) {
  std::vector<uint8_t> out(8);
  uint64_t n = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

std::string parse_error(const std::vector<uint8_t> &bytes) {
  try {
    SafeTensors::parse(bytes.data(), bytes.size(), "hostile.safetensors");
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

FloatTensor ref_tensor(const SafeTensors &st, const std::string &name) {
  const TensorInfo &t = st.get(name);
  return FloatTensor{t.shape, st.to_float(t)};
}

double max_abs_diff(const FloatTensor &a, const FloatTensor &b) {
  EXPECT_EQ(a.shape, b.shape);
  double m = 0;
  for (size_t i = 0; i < std::min(a.data.size(), b.data.size()); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a.data[i] - b.data[i])));
  return m;
}

double psnr(const dw::Image &a, const dw::Image &b) {
  EXPECT_EQ(a.pixels.size(), b.pixels.size());
  double se = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const double d = double(a.pixels[i]) - b.pixels[i];
    se += d * d;
  }
  const double mse = se / a.pixels.size();
  return 10 * std::log10(255.0 * 255.0 / std::max(mse, 1e-12));
}

std::string error_of(const CodecConfig &c) {
  try {
    create_codec(c);
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

CodecConfig taef2(Precision p = Precision::Fp32) {
  CodecConfig c;
  c.backend = Backend::Taesd;
  c.encoder_path = enc_path();
  c.decoder_path = dec_path();
  c.precision = p;
  return c;
}

#define REQUIRE_TORCH() \
  if (!torch_available()) GTEST_SKIP() << "built without LibTorch"

}  // namespace

// ---- blend ----

TEST(Blend, CrossfadeAndDecode) {
  CodecConfig c;
  c.backend = Backend::Blend;
  auto codec = create_codec(c);
  EXPECT_FALSE(codec->has_model());
  auto a = codec->encode(solid(16, 8, 0, 100, 200));
  auto b = codec->encode(solid(16, 8, 200, 100, 0));
  EXPECT_EQ(a->image_width(), 16);
  EXPECT_EQ(a->image_height(), 8);
  auto frames = codec->interpolate(*a, *b, {0.0, 0.5, 1.0}, 2);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].pixels[0], 0);
  EXPECT_EQ(frames[1].pixels[0], 100);
  EXPECT_EQ(frames[1].pixels[2], 100);
  EXPECT_EQ(frames[2].pixels[0], 200);
  EXPECT_EQ(frames[1].width, 16);
  EXPECT_EQ(frames[1].channels, 3);
  EXPECT_EQ(codec->decode(*a).pixels, solid(16, 8, 0, 100, 200).pixels);
  EXPECT_THROW(codec->encode(dw::Image()), Error);
}

TEST(Blend, AutoWithoutFilesIsBlendAndRgbaAccepted) {
  auto codec = create_codec(CodecConfig{});
  EXPECT_FALSE(codec->has_model());
  dw::Image rgba(4, 4, 4);
  auto l = codec->encode(rgba);
  EXPECT_EQ(codec->decode(*l).channels, 3);
}

// ---- slerp ----

TEST(Slerp, OrthogonalAndParallel) {
  const float a[2] = {1, 0}, b[2] = {0, 1};
  float out[2];
  slerp(a, b, out, 2, 0.5);
  EXPECT_NEAR(out[0], std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(out[1], std::sqrt(0.5), 1e-6);
  const float c[2] = {1, 1}, d[2] = {2, 2};  // parallel: lerp
  slerp(c, d, out, 2, 0.25);
  EXPECT_NEAR(out[0], 1.25, 1e-6);
  const float z[2] = {0, 0};  // zero vector: lerp, no NaN
  slerp(z, d, out, 2, 0.5);
  EXPECT_NEAR(out[1], 1.0, 1e-6);
}

TEST(Slerp, MatchesReference) {
  SafeTensors st = SafeTensors::load(ref_path());
  FloatTensor a = ref_tensor(st, "latentA"), b = ref_tensor(st, "latentB"), want = ref_tensor(st, "slerp50_latent");
  FloatTensor got = want;
  slerp(a.data.data(), b.data.data(), got.data.data(), a.data.size(), 0.5);
  const double err = max_abs_diff(got, want);
  std::printf("slerp50_latent (plain floats) max abs error %.3g\n", err);
  EXPECT_LT(err, 1e-5);
  if (torch_available()) {
    FloatTensor t = slerp_raw(a, b, 0.5);
    const double terr = max_abs_diff(t, want);
    std::printf("slerp50_latent (ATen) max abs error %.3g\n", terr);
    EXPECT_LT(terr, 1e-5);
  }
}

// ---- registry ----

TEST(Registry, SharesOneInstancePerKeyWeakly) {
  CodecConfig c;
  c.backend = Backend::Blend;
  auto s1 = ModelRegistry::acquire(c);
  auto s2 = ModelRegistry::acquire(c);
  EXPECT_EQ(s1.get(), s2.get());
  EXPECT_EQ(c.key(), CodecConfig(c).key());
  CodecConfig other = taef2();
  EXPECT_NE(c.key(), other.key());
  CodecConfig other2 = taef2(Precision::Bf16);
  EXPECT_NE(other.key(), other2.key());
  std::weak_ptr<SharedCodec> weak = s1;
  s1.reset();
  s2.reset();
  EXPECT_TRUE(weak.expired());  // held weakly: freed with its last user
}

TEST(Registry, KeyCanonicalisesPathsAndDirs) {
  CodecConfig a = taef2();
  CodecConfig b = a;
  b.encoder_path = models() + "/../models/taef2_encoder.safetensors";
  EXPECT_EQ(a.key(), b.key());
  CodecConfig d;
  d.model_dir = models();
  d.precision = Precision::Fp32;
  EXPECT_EQ(a.key(), d.key());  // model_dir finds *encoder*/*decoder*.safetensors -> taesd
}

TEST(Registry, ConcurrentUseRecordsLockWaits) {
  CodecConfig c;
  c.backend = Backend::Blend;
  auto shared = ModelRegistry::acquire(c);
  auto before = shared->lock_stats();
  std::atomic<int> inside{0}, overlap{0};
  auto worker = [&] {
    for (int i = 0; i < 5; ++i)
      shared->with([&](Codec &codec) {
        if (inside.fetch_add(1) != 0) overlap++;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        inside.fetch_sub(1);
        return codec.has_model();
      });
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  auto after = shared->lock_stats();
  EXPECT_EQ(overlap.load(), 0);
  EXPECT_EQ(after.acquisitions - before.acquisitions, 10u);
  EXPECT_GT(after.total_wait_us - before.total_wait_us, 5000);  // the two threads waited for each other
  EXPECT_GT(after.max_wait_us, 1000);
}

// ---- safetensors ----

TEST(SafeTensors, ReadsReference) {
  SafeTensors st = SafeTensors::load(ref_path());
  const TensorInfo &t = st.get("latent");
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{1, 32, 32, 32}));
  SafeTensors enc = SafeTensors::load(enc_path());
  EXPECT_EQ(enc.get("0.weight").dtype, DType::F16);
  EXPECT_GT(enc.metadata().size(), 0u);
  try {
    st.get("nope");
    FAIL();
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'nope'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("taef2_reference"), std::string::npos) << e.what();
  }
}

TEST(SafeTensors, HalfConversion) {
  EXPECT_EQ(half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(half_to_float(0xc000), -2.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(half_to_float(0x7c00)));
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
}

TEST(SafeTensors, RejectsHostileFiles) {
  auto has = [](const std::string &err, const char *what) {
    return err.find(what) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << "'" << err << "' lacks '" << what << "'";
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(parse_error(make_st(ok, 8)), "");
  EXPECT_TRUE(has(parse_error({1, 2, 3}), "truncated"));
  EXPECT_TRUE(has(parse_error(make_st(ok, 8, 1000)), "truncated"));
  EXPECT_TRUE(has(parse_error(make_st(ok, 8, int64_t(1) << 62)), "header length"));
  EXPECT_TRUE(has(parse_error(make_st(ok, 4)), "tensor 'a'"));  // data truncated
  EXPECT_TRUE(has(parse_error(make_st("{\"a\":", 0)), "JSON"));
  EXPECT_TRUE(has(parse_error(make_st("[1,2,3]", 0)), "not a JSON object"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)), "needs 12 bytes"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8)), "needs 4 bytes"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)), "non-negative"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8)), "non-negative"));
  EXPECT_TRUE(has(parse_error(make_st(
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8)),
                  "overflow"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)), "begin > end"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8)), "data_offsets"));
  EXPECT_TRUE(has(parse_error(make_st(
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  12)),
                  "overlap"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8)), "unsupported dtype"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8)), "missing dtype"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4)), "rank"));
  EXPECT_TRUE(has(parse_error(make_st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8)), "data_offsets"));
  try {
    SafeTensors::load("/nonexistent/model.safetensors");
    FAIL();
  } catch (const Error &e) {
    EXPECT_TRUE(has(e.what(), "/nonexistent/model.safetensors"));
  }
}

// ---- factory errors (all builds) ----

TEST(Factory, ErrorsNameTheProblem) {
  if (!torch_available()) {
    const std::string err = error_of(taef2());
    EXPECT_NE(err.find("without LibTorch"), std::string::npos) << err;
    return;
  }
  CodecConfig missing = taef2();
  missing.encoder_path = "/nonexistent/enc.safetensors";
  EXPECT_NE(error_of(missing).find("/nonexistent/enc.safetensors"), std::string::npos) << error_of(missing);

  auto bytes = read_file(enc_path());
  ASSERT_GT(bytes.size(), 1000u);
  CodecConfig truncated = taef2();
  truncated.encoder_path = temp_file("trunc_encoder.safetensors", {bytes.begin(), bytes.begin() + bytes.size() / 2});
  std::string err = error_of(truncated);
  EXPECT_NE(err.find("trunc_encoder"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;

  CodecConfig swapped = taef2();
  std::swap(swapped.encoder_path, swapped.decoder_path);
  err = error_of(swapped);
  EXPECT_NE(err.find("not a TAESD encoder"), std::string::npos) << err;
  EXPECT_NE(err.find("taef2_decoder"), std::string::npos) << err;

  CodecConfig two_encoders = taef2();
  two_encoders.decoder_path = enc_path();
  err = error_of(two_encoders);
  EXPECT_NE(err.find("not a TAESD decoder"), std::string::npos) << err;

  CodecConfig wrong = taef2();
  wrong.encoder_path = ref_path();
  err = error_of(wrong);
  EXPECT_NE(err.find("taef2_reference"), std::string::npos) << err;

  CodecConfig garbage = taef2();
  garbage.decoder_path = temp_file("garbage_decoder.safetensors", std::vector<uint8_t>(100, 0x41));
  err = error_of(garbage);
  EXPECT_NE(err.find("garbage_decoder"), std::string::npos) << err;

  CodecConfig half = taef2();
  half.encoder_path.clear();
  EXPECT_NE(error_of(half).find("needs both"), std::string::npos);

  CodecConfig bad_device = taef2();
  bad_device.device = "tpu";
  EXPECT_NE(error_of(bad_device).find("invalid device"), std::string::npos);
}

TEST(Factory, CudaWithoutCuda) {
  REQUIRE_TORCH();
  if (cuda_available()) GTEST_SKIP() << "CUDA is available here";
  CodecConfig c = taef2(Precision::Auto);
  c.device = "cuda";
  const std::string err = error_of(c);
  EXPECT_NE(err.find("CUDA requested"), std::string::npos) << err;
}

// ---- TAESD vs the float32 oracle ----

class Taef2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!torch_available()) return;
    codec_ = create_codec(taef2()).release();
    ref_ = new SafeTensors(SafeTensors::load(ref_path()));
  }
  static void TearDownTestSuite() {
    delete codec_;
    delete ref_;
    codec_ = nullptr;
    ref_ = nullptr;
  }
  void SetUp() override { REQUIRE_TORCH(); }
  static Codec *codec_;
  static SafeTensors *ref_;
};
Codec *Taef2::codec_ = nullptr;
SafeTensors *Taef2::ref_ = nullptr;

TEST_F(Taef2, DetectsVariant) {
  const std::string d = codec_->describe();
  EXPECT_NE(d.find("TAEF2 (32 ch, midblock GN)"), std::string::npos) << d;
  EXPECT_NE(d.find("fp32"), std::string::npos) << d;
  EXPECT_TRUE(codec_->has_model());
}

TEST_F(Taef2, PooledLatentIsAGridAverage) {
  auto a = codec_->encode(solid(64, 64, 200, 40, 40));
  auto b = codec_->encode(solid(64, 64, 40, 40, 200));
  std::vector<float> pa = a->pooled(2), pb = b->pooled(2);
  ASSERT_EQ(pa.size(), 32u * 2 * 2);
  ASSERT_EQ(a->pooled(1).size(), 32u);
  // 1x1 pooling is the mean of the 2x2 cells.
  std::vector<float> p1 = a->pooled(1);
  for (int c = 0; c < 32; ++c) {
    float mean = (pa[c * 4] + pa[c * 4 + 1] + pa[c * 4 + 2] + pa[c * 4 + 3]) / 4;
    EXPECT_NEAR(p1[c], mean, 1e-3) << c;
  }
  EXPECT_NE(pa, pb);
  EXPECT_THROW(a->pooled(0), dw::latent::Error);
  // The blend backend has no latent space.
  CodecConfig blend;
  blend.backend = Backend::Blend;
  EXPECT_TRUE(create_codec(blend)->encode(solid(8, 8, 1, 2, 3))->pooled(2).empty());
}

TEST_F(Taef2, EncoderMatchesReference) {
  FloatTensor got = encode_raw(*codec_, ref_tensor(*ref_, "input"));
  const double err = max_abs_diff(got, ref_tensor(*ref_, "latent"));
  std::printf("encoder(input) vs latent: max abs error %.3g\n", err);
  EXPECT_LT(err, 2e-3);
}

TEST_F(Taef2, DecoderMatchesReference) {
  FloatTensor got = decode_raw(*codec_, ref_tensor(*ref_, "latent"));
  const double err = max_abs_diff(got, ref_tensor(*ref_, "decoded"));
  std::printf("decoder(latent) vs decoded: max abs error %.3g\n", err);
  EXPECT_LT(err, 2e-3);
}

TEST_F(Taef2, SlerpDecodedMatchesReference) {
  FloatTensor z = slerp_raw(ref_tensor(*ref_, "latentA"), ref_tensor(*ref_, "latentB"), 0.5);
  FloatTensor got = decode_raw(*codec_, z);
  const double err = max_abs_diff(got, ref_tensor(*ref_, "slerp50_decoded"));
  std::printf("decoder(slerp(latentA, latentB, 0.5)) vs slerp50_decoded: max abs error %.3g\n", err);
  EXPECT_LT(err, 2e-3);
}

TEST_F(Taef2, AstronautRoundTripPsnr) {
  dw::Image img = load_png(shared_dir() + "/images/astronaut.png");
  ASSERT_EQ(img.width, 512);
  auto t0 = std::chrono::steady_clock::now();
  auto latent = codec_->encode(img);
  dw::Image out = codec_->decode(*latent);
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(latent->describe(), "1x32x64x64 fp32 cpu");
  ASSERT_EQ(out.width, 512);
  ASSERT_EQ(out.height, 512);
  const double p = psnr(img, out);
  std::printf("PSNR decode(encode(astronaut 512x512)) fp32: %.2f dB (%.0f ms)\n", p, ms);
  EXPECT_GT(p, 30.0);
}

TEST_F(Taef2, OddSizesInterpolateAndBatches) {
  dw::Image a = dw::resize_bilinear(load_png(shared_dir() + "/images/chelsea.png"), 100, 60);
  dw::Image b = dw::resize_bilinear(load_png(shared_dir() + "/images/astronaut.png"), 100, 60);
  auto la = codec_->encode(a), lb = codec_->encode(b);
  EXPECT_EQ(la->describe(), "1x32x8x13 fp32 cpu");  // padded to 64x104
  auto frames = codec_->interpolate(*la, *lb, {0.0, 0.25, 0.5, 1.0}, 3);
  ASSERT_EQ(frames.size(), 4u);
  for (const auto &f : frames) {
    EXPECT_EQ(f.width, 100);
    EXPECT_EQ(f.height, 60);
    EXPECT_EQ(f.channels, 3);
  }
  EXPECT_GT(psnr(frames[0], codec_->decode(*la)), 45.0);  // t=0 is a (batching does not change results)
  EXPECT_GT(psnr(frames[0], a), 20.0);
  auto lc = codec_->encode(solid(64, 64, 1, 2, 3));
  EXPECT_THROW(codec_->interpolate(*la, *lc, {0.5}, 1), Error);  // different sizes
  CodecConfig blend;
  blend.backend = Backend::Blend;
  auto bl = create_codec(blend)->encode(a);
  EXPECT_THROW(codec_->decode(*bl), Error);  // foreign latent
}

TEST_F(Taef2, AutoPrecisionRoundTrip) {
  CodecConfig c = taef2(Precision::Auto);
  auto codec = create_codec(c);
  dw::Image img = dw::resize_bilinear(load_png(shared_dir() + "/images/astronaut.png"), 256, 256);
  dw::Image out = codec->decode(*codec->encode(img));
  const double p = psnr(img, out);
  std::printf("%s: PSNR astronaut 256x256 %.2f dB\n", codec->describe().c_str(), p);
  EXPECT_GT(p, 27.0);
}

TEST_F(Taef2, RegistrySharesModelAcrossThreads) {
  auto s1 = ModelRegistry::acquire(taef2());
  auto s2 = ModelRegistry::acquire(taef2());
  ASSERT_EQ(s1.get(), s2.get());
  dw::Image img = solid(64, 64, 30, 60, 90);
  auto worker = [&] {
    for (int i = 0; i < 2; ++i) s1->with([&](Codec &c) { return c.decode(*c.encode(img)); });
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  auto st = s1->lock_stats();
  EXPECT_EQ(st.acquisitions, 4u);
  std::printf("shared taesd lock: %llu acquisitions, %lld us waited (max %lld)\n",
              (unsigned long long)st.acquisitions, (long long)st.total_wait_us, (long long)st.max_wait_us);
}

TEST(TorchScript, ScriptedPairRoundTrip) {
  REQUIRE_TORCH();
  const std::string enc = ::testing::TempDir() + "/dw_latent_ts_encoder.pt";
  const std::string dec = ::testing::TempDir() + "/dw_latent_ts_decoder.pt";
  write_test_torchscript_pair(enc, dec);
  CodecConfig c;
  c.encoder_path = enc;  // Auto: .pt -> torchscript
  c.decoder_path = dec;
  c.precision = Precision::Fp32;
  auto codec = create_codec(c);
  EXPECT_NE(codec->describe().find("torchscript (4 ch, /8)"), std::string::npos) << codec->describe();
  dw::Image img = solid(36, 20, 10, 120, 240);  // padded to 40x24, cropped back
  auto l = codec->encode(img);
  EXPECT_EQ(l->describe(), "1x4x3x5 fp32 cpu");
  dw::Image out = codec->decode(*l);
  EXPECT_EQ(out.width, 36);
  EXPECT_GT(psnr(img, out), 45.0);
  auto frames = codec->interpolate(*l, *codec->encode(solid(36, 20, 240, 120, 10)), {0.5}, 4);
  ASSERT_EQ(frames.size(), 1u);
  CodecConfig swapped = c;
  std::swap(swapped.encoder_path, swapped.decoder_path);
  const std::string err = error_of(swapped);
  EXPECT_NE(err.find("dw_latent_ts_"), std::string::npos) << err;
  CodecConfig missing = c;
  missing.decoder_path = "/nonexistent/decoder.pt";
  EXPECT_NE(error_of(missing).find("/nonexistent/decoder.pt"), std::string::npos);
  CodecConfig garbage = c;
  garbage.encoder_path = temp_file("garbage_encoder.pt", std::vector<uint8_t>(64, 1));
  EXPECT_NE(error_of(garbage).find("garbage_encoder.pt"), std::string::npos) << error_of(garbage);
}

TEST(Cuda, DecodeOnGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA in this LibTorch or no GPU";
  CodecConfig c = taef2(Precision::Auto);
  c.device = "cuda";
  auto codec = create_codec(c);
  dw::Image img = load_png(shared_dir() + "/images/astronaut.png");
  auto l = codec->encode(img);
  double p = 0;
  for (int i = 0; i < 3; ++i) p = psnr(img, codec->decode(*l));
  std::printf("%s: PSNR %.2f dB\n", codec->describe().c_str(), p);
  EXPECT_GT(p, 29.0);
}
