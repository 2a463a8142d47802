// Optical-flow pair interpolation (issue 10, backend=flow): dense DIS optical flow (OpenCV
// cv::DISOpticalFlow) between the two keyframes, computed once per pair in both directions; each
// in-between is A and B backward-warped to t and blended (1 - t, t), except where the
// forward-backward consistency check says a pixel is being covered or uncovered: there the keyframe
// that sees it wins (plan.h: occlusion_from_consistency, occlusion_blend). No weights, CPU only.
//
// This header is OpenCV-free; the backend exists only in builds with OpenCV (meson option
// `opencv`); flow_available() says so and create_flow_interpolator() throws Error otherwise.
#pragma once

#include <memory>
#include <string>

#include "interp/interpolator.h"
#include "interp/plan.h"

namespace dw::interp {

enum class FlowPreset {
  Ultrafast,  // DIS ultrafast on a half-size grey image (finest scale 1 there): for large frames on slow CPUs
  Fast,       // DIS fast at full size, variational refinement
  Medium,     // DIS medium (finest scale 1, dense patches): best quality, ~3x slower than fast
};
const char *flow_preset_name(FlowPreset preset);

struct FlowConfig {
  FlowPreset preset = FlowPreset::Fast;
  // OpenCV worker threads (cv::setNumThreads is process-wide; 0 = leave OpenCV's default).
  int threads = 2;
  // Forward-backward occlusion handling; off = plain bidirectional warp and blend.
  bool occlusion = true;
};

bool flow_available();
// Throws Error when this build has no OpenCV.
std::unique_ptr<PairInterpolator> create_flow_interpolator(const FlowConfig &config);

// The flow backend's motion model applied to other per-pixel data of the keyframes: motion-
// compensated residual carry (latent_pair.h) moves each keyframe's VAE residual to where its
// detail is at t, instead of leaving it where it was in A / B. set_pair computes both flows once
// per pair (the previous b's grey copy is reused); warp_residuals backward-warps A's and B's
// residuals to t with the maps the flow backend's in-betweens use and blends them with the same
// occlusion-aware weights (wa + wb = 1 per pixel; (1 - t, t) where nothing is occluded).
class PairWarper {
 public:
  virtual ~PairWarper() = default;
  // Throws Error on empty or differently sized keyframes.
  virtual void set_pair(const Image &a, const Image &b) = 0;
  // ra, rb: A's and B's residuals, of the pair's size (else Error); 0 <= t <= 1.
  virtual Residual warp_residuals(const Residual &ra, const Residual &rb, double t) = 0;
  virtual void reset() = 0;
};
// Throws Error when this build has no OpenCV.
std::unique_ptr<PairWarper> create_pair_warper(const FlowConfig &config);

}  // namespace dw::interp
