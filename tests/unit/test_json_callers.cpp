// Every lib parser of outside JSON goes through dw::json (issue 13 item 1): deep nesting, invalid
// text and out-of-range fields are clear errors, never a stack overflow in json-glib. Each of these
// inputs crashed (or, for next-id, wrapped) before the switch.
#include <glib.h>
#include <glib/gstdio.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cache/embedding.h"
#include "cache/store.h"
#include "comfy/protocol.h"
#include "comfy/workflow.h"
#include "image/image.h"
#include "latent/codec.h"
#include "latent/safetensors.h"

namespace {

// Far deeper than json-glib's recursion survives (the issue's 75,000 levels crashed the app).
const std::string kDeep = std::string(200000, '[');

#define EXPECT_HAS(hay, needle) EXPECT_NE(std::string(hay).find(needle), std::string::npos) << (hay)

struct TempDir {
  std::string path;
  TempDir() {
    gchar *p = g_dir_make_tmp("dw-json-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~TempDir() {
    if (GDir *d = g_dir_open(path.c_str(), 0, nullptr)) {
      while (const gchar *n = g_dir_read_name(d)) g_unlink((path + "/" + n).c_str());
      g_dir_close(d);
    }
    g_rmdir(path.c_str());
  }
  void write(const std::string &name, const std::string &text) const {
    ASSERT_TRUE(g_file_set_contents((path + "/" + name).c_str(), text.data(), static_cast<gssize>(text.size()), nullptr));
  }
};

dw::cache::Store::EmbedFn pixel_embed() {
  return [](const dw::Image &img) { return dw::cache::pixel_embedding(img); };
}

}  // namespace

TEST(JsonCallers, WorkflowDeepNesting) {
  dw::comfy::Error err;
  auto wf = dw::comfy::Workflow::load_string(R"({"1": {"inputs": {"a": )" + kDeep, {}, &err);
  EXPECT_FALSE(wf);
  EXPECT_HAS(err.message, "nested");
}

TEST(JsonCallers, WorkflowLoneSurrogateRefused) {
  dw::comfy::Error err;
  auto wf = dw::comfy::Workflow::load_string(
      R"({"1": {"class_type": "LoadImage", "inputs": {"image": "\ud800x"}}})", {}, &err);
  EXPECT_FALSE(wf);
  EXPECT_HAS(err.message, "surrogate");
}

TEST(JsonCallers, ProtocolParsersDeepNesting) {
  using namespace dw::comfy;
  const std::string body = R"({"type": "status", "data": )" + kDeep;
  const char *d = body.data();
  const size_t n = body.size();

  proto::WsMessage ws;
  Error e = proto::parse_ws_text(d, n, &ws);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
  EXPECT_HAS(e.message, "nested deeper than");

  proto::PromptResponse pr;
  e = proto::parse_prompt_response(200, d, n, {}, &pr);
  EXPECT_TRUE(e);
  EXPECT_HAS(e.message, "nested deeper than");
  e = proto::parse_prompt_response(400, d, n, {}, &pr);
  EXPECT_TRUE(e);

  proto::HistoryEntry h;
  e = proto::parse_history(d, n, "p1", &h);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
  EXPECT_HAS(e.message, "nested deeper than");

  std::vector<std::string> ids;
  e = proto::parse_queue(d, n, &ids);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);

  // The issue's case: a server answering /upload/image with 400 KB of brackets.
  const std::string upload(400000, '[');
  ImageRef ref;
  e = proto::parse_upload_response(upload.data(), upload.size(), &ref);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
  EXPECT_HAS(e.message, "POST /upload/image response: JSON nested deeper than");
}

TEST(JsonCallers, ProtocolInvalidTextRefused) {
  using namespace dw::comfy;
  const std::string body = R"({"type": "executing", "data": {"node": "a\u0000b", "prompt_id": "p"}})";
  proto::WsMessage ws;
  Error e = proto::parse_ws_text(body.data(), body.size(), &ws);
  EXPECT_EQ(e.kind, ErrorKind::Protocol);
  EXPECT_HAS(e.message, "\\u0000");
}

TEST(JsonCallers, CacheIndexDeepNesting) {
  EXPECT_THROW(dw::cache::parse_index(R"({"entries": )" + kDeep), dw::cache::StoreError);
  TempDir dir;
  dir.write("index.json", R"({"entries": [{"id": "kf-00000001.png", "embedding": {"thumb": )" + kDeep);
  dw::cache::LoadReport report;
  dw::cache::Store store(dir.path, "pixel-v1", pixel_embed(), &report);
  EXPECT_TRUE(report.index_corrupt);
  EXPECT_HAS(report.index_error, "index.json: JSON nested deeper than 8 levels");
  EXPECT_EQ(store.size(), 0u);
}

TEST(JsonCallers, CacheIndexFieldTypesChecked) {
  EXPECT_THROW(dw::cache::parse_index(R"({"entries": [{"id": 5}]})"), dw::cache::StoreError);
  EXPECT_THROW(dw::cache::parse_index(R"({"entries": [{"id": "kf-1.png", "hits": -3}]})"), dw::cache::StoreError);
  EXPECT_THROW(dw::cache::parse_index(R"({"entries": [{"id": "kf-1.png", "width": "x"}]})"), dw::cache::StoreError);
  EXPECT_THROW(dw::cache::parse_index(R"({"entries": [{"id": "kf-1.png", "embedding": {"thumb": ["a"]}}]})"),
               dw::cache::StoreError);
  auto idx = dw::cache::parse_index(R"({"embedder": "pixel-v1", "next-id": 4, "entries": [{"id": "kf-00000009.png"}]})");
  EXPECT_EQ(idx.embedder, "pixel-v1");
  EXPECT_EQ(idx.next_id, 10u);  // at least one past every entry
  EXPECT_EQ(idx.warning, "");
}

TEST(JsonCallers, CacheNegativeNextIdRepaired) {
  auto idx = dw::cache::parse_index(R"({"next-id": -7, "entries": []})");
  EXPECT_EQ(idx.next_id, 1u);
  EXPECT_HAS(idx.warning, "next-id");
  EXPECT_HAS(idx.warning, "-7");

  TempDir dir;
  dir.write("index.json", R"({"version": 1, "embedder": "pixel-v1", "next-id": -7, "entries": []})");
  dw::cache::LoadReport report;
  {
    dw::cache::Store store(dir.path, "pixel-v1", pixel_embed(), &report);
    EXPECT_FALSE(report.index_corrupt);
    EXPECT_HAS(report.index_warning, "next-id");
    dw::Image img(16, 16, 3);
    const size_t pos = store.add(img, dw::cache::pixel_embedding(img), "p", 0);
    // Used to be kf-18446744073709551609.png.
    EXPECT_EQ(store.entries()[pos].id, "kf-00000001.png");
  }
  // The repaired index was written back: no warning the second time.
  dw::cache::LoadReport again;
  dw::cache::Store store(dir.path, "pixel-v1", pixel_embed(), &again);
  EXPECT_EQ(again.index_warning, "");
  EXPECT_EQ(store.size(), 1u);
}

TEST(JsonCallers, CacheHugeFileNumberDoesNotWrap) {
  TempDir dir;
  dw::Image img(8, 8, 3);
  const std::vector<uint8_t> png = dw::encode_png(img);
  const std::string name = "kf-18446744073709551615.png";
  dir.write(name, std::string(png.begin(), png.end()));
  dw::cache::Store store(dir.path, "pixel-v1", pixel_embed());
  const size_t pos = store.add(img, dw::cache::pixel_embedding(img), "p", 0);
  EXPECT_EQ(store.entries()[pos].id, "kf-00000001.png");
}

TEST(JsonCallers, SafetensorsHeaderDeepNesting) {
  std::string header = R"({"a":)" + std::string(100000, '[');
  std::vector<uint8_t> file(8 + header.size());
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  std::copy(header.begin(), header.end(), file.begin() + 8);
  try {
    dw::latent::SafeTensors::parse(file.data(), file.size(), "evil.safetensors");
    FAIL() << "nested header accepted";
  } catch (const dw::latent::Error &e) {
    EXPECT_HAS(e.what(), "evil.safetensors: corrupt safetensors header: JSON nested deeper than 8 levels");
  }
}
