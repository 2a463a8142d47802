// Incremental similarity matrix, clusters and diversity of the keyframe cache.
#include "cache/monitor.h"

#include <algorithm>
#include <numeric>

namespace dw::cache {

void SimilarityMatrix::add(const std::vector<Embedding *> &existing, const Embedding &added) {
  std::vector<double> sims;
  sims.reserve(existing.size());
  for (const Embedding *e : existing) sims.push_back(similarity(*e, added));
  add_row(sims);
}

void SimilarityMatrix::add_row(const std::vector<double> &sims) {
  const size_t n = rows_.size();
  std::vector<double> row(n + 1, 1.0);
  for (size_t i = 0; i < n; ++i) {
    const double s = i < sims.size() ? sims[i] : 0.0;
    row[i] = s;
    rows_[i].push_back(s);
  }
  rows_.push_back(std::move(row));
  evaluations_ += n;
}

void SimilarityMatrix::remove(size_t index) {
  if (index >= rows_.size()) return;
  rows_.erase(rows_.begin() + static_cast<std::ptrdiff_t>(index));
  for (auto &r : rows_) r.erase(r.begin() + static_cast<std::ptrdiff_t>(index));
}

double SimilarityMatrix::redundancy(size_t i) const {
  double best = 0;
  bool any = false;
  for (size_t j = 0; j < rows_.size(); ++j)
    if (j != i) {
      best = any ? std::max(best, rows_[i][j]) : rows_[i][j];
      any = true;
    }
  return best;
}

double SimilarityMatrix::mean_similarity_to_others(size_t i) const {
  if (rows_.size() < 2) return 0;
  double sum = 0;
  for (size_t j = 0; j < rows_.size(); ++j)
    if (j != i) sum += rows_[i][j];
  return sum / static_cast<double>(rows_.size() - 1);
}

double SimilarityMatrix::mean_similarity() const {
  const size_t n = rows_.size();
  if (n < 2) return 0;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) sum += rows_[i][j];
  return sum / (static_cast<double>(n) * (n - 1) / 2.0);
}

std::vector<size_t> SimilarityMatrix::clusters(double threshold, size_t *count) const {
  const size_t n = rows_.size();
  std::vector<size_t> parent(n);
  std::iota(parent.begin(), parent.end(), 0);
  auto find = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j)
      if (rows_[i][j] >= threshold) parent[find(i)] = find(j);
  std::vector<size_t> label(n), map(n, SIZE_MAX);
  size_t next = 0;
  for (size_t i = 0; i < n; ++i) {
    size_t r = find(i);
    if (map[r] == SIZE_MAX) map[r] = next++;
    label[i] = map[r];
  }
  if (count) *count = next;
  return label;
}

int SimilarityMatrix::most_redundant() const {
  int best = -1;
  double best_r = -2, best_m = -2;
  for (size_t i = 0; i < rows_.size(); ++i) {
    const double r = redundancy(i), m = mean_similarity_to_others(i);
    if (r > best_r + 1e-12 || (r > best_r - 1e-12 && m > best_m)) {
      best = static_cast<int>(i);
      best_r = r;
      best_m = m;
    }
  }
  return best;
}

MonitorReport monitor(const SimilarityMatrix &matrix, double cluster_threshold) {
  MonitorReport r;
  r.entries = matrix.size();
  r.mean_similarity = matrix.mean_similarity();
  r.diversity = r.entries >= 2 ? 1.0 - r.mean_similarity : 0.0;
  std::vector<size_t> labels = matrix.clusters(cluster_threshold, &r.clusters);
  std::vector<size_t> sizes(r.clusters, 0);
  for (size_t l : labels) sizes[l]++;
  for (size_t s : sizes) r.largest_cluster = std::max(r.largest_cluster, s);
  r.redundancy.resize(r.entries);
  for (size_t i = 0; i < r.entries; ++i) {
    r.redundancy[i] = matrix.redundancy(i);
    r.max_redundancy = std::max(r.max_redundancy, r.redundancy[i]);
  }
  r.most_redundant = matrix.most_redundant();
  return r;
}

double ThresholdAdapter::update(double threshold, const MonitorReport &report) const {
  if (report.entries < 3) return threshold;
  if (report.diversity < low) threshold -= step;
  else if (report.diversity > high) threshold += step;
  return std::clamp(threshold, min_threshold, max_threshold);
}

}  // namespace dw::cache
