// Helpers of comfykeyframesrc that need no GStreamer: the `bindings` property parser, the generated
// first input of a loop started without a seed image, the settings a workflow cannot take, and the
// client JobSpec for a job the scheduler planned.
#pragma once

#include <cstdint>
#include <string>

#include "comfy/client.h"
#include "comfy/scheduler.h"
#include "comfy/workflow.h"
#include "image/image.h"

namespace dw::comfy {

// "prompt=6.text,seed=3.seed" (',' or ';' separated, spaces ignored) into *out. False with *error
// naming the bad item or parameter.
bool parse_bindings(const std::string &text, BindingOverrides *out, std::string *error);

// A grey-blue gradient with seeded noise: the first job's input when no seed-image is given. It is
// sent with denoise 1.0, which turns an img2img workflow into a txt2img one. Same seed, same image.
dw::Image make_bootstrap_image(int width, int height, uint64_t seed);

// "denoise: <why>; cfg: <why>" for the settings in use (prompt, negative prompt, seed, denoise, and
// steps / cfg when set) the workflow has no input for; "" when it takes them all.
std::string unbound_settings(const Workflow &workflow, bool steps_set, bool cfg_set);

// The client's JobSpec for `plan` on `workflow` (which must outlive the job): `base` carries the
// settings that are not per job (negative prompt, steps, cfg); the plan's prompt, seed, denoise and
// input (a server-side value, or bytes to upload) are filled in.
JobSpec make_job_spec(JobPlan plan, const Workflow *workflow, JobParams base);

}  // namespace dw::comfy
