// POST /prompt validation, as execution.py validate_prompt / validate_inputs do it (same error
// types, messages and node_errors shape).

#include "sim/internal.h"

#include <algorithm>

namespace dw::sim {

namespace {

// execution.py validate_inputs over the graph, memoised per node id like its `validated` dict.
struct Validator {
  JsonObject *prompt;
  Simulator::Impl *impl;
  std::map<std::string, ValResult> validated;
  std::vector<std::string> validated_order;
  std::set<std::string> visiting;

  void set(const std::string &id, ValResult r) {
    if (!validated.count(id)) validated_order.push_back(id);
    validated[id] = std::move(r);
  }

  ValResult validate_inputs(const std::string &id) {
    auto it = validated.find(id);
    if (it != validated.end()) return it->second;
    if (visiting.count(id)) throw PyExc{"RecursionError", "maximum recursion depth exceeded"};
    visiting.insert(id);
    struct Guard {
      std::set<std::string> &s;
      std::string id;
      ~Guard() { s.erase(id); }
    } guard{visiting, id};

    JsonObject *node = json_node_get_object(json_object_get_member(prompt, id.c_str()));
    const NodeSpec *spec = find_spec(json_object_get_string_member(node, "class_type"));
    JsonNode *inputs_node = json_object_get_member(node, "inputs");
    if (!inputs_node || !JSON_NODE_HOLDS_OBJECT(inputs_node)) throw PyExc{"KeyError", "'inputs'"};
    JsonObject *inputs = json_node_get_object(inputs_node);
    ValResult res;
    for (const InSpec &in : spec->inputs) {
      const char *x = in.name.c_str();
      std::string cfg = input_config_json(in, in.dynamic_files ? impl->list_input_files() : std::vector<std::string>());
      if (!json_object_has_member(inputs, x)) {
        if (in.required) {
          JW e;
          e.ob().k("input_name").s(in.name).oe();
          res.errors.push_back(err_obj("required_input_missing", "Required input is missing", in.name, e.str()));
        }
        continue;
      }
      JsonNode *val = json_object_get_member(inputs, x);
      if (JSON_NODE_HOLDS_ARRAY(val)) check_link(in, cfg, val, res);
      else if (in.type == "INT" || in.type == "FLOAT") check_number(in, cfg, val, res);
      else if (in.type == "COMBO") check_combo(in, cfg, val, res);
    }
    if (!res.errors.empty()) res.valid = false;
    set(id, res);
    return res;
  }

  // A linked input [node_id, slot]: the link's shape and type, then the linked node, recursively.
  void check_link(const InSpec &in, const std::string &cfg, JsonNode *val, ValResult &res) {
    JsonArray *arr = json_node_get_array(val);
    if (json_array_get_length(arr) != 2) {
      JW e;
      e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val)).oe();
      res.errors.push_back(err_obj("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", in.name, e.str()));
      return;
    }
    JsonNode *oid = json_array_get_element(arr, 0);
    JsonNode *oidx = json_array_get_element(arr, 1);
    if (!is_string(oid)) throw PyExc{"KeyError", py_repr(oid)};
    std::string o_id = json_node_get_string(oid);
    JsonNode *onode = json_object_get_member(prompt, o_id.c_str());
    if (!onode) throw PyExc{"KeyError", "'" + o_id + "'"};
    const NodeSpec *ospec = find_spec(json_object_get_string_member(json_node_get_object(onode), "class_type"));
    if (!is_int(oidx)) throw PyExc{"TypeError", "tuple indices must be integers or slices, not " + std::string(is_string(oidx) ? "str" : "float")};
    int64_t idx = json_node_get_int(oidx);
    const int64_t n = static_cast<int64_t>(ospec->outputs.size());
    if (idx < 0) idx += n;
    if (idx < 0 || idx >= n) throw PyExc{"IndexError", "list index out of range"};
    const std::string &received = ospec->outputs[static_cast<size_t>(idx)];
    if (received != in.type && received != "*" && in.type != "*") {
      JW e;
      e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_type").s(received)
          .k("linked_node").raw(node_to_json(val)).oe();
      res.errors.push_back(err_obj("return_type_mismatch", "Return type mismatch between linked nodes",
                                   in.name + ", received_type(" + received + ") mismatch input_type(" + in.type + ")", e.str()));
      return;
    }
    try {
      ValResult r = validate_inputs(o_id);
      if (!r.valid) res.valid = false;
    } catch (const PyExc &ex) {
      res.valid = false;
      JW e;
      e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("exception_message").s(ex.msg)
          .k("exception_type").s(ex.type).k("traceback").ab()
          .s("  File \"<comfyui>/execution.py\", line 838, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n")
          .ae().k("linked_node").raw(node_to_json(val)).oe();
      ValResult bad;
      bad.valid = false;
      bad.errors.push_back(err_obj("exception_during_inner_validation", "Exception when validating inner node", ex.msg, e.str()));
      set(o_id, bad);
    }
  }

  // INT / FLOAT: Python's int()/float() conversion, then the min/max range.
  void check_number(const InSpec &in, const std::string &cfg, JsonNode *val, ValResult &res) {
    bool isint = in.type == "INT";
    int64_t iv = 0;
    double fv = 0;
    std::string err;
    bool ok = isint ? py_int(val, iv, err) : py_float_conv(val, fv, err);
    if (!ok) {
      JW e;
      e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val))
          .k("exception_message").s(err).oe();
      res.errors.push_back(err_obj("invalid_input_type", "Failed to convert an input value to a " + in.type + " value",
                                   in.name + ", " + py_str(val) + ", " + err, e.str()));
      return;
    }
    std::string vs = isint ? std::to_string(iv) : py_float(fv);
    bool small = isint ? iv < in.imin : fv < in.fmin;
    bool big = isint ? (iv >= 0 && static_cast<uint64_t>(iv) > in.imax) : fv > in.fmax;
    if (!small && !big) return;
    JW e;
    e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(vs).oe();
    if (small)
      res.errors.push_back(err_obj("value_smaller_than_min", "Value " + vs + " smaller than min of " +
                                   (isint ? std::to_string(in.imin) : py_float(in.fmin)), in.name, e.str()));
    else
      res.errors.push_back(err_obj("value_bigger_than_max", "Value " + vs + " bigger than max of " +
                                   (isint ? std::to_string(in.imax) : py_float(in.fmax)), in.name, e.str()));
  }

  // COMBO: LoadImage's file must exist (its VALIDATE_INPUTS); other lists must contain the value.
  void check_combo(const InSpec &in, const std::string &cfg, JsonNode *val, ValResult &res) {
    if (in.dynamic_files) {
      std::string v = py_str(val);
      std::string p = impl->resolve_image_path(v);
      if (p.empty() || !g_file_test(p.c_str(), G_FILE_TEST_IS_REGULAR)) {
        JW e;
        e.ob().k("input_name").s(in.name).oe();
        res.errors.push_back(err_obj("custom_validation_failed", "Custom validation failed for node",
                                     in.name + " - Invalid image file: " + v, e.str()));
      }
      return;
    }
    if (in.lenient) return;
    bool found = is_string(val) && std::find(in.options.begin(), in.options.end(), json_node_get_string(val)) != in.options.end();
    if (found) return;
    JW e;
    e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val)).oe();
    res.errors.push_back(err_obj("value_not_in_list", "Value not in list",
                                 in.name + ": '" + py_str(val) + "' not in " + py_list(in.options), e.str()));
  }
};

}  // namespace

namespace {

// Every node needs a known class_type; the outputs are the output nodes (those listed in
// partial_execution_targets when given). False with the top-level error otherwise.
bool collect_outputs(JsonObject *prompt, const std::vector<std::string> &ids, const std::vector<std::string> *partial,
                     std::vector<std::string> &outputs, std::string &error_json) {
  for (auto &x : ids) {
    JsonNode *n = json_object_get_member(prompt, x.c_str());
    JsonNode *ct = n && JSON_NODE_HOLDS_OBJECT(n) ? json_object_get_member(json_node_get_object(n), "class_type") : nullptr;
    if (!ct) {
      error_json = err_obj("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                           "Node ID '#" + x + "'");
      return false;
    }
    std::string cls = py_str(ct);
    const NodeSpec *spec = is_string(ct) ? find_spec(cls) : nullptr;
    if (!spec) {
      error_json = err_obj("invalid_prompt", "Cannot execute because node " + cls + " does not exist.", "Node ID '#" + x + "'");
      return false;
    }
    if (spec->output_node && (!partial || std::find(partial->begin(), partial->end(), x) != partial->end()))
      outputs.push_back(x);
  }
  if (outputs.empty()) {
    error_json = err_obj("prompt_no_outputs", "Prompt has no outputs", "");
    return false;
  }
  return true;
}

// The node_errors object of a 400: per failing node its errors and the outputs depending on it.
struct NodeErrors {
  struct Entry {
    std::vector<std::string> errors;
    std::vector<std::string> deps;
    std::string cls;
  };
  JsonObject *prompt;
  std::map<std::string, Entry> nodes;
  std::vector<std::string> order;
  std::vector<std::string> output_own_errors;

  std::string cls_of(const std::string &id) const {
    return json_object_get_string_member(json_node_get_object(json_object_get_member(prompt, id.c_str())), "class_type");
  }

  // Output o failed: its own reasons, and every invalid node validated so far, which o depends on.
  void add_failed_output(const std::string &o, const std::vector<std::string> &reasons, Validator &v) {
    if (!reasons.empty()) {
      if (!nodes.count(o)) order.push_back(o);
      nodes[o] = Entry{reasons, {}, cls_of(o)};
      output_own_errors.insert(output_own_errors.end(), reasons.begin(), reasons.end());
    }
    for (auto &nid : v.validated_order) {
      const ValResult &r = v.validated[nid];
      if (r.valid || r.errors.empty()) continue;
      if (!nodes.count(nid)) {
        order.push_back(nid);
        nodes[nid] = Entry{r.errors, {}, cls_of(nid)};
      }
      nodes[nid].deps.push_back(o);
    }
  }

  std::string json() {
    JW ne;
    ne.ob();
    for (auto &id : order) {
      auto &e = nodes[id];
      ne.k(id).ob().k("errors").ab();
      for (auto &x : e.errors) ne.raw(x);
      ne.ae().k("dependent_outputs").ab();
      for (auto &d : e.deps) ne.s(d);
      ne.ae().k("class_type").s(e.cls).oe();
    }
    ne.oe();
    return ne.str();
  }

  // "message: details" of each output's own errors, one per line (the top-level error's details).
  std::string details() const {
    std::string details;
    for (auto &eraw : output_own_errors) {
      JsonNodePtr en(parse_json(eraw.data(), eraw.size(), "error object"));
      if (!en.n) continue;
      JsonObject *eo = json_node_get_object(en.n);
      if (!details.empty()) details += "\n";
      details += std::string(json_object_get_string_member(eo, "message")) + ": " + json_object_get_string_member(eo, "details");
    }
    return details;
  }
};

}  // namespace

bool Simulator::Impl::validate_prompt(JsonNode *prompt_node, const std::vector<std::string> *partial, std::vector<std::string> &good,
                                      std::string &error_json, std::string &node_errors_json) {
  node_errors_json = "{}";
  std::vector<std::string> ids;
  JsonObject *prompt = nullptr;
  if (JSON_NODE_HOLDS_OBJECT(prompt_node)) {
    prompt = json_node_get_object(prompt_node);
    GList *members = json_object_get_members(prompt);
    for (GList *l = members; l; l = l->next) ids.push_back(static_cast<const char *>(l->data));
    g_list_free(members);
  }
  std::vector<std::string> outputs;
  if (!collect_outputs(prompt, ids, partial, outputs, error_json)) return false;
  Validator v{prompt, this, {}, {}, {}};
  NodeErrors errors{prompt, {}, {}, {}};
  for (auto &o : outputs) {
    bool valid = false;
    std::vector<std::string> reasons;
    try {
      ValResult m = v.validate_inputs(o);
      valid = m.valid;
      reasons = m.errors;
    } catch (const PyExc &ex) {
      JW e;
      e.ob().k("exception_type").s(ex.type).k("traceback").ab()
          .s("  File \"<comfyui>/execution.py\", line 907, in validate_prompt\n    m = await validate_inputs(prompt_id, prompt, o, validated)\n")
          .ae().oe();
      reasons = {err_obj("exception_during_validation", "Exception when validating node", ex.msg, e.str())};
      ValResult bad;
      bad.valid = false;
      bad.errors = reasons;
      v.set(o, bad);
    }
    if (valid) good.push_back(o);
    else errors.add_failed_output(o, reasons, v);
  }
  node_errors_json = errors.json();
  if (good.empty()) {
    error_json = err_obj("prompt_outputs_failed_validation", "Prompt outputs failed validation", errors.details());
    return false;
  }
  return true;
}

}  // namespace dw::sim
