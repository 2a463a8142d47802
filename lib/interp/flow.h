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
#include <vector>

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

// Where each pixel of an in-between comes from in its two keyframes (PairWarper::motion_field):
// absolute sample positions in pixels (x, y interleaved; pixel centres at integers) into A and into
// B, and A's blend weight per pixel (B's is 1 - it; (1 - t, t) where nothing is occluded).
struct MotionField {
  int width = 0, height = 0;
  std::vector<float> from_a, from_b;  // width * height * 2
  std::vector<float> weight_a;        // width * height
  // True when it is a complete field for a width x height image.
  bool fits(int w, int h) const;
};

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
  // Where each pixel of the in-between at t (clamped to 0..1) comes from in A and B, and A's
  // occlusion-aware weight: the maps the flow backend's in-betweens use, for warp_images and
  // warp_residuals.
  virtual MotionField motion_field(double t) = 0;
  // ra, rb: A's and B's residuals, of the pair's size (else Error), moved along `field` (of the
  // pair's size, else Error) and blended with its weights.
  virtual Residual warp_residuals(const Residual &ra, const Residual &rb, const MotionField &field) = 0;
  // The same at t (motion_field(t) made here).
  Residual warp_residuals(const Residual &ra, const Residual &rb, double t) {
    return warp_residuals(ra, rb, motion_field(t));
  }
  // A's pixels moved to where they are in B (A sampled along the flow B -> A), with B's own pixels
  // where they are being uncovered (nothing in A matches them) unless raw; aligned_b() the other way
  // round. Motion-compensated latent interpolation (latent_pair.h) morphs A into aligned_b() in A's
  // geometry; the raw ones measure how much of the change the flow explains (plan.h).
  virtual Image aligned_a(bool raw = false) const = 0;
  virtual Image aligned_b(bool raw = false) const = 0;
  // in_a (an image in A's geometry) and in_b (in B's) moved to t along `field` and blended with its
  // weights, exactly like the flow backend's in-betweens; all of the pair's size, else Error.
  virtual Image warp_images(const Image &in_a, const Image &in_b, const MotionField &field) const = 0;
  virtual void reset() = 0;
};
// Throws Error when this build has no OpenCV.
std::unique_ptr<PairWarper> create_pair_warper(const FlowConfig &config);

}  // namespace dw::interp
