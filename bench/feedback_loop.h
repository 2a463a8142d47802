// The sequential baseline of the benchmarks: a ComfyUI feedback loop driven one job at a time with
// the same client and workflow the element uses (job N+1 is only queued after job N returned and
// the caller finished its own work on it).
#pragma once

#include <glib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "comfy/client.h"
#include "comfy/workflow.h"
#include "image/image.h"

namespace dw_bench {

class SequentialLoop {
 public:
  // Owns a GMainContext pushed as this thread's default for its lifetime (libsoup's rule).
  SequentialLoop(const std::string &server_url, const std::string &workflow_path, int seed_size,
                 const char *upload_name)
      : context_(g_main_context_new()), upload_name_(upload_name) {
    g_main_context_push_thread_default(context_);
    dw::comfy::Error error;
    workflow_ = dw::comfy::Workflow::load_file(workflow_path, {}, &error);
    if (!workflow_) {
      fprintf(stderr, "%s\n", error.describe().c_str());
      exit(1);
    }
    dw::comfy::ClientConfig config;
    config.server_url = server_url;
    client_ = std::make_unique<dw::comfy::Client>(config, context_);
    client_->start();
    dw::Image seed(seed_size, seed_size, 3);
    std::fill(seed.pixels.begin(), seed.pixels.end(), 128);
    seed_png_ = dw::encode_png(seed, 1);
  }
  ~SequentialLoop() {
    client_.reset();
    while (g_main_context_iteration(context_, FALSE)) {
    }
    g_main_context_pop_thread_default(context_);
    g_main_context_unref(context_);
  }

  // Runs one job from the previous output (the grey seed the first time) and waits for it; the
  // decoded image comes back, the loop continues from the server's copy of it.
  dw::Image next(int64_t seed) {
    dw::comfy::JobSpec spec;
    if (input_value_.empty()) {
      spec.upload_png = seed_png_;
      spec.upload_name = upload_name_;
    } else {
      spec.input_value = input_value_;
    }
    const dw::comfy::Workflow *wf = workflow_.get();
    spec.build_prompt = [wf, seed](const std::string &image) {
      dw::comfy::JobParams params;
      params.image = image;
      params.seed = seed;
      return wf->build(params);
    };
    bool done = false;
    dw::comfy::JobResult result;
    dw::comfy::JobCallbacks callbacks;
    callbacks.on_done = [&](dw::comfy::JobResult &&r) {
      result = std::move(r);
      done = true;
    };
    callbacks.on_error = [&](const dw::comfy::Error &e) {
      fprintf(stderr, "job failed: %s\n", e.describe().c_str());
      exit(1);
    };
    client_->submit(std::move(spec), std::move(callbacks));
    while (!done) g_main_context_iteration(context_, TRUE);
    dw::Image image;
    std::string png_error;
    if (!dw::decode_png(result.image.data(), result.image.size(), image, &png_error)) {
      fprintf(stderr, "result PNG: %s\n", png_error.c_str());
      exit(1);
    }
    input_value_ = result.ref.load_image_value();
    return image;
  }

 private:
  GMainContext *context_;
  std::string upload_name_;
  std::unique_ptr<dw::comfy::Workflow> workflow_;
  std::unique_ptr<dw::comfy::Client> client_;
  std::vector<uint8_t> seed_png_;
  std::string input_value_;
};

}  // namespace dw_bench
