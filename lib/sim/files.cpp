// The simulator's data directories (input/ output/ temp/), POST /upload/image and file helpers.

#include "sim/internal.h"

#include <glib/gstdio.h>

#include <algorithm>

namespace dw::sim {

bool read_file(const std::string &path, std::string &out) {
  gchar *data = nullptr;
  gsize len = 0;
  if (!g_file_get_contents(path.c_str(), &data, &len, nullptr)) return false;
  out.assign(data, len);
  g_free(data);
  return true;
}

// Written in place, never synced: g_file_set_contents() (and its CONSISTENT mode) fsyncs when it
// replaces a non-empty file, which made overwriting uploads take 30 ms to 0.75 s on a busy disk and
// stall the whole server thread; ComfyUI does not sync either. Nothing reads a file while the
// (single) server thread writes it.
bool write_file(const std::string &path, const void *data, size_t len) {
  return g_file_set_contents_full(path.c_str(), static_cast<const char *>(data), static_cast<gssize>(len),
                                  G_FILE_SET_CONTENTS_NONE, 0644, nullptr);
}

void remove_tree(const std::string &path) {
  if (g_file_test(path.c_str(), G_FILE_TEST_IS_DIR) && !g_file_test(path.c_str(), G_FILE_TEST_IS_SYMLINK)) {
    GDir *d = g_dir_open(path.c_str(), 0, nullptr);
    if (d) {
      const char *n;
      while ((n = g_dir_read_name(d))) remove_tree(path + "/" + n);
      g_dir_close(d);
    }
    g_rmdir(path.c_str());
  } else {
    g_unlink(path.c_str());
  }
}

// Lexical normalisation ("a/./b/../c" -> "a/c"); returns false if it climbs above the root.
bool normalize_rel(const std::string &rel, std::string &out) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    std::string p = rel.substr(i, j - i);
    if (p == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!p.empty() && p != ".") {
      parts.push_back(p);
    }
    i = j + 1;
  }
  out.clear();
  for (auto &p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return true;
}

// "name.png [output]" -> ("name.png", "output"); no annotation -> type "".
std::pair<std::string, std::string> split_annotation(const std::string &name) {
  static const char *types[] = {"output", "input", "temp"};
  for (const char *t : types) {
    std::string suffix = std::string(" [") + t + "]";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return {name.substr(0, name.size() - suffix.size()), t};
  }
  return {name, ""};
}

std::vector<std::string> Simulator::Impl::list_input_files() const {
  std::vector<std::string> out;
  GDir *d = g_dir_open(input_dir.c_str(), 0, nullptr);
  if (!d) return out;
  const char *n;
  while ((n = g_dir_read_name(d))) {
    std::string p = input_dir + "/" + n;
    if (g_file_test(p.c_str(), G_FILE_TEST_IS_REGULAR)) out.push_back(n);
  }
  g_dir_close(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string Simulator::Impl::dir_for_type(const std::string &t) const {
  if (t == "output") return output_dir;
  if (t == "input") return input_dir;
  if (t == "temp") return temp_dir;
  return {};
}

// LoadImage value -> absolute path ("" if it would escape its directory).
std::string Simulator::Impl::resolve_image_path(const std::string &value) const {
  auto [name, type] = split_annotation(value);
  std::string dir = dir_for_type(type.empty() ? "input" : type);
  std::string rel;
  if (!normalize_rel(name, rel) || rel.empty()) return {};
  return dir + "/" + rel;
}

namespace {

// The fields of an /upload/image form.
struct UploadForm {
  bool have_image = false;
  std::string filename, type = "input", subfolder, overwrite, content;
};

bool parse_upload_form(SoupServerMessage *msg, UploadForm &form) {
  GBytes *bytes = soup_message_body_flatten(soup_server_message_get_request_body(msg));
  SoupMultipart *mp = soup_multipart_new_from_message(soup_server_message_get_request_headers(msg), bytes);
  g_bytes_unref(bytes);
  if (!mp) return false;
  for (int i = 0; i < soup_multipart_get_length(mp); ++i) {
    SoupMessageHeaders *h = nullptr;
    GBytes *b = nullptr;
    if (!soup_multipart_get_part(mp, i, &h, &b)) continue;
    char *disp = nullptr;
    GHashTable *params = nullptr;
    if (!soup_message_headers_get_content_disposition(h, &disp, &params)) continue;
    const char *name = params ? static_cast<const char *>(g_hash_table_lookup(params, "name")) : nullptr;
    const char *fname = params ? static_cast<const char *>(g_hash_table_lookup(params, "filename")) : nullptr;
    gsize len = 0;
    const char *d = static_cast<const char *>(g_bytes_get_data(b, &len));
    std::string value(d ? d : "", len);
    if (g_strcmp0(name, "image") == 0) {
      if (fname) {
        form.have_image = true;
        form.filename = fname;
        form.content = std::move(value);
      }
    } else if (g_strcmp0(name, "overwrite") == 0) {
      form.overwrite = value;
    } else if (g_strcmp0(name, "type") == 0) {
      form.type = value;
    } else if (g_strcmp0(name, "subfolder") == 0) {
      form.subfolder = value;
    }
    g_free(disp);
    if (params) g_hash_table_destroy(params);
  }
  soup_multipart_free(mp);
  return true;
}

}  // namespace

void Simulator::Impl::upload(SoupServerMessage *msg) {
  UploadForm form;
  if (!parse_upload_form(msg, form) || !form.have_image || form.filename.empty()) return reply_empty(msg, 400);
  const std::string &filename = form.filename, &subfolder = form.subfolder, &content = form.content;
  std::string type = form.type;
  if (type != "temp" && type != "output") type = "input";
  std::string dir = dir_for_type(type);
  std::string sub_norm;
  // ComfyUI keeps only the basename-safe path; refuse anything that escapes the directory.
  if (!normalize_rel(subfolder, sub_norm) || filename.find('/') != std::string::npos || filename == "..")
    return reply_empty(msg, 400);
  std::string folder = sub_norm.empty() ? dir : dir + "/" + sub_norm;
  g_mkdir_with_parents(folder.c_str(), 0755);

  const bool ow = form.overwrite == "true" || form.overwrite == "1";
  std::string name = filename;
  bool duplicate = false;
  if (!ow) {
    std::string stem = filename, ext;
    size_t dot = filename.rfind('.');
    if (dot != std::string::npos && dot > 0) {
      stem = filename.substr(0, dot);
      ext = filename.substr(dot);
    }
    for (int i = 1; g_file_test((folder + "/" + name).c_str(), G_FILE_TEST_EXISTS); ++i) {
      std::string existing;
      if (read_file(folder + "/" + name, existing) && existing == content) {
        duplicate = true;
        break;
      }
      name = stem + " (" + std::to_string(i) + ")" + ext;
    }
  }
  if (!duplicate && !write_file(folder + "/" + name, content.data(), content.size())) {
    return reply_500(msg);
  }
  {
    std::lock_guard<std::mutex> l(mu);
    uploads.push_back(UploadRecord{name, subfolder, type, content.size(), ow});
  }
  JW w;
  w.ob().k("name").s(name).k("subfolder").s(subfolder).k("type").s(type).oe();
  reply_json(msg, 200, w.str());
}

}  // namespace dw::sim
