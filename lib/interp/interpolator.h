// dw::interp: making the frames between two keyframes. GStreamer-free and LibTorch-free in this
// header (contract 5 of the team brief; the names below are relied on by vaeinterp and by the VFI
// and latent-pair backends).
//
// Backends implementing PairInterpolator:
//   flow        lib/interp/flow.h       OpenCV DIS optical flow, both directions, occlusion-aware
//                                       backward warping (no weights; CPU)
//   vfi         lib/interp/vfi.h        a learned frame-interpolation TorchScript model (RIFE/FILM
//                                       convention; midpoint-only models via bisection_schedule())
//   latent      lib/interp/latent_pair.h  a dw::latent::Codec (taesd/torchscript/blend): slerp in
//                                       latent space, with residual carry (plan.h) so keyframes
//                                       and their neighbours do not differ in sharpness
// The decisions (how many in-betweens, their t and timestamps, bisection order, residual weights,
// occlusion weights) are plain functions in lib/interp/plan.h with unit tests.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "image/image.h"

namespace dw::interp {

// Every failure of a backend (model file, wrong image size, library error) is thrown as this (or
// a std::exception subclass); callers in gst/ catch std::exception.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class PairInterpolator {
 public:
  virtual ~PairInterpolator() = default;
  virtual std::string describe() const = 0;
  // Once per keyframe pair (a = previous keyframe, b = new one, same size, RGB). Implementations
  // may reuse work from the previous pair (b of the last call == a of this one).
  virtual void set_pair(const Image &a, const Image &b) = 0;
  // In-betweens at ts (each 0 < t < 1), in the order given; may batch internally.
  virtual std::vector<Image> frames(const std::vector<double> &ts) = 0;
  // Optional: drop cached state (flush / discontinuity).
  virtual void reset() {}
};

}  // namespace dw::interp
