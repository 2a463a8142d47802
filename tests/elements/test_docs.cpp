// The element reference in docs/elements/<element>.md must name every property gst-inspect shows,
// so the docs cannot silently fall behind the code.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <string>

#include "sim_test_helpers.h"

namespace {

class ElementDocs : public ::testing::TestWithParam<const char *> {};

TEST_P(ElementDocs, NamesEveryProperty) {
  const std::string element = GetParam();
  const std::string path = dw_test::source_path("docs/elements/" + element + ".md");
  gchar *text = nullptr;
  ASSERT_TRUE(g_file_get_contents(path.c_str(), &text, nullptr, nullptr)) << "missing " << path;
  const std::string doc(text);
  g_free(text);

  GstElementFactory *factory = gst_element_factory_find(element.c_str());
  ASSERT_NE(factory, nullptr) << element << " is not in the plugin";
  GstElement *instance = gst_element_factory_create(factory, nullptr);
  ASSERT_NE(instance, nullptr);
  guint n = 0;
  GParamSpec **specs = g_object_class_list_properties(G_OBJECT_GET_CLASS(instance), &n);
  guint checked = 0;
  for (guint i = 0; i < n; ++i) {
    if (specs[i]->owner_type != G_OBJECT_TYPE(instance)) continue;  // inherited (name, parent, ...)
    const std::string name = g_param_spec_get_name(specs[i]);
    EXPECT_NE(doc.find(name), std::string::npos) << path << " does not document property '" << name << "'";
    EXPECT_GT(strlen(g_param_spec_get_blurb(specs[i])), 10u) << element << "::" << name << " has no real blurb";
    checked++;
  }
  EXPECT_GT(checked, 3u);
  g_free(specs);
  gst_object_unref(instance);
  gst_object_unref(factory);
}

INSTANTIATE_TEST_SUITE_P(Elements, ElementDocs,
                         ::testing::Values("comfykeyframesrc", "cachetap", "vaeinterp", "flightbuffer"));

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
