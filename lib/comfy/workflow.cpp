// API-format ComfyUI workflow: load, validate, bind and build. See workflow.h.
#include "comfy/workflow.h"

#include "json/json.h"

#include <glib.h>
#include <glib/gstdio.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <utility>

namespace dw::comfy {

namespace {

constexpr int kParamCount = static_cast<int>(Param::Count);
constexpr int kMaxDepth = 64;                       // API workflows are ~4 levels deep
constexpr gsize kMaxFileSize = 32 * 1024 * 1024;    // a workflow is a few KiB
constexpr int kMaxConditioningHops = 32;

const char *const kImageInputClasses[] = {"LoadImage", "LoadImageOutput"};
const char *const kOutputClasses[] = {"SaveImage", "SaveImageWebsocket", "PreviewImage"};
const char *const kSamplerClasses[] = {"KSampler", "KSamplerAdvanced"};
const Param kSamplerParams[] = {Param::Prompt, Param::NegativePrompt, Param::Seed,
                                Param::Denoise, Param::Steps,  Param::Cfg};

template <size_t N>
bool one_of(const std::string &s, const char *const (&set)[N]) {
  for (const char *c : set)
    if (s == c) return true;
  return false;
}

std::string quoted(const std::string &s) { return "\"" + s + "\""; }

bool is_link_shaped(JsonNode *n) { return n && JSON_NODE_HOLDS_ARRAY(n); }

// "a link", "a string", ... for error messages.
std::string kind_of(JsonNode *n) {
  if (!n) return "nothing";
  switch (JSON_NODE_TYPE(n)) {
    case JSON_NODE_OBJECT: return "an object";
    case JSON_NODE_ARRAY: return "a link";
    case JSON_NODE_NULL: return "null";
    case JSON_NODE_VALUE: {
      GType t = json_node_get_value_type(n);
      if (t == G_TYPE_STRING) return "a string";
      if (t == G_TYPE_BOOLEAN) return "a boolean";
      return "a number";
    }
  }
  return "something else";
}

bool holds_number(JsonNode *n) {
  if (!n || !JSON_NODE_HOLDS_VALUE(n)) return false;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

bool holds_string(JsonNode *n) {
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING;
}

bool param_is_string(Param p) {
  return p == Param::Image || p == Param::Prompt || p == Param::NegativePrompt;
}

// Lexical pre-check: json-glib's parser recurses per nesting level (a hostile file could blow the
// stack), wraps integers that overflow int64 and turns 1e999 into inf (which it then writes back as
// invalid JSON), and truncates strings at \u0000. Reject all of these up front, with line:col.
bool prescan(const std::string &text, std::string *problem) {
  int depth = 0, line = 1, col = 0;
  bool in_string = false, escape = false;
  auto at = [&](int l, int c) { return std::to_string(l) + ":" + std::to_string(c); };
  for (size_t i = 0; i < text.size(); i++) {
    char ch = text[i];
    if (ch == '\n') {
      line++;
      col = 0;
    } else {
      col++;
    }
    if (in_string) {
      if (escape) {
        escape = false;
        if (ch == 'u' && text.compare(i + 1, 4, "0000") == 0) {
          *problem = at(line, col - 1) + ": string contains \\u0000, which is not supported";
          return false;
        }
      } else if (ch == '\\') {
        escape = true;
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    switch (ch) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > kMaxDepth) {
          *problem = at(line, col) + ": nested more than " + std::to_string(kMaxDepth) + " levels deep";
          return false;
        }
        break;
      case ']':
      case '}':
        depth--;
        break;
      default:
        if (ch == '-' || (ch >= '0' && ch <= '9')) {
          size_t end = i + 1;
          bool is_float = false;
          while (end < text.size()) {
            char d = text[end];
            if (d == '.' || d == 'e' || d == 'E') is_float = true;
            else if (!((d >= '0' && d <= '9') || d == '+' || d == '-')) break;
            end++;
          }
          std::string tok = text.substr(i, end - i);
          errno = 0;
          bool bad;
          if (is_float) {
            double v = g_ascii_strtod(tok.c_str(), nullptr);
            bad = !std::isfinite(v);
          } else {
            (void)g_ascii_strtoll(tok.c_str(), nullptr, 10);
            bad = errno == ERANGE;
          }
          if (bad) {
            *problem = at(line, col) + ": number " + (tok.size() > 40 ? tok.substr(0, 40) + "..." : tok) +
                       " is out of range (integers must fit in 64 bits, floats must be finite)";
            return false;
          }
          col += static_cast<int>(end - i - 1);
          i = end - 1;
        }
        break;
    }
  }
  return true;
}

// json_node_copy() only refs objects and arrays (and shares values), so editing a "copy" would
// edit the original. This copies everything. Depth is bounded by prescan().
JsonNode *deep_copy(JsonNode *n) {
  JsonNode *r = json_node_alloc();
  switch (JSON_NODE_TYPE(n)) {
    case JSON_NODE_OBJECT: {
      JsonObject *src = json_node_get_object(n);
      JsonObject *dst = json_object_new();
      GList *members = json_object_get_members(src);
      for (GList *l = members; l; l = l->next) {
        const char *name = static_cast<const char *>(l->data);
        json_object_set_member(dst, name, deep_copy(json_object_get_member(src, name)));
      }
      g_list_free(members);
      json_node_init_object(r, dst);
      json_object_unref(dst);
      break;
    }
    case JSON_NODE_ARRAY: {
      JsonArray *src = json_node_get_array(n);
      guint len = json_array_get_length(src);
      JsonArray *dst = json_array_sized_new(len);
      for (guint i = 0; i < len; i++) json_array_add_element(dst, deep_copy(json_array_get_element(src, i)));
      json_node_init_array(r, dst);
      json_array_unref(dst);
      break;
    }
    case JSON_NODE_NULL:
      json_node_init_null(r);
      break;
    case JSON_NODE_VALUE: {
      GType t = json_node_get_value_type(n);
      if (t == G_TYPE_INT64) json_node_init_int(r, json_node_get_int(n));
      else if (t == G_TYPE_DOUBLE) json_node_init_double(r, json_node_get_double(n));
      else if (t == G_TYPE_BOOLEAN) json_node_init_boolean(r, json_node_get_boolean(n));
      else if (t == G_TYPE_STRING) json_node_init_string(r, json_node_get_string(n));
      else json_node_init_null(r);
      break;
    }
  }
  return r;
}

// Valid UTF-8 without NULs: json-glib strings are C strings, and the server rejects bad UTF-8.
std::string clean_string(const std::string &s) {
  std::string no_nul;
  no_nul.reserve(s.size());
  for (char c : s)
    if (c != '\0') no_nul.push_back(c);
  if (g_utf8_validate(no_nul.data(), static_cast<gssize>(no_nul.size()), nullptr)) return no_nul;
  gchar *valid = g_utf8_make_valid(no_nul.data(), static_cast<gssize>(no_nul.size()));
  std::string out(valid);
  g_free(valid);
  return out;
}

std::string trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool all_digits(const std::string &s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Numeric ids in numeric order (without overflow), then the rest in byte order.
bool id_less(const std::string &a, const std::string &b) {
  bool na = all_digits(a), nb = all_digits(b);
  if (na != nb) return na;
  if (!na) return a < b;
  std::string sa = a.substr(std::min(a.find_first_not_of('0'), a.size()));
  std::string sb = b.substr(std::min(b.find_first_not_of('0'), b.size()));
  if (sa.size() != sb.size()) return sa.size() < sb.size();
  if (sa != sb) return sa < sb;
  return a < b;
}

std::string join(const std::vector<std::string> &v, const char *sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); i++) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

}  // namespace

const char *param_name(Param p) {
  switch (p) {
    case Param::Image: return "image";
    case Param::Prompt: return "prompt";
    case Param::NegativePrompt: return "negative-prompt";
    case Param::Seed: return "seed";
    case Param::Denoise: return "denoise";
    case Param::Steps: return "steps";
    case Param::Cfg: return "cfg";
    case Param::Count: break;
  }
  return "unknown";
}

std::optional<Param> param_from_name(const std::string &name) {
  for (int i = 0; i < kParamCount; i++)
    if (name == param_name(static_cast<Param>(i))) return static_cast<Param>(i);
  if (name == "negative_prompt" || name == "negative") return Param::NegativePrompt;
  return std::nullopt;
}

// Does the loading; a friend of Workflow so it can fill in the private members.
class WorkflowLoader {
 public:
  WorkflowLoader(Workflow *wf, const BindingOverrides &ov, Error *error) : wf_(wf), ov_(ov), error_(error) {}

  bool run(const std::string &json) {
    std::string problem;
    if (!prescan(json, &problem)) return fail("invalid JSON: " + problem);

    // The shared entry point adds the size limit and the UTF-8 / surrogate / NUL rules.
    static const char kWhat[] = "workflow";
    if (json.find_first_not_of(" \t\r\n") == std::string::npos)
      return fail("empty file: expected an API-format workflow object");
    dw::json::Limits limits;
    limits.max_bytes = kMaxFileSize;  // load() of a string gets the file's bound too
    limits.max_depth = kMaxDepth;
    JsonNode *root = nullptr;
    try {
      root = dw::json::parse(json, kWhat, limits).release();
    } catch (const dw::json::Error &e) {
      std::string msg = e.what();
      if (msg.rfind(kWhat, 0) == 0) msg = msg.substr(sizeof kWhat - 1 + 2);  // drop "workflow: "
      return fail(msg.rfind("invalid JSON", 0) == 0 ? msg : "invalid JSON: " + msg);
    }
    wf_->graph_ = root;  // owned by the Workflow from here on (freed by its destructor)

    if (!JSON_NODE_HOLDS_OBJECT(root))
      return fail("top level is " + kind_of(root) + ", not an object of nodes (is this an API-format workflow?)");
    graph_ = json_node_get_object(root);

    JsonNode *nodes = json_object_get_member(graph_, "nodes");
    JsonNode *links = json_object_get_member(graph_, "links");
    if (nodes && links && JSON_NODE_HOLDS_ARRAY(nodes) && JSON_NODE_HOLDS_ARRAY(links))
      return fail("this is a UI-format workflow (it has \"nodes\" and \"links\" arrays); export it from ComfyUI "
                  "with \"Save (API)\" (enable dev mode options in the settings to see it)");

    if (!collect_nodes()) return false;
    if (!check_links()) return false;
    if (!find_outputs()) return false;
    if (!bind_image()) return false;
    if (!bind_sampler_params()) return false;
    return check_distinct();
  }

 private:
  struct NodeInfo {
    std::string cls;
    JsonObject *inputs;
  };

  bool fail(const std::string &problem, const std::string &node_id = "") {
    if (error_) {
      *error_ = Error(ErrorKind::InvalidWorkflow, wf_->origin_ + ": " + problem);
      error_->node_id = node_id;
      auto it = nodes_.find(node_id);
      if (it != nodes_.end()) error_->node_type = it->second.cls;
    }
    return false;
  }

  std::string node_label(const std::string &id) const {
    auto it = nodes_.find(id);
    return "node " + quoted(id) + (it != nodes_.end() ? " (" + it->second.cls + ")" : "");
  }

  bool collect_nodes() {
    GList *members = json_object_get_members(graph_);
    bool ok = true;
    for (GList *l = members; l && ok; l = l->next) {
      std::string id = static_cast<const char *>(l->data);
      JsonNode *n = json_object_get_member(graph_, id.c_str());
      if (id.empty()) {
        ok = fail("a node has an empty id");
      } else if (!JSON_NODE_HOLDS_OBJECT(n)) {
        ok = fail("node " + quoted(id) + " is " + kind_of(n) + ", not an object", id);
      } else {
        JsonObject *o = json_node_get_object(n);
        JsonNode *cls = json_object_get_member(o, "class_type");
        JsonNode *inputs = json_object_get_member(o, "inputs");
        if (id == "prompt" && !cls && json_object_has_member(graph_, "prompt"))
          ok = fail("this looks like a POST /prompt request body; save only the graph (the \"prompt\" object), "
                    "as ComfyUI's \"Save (API)\" does");
        else if (!cls)
          ok = fail("node " + quoted(id) + " has no \"class_type\"", id);
        else if (!holds_string(cls) || !*json_node_get_string(cls))
          ok = fail("node " + quoted(id) + ": \"class_type\" is " + kind_of(cls) + ", not a non-empty string", id);
        else if (!inputs)
          ok = fail("node " + quoted(id) + " (" + json_node_get_string(cls) + ") has no \"inputs\"", id);
        else if (!JSON_NODE_HOLDS_OBJECT(inputs))
          ok = fail("node " + quoted(id) + " (" + json_node_get_string(cls) + "): \"inputs\" is " + kind_of(inputs) +
                        ", not an object",
                    id);
        else
          nodes_[id] = NodeInfo{json_node_get_string(cls), json_node_get_object(inputs)};
      }
    }
    g_list_free(members);
    return ok;
  }

  // Every array-valued input is a link for ComfyUI: ["<node id string>", <output index>].
  bool check_links() {
    for (const std::string &id : sorted_ids()) {
      const NodeInfo &info = nodes_.at(id);
      GList *members = json_object_get_members(info.inputs);
      bool ok = true;
      for (GList *l = members; l && ok; l = l->next) {
        const char *input = static_cast<const char *>(l->data);
        JsonNode *v = json_object_get_member(info.inputs, input);
        if (!is_link_shaped(v)) continue;
        ok = check_link(id, input, json_node_get_array(v));
      }
      g_list_free(members);
      if (!ok) return false;
    }
    return true;
  }

  bool check_link(const std::string &id, const std::string &input, JsonArray *a) {
    std::string where = node_label(id) + " input " + quoted(input);
    if (json_array_get_length(a) != 2)
      return fail(where + ": a link must be [\"<node id>\", <output index>], got an array of " +
                      std::to_string(json_array_get_length(a)) + " elements",
                  id);
    JsonNode *target = json_array_get_element(a, 0);
    JsonNode *index = json_array_get_element(a, 1);
    if (!holds_string(target)) {
      std::string hint;
      if (JSON_NODE_HOLDS_VALUE(target) && json_node_get_value_type(target) == G_TYPE_INT64)
        hint = " (write [\"" + std::to_string(json_node_get_int(target)) + "\", ...]: ComfyUI rejects integer ids)";
      return fail(where + ": the link's node id is " + kind_of(target) + ", not a string" + hint, id);
    }
    if (!JSON_NODE_HOLDS_VALUE(index) || json_node_get_value_type(index) != G_TYPE_INT64 || json_node_get_int(index) < 0)
      return fail(where + ": the link's output index is " + kind_of(index) + ", not a non-negative integer", id);
    std::string tid = json_node_get_string(target);
    if (!nodes_.count(tid)) return fail(where + " links to missing node " + quoted(tid), id);
    return true;
  }

  std::vector<std::string> sorted_ids() const {
    std::vector<std::string> ids;
    for (const auto &kv : nodes_) ids.push_back(kv.first);
    std::sort(ids.begin(), ids.end(), id_less);
    return ids;
  }

  template <size_t N>
  std::vector<std::string> ids_of(const char *const (&classes)[N]) const {
    std::vector<std::string> out;
    for (const std::string &id : sorted_ids())
      if (one_of(nodes_.at(id).cls, classes)) out.push_back(id);
    return out;
  }

  std::vector<std::string> ids_of_class(const std::string &cls) const {
    std::vector<std::string> out;
    for (const std::string &id : sorted_ids())
      if (nodes_.at(id).cls == cls) out.push_back(id);
    return out;
  }

  std::string list_nodes(const std::vector<std::string> &ids) const {
    std::vector<std::string> parts;
    for (const auto &id : ids) parts.push_back(id + " (" + nodes_.at(id).cls + ")");
    return join(parts, ", ");
  }

  bool find_outputs() {
    wf_->output_nodes_ = ids_of(kOutputClasses);
    if (wf_->output_nodes_.empty())
      return fail("no output node: add a SaveImage, SaveImageWebsocket or PreviewImage node");
    wf_->outputs_via_websocket_ = std::all_of(wf_->output_nodes_.begin(), wf_->output_nodes_.end(),
                                              [&](const std::string &id) { return nodes_.at(id).cls == "SaveImageWebsocket"; });
    return true;
  }

  // Checks that node_id.input exists and can hold the parameter's value.
  // Returns "" if fine, else the problem.
  std::string check_target(Param p, const std::string &id, const std::string &input) const {
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return "no node " + quoted(id);
    JsonNode *v = json_object_get_member(it->second.inputs, input.c_str());
    if (!v) return node_label(id) + " has no input " + quoted(input);
    if (is_link_shaped(v)) {
      JsonNode *t = json_array_get_element(json_node_get_array(v), 0);
      return node_label(id) + " input " + quoted(input) + " is a link (from node " +
             quoted(holds_string(t) ? json_node_get_string(t) : "?") + "), not a value that can be set";
    }
    if (param_is_string(p) && !holds_string(v))
      return node_label(id) + " input " + quoted(input) + " holds " + kind_of(v) + ", but " + param_name(p) +
             " needs a string";
    if (!param_is_string(p) && !holds_number(v))
      return node_label(id) + " input " + quoted(input) + " holds " + kind_of(v) + ", but " + param_name(p) +
             " needs a number";
    return "";
  }

  void set_binding(Param p, const std::string &id, const std::string &input) {
    wf_->bindings_[static_cast<int>(p)] = Binding{id, input};
    wf_->unbound_reasons_[static_cast<int>(p)].clear();
  }
  void set_unbound(Param p, const std::string &reason) {
    wf_->bindings_[static_cast<int>(p)] = Binding{};
    wf_->unbound_reasons_[static_cast<int>(p)] = reason;
  }

  bool explicit_given(Param p) const { return !trim(ov_[p]).empty(); }

  // Applies an explicit override. Returns false (with the error set) if it is invalid.
  bool apply_override(Param p) {
    std::string path = trim(ov_[p]);
    std::string what = std::string("binding for ") + param_name(p) + " (" + quoted(path) + ")";
    if (path == "none") {
      set_unbound(p, "disabled by the override \"none\"");
      return true;
    }
    size_t dot = std::string::npos;
    // Node ids may contain dots in principle: prefer the split whose left part is an existing node.
    for (size_t pos = path.find('.'); pos != std::string::npos; pos = path.find('.', pos + 1)) {
      if (dot == std::string::npos) dot = pos;
      if (nodes_.count(path.substr(0, pos))) {
        dot = pos;
        break;
      }
    }
    if (dot == std::string::npos || dot == 0 || dot + 1 == path.size())
      return fail(what + ": expected \"node_id.input\" (e.g. \"3.seed\") or \"none\"");
    std::string id = path.substr(0, dot), input = path.substr(dot + 1);
    std::string problem = check_target(p, id, input);
    if (!problem.empty()) return fail(what + ": " + problem, nodes_.count(id) ? id : "");
    set_binding(p, id, input);
    return true;
  }

  bool bind_image() {
    if (explicit_given(Param::Image)) {
      if (!apply_override(Param::Image)) return false;
      if (!wf_->bindings_[0].bound()) return fail("the image binding cannot be \"none\": the stream needs an input image");
      return true;
    }
    std::vector<std::string> c = ids_of_class("LoadImage");
    if (c.empty()) c = ids_of_class("LoadImageOutput");
    if (c.empty())
      return fail("no image input node: add a LoadImage node (or bind the image explicitly as node_id.input)");
    if (c.size() > 1)
      return fail("ambiguous image input: " + std::to_string(c.size()) + " image input nodes (" + list_nodes(c) +
                  "); choose one with an explicit image binding, e.g. \"" + c[0] + ".image\"");
    std::string problem = check_target(Param::Image, c[0], "image");
    if (!problem.empty()) return fail(problem, c[0]);
    set_binding(Param::Image, c[0], "image");
    return true;
  }

  // Follows a sampler's positive/negative link back to a CLIPTextEncode's "text".
  void bind_conditioning(Param p, const std::string &sampler, const char *input) {
    JsonNode *v = json_object_get_member(nodes_.at(sampler).inputs, input);
    if (!v || !is_link_shaped(v)) {
      set_unbound(p, node_label(sampler) + " input " + quoted(input) + " is not a link");
      return;
    }
    std::set<std::string> seen;
    for (int hop = 0; hop < kMaxConditioningHops; hop++) {
      JsonArray *link = json_node_get_array(v);  // shape checked by check_links()
      std::string id = json_node_get_string(json_array_get_element(link, 0));
      gint64 out_index = json_node_get_int(json_array_get_element(link, 1));
      if (!seen.insert(id).second) break;  // cycle
      const NodeInfo &n = nodes_.at(id);
      if (n.cls == "CLIPTextEncode") {
        std::string problem = check_target(p, id, "text");
        if (!problem.empty()) {
          set_unbound(p, problem + "; bind it explicitly");
          return;
        }
        set_binding(p, id, "text");
        return;
      }
      // Pass-through nodes: one "conditioning" input (ControlNetApply, ConditioningSetArea, ...), or
      // positive/negative in, positive/negative out (ControlNetApplyAdvanced, InpaintModelConditioning).
      JsonNode *next = json_object_get_member(n.inputs, "conditioning");
      if (!next && (out_index == 0 || out_index == 1))
        next = json_object_get_member(n.inputs, out_index == 0 ? "positive" : "negative");
      if (!next || !is_link_shaped(next)) {
        set_unbound(p, "cannot follow " + std::string(input) + " conditioning through " + node_label(id) +
                           "; bind it explicitly as node_id.input");
        return;
      }
      v = next;
    }
    set_unbound(p, std::string("cannot trace ") + input + " conditioning to a CLIPTextEncode; bind it explicitly");
  }

  void bind_sampler_input(Param p, const std::string &sampler, const char *input) {
    std::string problem = check_target(p, sampler, input);
    if (!problem.empty())
      set_unbound(p, problem + "; bind it explicitly");
    else
      set_binding(p, sampler, input);
  }

  bool bind_sampler_params() {
    for (Param p : kSamplerParams)
      if (explicit_given(p) && !apply_override(p)) return false;

    std::vector<std::string> samplers = ids_of(kSamplerClasses);
    std::vector<std::string> missing;
    for (Param p : kSamplerParams)
      if (!explicit_given(p)) missing.push_back(param_name(p));
    if (missing.empty()) return true;

    if (samplers.empty()) {
      for (Param p : kSamplerParams)
        if (!explicit_given(p)) set_unbound(p, "no KSampler or KSamplerAdvanced node");
      return true;
    }
    if (samplers.size() > 1)
      return fail("ambiguous sampler: " + std::to_string(samplers.size()) + " sampler nodes (" + list_nodes(samplers) +
                  "); bind " + join(missing, ", ") + " explicitly as node_id.input (or \"none\")");

    const std::string &s = samplers[0];
    bool advanced = nodes_.at(s).cls == "KSamplerAdvanced";
    for (Param p : kSamplerParams) {
      if (explicit_given(p)) continue;
      switch (p) {
        case Param::Prompt: bind_conditioning(p, s, "positive"); break;
        case Param::NegativePrompt: bind_conditioning(p, s, "negative"); break;
        case Param::Seed: bind_sampler_input(p, s, advanced ? "noise_seed" : "seed"); break;
        case Param::Denoise:
          if (advanced)
            set_unbound(p, node_label(s) + " has no denoise (it uses start_at_step/end_at_step)");
          else
            bind_sampler_input(p, s, "denoise");
          break;
        case Param::Steps: bind_sampler_input(p, s, "steps"); break;
        case Param::Cfg: bind_sampler_input(p, s, "cfg"); break;
        default: break;
      }
    }
    // Positive and negative traced to the same text node: setting one would overwrite the other.
    const Binding &pos = wf_->bindings_[static_cast<int>(Param::Prompt)];
    const Binding &neg = wf_->bindings_[static_cast<int>(Param::NegativePrompt)];
    if (!explicit_given(Param::NegativePrompt) && pos.bound() && neg.bound() && pos.path() == neg.path())
      set_unbound(Param::NegativePrompt, "positive and negative use the same text node " + quoted(pos.node_id) +
                                             "; bind it explicitly");
    return true;
  }

  bool check_distinct() {
    for (int a = 0; a < kParamCount; a++)
      for (int b = a + 1; b < kParamCount; b++) {
        const Binding &x = wf_->bindings_[a], &y = wf_->bindings_[b];
        if (x.bound() && y.bound() && x.path() == y.path())
          return fail(std::string(param_name(static_cast<Param>(a))) + " and " + param_name(static_cast<Param>(b)) +
                          " are both bound to " + x.path(),
                      x.node_id);
      }
    return true;
  }

  Workflow *wf_;
  const BindingOverrides &ov_;
  Error *error_;
  JsonObject *graph_ = nullptr;
  std::map<std::string, NodeInfo> nodes_;
};

std::unique_ptr<Workflow> Workflow::load_string(const std::string &json, const BindingOverrides &overrides,
                                                Error *error, const std::string &origin) {
  std::unique_ptr<Workflow> wf(new Workflow());
  wf->origin_ = origin;
  WorkflowLoader loader(wf.get(), overrides, error);
  if (!loader.run(json)) return nullptr;
  if (error) *error = Error();
  return wf;
}

std::unique_ptr<Workflow> Workflow::load_file(const std::string &path, const BindingOverrides &overrides,
                                              Error *error) {
  auto fail = [&](const std::string &problem) {
    if (error) *error = Error(ErrorKind::InvalidWorkflow, path + ": " + problem);
    return nullptr;
  };
  if (path.empty()) return fail("no workflow file given");
  GStatBuf st;
  if (g_stat(path.c_str(), &st) != 0) return fail(std::string("cannot read workflow file: ") + g_strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail("cannot read workflow file: not a regular file");
  if (static_cast<guint64>(st.st_size) > kMaxFileSize)
    return fail("workflow file is too large (" + std::to_string(st.st_size) + " bytes)");
  gchar *data = nullptr;
  gsize len = 0;
  GError *gerr = nullptr;
  if (!g_file_get_contents(path.c_str(), &data, &len, &gerr)) {
    std::string msg = gerr ? gerr->message : "unknown error";
    g_clear_error(&gerr);
    return fail("cannot read workflow file: " + msg);
  }
  std::string text(data, len);
  g_free(data);
  return load_string(text, overrides, error, path);
}

Workflow::~Workflow() {
  if (graph_) json_node_unref(graph_);
}

JsonNode *Workflow::build(const JobParams &params) const {
  JsonNode *copy = deep_copy(graph_);
  JsonObject *root = json_node_get_object(copy);
  auto inputs_of = [&](const Binding &b) -> JsonObject * {
    JsonObject *node = json_object_get_object_member(root, b.node_id.c_str());
    return json_object_get_object_member(node, "inputs");
  };
  auto set_string = [&](Param p, const std::string &v) {
    const Binding &b = binding(p);
    if (b.bound()) json_object_set_string_member(inputs_of(b), b.input.c_str(), clean_string(v).c_str());
  };
  auto set_int = [&](Param p, int64_t v) {
    const Binding &b = binding(p);
    if (b.bound()) json_object_set_int_member(inputs_of(b), b.input.c_str(), v);
  };
  auto set_double = [&](Param p, double v) {
    const Binding &b = binding(p);
    if (b.bound() && std::isfinite(v)) json_object_set_double_member(inputs_of(b), b.input.c_str(), v);
  };
  if (!params.image.empty()) set_string(Param::Image, params.image);
  if (params.prompt) set_string(Param::Prompt, *params.prompt);
  if (params.negative_prompt) set_string(Param::NegativePrompt, *params.negative_prompt);
  if (params.seed) set_int(Param::Seed, *params.seed);
  if (params.denoise) set_double(Param::Denoise, *params.denoise);
  if (params.steps) set_int(Param::Steps, *params.steps);
  if (params.cfg) set_double(Param::Cfg, *params.cfg);
  return copy;
}

const Binding &Workflow::binding(Param p) const {
  static const Binding kNone;
  int i = static_cast<int>(p);
  if (i < 0 || i >= kParamCount) return kNone;
  return bindings_[i];
}

const std::string &Workflow::unbound_reason(Param p) const {
  static const std::string kEmpty;
  int i = static_cast<int>(p);
  if (i < 0 || i >= kParamCount) return kEmpty;
  return unbound_reasons_[i];
}

std::string Workflow::node_class(const std::string &node_id) const {
  if (!graph_ || !JSON_NODE_HOLDS_OBJECT(graph_)) return "";
  JsonObject *root = json_node_get_object(graph_);
  JsonNode *n = json_object_get_member(root, node_id.c_str());
  if (!n || !JSON_NODE_HOLDS_OBJECT(n)) return "";
  JsonNode *cls = json_object_get_member(json_node_get_object(n), "class_type");
  return holds_string(cls) ? json_node_get_string(cls) : "";
}

std::string Workflow::describe() const {
  std::string out;
  for (int i = 0; i < kParamCount; i++) {
    Param p = static_cast<Param>(i);
    const Binding &b = bindings_[i];
    if (i) out += "\n";
    out += std::string(param_name(p)) + " -> ";
    if (b.bound())
      out += b.path() + " (" + node_class(b.node_id) + ")";
    else
      out += "not bound" + (unbound_reasons_[i].empty() ? std::string() : " (" + unbound_reasons_[i] + ")");
  }
  return out;
}

}  // namespace dw::comfy
