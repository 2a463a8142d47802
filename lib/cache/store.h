// The on-disk keyframe cache of cachetap: a directory of PNG images plus index.json (json-glib)
// holding each entry's embedding, prompt, times and counters. GStreamer-free.
//
// Crash safety: every file is written to a temporary name, fsync'd and renamed over the final name
// (g_file_set_contents_full, CONSISTENT | DURABLE), so index.json is always either the old or the
// new complete version. An image is written before the index that names it, and an evicted entry
// leaves the index before its image is deleted, so after a kill at any moment every indexed image
// exists; images the index does not know (a kill between the two writes, a user dropping PNGs into
// the directory) are adopted at the next open(). A corrupt index is renamed aside and rebuilt from
// the images present: images are never deleted except by eviction.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cache/embedding.h"
#include "image/image.h"

namespace dw::cache {

struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Entry {
  std::string id;  // the image's file name inside the directory, e.g. "kf-00000012.png"
  std::string prompt;
  int64_t created_us = 0;    // wall clock (g_get_real_time)
  int64_t last_used_us = 0;  // added, matched by a keyframe, or injected
  uint64_t hits = 0;         // keyframes whose nearest entry this was
  uint64_t injections = 0;   // times it was injected
  uint64_t keyframe_index = 0;
  int width = 0, height = 0;
  Embedding embedding;
};

struct LoadReport {
  bool index_found = false;
  bool index_corrupt = false;  // unreadable: renamed to index.json.corrupt and rebuilt
  std::string index_error;
  size_t loaded = 0;           // entries taken from the index
  size_t adopted = 0;          // images found without an index entry, embedded and added
  size_t reembedded = 0;       // entries whose embedding was made by another embedder
  size_t missing = 0;          // index entries whose image is gone (dropped)
  size_t unreadable = 0;       // PNGs that cannot be decoded (left alone, not indexed)
  size_t temp_removed = 0;     // leftovers of interrupted writes
  std::string index_warning;   // a field that was repaired (e.g. an out-of-range next-id), or ""
};

// Upper bounds for index.json: its size (an entry is a few KiB), and next-id (the image names
// kf-%08llu.png must never wrap).
constexpr size_t kMaxIndexBytes = 256u << 20;
constexpr uint64_t kMaxNextId = 1000000000000000ull;

// What index.json holds, parsed without touching the directory (pure, so it can be fuzzed).
struct Index {
  std::string embedder;
  uint64_t next_id = 1;  // at least 1 + the number of every entry's id
  std::vector<Entry> entries;
  std::string warning;   // a repaired field, or ""
};
// Parses index.json text through dw::json (size, depth, UTF-8) and checks every field's type and
// range; throws StoreError naming the problem.
Index parse_index(const std::string &text);

class Store {
 public:
  using EmbedFn = std::function<Embedding(const Image &)>;

  // Creates the directory if needed and checks that it is writable; throws StoreError naming it.
  // Then loads index.json (see LoadReport), re-embedding with embed when the stored signature
  // differs, and writes the index back if anything changed.
  Store(std::string dir, std::string signature, EmbedFn embed, LoadReport *report = nullptr);

  const std::string &dir() const { return dir_; }
  const std::vector<Entry> &entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  int find(const std::string &id) const;

  // Writes the image (PNG) then the index. Returns the new entry's position. Throws StoreError.
  size_t add(const Image &image, Embedding embedding, const std::string &prompt, uint64_t keyframe_index);
  // Removes from the index (written) then deletes the image file.
  void remove(size_t pos);
  Entry &at(size_t pos) { return entries_.at(pos); }
  // Writes the index (e.g. after counters changed).
  void save();
  Image load_image(size_t pos) const;  // throws StoreError
  std::string path_of(const std::string &id) const;

  static constexpr const char *kIndexName = "index.json";

 private:
  void load(LoadReport &report);
  std::string serialise() const;
  bool parse(const std::string &text, std::string *stored_signature, std::string *error, std::string *warning);

  std::string dir_;
  std::string signature_;
  EmbedFn embed_;
  std::vector<Entry> entries_;
  uint64_t next_id_ = 1;
};

// Atomic durable write of a whole file; throws StoreError naming the path.
void write_file_atomic(const std::string &path, const void *data, size_t size);

}  // namespace dw::cache
