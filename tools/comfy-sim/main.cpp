// comfy-sim: runs the ComfyUI 0.8.0 simulator (lib/sim) as a program.
#include <glib-unix.h>
#include <glib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim/simulator.h"

namespace {

const char kUsage[] =
    "Usage: comfy-sim [OPTIONS]\n"
    "A ComfyUI 0.8.0 simulator (HTTP + websocket) for testing without a GPU.\n\n"
    "  --host ADDR            address to bind (default 127.0.0.1)\n"
    "  --port N               port (default 8188; 0 = a free port)\n"
    "  --latency-ms N         generation time per job (default 50)\n"
    "  --jitter-ms N          +- uniform jitter on the latency (default 0)\n"
    "  --data-dir DIR         input/ output/ temp/ live here (default: a fresh temp dir)\n"
    "  --seed N               seed for jitter and noise (default 1)\n"
    "  --verbose              log requests on stderr\n"
    "Faults:\n"
    "  --fail-job N           job N (1-based) fails with execution_error\n"
    "  --fail-always          every job fails with execution_error\n"
    "  --http-500-every N     every Nth HTTP request answers 500\n"
    "  --http-500-prompt      POST /prompt answers 500\n"
    "  --malformed-json       JSON responses are truncated\n"
    "  --ws-drop-on-job N     drop every websocket abruptly in the middle of job N\n"
    "  --silent-websocket     websockets receive nothing after the first status\n"
    "  --hang                 accept TCP connections but answer nothing (a stopped server)\n"
    "  --view-delay-ms N      delay /view answers\n"
    "  --wrong-size WxH       output images have this size\n"
    "  --refuse-connections   start without accepting connections (useless alone; for completeness)\n"
    "  -h, --help             this text\n";

bool parse_u64(const char *s, uint64_t max, uint64_t &out) {
  if (!s || !*s || *s == '-') return false;
  char *end = nullptr;
  guint64 v = g_ascii_strtoull(s, &end, 10);
  if (!end || *end != '\0' || v > max) return false;
  out = v;
  return true;
}

int bad(const std::string &msg) {
  std::fprintf(stderr, "comfy-sim: %s\n%s", msg.c_str(), "Try 'comfy-sim --help'.\n");
  return 2;
}

gboolean on_signal(gpointer loop) {
  g_main_loop_quit(static_cast<GMainLoop *>(loop));
  return G_SOURCE_CONTINUE;
}

}  // namespace

int main(int argc, char **argv) {
  dw::sim::Config cfg;
  cfg.port = 8188;
  dw::sim::Faults faults;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    bool has_inline = false;
    size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    auto need = [&](std::string &out) -> bool {
      if (has_inline) {
        out = val;
        return true;
      }
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    auto num = [&](uint64_t max, uint64_t &out) -> int {
      std::string v;
      if (!need(v)) return bad("option " + a + " needs a value");
      if (!parse_u64(v.c_str(), max, out)) return bad("invalid value for " + a + ": '" + v + "'");
      return 0;
    };
    uint64_t n = 0;
    int rc = 0;
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--port") {
      if ((rc = num(65535, n))) return rc;
      cfg.port = static_cast<uint16_t>(n);
    } else if (a == "--host") {
      if (!need(cfg.host) || cfg.host.empty()) return bad("option --host needs a value");
    } else if (a == "--latency-ms") {
      if ((rc = num(3600000, n))) return rc;
      cfg.latency_ms = static_cast<uint32_t>(n);
    } else if (a == "--jitter-ms") {
      if ((rc = num(3600000, n))) return rc;
      cfg.jitter_ms = static_cast<uint32_t>(n);
    } else if (a == "--data-dir") {
      if (!need(cfg.data_dir) || cfg.data_dir.empty()) return bad("option --data-dir needs a value");
    } else if (a == "--seed") {
      if ((rc = num(UINT64_MAX, n))) return rc;
      cfg.seed = n;
    } else if (a == "--verbose" || a == "-v") {
      cfg.verbose = true;
    } else if (a == "--fail-job") {
      if ((rc = num(INT32_MAX, n))) return rc;
      faults.execution_error_on_job = static_cast<int>(n);
    } else if (a == "--fail-always") {
      faults.execution_error_always = true;
    } else if (a == "--http-500-every") {
      if ((rc = num(INT32_MAX, n))) return rc;
      faults.http_500_every = static_cast<int>(n);
    } else if (a == "--http-500-prompt") {
      faults.http_500_prompt = true;
    } else if (a == "--malformed-json") {
      faults.malformed_json = true;
    } else if (a == "--ws-drop-on-job") {
      if ((rc = num(INT32_MAX, n))) return rc;
      faults.ws_drop_on_job = static_cast<int>(n);
    } else if (a == "--silent-websocket") {
      faults.silent_websocket = true;
    } else if (a == "--hang") {
      faults.hang = true;
    } else if (a == "--view-delay-ms") {
      if ((rc = num(3600000, n))) return rc;
      faults.view_delay_ms = static_cast<uint32_t>(n);
    } else if (a == "--wrong-size") {
      std::string v;
      if (!need(v)) return bad("option --wrong-size needs a value");
      int w = 0, h = 0;
      char extra = 0;
      if (std::sscanf(v.c_str(), "%dx%d%c", &w, &h, &extra) != 2 || w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return bad("invalid value for --wrong-size (want WxH): '" + v + "'");
      faults.wrong_width = w;
      faults.wrong_height = h;
    } else if (a == "--refuse-connections") {
      faults.refuse_connections = true;
    } else {
      return bad("unknown option '" + std::string(argv[i]) + "'");
    }
    if (has_inline && (a == "--verbose" || a == "--fail-always" || a == "--http-500-prompt" || a == "--malformed-json" ||
                       a == "--silent-websocket" || a == "--refuse-connections"))
      return bad("option " + a + " takes no value");
  }

  // Signal handlers first, so a supervisor may send SIGTERM as soon as it reads the listening line.
  GMainLoop *loop = g_main_loop_new(nullptr, FALSE);
  guint s1 = g_unix_signal_add(SIGINT, on_signal, loop);
  guint s2 = g_unix_signal_add(SIGTERM, on_signal, loop);

  dw::sim::Simulator sim(cfg);
  sim.set_faults(faults);
  std::string err;
  if (!sim.start(&err)) {
    std::fprintf(stderr, "comfy-sim: cannot listen on %s:%u: %s\n", cfg.host.c_str(), cfg.port, err.c_str());
    g_source_remove(s1);
    g_source_remove(s2);
    g_main_loop_unref(loop);
    return 1;
  }
  std::printf("comfy-sim listening on http://%s:%u\n", cfg.host == "0.0.0.0" ? "127.0.0.1" : cfg.host.c_str(), sim.port());
  if (cfg.verbose) std::fprintf(stderr, "comfy-sim: data dir %s\n", sim.data_dir().c_str());
  std::fflush(stdout);

  g_main_loop_run(loop);
  g_source_remove(s1);
  g_source_remove(s2);
  g_main_loop_unref(loop);
  sim.stop();
  return 0;
}
