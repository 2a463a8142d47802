// Workflow loading, validation, binding and building (lib/comfy/workflow.{h,cpp}).
#include <glib.h>
#include <glib/gstdio.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <ostream>
#include <string>

#include "comfy/workflow.h"
#include "config.h"

using namespace dw::comfy;

namespace {

std::string source_dir() {
  const char *d = g_getenv("DW_SOURCE_DIR");
  return d ? d : DW_SOURCE_DIR;  // config.h: the source tree this was built from
}

std::string example(const std::string &name) { return source_dir() + "/examples/workflows/" + name; }

// Minimal img2img graph; tests edit it as text.
const char *kBase = R"({
  "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
  "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["1", 1]}},
  "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["1", 1]}},
  "4": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
  "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
  "7": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 7, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 0.5, "model": ["1", 0], "positive": ["2", 0],
        "negative": ["3", 0], "latent_image": ["6", 0]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}
})";

std::string replace(std::string s, const std::string &from, const std::string &to) {
  size_t pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << "test bug: " << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

// Adds nodes before the closing brace of kBase-like text.
std::string add_nodes(std::string s, const std::string &nodes) {
  size_t pos = s.rfind('}');
  return s.substr(0, pos) + ", " + nodes + "}";
}

// Loads; expects failure; returns the message.
std::string load_error(const std::string &json, const BindingOverrides &ov = {}) {
  Error err;
  auto wf = Workflow::load_string(json, ov, &err, "test.json");
  EXPECT_EQ(wf, nullptr) << "unexpectedly loaded:\n" << json;
  EXPECT_EQ(err.kind, ErrorKind::InvalidWorkflow);
  EXPECT_EQ(err.message.rfind("test.json: ", 0), 0u) << "origin missing: " << err.message;
  return err.message;
}

std::unique_ptr<Workflow> load_ok(const std::string &json, const BindingOverrides &ov = {}) {
  Error err;
  auto wf = Workflow::load_string(json, ov, &err, "test.json");
  EXPECT_NE(wf, nullptr) << err.message;
  EXPECT_FALSE(err);
  return wf;
}

JsonObject *inputs_of(JsonNode *graph, const char *id) {
  JsonObject *node = json_object_get_object_member(json_node_get_object(graph), id);
  return json_object_get_object_member(node, "inputs");
}
JsonObject *inputs_of(const JsonNode *graph, const char *id) { return inputs_of(const_cast<JsonNode *>(graph), id); }

std::string to_json(JsonNode *n) {
  gchar *s = json_to_string(n, FALSE);
  std::string out(s);
  g_free(s);
  return out;
}

JsonNode *reparse(const std::string &s) {
  GError *err = nullptr;
  JsonNode *n = json_from_string(s.c_str(), &err);
  EXPECT_EQ(err, nullptr) << (err ? err->message : "");
  g_clear_error(&err);
  return n;
}

void expect_binding(const Workflow &wf, Param p, const std::string &path) {
  if (path.empty())
    EXPECT_FALSE(wf.binding(p).bound()) << param_name(p) << " bound to " << wf.binding(p).path();
  else
    EXPECT_EQ(wf.binding(p).bound() ? wf.binding(p).path() : "(unbound)", path) << param_name(p);
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

}  // namespace

// ---- names ----------------------------------------------------------------------------------------

TEST(Workflow, ParamNames) {
  const char *expected[] = {"image", "prompt", "negative-prompt", "seed", "denoise", "steps", "cfg"};
  for (int i = 0; i < static_cast<int>(Param::Count); i++) {
    EXPECT_STREQ(param_name(static_cast<Param>(i)), expected[i]);
    EXPECT_EQ(param_from_name(expected[i]), static_cast<Param>(i));
  }
  EXPECT_EQ(param_from_name("negative_prompt"), Param::NegativePrompt);
  EXPECT_FALSE(param_from_name("bogus").has_value());
}

// ---- shipped examples ------------------------------------------------------------------------------

struct ExampleCase {
  const char *file;
  bool websocket;
  const char *ckpt;
};

void PrintTo(const ExampleCase &c, std::ostream *os) { *os << c.file; }

class Examples : public ::testing::TestWithParam<ExampleCase> {};

TEST_P(Examples, BindsExpectedNodes) {
  const ExampleCase &c = GetParam();
  Error err;
  auto wf = Workflow::load_file(example(c.file), {}, &err);
  ASSERT_NE(wf, nullptr) << err.message;
  EXPECT_EQ(wf->origin(), example(c.file));
  expect_binding(*wf, Param::Image, "4.image");
  expect_binding(*wf, Param::Prompt, "2.text");
  expect_binding(*wf, Param::NegativePrompt, "3.text");
  expect_binding(*wf, Param::Seed, "7.seed");
  expect_binding(*wf, Param::Denoise, "7.denoise");
  expect_binding(*wf, Param::Steps, "7.steps");
  expect_binding(*wf, Param::Cfg, "7.cfg");
  EXPECT_EQ(wf->output_nodes(), std::vector<std::string>{"9"});
  EXPECT_EQ(wf->outputs_via_websocket(), c.websocket);
  EXPECT_EQ(wf->node_class("9"), c.websocket ? "SaveImageWebsocket" : "SaveImage");
  EXPECT_STREQ(json_object_get_string_member(inputs_of(wf->graph(), "1"), "ckpt_name"), c.ckpt);

  // Only class types the simulator executes.
  const char *known[] = {"CheckpointLoaderSimple", "CLIPTextEncode", "LoadImage", "ImageScale", "VAEEncode",
                         "VAEDecode", "KSampler", "KSamplerAdvanced", "EmptyLatentImage", "SaveImage",
                         "SaveImageWebsocket", "PreviewImage"};
  JsonObject *root = json_node_get_object(const_cast<JsonNode *>(wf->graph()));
  GList *ids = json_object_get_members(root);
  for (GList *l = ids; l; l = l->next) {
    std::string cls = wf->node_class(static_cast<const char *>(l->data));
    EXPECT_NE(std::find(std::begin(known), std::end(known), cls), std::end(known)) << cls;
  }
  g_list_free(ids);
}

INSTANTIATE_TEST_SUITE_P(Workflow, Examples,
                         ::testing::Values(ExampleCase{"sd15_img2img.json", false, "v1-5-pruned-emaonly.safetensors"},
                                           ExampleCase{"sdturbo_img2img.json", false, "sd_turbo.safetensors"},
                                           ExampleCase{"sdturbo_img2img_websocket.json", true, "sd_turbo.safetensors"}));

TEST(Workflow, ExampleValues) {
  Error err;
  auto sd15 = Workflow::load_file(example("sd15_img2img.json"), {}, &err);
  ASSERT_NE(sd15, nullptr) << err.message;
  JsonObject *k = inputs_of(sd15->graph(), "7");
  EXPECT_EQ(json_object_get_int_member(k, "steps"), 20);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "cfg"), 7.0);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "denoise"), 0.55);
  EXPECT_STREQ(json_object_get_string_member(inputs_of(sd15->graph(), "9"), "filename_prefix"), "dreamwindow");
  JsonObject *scale = inputs_of(sd15->graph(), "5");
  EXPECT_EQ(json_object_get_int_member(scale, "width"), 512);
  EXPECT_EQ(json_object_get_int_member(scale, "height"), 512);

  auto turbo = Workflow::load_file(example("sdturbo_img2img.json"), {}, &err);
  ASSERT_NE(turbo, nullptr) << err.message;
  k = inputs_of(turbo->graph(), "7");
  EXPECT_EQ(json_object_get_int_member(k, "steps"), 1);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "cfg"), 1.0);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "denoise"), 0.5);
  EXPECT_STREQ(json_object_get_string_member(k, "sampler_name"), "euler_ancestral");
}

// ---- build -----------------------------------------------------------------------------------------

TEST(Workflow, BuildSetsValuesAndLeavesOriginal) {
  Error err;
  auto wf = Workflow::load_file(example("sd15_img2img.json"), {}, &err);
  ASSERT_NE(wf, nullptr) << err.message;
  std::string before = to_json(const_cast<JsonNode *>(wf->graph()));

  JobParams jp;
  jp.image = "dw_00042.png [output]";
  jp.prompt = "a red fox";
  jp.negative_prompt = "ugly";
  jp.seed = 1234567890123LL;
  jp.denoise = 0.35;
  jp.steps = 4;
  jp.cfg = 2.5;
  JsonNode *g = wf->build(jp);
  ASSERT_NE(g, nullptr);
  EXPECT_STREQ(json_object_get_string_member(inputs_of(g, "4"), "image"), "dw_00042.png [output]");
  EXPECT_STREQ(json_object_get_string_member(inputs_of(g, "2"), "text"), "a red fox");
  EXPECT_STREQ(json_object_get_string_member(inputs_of(g, "3"), "text"), "ugly");
  JsonObject *k = inputs_of(g, "7");
  EXPECT_EQ(json_object_get_int_member(k, "seed"), 1234567890123LL);
  EXPECT_EQ(json_node_get_value_type(json_object_get_member(k, "seed")), G_TYPE_INT64);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "denoise"), 0.35);
  EXPECT_EQ(json_node_get_value_type(json_object_get_member(k, "denoise")), G_TYPE_DOUBLE);
  EXPECT_EQ(json_object_get_int_member(k, "steps"), 4);
  EXPECT_EQ(json_node_get_value_type(json_object_get_member(k, "steps")), G_TYPE_INT64);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(k, "cfg"), 2.5);
  // Links survive the copy as ["id", index].
  JsonArray *link = json_object_get_array_member(k, "positive");
  EXPECT_STREQ(json_array_get_string_element(link, 0), "2");
  EXPECT_EQ(json_array_get_int_element(link, 1), 0);
  // The copy is independent: editing it does not touch the workflow.
  json_object_set_string_member(inputs_of(g, "9"), "filename_prefix", "changed");
  json_node_unref(g);

  EXPECT_EQ(to_json(const_cast<JsonNode *>(wf->graph())), before);
  EXPECT_STREQ(json_object_get_string_member(inputs_of(wf->graph(), "2"), "text"),
               "a dreamlike watercolor landscape, soft light, highly detailed");
  EXPECT_EQ(json_object_get_int_member(inputs_of(wf->graph(), "7"), "steps"), 20);

  // Unset params keep the file's values; a second build starts from the file again.
  JobParams only_seed;
  only_seed.seed = 7;
  g = wf->build(only_seed);
  EXPECT_STREQ(json_object_get_string_member(inputs_of(g, "4"), "image"), "dreamwindow_input.png");
  EXPECT_STREQ(json_object_get_string_member(inputs_of(g, "2"), "text"),
               "a dreamlike watercolor landscape, soft light, highly detailed");
  EXPECT_EQ(json_object_get_int_member(inputs_of(g, "7"), "seed"), 7);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(inputs_of(g, "7"), "denoise"), 0.55);
  json_node_unref(g);
}

TEST(Workflow, BuildIgnoresUnboundParams) {
  // No sampler: a pure image-processing graph. Only the image is bound.
  auto wf = load_ok(R"({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
     "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bicubic",
           "width": 64, "height": 64, "crop": "disabled"}},
     "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})");
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Image, "1.image");
  for (Param p : {Param::Prompt, Param::NegativePrompt, Param::Seed, Param::Denoise, Param::Steps, Param::Cfg}) {
    expect_binding(*wf, p, "");
    EXPECT_HAS(wf->unbound_reason(p), "no KSampler");
  }
  JobParams jp;
  jp.image = "b.png";
  jp.prompt = "ignored";
  jp.seed = 5;
  jp.cfg = 3;
  JsonNode *g = wf->build(jp);
  std::string built = to_json(g);
  json_node_unref(g);
  EXPECT_HAS(built, "\"b.png\"");
  EXPECT_EQ(built.find("ignored"), std::string::npos);
  EXPECT_EQ(built.find("seed"), std::string::npos);
  EXPECT_EQ(built.find("cfg"), std::string::npos);
}

TEST(Workflow, BuildSkipsNonFiniteDoubles) {
  auto wf = load_ok(kBase);
  ASSERT_NE(wf, nullptr);
  JobParams jp;
  jp.denoise = std::nan("");
  jp.cfg = HUGE_VAL;
  JsonNode *g = wf->build(jp);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(inputs_of(g, "7"), "denoise"), 0.5);
  EXPECT_EQ(json_object_get_int_member(inputs_of(g, "7"), "cfg"), 7);
  JsonNode *back = reparse(to_json(g));  // still valid JSON
  EXPECT_NE(back, nullptr);
  if (back) json_node_unref(back);
  json_node_unref(g);
}

TEST(Workflow, HostileStringsRoundTrip) {
  auto wf = load_ok(kBase);
  ASSERT_NE(wf, nullptr);
  const std::string hostile[] = {
      "say \"hi\"",
      "back\\slash \\n not a newline \\u0041",
      "line1\nline2\r\n\ttab",
      "emoji \xF0\x9F\x98\x80 CJK \xE6\xBC\xA2\xE5\xAD\x97 \xED\x95\x9C\xEA\xB8\x80 RTL \xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D",
      "control \x01\x1f\x7f chars",
      "\"}, \"9\": {\"class_type\": \"Evil\"}, \"x\": {\"",  // injection attempt
      "</script><b>html</b>",
      "",
      std::string(100000, 'x'),
  };
  for (const std::string &s : hostile) {
    JobParams jp;
    jp.prompt = s;
    jp.negative_prompt = s + "!";
    jp.image = "sub/" + s + ".png";
    JsonNode *g = wf->build(jp);
    std::string text = to_json(g);
    json_node_unref(g);
    JsonNode *back = reparse(text);
    ASSERT_NE(back, nullptr) << text.substr(0, 200);
    EXPECT_EQ(json_object_get_string_member(inputs_of(back, "2"), "text"), s);
    EXPECT_EQ(json_object_get_string_member(inputs_of(back, "3"), "text"), s + "!");
    EXPECT_EQ(json_object_get_string_member(inputs_of(back, "4"), "image"), "sub/" + s + ".png");
    EXPECT_EQ(json_object_get_size(json_node_get_object(back)), 8u);  // nothing injected
    json_node_unref(back);
  }
}

TEST(Workflow, EmbeddedNulAndInvalidUtf8AreSanitized) {
  auto wf = load_ok(kBase);
  ASSERT_NE(wf, nullptr);
  JobParams jp;
  jp.prompt = std::string("a\0b", 3);
  jp.negative_prompt = std::string("bad \xC3\x28 utf8 \xFF");
  JsonNode *g = wf->build(jp);
  std::string text = to_json(g);
  json_node_unref(g);
  JsonNode *back = reparse(text);
  ASSERT_NE(back, nullptr);
  EXPECT_STREQ(json_object_get_string_member(inputs_of(back, "2"), "text"), "ab");
  const char *neg = json_object_get_string_member(inputs_of(back, "3"), "text");
  EXPECT_TRUE(g_utf8_validate(neg, -1, nullptr));
  EXPECT_HAS(neg, "bad ");
  EXPECT_HAS(neg, " utf8 ");
  json_node_unref(back);
}

// ---- describe --------------------------------------------------------------------------------------

TEST(Workflow, Describe) {
  Error err;
  auto wf = Workflow::load_file(example("sd15_img2img.json"), {}, &err);
  ASSERT_NE(wf, nullptr) << err.message;
  EXPECT_EQ(wf->describe(),
            "image -> 4.image (LoadImage)\n"
            "prompt -> 2.text (CLIPTextEncode)\n"
            "negative-prompt -> 3.text (CLIPTextEncode)\n"
            "seed -> 7.seed (KSampler)\n"
            "denoise -> 7.denoise (KSampler)\n"
            "steps -> 7.steps (KSampler)\n"
            "cfg -> 7.cfg (KSampler)");

  std::string adv = replace(replace(kBase, "\"KSampler\"", "\"KSamplerAdvanced\""), "\"seed\": 1", "\"noise_seed\": 1");
  auto a = load_ok(adv);
  ASSERT_NE(a, nullptr);
  std::string d = a->describe();
  EXPECT_HAS(d, "seed -> 7.noise_seed (KSamplerAdvanced)");
  EXPECT_HAS(d, "denoise -> not bound (");
  EXPECT_EQ(std::count(d.begin(), d.end(), '\n'), 6);
}

// ---- auto-detection --------------------------------------------------------------------------------

TEST(Workflow, KSamplerAdvancedBindsNoiseSeedAndNoDenoise) {
  std::string adv = replace(replace(kBase, "\"KSampler\"", "\"KSamplerAdvanced\""), "\"seed\": 1", "\"noise_seed\": 1");
  auto wf = load_ok(adv);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Seed, "7.noise_seed");
  expect_binding(*wf, Param::Denoise, "");
  expect_binding(*wf, Param::Steps, "7.steps");
  expect_binding(*wf, Param::Prompt, "2.text");
  JobParams jp;
  jp.denoise = 0.1;
  jp.seed = 99;
  JsonNode *g = wf->build(jp);
  EXPECT_DOUBLE_EQ(json_object_get_double_member(inputs_of(g, "7"), "denoise"), 0.5);  // untouched
  EXPECT_EQ(json_object_get_int_member(inputs_of(g, "7"), "noise_seed"), 99);
  json_node_unref(g);
}

TEST(Workflow, PromptFollowsConditioningPassThrough) {
  // 7.positive -> 10 ControlNetApply -> 11 ConditioningSetArea -> 2 CLIPTextEncode
  std::string s = replace(kBase, "\"positive\": [\"2\", 0]", "\"positive\": [\"10\", 0]");
  s = add_nodes(s, R"("10": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["11", 0],
       "control_net": ["1", 0], "image": ["4", 0], "strength": 1.0}},
     "11": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["2", 0], "width": 64,
       "height": 64, "x": 0, "y": 0, "strength": 1.0}})");
  auto wf = load_ok(s);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Prompt, "2.text");
  expect_binding(*wf, Param::NegativePrompt, "3.text");
}

TEST(Workflow, PromptFollowsControlNetApplyAdvancedByOutputIndex) {
  std::string s = replace(replace(kBase, "\"positive\": [\"2\", 0]", "\"positive\": [\"10\", 0]"),
                          "\"negative\": [\"3\", 0]", "\"negative\": [\"10\", 1]");
  s = add_nodes(s, R"("10": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["2", 0],
       "negative": ["3", 0], "control_net": ["1", 0], "image": ["4", 0], "strength": 1.0,
       "start_percent": 0.0, "end_percent": 1.0}})");
  auto wf = load_ok(s);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Prompt, "2.text");
  expect_binding(*wf, Param::NegativePrompt, "3.text");
}

TEST(Workflow, ConditioningCombineStopsTheSearch) {
  std::string s = replace(kBase, "\"positive\": [\"2\", 0]", "\"positive\": [\"10\", 0]");
  s = add_nodes(s, R"("10": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
       "conditioning_2": ["3", 0]}})");
  auto wf = load_ok(s);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Prompt, "");
  EXPECT_HAS(wf->unbound_reason(Param::Prompt), "ConditioningCombine");
  EXPECT_HAS(wf->describe(), "prompt -> not bound (");
  expect_binding(*wf, Param::NegativePrompt, "3.text");
  // ... and an explicit binding resolves it.
  BindingOverrides ov;
  ov[Param::Prompt] = "2.text";
  auto wf2 = load_ok(s, ov);
  ASSERT_NE(wf2, nullptr);
  expect_binding(*wf2, Param::Prompt, "2.text");
}

TEST(Workflow, SharedTextNodeBindsOnlyThePrompt) {
  auto wf = load_ok(replace(kBase, "\"negative\": [\"3\", 0]", "\"negative\": [\"2\", 0]"));
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Prompt, "2.text");
  expect_binding(*wf, Param::NegativePrompt, "");
}

TEST(Workflow, LinkedSamplerInputIsLeftUnbound) {
  std::string s = replace(kBase, "\"seed\": 1", "\"seed\": [\"10\", 0]");
  s = add_nodes(s, R"("10": {"class_type": "SeedGenerator", "inputs": {"seed": 5}})");
  auto wf = load_ok(s);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Seed, "");
  EXPECT_HAS(wf->unbound_reason(Param::Seed), "is a link");
  BindingOverrides ov;
  ov[Param::Seed] = "10.seed";
  auto wf2 = load_ok(s, ov);
  ASSERT_NE(wf2, nullptr);
  expect_binding(*wf2, Param::Seed, "10.seed");
}

TEST(Workflow, OutputNodesSortedNumericallyAndWebsocketFlag) {
  std::string s = replace(kBase, "\"9\": {\"class_type\": \"SaveImage\"", "\"100\": {\"class_type\": \"SaveImageWebsocket\"");
  s = add_nodes(s, R"("20": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
     "3x": {"class_type": "SaveImage", "inputs": {"filename_prefix": "y", "images": ["8", 0]}})");
  auto wf = load_ok(s);
  ASSERT_NE(wf, nullptr);
  EXPECT_EQ(wf->output_nodes(), (std::vector<std::string>{"20", "100", "3x"}));
  EXPECT_FALSE(wf->outputs_via_websocket());

  auto ws = load_ok(replace(kBase, "\"SaveImage\", \"inputs\": {\"filename_prefix\": \"x\",",
                            "\"SaveImageWebsocket\", \"inputs\": {"));
  ASSERT_NE(ws, nullptr);
  EXPECT_TRUE(ws->outputs_via_websocket());
}

TEST(Workflow, LoadImageOutputAccepted) {
  auto wf = load_ok(replace(kBase, "\"LoadImage\"", "\"LoadImageOutput\""));
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Image, "4.image");
}

// ---- overrides -------------------------------------------------------------------------------------

TEST(Workflow, ExplicitOverrides) {
  BindingOverrides ov;
  ov[Param::Prompt] = "3.text";
  ov[Param::NegativePrompt] = "2.text";
  ov[Param::Cfg] = "none";
  auto wf = load_ok(kBase, ov);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Prompt, "3.text");
  expect_binding(*wf, Param::NegativePrompt, "2.text");
  expect_binding(*wf, Param::Cfg, "");
  expect_binding(*wf, Param::Seed, "7.seed");
}

TEST(Workflow, OverrideToMissingNode) {
  BindingOverrides ov;
  ov[Param::Seed] = "42.seed";
  std::string m = load_error(kBase, ov);
  EXPECT_HAS(m, "seed");
  EXPECT_HAS(m, "no node \"42\"");
}

TEST(Workflow, OverrideToMissingInput) {
  BindingOverrides ov;
  ov[Param::Steps] = "7.stepz";
  std::string m = load_error(kBase, ov);
  EXPECT_HAS(m, "steps");
  EXPECT_HAS(m, "no input \"stepz\"");
  EXPECT_HAS(m, "node \"7\" (KSampler)");
}

TEST(Workflow, OverrideToLinkedInput) {
  BindingOverrides ov;
  ov[Param::Prompt] = "7.positive";
  std::string m = load_error(kBase, ov);
  EXPECT_HAS(m, "prompt");
  EXPECT_HAS(m, "\"positive\" is a link");
}

TEST(Workflow, OverrideWithWrongType) {
  BindingOverrides ov;
  ov[Param::Seed] = "2.text";
  std::string m = load_error(kBase, ov);
  EXPECT_HAS(m, "\"text\" holds a string, but seed needs a number");
}

TEST(Workflow, OverrideSyntax) {
  for (const char *bad : {"7", "7.", ".seed", "nonsense"}) {
    BindingOverrides ov;
    ov[Param::Seed] = bad;
    EXPECT_HAS(load_error(kBase, ov), "node_id.input");
  }
  BindingOverrides none_image;
  none_image[Param::Image] = "none";
  EXPECT_HAS(load_error(kBase, none_image), "image binding cannot be \"none\"");
}

TEST(Workflow, TwoParamsOnOnePathIsAnError) {
  BindingOverrides ov;
  ov[Param::NegativePrompt] = "2.text";  // prompt auto-detects to 2.text as well
  std::string m = load_error(kBase, ov);
  EXPECT_HAS(m, "prompt and negative-prompt are both bound to 2.text");
}

// ---- broken files ----------------------------------------------------------------------------------

TEST(Workflow, MissingFile) {
  Error err;
  std::string path = source_dir() + "/examples/workflows/does_not_exist.json";
  auto wf = Workflow::load_file(path, {}, &err);
  EXPECT_EQ(wf, nullptr);
  EXPECT_EQ(err.kind, ErrorKind::InvalidWorkflow);
  EXPECT_HAS(err.message, path);
  EXPECT_HAS(err.message, "No such file");

  auto dir = Workflow::load_file(source_dir(), {}, &err);
  EXPECT_EQ(dir, nullptr);
  EXPECT_HAS(err.message, "not a regular file");
}

TEST(Workflow, FileErrorsNameThePath) {
  gchar *tmpdir = g_dir_make_tmp("dw-workflow-XXXXXX", nullptr);
  ASSERT_NE(tmpdir, nullptr);
  std::string path = std::string(tmpdir) + "/broken.json";
  {
    std::ofstream f(path);
    f << "{\n  \"1\": {\"class_type\": \"LoadImage\",\n  \"inputs\": {\"image\": \"a.png\",}}\n}\n";
  }
  Error err;
  auto wf = Workflow::load_file(path, {}, &err);
  EXPECT_EQ(wf, nullptr);
  EXPECT_EQ(err.kind, ErrorKind::InvalidWorkflow);
  EXPECT_EQ(err.message.rfind(path + ": invalid JSON: 3:", 0), 0u) << err.message;
  EXPECT_HAS(err.message, "Parse error");
  g_unlink(path.c_str());
  g_rmdir(tmpdir);
  g_free(tmpdir);
}

TEST(Workflow, InvalidJson) {
  std::string m = load_error("{\"1\": {\"class_type\": \"LoadImage\"\n, \"inputs\": {]}}");
  EXPECT_HAS(m, "invalid JSON: 2:");
  EXPECT_HAS(load_error(""), "test.json: ");
  EXPECT_HAS(load_error("{} trailing"), "invalid JSON");
}

TEST(Workflow, TopLevelNotObject) {
  EXPECT_HAS(load_error("[1, 2]"), "top level is a link, not an object");
  EXPECT_HAS(load_error("\"str\""), "top level is a string");
  EXPECT_HAS(load_error("{}"), "no output node");
}

TEST(Workflow, UiFormat) {
  std::string m = load_error(R"({"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler"}],
                                 "links": [[1, 4, 0, 3, 0, "MODEL"]], "version": 0.4})");
  EXPECT_HAS(m, "UI-format");
  EXPECT_HAS(m, "Save (API)");
}

TEST(Workflow, PromptRequestBody) {
  std::string m = load_error(std::string("{\"prompt\": ") + kBase + ", \"client_id\": \"abc\"}");
  EXPECT_HAS(m, "POST /prompt");
}

TEST(Workflow, NodeShapeErrors) {
  EXPECT_HAS(load_error(add_nodes(kBase, R"("10": 5)")), "node \"10\" is a number, not an object");
  EXPECT_HAS(load_error(add_nodes(kBase, R"("10": {"inputs": {}})")), "node \"10\" has no \"class_type\"");
  EXPECT_HAS(load_error(add_nodes(kBase, R"("10": {"class_type": 3, "inputs": {}})")),
             "node \"10\": \"class_type\" is a number");
  EXPECT_HAS(load_error(add_nodes(kBase, R"("10": {"class_type": "Foo"})")), "node \"10\" (Foo) has no \"inputs\"");
  EXPECT_HAS(load_error(add_nodes(kBase, R"("10": {"class_type": "Foo", "inputs": [1]})")),
             "node \"10\" (Foo): \"inputs\" is a link, not an object");
  EXPECT_HAS(load_error(add_nodes(kBase, R"("": {"class_type": "Foo", "inputs": {}})")), "empty id");
}

TEST(Workflow, NoLoadImage) {
  std::string s = replace(kBase, "\"LoadImage\", \"inputs\": {\"image\": \"in.png\"}",
                          "\"EmptyLatentImage\", \"inputs\": {\"width\": 512, \"height\": 512, \"batch_size\": 1}");
  std::string m = load_error(s);
  EXPECT_HAS(m, "no image input node");
  EXPECT_HAS(m, "LoadImage");
}

TEST(Workflow, NoOutputNode) {
  std::string m = load_error(replace(kBase, "\"SaveImage\"", "\"SomethingElse\""));
  EXPECT_HAS(m, "no output node");
  EXPECT_HAS(m, "SaveImage");
}

TEST(Workflow, TwoLoadImagesAreAmbiguous) {
  std::string s = add_nodes(kBase, R"("12": {"class_type": "LoadImage", "inputs": {"image": "b.png"}})");
  std::string m = load_error(s);
  EXPECT_HAS(m, "ambiguous image input");
  EXPECT_HAS(m, "4 (LoadImage)");
  EXPECT_HAS(m, "12 (LoadImage)");
  BindingOverrides ov;
  ov[Param::Image] = "12.image";
  auto wf = load_ok(s, ov);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Image, "12.image");
}

TEST(Workflow, TwoSamplersAreAmbiguous) {
  std::string s = add_nodes(kBase, R"("15": {"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 3,
     "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal", "add_noise": "enable",
     "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable", "model": ["1", 0],
     "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["7", 0]}},
     "16": {"class_type": "VAEDecode", "inputs": {"samples": ["15", 0], "vae": ["1", 2]}})");
  std::string m = load_error(s);
  EXPECT_HAS(m, "ambiguous sampler");
  EXPECT_HAS(m, "7 (KSampler)");
  EXPECT_HAS(m, "15 (KSamplerAdvanced)");
  EXPECT_HAS(m, "prompt, negative-prompt, seed, denoise, steps, cfg");

  BindingOverrides some;
  some[Param::Seed] = "15.noise_seed";
  m = load_error(s, some);
  EXPECT_HAS(m, "prompt, negative-prompt, denoise, steps, cfg");

  BindingOverrides all;
  all[Param::Prompt] = "2.text";
  all[Param::NegativePrompt] = "3.text";
  all[Param::Seed] = "15.noise_seed";
  all[Param::Denoise] = "none";
  all[Param::Steps] = "15.steps";
  all[Param::Cfg] = "7.cfg";
  auto wf = load_ok(s, all);
  ASSERT_NE(wf, nullptr);
  expect_binding(*wf, Param::Seed, "15.noise_seed");
  expect_binding(*wf, Param::Denoise, "");
  expect_binding(*wf, Param::Cfg, "7.cfg");
}

TEST(Workflow, IntegerLinkId) {
  std::string m = load_error(replace(kBase, "\"images\": [\"8\", 0]", "\"images\": [8, 0]"));
  EXPECT_HAS(m, "node \"9\" (SaveImage) input \"images\"");
  EXPECT_HAS(m, "not a string");
  EXPECT_HAS(m, "[\"8\", ...]");
}

TEST(Workflow, LinkToMissingNode) {
  std::string m = load_error(replace(kBase, "\"latent_image\": [\"6\", 0]", "\"latent_image\": [\"99\", 0]"));
  EXPECT_HAS(m, "node \"7\" (KSampler) input \"latent_image\" links to missing node \"99\"");
}

TEST(Workflow, MalformedLinks) {
  EXPECT_HAS(load_error(replace(kBase, "\"images\": [\"8\", 0]", "\"images\": [\"8\"]")), "array of 1 elements");
  EXPECT_HAS(load_error(replace(kBase, "\"images\": [\"8\", 0]", "\"images\": [\"8\", -1]")),
             "output index is a number, not a non-negative integer");
  EXPECT_HAS(load_error(replace(kBase, "\"images\": [\"8\", 0]", "\"images\": [\"8\", \"0\"]")),
             "output index is a string");
  EXPECT_HAS(load_error(replace(kBase, "\"images\": [\"8\", 0]", "\"images\": [null, 0]")), "node id is null");
}

// ---- hostile input ---------------------------------------------------------------------------------

TEST(Workflow, DeepNesting) {
  std::string deep(200000, '[');
  EXPECT_HAS(load_error(deep), "nested more than");
  std::string deep_obj;
  for (int i = 0; i < 100000; i++) deep_obj += "{\"a\":";
  EXPECT_HAS(load_error(deep_obj), "nested more than");
  // Brackets inside strings do not count.
  std::string s = replace(kBase, "\"text\": \"pos\"", "\"text\": \"" + std::string(1000, '[') + "\"");
  EXPECT_NE(load_ok(s), nullptr);
}

TEST(Workflow, HugeNumbers) {
  EXPECT_HAS(load_error(replace(kBase, "\"seed\": 1", "\"seed\": 99999999999999999999999999")), "out of range");
  EXPECT_HAS(load_error(replace(kBase, "\"cfg\": 7", "\"cfg\": 1e999")), "out of range");
  EXPECT_HAS(load_error(replace(kBase, "\"cfg\": 7", "\"cfg\": -1e400")), "out of range");
  auto wf = load_ok(replace(kBase, "\"seed\": 1", "\"seed\": 9223372036854775807"));
  ASSERT_NE(wf, nullptr);
  EXPECT_EQ(json_object_get_int_member(inputs_of(wf->graph(), "7"), "seed"), INT64_MAX);
  // Digits inside strings are not numbers.
  EXPECT_NE(load_ok(replace(kBase, "\"pos\"", "\"99999999999999999999999999 1e999\"")), nullptr);
}

TEST(Workflow, NulInFileString) {
  EXPECT_HAS(load_error(replace(kBase, "\"pos\"", "\"a\\u0000b\"")), "\\u0000");
}

TEST(Workflow, GarbageDoesNotCrash) {
  const char *garbage[] = {"\xFF\xFE\x00", "nul", "{\"1\": }", "{\"1\": {\"class_type\": \"LoadImage\", \"inputs\": {\"image\": ",
                           "\"\\ud800\"", "{{{{", "]]]]", "-", "1e", "{\"a\":1}}}}}"};
  for (const char *g : garbage) {
    Error err;
    auto wf = Workflow::load_string(g, {}, &err, "garbage");
    EXPECT_EQ(wf, nullptr) << g;
    EXPECT_EQ(err.kind, ErrorKind::InvalidWorkflow) << g;
  }
  Error err;
  EXPECT_EQ(Workflow::load_string(std::string("{\0}", 3), {}, &err, "nul"), nullptr);
}

TEST(Workflow, NullErrorPointerIsFine) {
  EXPECT_EQ(Workflow::load_string("[", {}, nullptr), nullptr);
  EXPECT_EQ(Workflow::load_file("/nonexistent/x.json", {}, nullptr), nullptr);
  EXPECT_NE(Workflow::load_string(kBase, {}, nullptr), nullptr);
}

TEST(Workflow, BindingOutOfRange) {
  auto wf = load_ok(kBase);
  ASSERT_NE(wf, nullptr);
  EXPECT_FALSE(wf->binding(Param::Count).bound());
  EXPECT_EQ(wf->node_class("nope"), "");
}
