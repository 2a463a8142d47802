#include "comfy/url.h"

#include <glib.h>

#include <memory>

namespace dw::comfy {

namespace {

std::string trim(const std::string &s) {
  size_t b = 0, e = s.size();
  while (b < e && g_ascii_isspace(s[b])) b++;
  while (e > b && g_ascii_isspace(s[e - 1])) e--;
  return s.substr(b, e - b);
}

std::string lower(const char *s) {
  gchar *l = g_ascii_strdown(s, -1);
  std::string r = l;
  g_free(l);
  return r;
}

// GUri accepts a few bytes in a host that no resolver does (spaces: "http://h :1").
bool plausible_host(const std::string &h) {
  if (h.find(':') != std::string::npos) return g_hostname_is_ip_address(h.c_str());  // IPv6 literal
  for (char c : h)
    if (!(g_ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '%')) return false;
  return true;
}

bool printable(const std::string &s) {
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

struct UriUnref {
  void operator()(GUri *u) const { g_uri_unref(u); }
};

std::string authority(const ServerUrl &u) {
  std::string h = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;
  return h + ":" + std::to_string(u.port);
}

}  // namespace

std::string ServerUrl::base() const { return scheme + "://" + authority(*this) + prefix; }

std::string ServerUrl::ws_base() const {
  return std::string(scheme == "https" ? "wss" : "ws") + "://" + authority(*this) + prefix;
}

std::optional<ServerUrl> parse_server_url(const std::string &text, std::string *why) {
  std::string t = trim(text);
  auto fail = [&](const std::string &problem) -> std::optional<ServerUrl> {
    if (why) *why = "server URL '" + t + "' " + problem;
    return std::nullopt;
  };
  if (t.empty()) return fail("is empty (expected http://host:port)");
  // GUri would percent-encode a space in the path; a URL with one is a typo, not a prefix.
  if (!printable(t)) return fail("contains spaces or control characters");
  GError *err = nullptr;
  // Encoded flags: keep the prefix percent-encoded as given, since it is pasted back into URLs.
  std::unique_ptr<GUri, UriUnref> u(g_uri_parse(
      t.c_str(), GUriFlags(G_URI_FLAGS_ENCODED_PATH | G_URI_FLAGS_ENCODED_QUERY | G_URI_FLAGS_ENCODED_FRAGMENT), &err));
  if (!u) {
    std::string m = err && err->message ? err->message : "unparsable";
    g_clear_error(&err);
    return fail("is not a valid URL (" + m + "); expected http://host:port");
  }
  ServerUrl out;
  out.scheme = lower(g_uri_get_scheme(u.get()));
  if (out.scheme != "http" && out.scheme != "https")
    return fail("has scheme '" + out.scheme + "': only http and https are supported (e.g. http://127.0.0.1:8188)");
  const char *host = g_uri_get_host(u.get());
  if (!host || !*host) return fail("has no host (e.g. http://127.0.0.1:8188)");
  out.host = lower(host);
  if (!plausible_host(out.host)) return fail("has an invalid host '" + out.host + "'");
  if (g_uri_get_userinfo(u.get())) return fail("contains user information (user@): not supported");
  if (g_uri_get_query(u.get())) return fail("has a query ('?...'): not supported");
  if (g_uri_get_fragment(u.get())) return fail("has a fragment ('#...'): not supported");
  int port = g_uri_get_port(u.get());
  if (port == -1) port = out.scheme == "https" ? 443 : 80;
  if (port < 1 || port > 65535) return fail("has port " + std::to_string(port) + ": must be 1-65535");
  out.port = port;
  std::string path = g_uri_get_path(u.get());
  while (!path.empty() && path.back() == '/') path.pop_back();
  out.prefix = path;
  return out;
}

std::vector<ServerUrl> parse_server_list(const std::string &text, std::string *why) {
  std::vector<ServerUrl> out;
  if (trim(text).empty()) {
    if (why) *why = "server list is empty (expected http://host:port[,http://host2:port...])";
    return {};
  }
  gchar **items = g_strsplit(text.c_str(), ",", -1);
  std::unique_ptr<gchar *, void (*)(gchar **)> guard(items, g_strfreev);
  for (int i = 0; items[i]; i++) {
    std::string item = trim(items[i]);
    if (item.empty()) {
      if (why) *why = "server list '" + trim(text) + "' has an empty item at position " + std::to_string(i + 1);
      return {};
    }
    std::optional<ServerUrl> u = parse_server_url(item, why);
    if (!u) return {};
    for (const ServerUrl &seen : out)
      if (seen == *u) {
        if (why) *why = "server list names " + u->base() + " twice ('" + item + "')";
        return {};
      }
    out.push_back(std::move(*u));
  }
  return out;
}

}  // namespace dw::comfy
