// Background monitoring of the keyframe cache: the pairwise similarity matrix (kept incrementally:
// adding an entry computes one row, removing one deletes a row and a column), a redundancy score per
// entry, clusters by threshold (single) linkage, the mean internal diversity, and an adaptive
// diversity threshold. GStreamer-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/embedding.h"

namespace dw::cache {

class SimilarityMatrix {
 public:
  size_t size() const { return rows_.size(); }
  // Appends an entry: one new row/column against the existing ones (O(n) similarity evaluations).
  void add(const std::vector<Embedding *> &existing, const Embedding &added);
  // Same, from precomputed similarities to the existing entries (in order).
  void add_row(const std::vector<double> &sims);
  void remove(size_t index);
  void clear() { rows_.clear(); }
  double at(size_t i, size_t j) const { return i == j ? 1.0 : rows_[i][j]; }
  // Highest similarity of entry i to any other (0 with one entry): near-duplicates score ~1.
  double redundancy(size_t i) const;
  double mean_similarity_to_others(size_t i) const;
  // Mean of the off-diagonal similarities (0 with fewer than 2 entries).
  double mean_similarity() const;
  // Connected components of the graph "similarity >= threshold": a label per entry (0..n-1).
  std::vector<size_t> clusters(double threshold, size_t *count) const;
  // The entry with the highest redundancy (ties: highest mean similarity); -1 when empty.
  int most_redundant() const;
  uint64_t evaluations() const { return evaluations_; }

 private:
  std::vector<std::vector<double>> rows_;  // full symmetric matrix, diagonal 1
  uint64_t evaluations_ = 0;
};

struct MonitorReport {
  size_t entries = 0;
  double mean_similarity = 0;
  double diversity = 0;       // 1 - mean_similarity
  size_t clusters = 0;
  size_t largest_cluster = 0;
  double max_redundancy = 0;
  int most_redundant = -1;
  std::vector<double> redundancy;  // per entry
};

MonitorReport monitor(const SimilarityMatrix &matrix, double cluster_threshold);

// Keeps the cache's internal diversity within [low, high] by nudging the acceptance threshold:
// too little diversity -> lower the threshold (stricter), too much -> raise it (accept more).
struct ThresholdAdapter {
  double low = 0.3;
  double high = 0.6;
  double step = 0.01;
  double min_threshold = 0.3;
  double max_threshold = 0.99;
  // Returns the new threshold; unchanged with fewer than 3 entries (no meaningful diversity).
  double update(double threshold, const MonitorReport &report) const;
};

}  // namespace dw::cache
