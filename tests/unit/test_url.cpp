// The one server-URL parser (lib/comfy/url.h): what it accepts, how it normalises, and that every
// rejection names the URL and the problem.
#include <gtest/gtest.h>

#include "comfy/url.h"

using namespace dw::comfy;

namespace {

std::string rejected(const std::string &text) {
  std::string why;
  auto u = parse_server_url(text, &why);
  EXPECT_FALSE(u.has_value()) << text << " was accepted as " << (u ? u->base() : "");
  EXPECT_FALSE(why.empty()) << text;
  return why;
}

}  // namespace

TEST(ServerUrl, PlainHttpWithPort) {
  std::string why;
  auto u = parse_server_url("http://127.0.0.1:8188", &why);
  ASSERT_TRUE(u) << why;
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8188);
  EXPECT_EQ(u->prefix, "");
  EXPECT_EQ(u->base(), "http://127.0.0.1:8188");
  EXPECT_EQ(u->ws_base(), "ws://127.0.0.1:8188");
}

TEST(ServerUrl, DefaultPortsByScheme) {
  auto a = parse_server_url("http://comfy.example", nullptr);
  auto b = parse_server_url("https://comfy.example/", nullptr);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->port, 80);
  EXPECT_EQ(b->port, 443);
  EXPECT_EQ(b->base(), "https://comfy.example:443");
  EXPECT_EQ(b->ws_base(), "wss://comfy.example:443");
}

TEST(ServerUrl, NormalisesCaseTrailingSlashAndWhitespace) {
  auto u = parse_server_url("  HTTP://Comfy.Example:8188/Api/Comfy/  ", nullptr);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->host, "comfy.example");
  EXPECT_EQ(u->prefix, "/Api/Comfy");  // paths are case-sensitive
  EXPECT_EQ(u->base(), "http://comfy.example:8188/Api/Comfy");
}

TEST(ServerUrl, PrefixStaysPercentEncoded) {
  auto u = parse_server_url("http://h:1/a%20b", nullptr);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prefix, "/a%20b");
}

TEST(ServerUrl, Ipv6LiteralIsBracketedAgain) {
  auto u = parse_server_url("http://[::1]:8188/", nullptr);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->base(), "http://[::1]:8188");
}

TEST(ServerUrl, SchemeOnlyIsAnErrorNamingIt) {
  std::string why = rejected("http://");
  EXPECT_NE(why.find("'http://'"), std::string::npos) << why;
  EXPECT_NE(why.find("no host"), std::string::npos) << why;
  EXPECT_NE(rejected("https://").find("no host"), std::string::npos);
  EXPECT_NE(rejected("http:").find("no host"), std::string::npos);
  EXPECT_NE(rejected("http:///prefix").find("no host"), std::string::npos);
}

TEST(ServerUrl, OnlyHttpAndHttps) {
  EXPECT_NE(rejected("ws://h:1").find("scheme 'ws'"), std::string::npos);
  EXPECT_NE(rejected("ftp://h").find("only http and https"), std::string::npos);
  // Without a scheme GUri reads "localhost" as the scheme: still a clear message.
  EXPECT_NE(rejected("localhost:8188").find("only http and https"), std::string::npos);
  EXPECT_NE(rejected("127.0.0.1:8188").find("not a valid URL"), std::string::npos);
  EXPECT_NE(rejected("").find("empty"), std::string::npos);
  EXPECT_NE(rejected("   ").find("empty"), std::string::npos);
}

TEST(ServerUrl, PortRange) {
  EXPECT_NE(rejected("http://h:0").find("port 0"), std::string::npos);
  rejected("http://h:65536");
  rejected("http://h:99999999");
  rejected("http://h:-1");
  rejected("http://h:abc");
  auto top = parse_server_url("http://h:65535", nullptr);
  auto one = parse_server_url("http://h:1", nullptr);
  ASSERT_TRUE(top && one);
  EXPECT_EQ(top->port, 65535);
  EXPECT_EQ(one->port, 1);
}

TEST(ServerUrl, NoUserinfoQueryOrFragment) {
  EXPECT_NE(rejected("http://user:pw@h:1").find("user"), std::string::npos);
  EXPECT_NE(rejected("http://h:1/?x=1").find("query"), std::string::npos);
  EXPECT_NE(rejected("http://h:1?").find("query"), std::string::npos);
  EXPECT_NE(rejected("http://h:1/#top").find("fragment"), std::string::npos);
}

TEST(ServerUrl, GarbageHostsAndPaths) {
  rejected("http://h x:1");
  rejected("http://h :1");
  rejected("http://h:1/a b");
  rejected("http://[zz]:1");
}

TEST(ServerList, CommaSeparatedTrimmed) {
  std::string why;
  auto v = parse_server_list(" http://a:1 ,http://b:2/p,  https://c ", &why);
  ASSERT_EQ(v.size(), 3u) << why;
  EXPECT_EQ(v[0].base(), "http://a:1");
  EXPECT_EQ(v[1].base(), "http://b:2/p");
  EXPECT_EQ(v[2].base(), "https://c:443");
}

TEST(ServerList, SingleItem) {
  auto v = parse_server_list("http://127.0.0.1:8188", nullptr);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].port, 8188);
}

TEST(ServerList, EmptyItemsRejected) {
  std::string why;
  EXPECT_TRUE(parse_server_list("http://a:1,,http://b:1", &why).empty());
  EXPECT_NE(why.find("empty item at position 2"), std::string::npos) << why;
  EXPECT_TRUE(parse_server_list("http://a:1,", &why).empty());
  EXPECT_NE(why.find("position 2"), std::string::npos) << why;
  EXPECT_TRUE(parse_server_list(" , ", &why).empty());
  EXPECT_TRUE(parse_server_list("", &why).empty());
  EXPECT_NE(why.find("empty"), std::string::npos) << why;
}

TEST(ServerList, DuplicatesAfterNormalisationRejected) {
  std::string why;
  EXPECT_TRUE(parse_server_list("http://a:80, HTTP://A/", &why).empty());
  EXPECT_NE(why.find("twice"), std::string::npos) << why;
  // Different prefixes or ports are different servers.
  EXPECT_EQ(parse_server_list("http://a/x, http://a/y, http://a:81", &why).size(), 3u) << why;
}

TEST(ServerList, BadItemNamesTheItem) {
  std::string why;
  EXPECT_TRUE(parse_server_list("http://a:1, http://", &why).empty());
  EXPECT_NE(why.find("'http://'"), std::string::npos) << why;
  EXPECT_NE(why.find("no host"), std::string::npos) << why;
}
