// dw::cache without GStreamer: similarity ordering on real images (pixel and VAE embeddings),
// collapse detection on synthetic sequences, the store (warm start, eviction, corrupt index, a
// SIGKILL in the middle of writes), the incremental similarity matrix, the threshold adapter and
// the injection policy (when to inject a cached keyframe).
#include <glib.h>
#include <glib/gstdio.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>

#include "cache/cache.h"
#include "cache/collapse.h"
#include "cache/embedding.h"
#include "cache/injection.h"
#include "cache/monitor.h"
#include "cache/store.h"
#include "config.h"
#include "image/image.h"
#include "latent/codec.h"

using namespace dw;
using namespace dw::cache;

namespace {

std::string shared_dir() {
  const char *d = g_getenv("DW_SHARED_DIR");
  return d ? d : DW_SHARED_DIR;
}

Image load_png(const std::string &path) {
  gchar *data = nullptr;
  gsize len = 0;
  EXPECT_TRUE(g_file_get_contents(path.c_str(), &data, &len, nullptr)) << path;
  Image img;
  std::string err;
  EXPECT_TRUE(decode_png(reinterpret_cast<uint8_t *>(data), len, img, &err)) << path << ": " << err;
  g_free(data);
  return img.channels == 3 ? img : convert_channels(img, 3);
}

Image shared_image(const std::string &name, int size = 128) {
  return resize_bilinear(load_png(shared_dir() + "/images/" + name + ".png"), size, size);
}

// Slight per-pixel noise and a 2% brightness change: "the same picture, once more".
Image near_copy(const Image &src, uint32_t seed = 7) {
  Image out = src;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-4, 4);
  for (auto &p : out.pixels) p = static_cast<uint8_t>(std::clamp(static_cast<int>(p * 0.98) + noise(rng), 0, 255));
  return out;
}

Image box_blur(const Image &src, int r) {
  Image out = src;
  const int c = src.channels;
  for (int y = 0; y < src.height; ++y)
    for (int x = 0; x < src.width; ++x)
      for (int k = 0; k < c; ++k) {
        int sum = 0, n = 0;
        for (int dy = -r; dy <= r; ++dy)
          for (int dx = -r; dx <= r; ++dx) {
            int yy = std::clamp(y + dy, 0, src.height - 1), xx = std::clamp(x + dx, 0, src.width - 1);
            sum += src.row(yy)[xx * c + k];
            n++;
          }
        out.row(y)[x * c + k] = static_cast<uint8_t>(sum / n);
      }
  return out;
}

Image scale_brightness(const Image &src, double f) {
  Image out = src;
  for (auto &p : out.pixels) p = static_cast<uint8_t>(std::clamp(p * f, 0.0, 255.0));
  return out;
}

struct TempDir {
  std::string path;
  TempDir() {
    gchar *p = g_dir_make_tmp("dwcache-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
  std::vector<std::string> pngs() const {
    std::vector<std::string> out;
    GDir *d = g_dir_open(path.c_str(), 0, nullptr);
    while (const gchar *n = g_dir_read_name(d))
      if (g_str_has_suffix(n, ".png")) out.emplace_back(n);
    g_dir_close(d);
    std::sort(out.begin(), out.end());
    return out;
  }
};

Store::EmbedFn pixel_fn() {
  return [](const Image &img) { return pixel_embedding(img); };
}

// A set of clearly different images: the four shared images and a few flat/gradient ones.
std::vector<Image> diverse_images(int size = 64) {
  std::vector<Image> v;
  for (const char *n : {"chelsea", "astronaut", "motorcycle_left"}) v.push_back(shared_image(n, size));
  Image grad(size, size, 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      uint8_t *p = grad.row(y) + x * 3;
      p[0] = static_cast<uint8_t>(x * 255 / size);
      p[1] = 40;
      p[2] = static_cast<uint8_t>(y * 255 / size);
    }
  v.push_back(grad);
  Image checker(size, size, 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      uint8_t *p = checker.row(y) + x * 3;
      bool on = ((x / 8) + (y / 8)) % 2;
      p[0] = on ? 240 : 10;
      p[1] = on ? 200 : 60;
      p[2] = on ? 30 : 120;
    }
  v.push_back(checker);
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Similarity

TEST(CacheSimilarity, IdenticalAboveNearIdenticalAboveDifferent) {
  Image chelsea = shared_image("chelsea");
  Embedding a = pixel_embedding(chelsea);
  const double same = similarity(a, pixel_embedding(chelsea));
  const double near = similarity(a, pixel_embedding(near_copy(chelsea)));
  double worst_different = -1;
  for (const char *other : {"astronaut", "motorcycle_left", "motorcycle_right"}) {
    const double d = similarity(a, pixel_embedding(shared_image(other)));
    worst_different = std::max(worst_different, d);
    printf("[ figures  ] pixel similarity chelsea/%s = %.3f\n", other, d);
  }
  printf("[ figures  ] pixel similarity identical %.4f, near-identical %.4f, margin to different %.3f\n", same, near,
         near - worst_different);
  EXPECT_NEAR(same, 1.0, 1e-6);
  EXPECT_LT(near, same);
  EXPECT_GT(near, 0.95);
  EXPECT_GT(near - worst_different, 0.25);
  // The two motorcycle views (same scene, shifted camera) sit in between.
  const double pair = similarity(pixel_embedding(shared_image("motorcycle_left")),
                                 pixel_embedding(shared_image("motorcycle_right")));
  printf("[ figures  ] pixel similarity motorcycle left/right %.3f\n", pair);
  EXPECT_GT(pair, worst_different - 0.3);
}

TEST(CacheSimilarity, VaeEmbeddingSeparatesChelseaFromAstronaut) {
  if (!latent::torch_available()) GTEST_SKIP() << "built without LibTorch";
  latent::CodecConfig config;
  config.backend = latent::Backend::Taesd;
  config.encoder_path = shared_dir() + "/models/taef2_encoder.safetensors";
  config.decoder_path = shared_dir() + "/models/taef2_decoder.safetensors";
  config.precision = latent::Precision::Fp32;
  std::shared_ptr<latent::SharedCodec> codec;
  try {
    codec = latent::ModelRegistry::acquire(config);
  } catch (const std::exception &e) {
    GTEST_SKIP() << "taesd codec unavailable: " << e.what();
  }
  Embedder embedder(codec, 4, 128);
  ASSERT_TRUE(embedder.has_latent());
  Image chelsea = shared_image("chelsea");
  Embedding a = embedder.embed(chelsea);
  if (a.latent.empty()) GTEST_SKIP() << "this codec backend returns no pooled latent yet (" << codec->codec().describe() << ")";
  Embedding near = embedder.embed(near_copy(chelsea));
  Embedding astro = embedder.embed(shared_image("astronaut"));
  const double lat_near = cosine(a.latent, near.latent), lat_far = cosine(a.latent, astro.latent);
  const double s_near = similarity(a, near), s_far = similarity(a, astro);
  printf("[ figures  ] VAE latent cosine chelsea/near %.3f, chelsea/astronaut %.3f; dual metric %.3f vs %.3f "
         "(margin %.3f) [%s]\n",
         lat_near, lat_far, s_near, s_far, s_near - s_far, codec->codec().describe().c_str());
  EXPECT_NEAR(similarity(a, embedder.embed(chelsea)), 1.0, 1e-3);  // identical
  EXPECT_GT(s_near, s_far);
  EXPECT_GT(lat_near - lat_far, 0.3);
  EXPECT_GT(s_near - s_far, 0.3);
  EXPECT_NE(embedder.signature(), "pixel-v1");
}

// ---------------------------------------------------------------------------------------------
// Collapse

TEST(CacheCollapse, ConvergingSequenceIsDetectedWithinTheWindow) {
  CollapseConfig config;
  config.window = 6;
  CollapseDetector det(config);
  Image img = shared_image("chelsea", 64);
  int detected_at = -1;
  CollapseState st;
  for (int i = 0; i < 12 && detected_at < 0; ++i) {
    st = det.push(pixel_embedding(img));
    if (st.level != CollapseLevel::None) detected_at = i;
    img = scale_brightness(box_blur(img, 1), 0.94);  // a bit blurrier and darker each step
  }
  printf("[ figures  ] converging: detected at keyframe %d, level %s, mean consecutive similarity %.3f, luma drift "
         "%.3f, reason %s\n",
         detected_at, collapse_level_name(st.level), st.mean_similarity, st.luma_drift, st.reason.c_str());
  ASSERT_GE(detected_at, 0) << "not detected; mean sim " << st.mean_similarity;
  EXPECT_LE(detected_at, static_cast<int>(config.window) - 1);  // as soon as the window is full
  EXPECT_EQ(st.level, CollapseLevel::Severe);
  EXPECT_TRUE(st.runaway);
  EXPECT_LT(st.luma_drift, 0);

  // A frozen loop (the same image again and again) is severe too.
  CollapseDetector frozen(config);
  Image still = shared_image("astronaut", 64);
  for (int i = 0; i < 6; ++i) st = frozen.push(pixel_embedding(still));
  EXPECT_EQ(st.level, CollapseLevel::Severe);
  EXPECT_TRUE(st.frozen);
  frozen.reset();
  EXPECT_EQ(frozen.state().level, CollapseLevel::None);
}

TEST(CacheCollapse, VariedSequenceIsNot) {
  CollapseDetector det;
  auto imgs = diverse_images();
  for (int i = 0; i < 20; ++i) {
    Image img = imgs[i % imgs.size()];
    if (i % 2) img = near_copy(box_blur(img, 1), i);
    const CollapseState &st = det.push(pixel_embedding(img));
    EXPECT_EQ(st.level, CollapseLevel::None) << "at " << i << ": " << st.reason << " mean " << st.mean_similarity;
  }
  // A slowly evolving but healthy stream (a panning view) is not a collapse either.
  CollapseDetector pan;
  Image big = shared_image("motorcycle_left", 256);
  for (int i = 0; i < 12; ++i) {
    Image crop(64, 64, 3);
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x)
        for (int k = 0; k < 3; ++k) crop.row(y)[x * 3 + k] = big.row(y + 60)[(x + i * 14) * 3 + k];
    const CollapseState &st = pan.push(pixel_embedding(crop));
    EXPECT_NE(st.level, CollapseLevel::Severe) << "pan step " << i << ": " << st.reason;
  }
}

// ---------------------------------------------------------------------------------------------
// Store

TEST(CacheStore, WarmStartKeepsEntriesAndEmbeddings) {
  TempDir dir;
  auto imgs = diverse_images();
  {
    Store store(dir.path, "pixel-v1", pixel_fn());
    for (size_t i = 0; i < 3; ++i) store.add(imgs[i], pixel_embedding(imgs[i]), "prompt " + std::to_string(i), i);
  }
  LoadReport report;
  Store again(dir.path, "pixel-v1", pixel_fn(), &report);
  EXPECT_TRUE(report.index_found);
  EXPECT_FALSE(report.index_corrupt);
  EXPECT_EQ(report.adopted, 0u);
  EXPECT_EQ(report.reembedded, 0u);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again.entries()[1].prompt, "prompt 1");
  EXPECT_NEAR(similarity(again.entries()[2].embedding, pixel_embedding(imgs[2])), 1.0, 1e-5);
  Image back = again.load_image(0);
  EXPECT_EQ(back.pixels, imgs[0].pixels);
  // Another embedder: the entries are re-embedded from their images.
  LoadReport r2;
  Store other(dir.path, "other-v9", pixel_fn(), &r2);
  EXPECT_EQ(r2.reembedded, 3u);
}

TEST(CacheStore, UnwritableDirectoryNamesIt) {
  TempDir dir;
  const std::string file = dir.path + "/plainfile";
  ASSERT_TRUE(g_file_set_contents(file.c_str(), "x", 1, nullptr));
  const std::string bad = file + "/cache";
  try {
    Store store(bad, "pixel-v1", pixel_fn());
    FAIL() << "no error";
  } catch (const StoreError &e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
}

TEST(CacheStore, CorruptIndexIsRebuiltFromTheImages) {
  TempDir dir;
  auto imgs = diverse_images();
  {
    Store store(dir.path, "pixel-v1", pixel_fn());
    for (size_t i = 0; i < 4; ++i) store.add(imgs[i], pixel_embedding(imgs[i]), "", i);
  }
  const std::string index = dir.path + "/index.json";
  ASSERT_TRUE(g_file_set_contents(index.c_str(), "{\"entries\": [ {\"id\": 3", -1, nullptr));
  LoadReport report;
  Store store(dir.path, "pixel-v1", pixel_fn(), &report);
  EXPECT_TRUE(report.index_corrupt);
  EXPECT_FALSE(report.index_error.empty());
  EXPECT_EQ(report.adopted, 4u);
  EXPECT_EQ(store.size(), 4u);
  EXPECT_EQ(dir.pngs().size(), 4u);
  EXPECT_TRUE(g_file_test((index + ".corrupt").c_str(), G_FILE_TEST_EXISTS));
  // The rebuilt index loads cleanly.
  LoadReport r2;
  Store again(dir.path, "pixel-v1", pixel_fn(), &r2);
  EXPECT_FALSE(r2.index_corrupt);
  EXPECT_EQ(again.size(), 4u);
  // An index naming a missing image drops that entry; an unindexed image is adopted.
  g_unlink((dir.path + "/" + again.entries()[0].id).c_str());
  std::vector<uint8_t> png = encode_png(imgs[4]);
  ASSERT_TRUE(g_file_set_contents((dir.path + "/dropped-in.png").c_str(), reinterpret_cast<const gchar *>(png.data()),
                                  static_cast<gssize>(png.size()), nullptr));
  LoadReport r3;
  Store third(dir.path, "pixel-v1", pixel_fn(), &r3);
  EXPECT_EQ(r3.missing, 1u);
  EXPECT_EQ(r3.adopted, 1u);
  EXPECT_GE(third.find("dropped-in.png"), 0);
}

TEST(CacheStore, SigkillMidWriteLeavesALoadableIndexAndNoLostImages) {
  TempDir dir;
  auto imgs = diverse_images(96);
  { Store init(dir.path, "pixel-v1", pixel_fn()); }
  std::mt19937 rng(42);
  for (int round = 0; round < 6; ++round) {
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: add and evict as fast as possible until killed (max 6 entries: constant churn).
      try {
        CacheConfig cfg;
        cfg.max_entries = 6;
        cfg.eviction = Eviction::Lru;
        KeyframeCache cache(std::make_unique<Store>(dir.path, "pixel-v1", pixel_fn()), cfg);
        for (uint64_t i = 0;; ++i) {
          Image img = near_copy(imgs[i % imgs.size()], static_cast<uint32_t>(i));
          cache.add(img, pixel_embedding(img), "kill test", i);
        }
      } catch (...) {
      }
      _exit(3);
    }
    g_usleep(std::uniform_int_distribution<int>(20, 150)(rng) * 1000);
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited by itself with " << WEXITSTATUS(status);

    const auto before = dir.pngs();
    LoadReport report;
    Store store(dir.path, "pixel-v1", pixel_fn(), &report);
    EXPECT_FALSE(report.index_corrupt) << report.index_error;
    EXPECT_TRUE(report.index_found);
    EXPECT_EQ(report.missing, 0u) << "an indexed image was lost";
    // Every complete image present before the load is indexed after it.
    for (const auto &name : before) EXPECT_GE(store.find(name), 0) << name << " lost from the index";
    EXPECT_EQ(store.size(), dir.pngs().size());
    EXPECT_LE(report.adopted, 1u);  // at most the one written between image and index
  }
}

TEST(CacheStore, LruEvictsTheLeastRecentlyUsed) {
  TempDir dir;
  auto imgs = diverse_images();
  CacheConfig cfg;
  cfg.max_entries = 3;
  cfg.eviction = Eviction::Lru;
  cfg.acceptance = Acceptance::Max;
  cfg.diversity_threshold = 0.9;
  KeyframeCache cache(std::make_unique<Store>(dir.path, "pixel-v1", pixel_fn()), cfg);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(cache.add(imgs[i], pixel_embedding(imgs[i]), "", i));
    g_usleep(2000);
  }
  // A near copy of the first entry: rejected as redundant, but counts as a use of entry 0.
  Decision d = cache.consider(near_copy(imgs[0]), pixel_embedding(near_copy(imgs[0])), "", 3);
  EXPECT_FALSE(d.added);
  EXPECT_EQ(d.nearest, 0);
  g_usleep(2000);
  d = cache.consider(imgs[3], pixel_embedding(imgs[3]), "", 4);
  ASSERT_TRUE(d.added);
  ASSERT_EQ(d.evicted.size(), 1u);
  EXPECT_EQ(d.evicted[0], ids[1]);  // entry 1 is now the least recently used
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(dir.pngs().size(), 3u);
  EXPECT_FALSE(g_file_test((dir.path + "/" + ids[1]).c_str(), G_FILE_TEST_EXISTS));
}

TEST(CacheStore, RedundancyEvictsOneOfTheNearDuplicates) {
  TempDir dir;
  auto imgs = diverse_images();
  CacheConfig cfg;
  cfg.max_entries = 4;
  cfg.eviction = Eviction::Redundancy;
  KeyframeCache cache(std::make_unique<Store>(dir.path, "pixel-v1", pixel_fn()), cfg);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(cache.add(imgs[i], pixel_embedding(imgs[i]), "", i));
  Image dup = near_copy(imgs[1]);
  ids.push_back(cache.add(dup, pixel_embedding(dup), "", 3));
  ids.push_back(cache.add(imgs[4], pixel_embedding(imgs[4]), "", 4));  // 5 > 4: evict
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_EQ(cache.evicted_total(), 1u);
  const bool one_dup_gone = (cache.store().find(ids[1]) < 0) != (cache.store().find(ids[3]) < 0);
  EXPECT_TRUE(one_dup_gone);
  EXPECT_GE(cache.store().find(ids[0]), 0);
  EXPECT_GE(cache.store().find(ids[4]), 0);
}

TEST(CacheStore, AcceptanceAverageVersusMax) {
  auto imgs = diverse_images();
  for (Acceptance acc : {Acceptance::Average, Acceptance::Max}) {
    TempDir dir;
    CacheConfig cfg;
    cfg.acceptance = acc;
    cfg.diversity_threshold = 0.8;
    KeyframeCache cache(std::make_unique<Store>(dir.path, "pixel-v1", pixel_fn()), cfg);
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(cache.consider(imgs[i], pixel_embedding(imgs[i]), "", i).added);
    // The other view of the motorcycle: its max similarity (to motorcycle_left) is high, its mean over
    // 4 diverse entries is low.
    Image other = shared_image("motorcycle_right", 64);
    Decision d = cache.consider(other, pixel_embedding(other), "", 9);
    printf("[ figures  ] motorcycle_right vs cache: mean %.3f, max %.3f\n", d.mean_similarity, d.max_similarity);
    EXPECT_EQ(d.added, acc == Acceptance::Average);
    // A near copy of an entry is never added, whatever the rule.
    Image dup = near_copy(imgs[0]);
    EXPECT_FALSE(cache.consider(dup, pixel_embedding(dup), "", 10).added);
  }
}

// ---------------------------------------------------------------------------------------------
// Monitor

TEST(CacheMonitor, IncrementalMatrixMatchesAFullRecompute) {
  auto imgs = diverse_images();
  std::vector<Embedding> embs;
  for (auto &i : imgs) embs.push_back(pixel_embedding(i));
  embs.push_back(pixel_embedding(near_copy(imgs[0])));
  embs.push_back(pixel_embedding(near_copy(imgs[2], 3)));
  SimilarityMatrix m;
  std::vector<Embedding> live;
  for (auto &e : embs) {
    std::vector<Embedding *> ptrs;
    for (auto &l : live) ptrs.push_back(&l);
    m.add(ptrs, e);
    live.push_back(e);
  }
  m.remove(3);
  live.erase(live.begin() + 3);
  ASSERT_EQ(m.size(), live.size());
  for (size_t i = 0; i < live.size(); ++i)
    for (size_t j = 0; j < live.size(); ++j)
      EXPECT_NEAR(m.at(i, j), i == j ? 1.0 : similarity(live[i], live[j]), 1e-9);
  // Evaluations: one per new pair, none recomputed.
  EXPECT_EQ(m.evaluations(), embs.size() * (embs.size() - 1) / 2);

  MonitorReport r = monitor(m, 0.9);
  // live: chelsea, astronaut, motorcycle, checker, chelsea', motorcycle'
  EXPECT_EQ(r.entries, 6u);
  EXPECT_EQ(r.clusters, 4u);
  EXPECT_EQ(r.largest_cluster, 2u);
  EXPECT_GT(r.max_redundancy, 0.95);
  EXPECT_NEAR(r.diversity, 1.0 - m.mean_similarity(), 1e-12);
  const int red = r.most_redundant;
  EXPECT_TRUE(red == 0 || red == 2 || red == 4 || red == 5) << red;
  printf("[ figures  ] monitor: diversity %.3f, clusters %zu, max redundancy %.3f\n", r.diversity, r.clusters,
         r.max_redundancy);

  ThresholdAdapter adapt;
  adapt.low = 0.9;  // diversity below the band: stricter
  EXPECT_LT(adapt.update(0.8, r), 0.8);
  adapt.low = 0.0;
  adapt.high = 0.1;  // above the band: more permissive
  EXPECT_GT(adapt.update(0.8, r), 0.8);
}

TEST(CacheBlend, PixelBlendWithoutModel) {
  Image a(8, 8, 3), b(16, 16, 4);
  std::fill(a.pixels.begin(), a.pixels.end(), 0);
  std::fill(b.pixels.begin(), b.pixels.end(), 200);
  Image out = blend_for_injection(a, b, 0.75, nullptr);
  ASSERT_EQ(out.width, 8);
  ASSERT_EQ(out.channels, 3);
  EXPECT_EQ(out.pixels[0], 150);
  auto blend = latent::ModelRegistry::acquire(latent::CodecConfig{latent::Backend::Blend});
  Image out2 = blend_for_injection(a, b, 0.75, blend);
  EXPECT_NEAR(out2.pixels[5], 150, 1);
}

// ---- Injection policy -------------------------------------------------------------------------

namespace {

CollapseState collapse(CollapseLevel level) {
  CollapseState st;
  st.level = level;
  st.reason = level == CollapseLevel::None ? "" : "stagnating";
  return st;
}

std::optional<Pick> candidate(double similarity) {
  Pick p;
  p.index = 3;
  p.id = "kf-3";
  p.similarity = similarity;
  return p;
}

}  // namespace

TEST(CacheInjection, InjectsOnSevereCollapseWithADissimilarCandidate) {
  InjectionPolicy policy;
  int asked = 0;
  auto pick = [&]() {
    ++asked;
    return candidate(0.4);
  };
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::None), pick).verdict, InjectionVerdict::NoCollapse);
  EXPECT_EQ(asked, 0) << "no candidate search without a collapse";
  InjectionDecision d = policy.decide(collapse(CollapseLevel::Severe), pick);
  ASSERT_EQ(d.verdict, InjectionVerdict::Inject);
  EXPECT_EQ(d.pick->index, 3u);
  EXPECT_EQ(d.reason, "collapse-severe:stagnating");
}

TEST(CacheInjection, CooldownCountsKeyframesFromTheAcceptedInjection) {
  InjectionConfig cfg;
  cfg.cooldown = 3;
  InjectionPolicy policy(cfg);
  auto pick = []() { return candidate(0.4); };
  ASSERT_EQ(policy.decide(collapse(CollapseLevel::Severe), pick).verdict, InjectionVerdict::Inject);
  // Refused upstream (no on_injected): the next keyframe may try again at once.
  ASSERT_EQ(policy.decide(collapse(CollapseLevel::Severe), pick).verdict, InjectionVerdict::Inject);
  policy.on_injected();
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::Severe), pick).verdict, InjectionVerdict::Cooldown);  // 1
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::None), pick).verdict, InjectionVerdict::NoCollapse);  // 2
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::Severe), pick).verdict, InjectionVerdict::Inject);    // 3
  policy.reset();
  EXPECT_EQ(policy.since_injection(), UINT64_MAX);
}

TEST(CacheInjection, NoCandidateWhenEverythingIsAsSimilarAsTheLoop) {
  InjectionConfig cfg;
  cfg.max_similarity = 0.9;
  InjectionPolicy policy(cfg);
  InjectionDecision d = policy.decide(collapse(CollapseLevel::Severe), []() { return candidate(0.93); });
  EXPECT_EQ(d.verdict, InjectionVerdict::NoCandidate);
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::Severe), []() { return std::optional<Pick>(); }).verdict,
            InjectionVerdict::NoCandidate);
  cfg.enabled = false;
  policy.set_config(cfg);
  EXPECT_EQ(policy.decide(collapse(CollapseLevel::Severe), []() { return candidate(0.1); }).verdict,
            InjectionVerdict::Disabled);
}

// Mild collapses inject with mild_probability: never at 0, always at 1, about half at 0.5, and the
// same sequence for the same seed.
TEST(CacheInjection, MildCollapseIsACoinWithTheConfiguredOdds) {
  auto run = [](double probability, uint32_t seed) {
    InjectionConfig cfg;
    cfg.cooldown = 0;
    cfg.mild_probability = probability;
    InjectionPolicy policy(cfg, seed);
    std::string seq;
    for (int i = 0; i < 400; ++i)
      seq += policy.decide(collapse(CollapseLevel::Mild), []() { return candidate(0.4); }).verdict ==
                     InjectionVerdict::Inject
                 ? '1'
                 : '0';
    return seq;
  };
  EXPECT_EQ(run(0.0, 1).find('1'), std::string::npos);
  EXPECT_EQ(run(1.0, 1).find('0'), std::string::npos);
  const std::string half = run(0.5, 7);
  const auto ones = std::count(half.begin(), half.end(), '1');
  EXPECT_GT(ones, 150);
  EXPECT_LT(ones, 250);
  EXPECT_EQ(half, run(0.5, 7));
  EXPECT_NE(half, run(0.5, 8));
}
