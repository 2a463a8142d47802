// The keyframe store: PNG files + index.json, written atomically (temp file, fsync, rename).
#include "cache/store.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "json/json.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <set>

namespace dw::cache {

namespace {

struct GFreeDeleter {
  void operator()(void *p) const { g_free(p); }
};

// Typed member access: a member of the wrong type is a StoreError naming it (json-glib's getters
// would log a critical and return 0 / NULL, which a hostile index.json could turn into garbage).
JsonNode *member(JsonObject *o, const char *name) {
  return json_object_has_member(o, name) ? json_object_get_member(o, name) : nullptr;
}
bool is_number(JsonNode *n) {
  if (!JSON_NODE_HOLDS_VALUE(n)) return false;
  const GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

std::vector<float> read_floats(JsonObject *obj, const char *name) {
  std::vector<float> out;
  JsonNode *node = member(obj, name);
  if (!node) return out;
  if (!JSON_NODE_HOLDS_ARRAY(node)) throw StoreError(std::string("field '") + name + "' is not an array");
  JsonArray *arr = json_node_get_array(node);
  const guint n = json_array_get_length(arr);
  out.reserve(n);
  for (guint i = 0; i < n; ++i) {
    JsonNode *v = json_array_get_element(arr, i);
    if (!is_number(v)) throw StoreError(std::string("field '") + name + "' holds a non-number");
    out.push_back(static_cast<float>(json_node_get_double(v)));
  }
  return out;
}

void write_floats(JsonBuilder *b, const char *name, const std::vector<float> &v) {
  json_builder_set_member_name(b, name);
  json_builder_begin_array(b);
  for (float f : v) json_builder_add_double_value(b, f);
  json_builder_end_array(b);
}

double get_double(JsonObject *o, const char *name, double def = 0) {
  JsonNode *n = member(o, name);
  if (!n) return def;
  if (!is_number(n)) throw StoreError(std::string("field '") + name + "' is not a number");
  return json_node_get_double(n);
}
int64_t get_int(JsonObject *o, const char *name, int64_t def = 0) {
  JsonNode *n = member(o, name);
  if (!n) return def;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
    throw StoreError(std::string("field '") + name + "' is not an integer");
  return json_node_get_int(n);
}
// An integer in [lo, hi]; out of range is a StoreError naming the field and the value.
int64_t get_int_in(JsonObject *o, const char *name, int64_t lo, int64_t hi, int64_t def = 0) {
  const int64_t v = get_int(o, name, def);
  if (v < lo || v > hi)
    throw StoreError(std::string("field '") + name + "' = " + std::to_string(v) + " is out of range [" +
                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}
std::string get_string(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);
  if (!n || JSON_NODE_HOLDS_NULL(n)) return "";
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
    throw StoreError(std::string("field '") + name + "' is not a string");
  const char *s = json_node_get_string(n);
  return s ? s : "";
}

bool has_suffix(const std::string &s, const char *suffix) {
  const size_t n = strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// g_file_set_contents leaves "<name>.XXXXXX" behind when killed between create and rename.
bool is_temp_leftover(const std::string &name) {
  for (const char *base : {".png.", "index.json."}) {
    auto pos = name.rfind(base);
    if (pos == std::string::npos) continue;
    const size_t tail = name.size() - (pos + strlen(base));
    if (tail == 6 && name.find('/') == std::string::npos) return true;
  }
  return false;
}

uint64_t number_of(const std::string &id) {
  // kf-00000012.png -> 12
  if (id.rfind("kf-", 0) != 0 || !has_suffix(id, ".png")) return 0;
  const uint64_t n = g_ascii_strtoull(id.c_str() + 3, nullptr, 10);
  return n <= kMaxNextId - 1 ? n : 0;  // a hostile name must not wrap next-id
}

bool decode_file(const std::string &path, Image &out, std::string *error) {
  gchar *contents = nullptr;
  gsize length = 0;
  GError *err = nullptr;
  if (!g_file_get_contents(path.c_str(), &contents, &length, &err)) {
    if (error) *error = err ? err->message : "read failed";
    g_clear_error(&err);
    return false;
  }
  bool ok = decode_png(reinterpret_cast<const uint8_t *>(contents), length, out, error);
  g_free(contents);
  return ok;
}

}  // namespace

void write_file_atomic(const std::string &path, const void *data, size_t size) {
  GError *err = nullptr;
  if (!g_file_set_contents_full(path.c_str(), static_cast<const gchar *>(data), static_cast<gssize>(size),
                                static_cast<GFileSetContentsFlags>(G_FILE_SET_CONTENTS_CONSISTENT |
                                                                   G_FILE_SET_CONTENTS_DURABLE),
                                0644, &err)) {
    std::string msg = "cannot write '" + path + "': " + (err ? err->message : "unknown error");
    g_clear_error(&err);
    throw StoreError(msg);
  }
}

Store::Store(std::string dir, std::string signature, EmbedFn embed, LoadReport *report)
    : dir_(std::move(dir)), signature_(std::move(signature)), embed_(std::move(embed)) {
  if (dir_.empty()) throw StoreError("cache directory not set");
  if (g_mkdir_with_parents(dir_.c_str(), 0755) != 0)
    throw StoreError("cannot create cache directory '" + dir_ + "': " + g_strerror(errno));
  // Writable? (a read-only mount or foreign permissions would only show at the first keyframe)
  const std::string probe = dir_ + "/.write-probe";
  try {
    write_file_atomic(probe, "ok", 2);
  } catch (const StoreError &e) {
    throw StoreError("cache directory '" + dir_ + "' is not writable: " + e.what());
  }
  g_unlink(probe.c_str());
  LoadReport local;
  load(report ? *report : local);
}

std::string Store::path_of(const std::string &id) const { return dir_ + "/" + id; }

int Store::find(const std::string &id) const {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].id == id) return static_cast<int>(i);
  return -1;
}

Index parse_index(const std::string &text) {
  dw::json::Limits limits;
  limits.max_bytes = kMaxIndexBytes;
  limits.max_depth = 8;  // index -> entries -> entry -> embedding -> floats: 5 levels
  dw::json::NodePtr root;
  try {
    root = dw::json::parse_object(text, Store::kIndexName, limits);
  } catch (const dw::json::Error &e) {
    throw StoreError(e.what());
  }
  JsonObject *o = json_node_get_object(root.get());
  JsonNode *entries_node = member(o, "entries");
  if (!entries_node || !JSON_NODE_HOLDS_ARRAY(entries_node)) throw StoreError("no entries array");
  Index index;
  index.embedder = get_string(o, "embedder");
  // next-id names the next image (kf-%08d.png): out of range (e.g. -7, which used to wrap to
  // kf-18446744073709551609.png) is repaired from the entries and the files, and reported.
  JsonNode *next = member(o, "next-id");
  if (next) {
    const bool is_int = JSON_NODE_HOLDS_VALUE(next) && json_node_get_value_type(next) == G_TYPE_INT64;
    const int64_t v = is_int ? json_node_get_int(next) : 0;
    if (is_int && v >= 1 && static_cast<uint64_t>(v) <= kMaxNextId) {
      index.next_id = static_cast<uint64_t>(v);
    } else {
      index.warning = std::string("field 'next-id' = ") +
                      (is_int ? std::to_string(v) : std::string("(not an integer)")) + " is out of range [1, " +
                      std::to_string(kMaxNextId) + "]; recomputed from the images";
    }
  }
  JsonArray *arr = json_node_get_array(entries_node);
  std::set<std::string> seen;
  constexpr int64_t kMaxCount = INT64_MAX, kMaxSide = 1 << 16;
  for (guint i = 0; i < json_array_get_length(arr); ++i) {
    JsonNode *n = json_array_get_element(arr, i);
    if (!JSON_NODE_HOLDS_OBJECT(n)) throw StoreError("entry is not an object");
    JsonObject *eo = json_node_get_object(n);
    Entry e;
    e.id = get_string(eo, "id");
    if (e.id.empty() || e.id.find('/') != std::string::npos || e.id == "." || e.id == ".." ||
        !seen.insert(e.id).second)
      throw StoreError("bad or duplicate entry id '" + e.id + "'");
    e.prompt = get_string(eo, "prompt");
    e.created_us = get_int(eo, "created");
    e.last_used_us = get_int(eo, "last-used");
    e.hits = static_cast<uint64_t>(get_int_in(eo, "hits", 0, kMaxCount));
    e.injections = static_cast<uint64_t>(get_int_in(eo, "injections", 0, kMaxCount));
    e.keyframe_index = static_cast<uint64_t>(get_int_in(eo, "keyframe-index", 0, kMaxCount));
    e.width = static_cast<int>(get_int_in(eo, "width", 0, kMaxSide));
    e.height = static_cast<int>(get_int_in(eo, "height", 0, kMaxSide));
    if (JsonNode *emn = member(eo, "embedding")) {
      if (!JSON_NODE_HOLDS_OBJECT(emn)) throw StoreError("embedding is not an object");
      JsonObject *em = json_node_get_object(emn);
      e.embedding.thumb = read_floats(em, "thumb");
      e.embedding.hist = read_floats(em, "hist");
      e.embedding.latent = read_floats(em, "latent");
      e.embedding.colour.luma = get_double(em, "luma");
      e.embedding.colour.saturation = get_double(em, "saturation");
      e.embedding.colour.contrast = get_double(em, "contrast");
      e.embedding.colour.sharpness = get_double(em, "sharpness");
    }
    index.next_id = std::max(index.next_id, number_of(e.id) + 1);
    index.entries.push_back(std::move(e));
  }
  return index;
}

bool Store::parse(const std::string &text, std::string *stored_signature, std::string *error,
                  std::string *warning) {
  try {
    Index index = parse_index(text);
    *stored_signature = std::move(index.embedder);
    next_id_ = index.next_id;
    entries_ = std::move(index.entries);
    *warning = std::move(index.warning);
  } catch (const std::exception &e) {
    *error = e.what();
    return false;
  }
  return true;
}

void Store::load(LoadReport &report) {
  const std::string index_path = path_of(kIndexName);
  std::string stored_signature;
  gchar *contents = nullptr;
  gsize length = 0;
  bool changed = false;
  if (g_file_get_contents(index_path.c_str(), &contents, &length, nullptr)) {
    report.index_found = true;
    std::string text(contents, length);
    g_free(contents);
    std::string error;
    const bool parsed = parse(text, &stored_signature, &error, &report.index_warning);
    if (!report.index_warning.empty()) changed = true;  // write the repaired index back
    if (!parsed) {
      report.index_corrupt = true;
      report.index_error = error;
      entries_.clear();
      next_id_ = 1;
      // Keep the bad file for inspection; the images stay and are adopted below.
      const std::string aside = index_path + ".corrupt";
      g_rename(index_path.c_str(), aside.c_str());
      changed = true;
    }
  }
  // Drop entries whose image is gone; re-embed the others if another embedder made them.
  const bool resign = !stored_signature.empty() ? stored_signature != signature_ : !entries_.empty();
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (!g_file_test(path_of(it->id).c_str(), G_FILE_TEST_IS_REGULAR)) {
      report.missing++;
      changed = true;
      it = entries_.erase(it);
      continue;
    }
    if (resign || it->embedding.empty()) {
      Image img;
      std::string error;
      if (!decode_file(path_of(it->id), img, &error)) {
        report.unreadable++;
        changed = true;
        it = entries_.erase(it);
        continue;
      }
      it->embedding = embed_(img);
      it->width = img.width;
      it->height = img.height;
      report.reembedded++;
      changed = true;
    }
    ++it;
  }
  report.loaded = entries_.size();
  // Adopt unindexed images, clean temp leftovers.
  std::set<std::string> known;
  for (auto &e : entries_) known.insert(e.id);
  std::vector<std::string> names;
  if (GDir *d = g_dir_open(dir_.c_str(), 0, nullptr)) {
    while (const gchar *name = g_dir_read_name(d)) names.emplace_back(name);
    g_dir_close(d);
  }
  std::sort(names.begin(), names.end());
  for (const auto &name : names) {
    if (is_temp_leftover(name)) {
      g_unlink(path_of(name).c_str());
      report.temp_removed++;
      continue;
    }
    next_id_ = std::max(next_id_, number_of(name) + 1);
    if (!has_suffix(name, ".png") || known.count(name)) continue;
    Image img;
    std::string error;
    if (!decode_file(path_of(name), img, &error)) {
      report.unreadable++;
      continue;
    }
    Entry e;
    e.id = name;
    GStatBuf st;
    e.created_us = g_stat(path_of(name).c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) * G_USEC_PER_SEC
                                                           : g_get_real_time();
    e.last_used_us = e.created_us;
    e.width = img.width;
    e.height = img.height;
    e.embedding = embed_(img);
    entries_.push_back(std::move(e));
    report.adopted++;
    changed = true;
  }
  if (changed || stored_signature != signature_) save();
}

std::string Store::serialise() const {
  std::unique_ptr<JsonBuilder, decltype(&g_object_unref)> b(json_builder_new(), g_object_unref);
  JsonBuilder *jb = b.get();
  json_builder_begin_object(jb);
  json_builder_set_member_name(jb, "version");
  json_builder_add_int_value(jb, 1);
  json_builder_set_member_name(jb, "embedder");
  json_builder_add_string_value(jb, signature_.c_str());
  json_builder_set_member_name(jb, "next-id");
  json_builder_add_int_value(jb, static_cast<gint64>(next_id_));
  json_builder_set_member_name(jb, "entries");
  json_builder_begin_array(jb);
  for (const auto &e : entries_) {
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "id");
    json_builder_add_string_value(jb, e.id.c_str());
    json_builder_set_member_name(jb, "prompt");
    json_builder_add_string_value(jb, e.prompt.c_str());
    json_builder_set_member_name(jb, "created");
    json_builder_add_int_value(jb, e.created_us);
    json_builder_set_member_name(jb, "last-used");
    json_builder_add_int_value(jb, e.last_used_us);
    json_builder_set_member_name(jb, "hits");
    json_builder_add_int_value(jb, static_cast<gint64>(e.hits));
    json_builder_set_member_name(jb, "injections");
    json_builder_add_int_value(jb, static_cast<gint64>(e.injections));
    json_builder_set_member_name(jb, "keyframe-index");
    json_builder_add_int_value(jb, static_cast<gint64>(e.keyframe_index));
    json_builder_set_member_name(jb, "width");
    json_builder_add_int_value(jb, e.width);
    json_builder_set_member_name(jb, "height");
    json_builder_add_int_value(jb, e.height);
    json_builder_set_member_name(jb, "embedding");
    json_builder_begin_object(jb);
    write_floats(jb, "thumb", e.embedding.thumb);
    write_floats(jb, "hist", e.embedding.hist);
    if (!e.embedding.latent.empty()) write_floats(jb, "latent", e.embedding.latent);
    json_builder_set_member_name(jb, "luma");
    json_builder_add_double_value(jb, e.embedding.colour.luma);
    json_builder_set_member_name(jb, "saturation");
    json_builder_add_double_value(jb, e.embedding.colour.saturation);
    json_builder_set_member_name(jb, "contrast");
    json_builder_add_double_value(jb, e.embedding.colour.contrast);
    json_builder_set_member_name(jb, "sharpness");
    json_builder_add_double_value(jb, e.embedding.colour.sharpness);
    json_builder_end_object(jb);
    json_builder_end_object(jb);
  }
  json_builder_end_array(jb);
  json_builder_end_object(jb);
  std::unique_ptr<JsonGenerator, decltype(&g_object_unref)> gen(json_generator_new(), g_object_unref);
  JsonNode *root = json_builder_get_root(jb);
  json_generator_set_root(gen.get(), root);
  gsize len = 0;
  std::unique_ptr<gchar, GFreeDeleter> text(json_generator_to_data(gen.get(), &len));
  json_node_unref(root);
  return std::string(text.get(), len);
}

void Store::save() {
  const std::string text = serialise();
  write_file_atomic(path_of(kIndexName), text.data(), text.size());
}

size_t Store::add(const Image &image, Embedding embedding, const std::string &prompt, uint64_t keyframe_index) {
  if (image.empty()) throw StoreError("cannot add an empty image");
  std::string id;
  do {
    gchar *name = g_strdup_printf("kf-%08" G_GUINT64_FORMAT ".png", static_cast<guint64>(next_id_++));
    id = name;
    g_free(name);
  } while (g_file_test(path_of(id).c_str(), G_FILE_TEST_EXISTS) || find(id) >= 0);
  const std::vector<uint8_t> png = encode_png(image, 3);
  write_file_atomic(path_of(id), png.data(), png.size());
  Entry e;
  e.id = id;
  e.prompt = prompt;
  e.created_us = e.last_used_us = g_get_real_time();
  e.keyframe_index = keyframe_index;
  e.width = image.width;
  e.height = image.height;
  e.embedding = std::move(embedding);
  entries_.push_back(std::move(e));
  try {
    save();
  } catch (...) {
    entries_.pop_back();  // the image stays and is adopted at the next open
    throw;
  }
  return entries_.size() - 1;
}

void Store::remove(size_t pos) {
  if (pos >= entries_.size()) return;
  const std::string id = entries_[pos].id;
  Entry saved = entries_[pos];
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(pos));
  try {
    save();
  } catch (...) {
    entries_.insert(entries_.begin() + static_cast<std::ptrdiff_t>(pos), std::move(saved));
    throw;
  }
  g_unlink(path_of(id).c_str());
}

Image Store::load_image(size_t pos) const {
  const std::string path = path_of(entries_.at(pos).id);
  Image img;
  std::string error;
  if (!decode_file(path, img, &error)) throw StoreError("cannot read cached image '" + path + "': " + error);
  return img;
}

}  // namespace dw::cache
