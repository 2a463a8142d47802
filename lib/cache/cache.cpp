// Keyframe cache policy: acceptance, eviction, injection choice and blend.
#include "cache/cache.h"

#include <glib.h>

#include <algorithm>
#include <cmath>

#include "latent/codec.h"

namespace dw::cache {

KeyframeCache::KeyframeCache(std::unique_ptr<Store> store, CacheConfig config)
    : store_(std::move(store)), config_(config) {
  config_.max_entries = std::max<size_t>(1, config_.max_entries);
  rebuild_matrix();
  std::vector<std::string> evicted;
  evict_to(config_.max_entries, &evicted);  // a warm start with a smaller max-entries
}

void KeyframeCache::rebuild_matrix() {
  matrix_.clear();
  const auto &entries = store_->entries();
  for (size_t i = 0; i < entries.size(); ++i) {
    std::vector<double> sims(i);
    for (size_t j = 0; j < i; ++j) sims[j] = similarity(entries[j].embedding, entries[i].embedding);
    matrix_.add_row(sims);
  }
}

void KeyframeCache::set_config(const CacheConfig &config) {
  config_ = config;
  config_.max_entries = std::max<size_t>(1, config_.max_entries);
  std::vector<std::string> evicted;
  evict_to(config_.max_entries, &evicted);
}

void KeyframeCache::evict_to(size_t max_entries, std::vector<std::string> *evicted, int protect) {
  while (store_->size() > max_entries) {
    int victim = -1;
    if (config_.eviction == Eviction::Redundancy) {
      victim = matrix_.most_redundant();
    } else {
      int64_t oldest = 0;
      for (size_t i = 0; i < store_->size(); ++i) {
        if (static_cast<int>(i) == protect) continue;
        const int64_t t = store_->entries()[i].last_used_us;
        if (victim < 0 || t < oldest) {
          victim = static_cast<int>(i);
          oldest = t;
        }
      }
    }
    if (victim < 0) break;
    if (evicted) evicted->push_back(store_->entries()[victim].id);
    store_->remove(static_cast<size_t>(victim));
    matrix_.remove(static_cast<size_t>(victim));
    evicted_++;
    if (protect > victim) protect--;
    else if (protect == victim) protect = -1;
  }
}

Decision KeyframeCache::consider(const Image &image, const Embedding &embedding, const std::string &prompt,
                                 uint64_t keyframe_index) {
  Decision d;
  const auto &entries = store_->entries();
  std::vector<double> sims(entries.size());
  double sum = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    sims[i] = similarity(entries[i].embedding, embedding);
    sum += sims[i];
    if (d.nearest < 0 || sims[i] > d.max_similarity) {
      d.max_similarity = sims[i];
      d.nearest = static_cast<int>(i);
    }
  }
  d.mean_similarity = entries.empty() ? 0.0 : sum / static_cast<double>(entries.size());
  const double score = config_.acceptance == Acceptance::Average ? d.mean_similarity : d.max_similarity;
  if (!entries.empty() && (score >= config_.diversity_threshold || d.max_similarity >= config_.duplicate_threshold)) {
    Entry &hit = store_->at(static_cast<size_t>(d.nearest));
    hit.hits++;
    hit.last_used_us = g_get_real_time();
    // Hits only matter for LRU order; they are saved with the next index write.
    return d;
  }
  const size_t pos = store_->add(image, embedding, prompt, keyframe_index);
  matrix_.add_row(sims);
  d.added = true;
  d.id = store_->entries()[pos].id;
  evict_to(config_.max_entries, &d.evicted, config_.eviction == Eviction::Lru ? static_cast<int>(pos) : -1);
  if (store_->find(d.id) < 0) d.added = false;  // redundancy eviction chose the newcomer itself
  return d;
}

std::string KeyframeCache::add(const Image &image, const Embedding &embedding, const std::string &prompt,
                               uint64_t keyframe_index) {
  const auto &entries = store_->entries();
  std::vector<double> sims(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) sims[i] = similarity(entries[i].embedding, embedding);
  const size_t pos = store_->add(image, embedding, prompt, keyframe_index);
  matrix_.add_row(sims);
  const std::string id = store_->entries()[pos].id;
  std::vector<std::string> evicted;
  evict_to(config_.max_entries, &evicted, config_.eviction == Eviction::Lru ? static_cast<int>(pos) : -1);
  return store_->find(id) >= 0 ? id : std::string();
}

std::optional<Pick> KeyframeCache::pick_least_similar(const std::vector<Embedding> &window) const {
  const auto &entries = store_->entries();
  if (entries.empty()) return std::nullopt;
  Pick best;
  bool have = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    double score = -1.0;
    for (const auto &w : window) score = std::max(score, similarity(entries[i].embedding, w));
    if (window.empty()) score = 0;
    if (!have || score < best.similarity) {
      best.index = i;
      best.id = entries[i].id;
      best.similarity = score;
      have = true;
    }
  }
  return best;
}

void KeyframeCache::mark_injected(size_t index) {
  Entry &e = store_->at(index);
  e.injections++;
  e.last_used_us = g_get_real_time();
  store_->save();
}

Image blend_for_injection(const Image &current, const Image &cached, double strength,
                          const std::shared_ptr<latent::SharedCodec> &codec) {
  const double t = std::clamp(strength, 0.0, 1.0);
  Image a = current.channels == 3 ? current : convert_channels(current, 3);
  Image b = cached.channels == 3 ? cached : convert_channels(cached, 3);
  if (b.width != a.width || b.height != a.height) b = resize_bilinear(b, a.width, a.height);
  if (t <= 0.0) return a;
  if (t >= 1.0) return b;
  if (codec && codec->codec().has_model()) {
    std::vector<Image> out = codec->with([&](latent::Codec &c) {
      auto la = c.encode(a);
      auto lb = c.encode(b);
      return c.interpolate(*la, *lb, {t}, 1);
    });
    if (!out.empty() && !out[0].empty()) {
      Image &r = out[0];
      if (r.channels != 3) r = convert_channels(r, 3);
      if (r.width != a.width || r.height != a.height) r = resize_bilinear(r, a.width, a.height);
      return r;
    }
  }
  Image out(a.width, a.height, 3);
  for (size_t i = 0; i < out.pixels.size(); ++i)
    out.pixels[i] = static_cast<uint8_t>(std::lround((1.0 - t) * a.pixels[i] + t * b.pixels[i]));
  return out;
}

}  // namespace dw::cache
