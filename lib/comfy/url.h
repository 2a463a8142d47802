// The one parser for ComfyUI server URLs (the `server` property, the app's --comfy-url, a backend
// pool's comma-separated list, and the client itself). GLib's GUri does the RFC 3986 work; the rules
// on top are ours: http or https only, a host is required (`http://` alone is an error), port 1-65535
// (default 80/443), an optional path prefix (a ComfyUI behind a reverse proxy at /comfy), and no
// userinfo, query or fragment (ComfyUI has no authentication and we append the routes ourselves).
// Every rejection names the URL and the problem, so start() can fail with a message a person can act on.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace dw::comfy {

struct ServerUrl {
  std::string scheme;  // "http" | "https" (lower case)
  std::string host;    // lower case; IPv6 literals without brackets ("::1")
  int port = 0;        // 1-65535: explicit, or 80 / 443 by scheme
  std::string prefix;  // "" or "/a/b" (percent-encoded as given, no trailing '/')

  // "http://host:port/prefix": requests are base() + "/prompt". IPv6 hosts are bracketed.
  std::string base() const;
  // The same with ws:// or wss:// (the websocket endpoint is ws_base() + "/ws").
  std::string ws_base() const;
  bool operator==(const ServerUrl &o) const {
    return scheme == o.scheme && host == o.host && port == o.port && prefix == o.prefix;
  }
  bool operator!=(const ServerUrl &o) const { return !(*this == o); }
};

// Parses one URL (surrounding whitespace ignored). On failure returns nullopt and sets *why (if not
// null) to a sentence naming the URL: "server URL 'http://' has no host".
std::optional<ServerUrl> parse_server_url(const std::string &text, std::string *why);

// Parses a comma-separated list ("http://a:8188, http://b:8188"). Items are trimmed; an empty item,
// an invalid URL or the same server twice (after normalisation: "HTTP://A:80/" == "http://a") makes
// the whole list invalid: returns an empty vector and sets *why. An empty text is an error too.
std::vector<ServerUrl> parse_server_list(const std::string &text, std::string *why);

}  // namespace dw::comfy
