// The keyframe cache of cachetap: a Store plus the incremental similarity matrix, the acceptance
// rule (is a keyframe diverse enough to keep?), eviction (lru / redundancy), the choice of the entry
// to inject, and the blend of that entry with the current keyframe. GStreamer-free; not thread-safe
// (cachetap's worker thread is its only user).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/embedding.h"
#include "cache/monitor.h"
#include "cache/store.h"

namespace dw::latent {
class SharedCodec;
}

namespace dw::cache {

enum class Eviction { Lru, Redundancy };
enum class Acceptance { Average, Max };

struct CacheConfig {
  size_t max_entries = 64;
  Eviction eviction = Eviction::Redundancy;
  Acceptance acceptance = Acceptance::Average;
  double diversity_threshold = 0.8;  // accepted when mean (or max) similarity to the cache is below
  // Whatever the acceptance rule, a near-duplicate of an entry (max similarity at or above this) is
  // never added: with `average` an exact copy of one entry could otherwise pass against a diverse cache.
  double duplicate_threshold = 0.98;
};

struct Decision {
  bool added = false;
  double mean_similarity = 0;  // to the entries before the add (0 for an empty cache)
  double max_similarity = 0;
  int nearest = -1;            // entry with max similarity (before the add)
  std::string id;              // the new entry
  std::vector<std::string> evicted;
};

struct Pick {
  size_t index = 0;
  std::string id;
  double similarity = 0;  // the entry's highest similarity to the window (the lowest of all entries)
};

class KeyframeCache {
 public:
  KeyframeCache(std::unique_ptr<Store> store, CacheConfig config);
  const CacheConfig &config() const { return config_; }
  void set_config(const CacheConfig &config);  // evicts down to max_entries if it shrank
  Store &store() { return *store_; }
  const Store &store() const { return *store_; }
  size_t size() const { return store_->size(); }
  const SimilarityMatrix &matrix() const { return matrix_; }

  // Adds the keyframe if it is diverse enough (acceptance rule), then evicts to max_entries. A
  // keyframe that is not added counts as a hit of its nearest entry (LRU). Throws StoreError.
  Decision consider(const Image &image, const Embedding &embedding, const std::string &prompt,
                    uint64_t keyframe_index);
  // Adds unconditionally (then evicts). Returns the new entry's id (or "" if it was evicted at once).
  std::string add(const Image &image, const Embedding &embedding, const std::string &prompt, uint64_t keyframe_index);
  // The entry least similar to the window (each entry scored by its highest similarity to any
  // window embedding). nullopt when the cache is empty.
  std::optional<Pick> pick_least_similar(const std::vector<Embedding> &window) const;
  // Marks an entry as injected (counters, LRU time) and saves the index.
  void mark_injected(size_t index);
  MonitorReport report(double cluster_threshold) const { return monitor(matrix_, cluster_threshold); }
  uint64_t evicted_total() const { return evicted_; }

 private:
  void evict_to(size_t max_entries, std::vector<std::string> *evicted, int protect = -1);
  void rebuild_matrix();
  std::unique_ptr<Store> store_;
  CacheConfig config_;
  SimilarityMatrix matrix_;
  uint64_t evicted_ = 0;
};

// The image to inject: the current keyframe moved towards the cached one by `strength` (0 = the
// current keyframe, 1 = the cached one). With a model codec: slerp of their latents via
// Codec::interpolate, under the codec's shared lock; without one: a pixel crossfade. The cached
// image is resized to the current one's size. Returns RGB.
Image blend_for_injection(const Image &current, const Image &cached, double strength,
                          const std::shared_ptr<latent::SharedCodec> &codec);

}  // namespace dw::cache
