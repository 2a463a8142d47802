// Cheap deterministic image operations the simulator uses in place of real diffusion nodes.
#pragma once

#include <cstdint>

#include "image/image.h"

namespace dw::sim {

// The "dream": a slight zoom-in, a small rotation, a hue drift, a seeded field of interfering colour
// waves mixed in and low-amplitude seeded noise, all scaled by denoise (0..1). Deterministic given (image, seed, denoise); output size = input size,
// output channels = input channels. Fed back into itself it gives a slowly evolving image.
Image dream_transform(const Image &in, uint64_t seed, double denoise);

// A colourful seeded noise image (the simulator's EmptyLatentImage), RGB.
Image noise_image(int width, int height, uint64_t seed);

// Stand-ins for ComfyUI's postprocessing nodes (cheap approximations).
Image invert_image(const Image &in);
Image blur_image(const Image &in, int radius);
Image sharpen_image(const Image &in, int radius, double alpha);
// ImageScale: crop "center" keeps the aspect ratio by cropping first.
Image scale_image(const Image &in, int width, int height, bool crop_center);

}  // namespace dw::sim
