// Latent backend with residual carry (see latent_pair.h). Needs only codec.h: builds without LibTorch
// (then only the blend codec exists).
#include "interp/latent_pair.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "interp/plan.h"

namespace dw::interp {

struct LatentPairInterpolator::Key {
  Image image;  // the keyframe, RGB (to recognise it as the next pair's a, and for its residual)
  std::shared_ptr<const latent::Latent> latent;
  Residual residual;  // image - D(latent); empty until needed
  bool residual_zero = true;  // lossless codec (blend): nothing to carry, so nothing to warp
};

namespace {

// Runs fn(codec) under the shared codec's lock, turning its errors into ours.
template <typename Fn>
auto with_codec(latent::SharedCodec &codec, const char *what, Fn &&fn) {
  try {
    return codec.with(std::forward<Fn>(fn));
  } catch (const latent::Error &e) {
    throw Error(std::string(what) + ": " + e.what());
  }
}

bool same_image(const Image &x, const Image &y) {
  return x.width == y.width && x.height == y.height && x.channels == y.channels && x.pixels == y.pixels;
}

}  // namespace

LatentPairInterpolator::LatentPairInterpolator(std::shared_ptr<latent::SharedCodec> codec, LatentPairConfig config)
    : codec_(std::move(codec)),
      config_(config),
      carry_(config.residual_carry),
      mc_(config.motion_compensated_residuals),
      mcl_(config.motion_compensated_latents) {
  if (!codec_) throw Error("latent interpolator: no codec");
  if (config_.batch_size < 1 || config_.batch_size > 64)
    throw Error("latent interpolator: batch size must be in [1, 64], got " + std::to_string(config_.batch_size));
}

LatentPairInterpolator::~LatentPairInterpolator() = default;

std::string LatentPairInterpolator::describe() const {
  if (!carry_.load()) return "latent " + codec_->codec().describe() + ", no residual carry";
  return "latent " + codec_->codec().describe() +
         (motion_compensated_latents()     ? ", latents and residual carry motion-compensated"
          : motion_compensated_residuals() ? ", residual carry (motion-compensated)"
                                           : ", residual carry");
}

bool LatentPairInterpolator::motion_compensated_latents() const {
  return mcl_.load() && flow_available() && codec_->codec().has_model();
}

std::shared_ptr<LatentPairInterpolator::Key> LatentPairInterpolator::make_key(const Image &img) {
  if (img.empty() || (img.channels != 3 && img.channels != 4))
    throw Error("latent interpolator: keyframe must be a non-empty RGB or RGBA image");
  auto k = std::make_shared<Key>();
  k->image = img.channels == 3 ? img : convert_channels(img, 3);
  k->latent = with_codec(*codec_, "encoding a keyframe", [&](latent::Codec &c) { return c.encode(k->image); });
  stats_.encodes++;
  return k;
}

void LatentPairInterpolator::ensure_residual(Key &k) {
  if (!k.residual.empty()) return;
  Image decoded = with_codec(*codec_, "decoding a keyframe", [&](latent::Codec &c) { return c.decode(*k.latent); });
  stats_.keyframe_decodes++;
  if (decoded.width != k.image.width || decoded.height != k.image.height)
    decoded = resize_bilinear(decoded, k.image.width, k.image.height);
  k.residual = make_residual(k.image, decoded);
  k.residual_zero = std::all_of(k.residual.data.begin(), k.residual.data.end(), [](int16_t v) { return v == 0; });
}

// Warp the residuals only where it can matter and the flow can be computed (DIS needs a few
// pyramid levels: tiny frames keep the in-place carry).
bool LatentPairInterpolator::warp_residuals_now() const {
  constexpr int kMinFlowSize = 32;
  return carry_.load() && motion_compensated_residuals() && a_ && b_ && !(a_->residual_zero && b_->residual_zero) &&
         a_->image.width >= kMinFlowSize && a_->image.height >= kMinFlowSize;
}

void LatentPairInterpolator::ensure_flow() {
  if (flow_ready_) return;
  if (!warper_) {
    FlowConfig fc;
    fc.preset = config_.residual_flow_preset;
    fc.threads = 0;  // cv::setNumThreads is process-wide: leave it to whoever owns it
    warper_ = create_pair_warper(fc);
  }
  try {
    warper_->set_pair(a_->image, b_->image);
  } catch (const Error &) {
    throw;
  } catch (const std::exception &e) {  // OpenCV's own exceptions
    throw Error(std::string("motion-compensated residuals: ") + e.what());
  }
  flow_ready_ = true;
  stats_.flows++;
}

bool LatentPairInterpolator::align_now() const {
  constexpr int kMinFlowSize = 32;
  return motion_compensated_latents() && a_ && b_ && a_->image.width >= kMinFlowSize &&
         a_->image.height >= kMinFlowSize;
}

// Decides once per pair whether its flow explains the change (plan.h pair_is_motion); if so, encodes
// the aligned keyframes. A morph pair keeps the in-place carry: its flow is noise, and warping along
// it would blend two differently distorted morphs (measured: mid-pair sharpness 0.51 vs 0.81).
void LatentPairInterpolator::ensure_aligned() {
  if (aligned_decided_) return;
  ensure_flow();
  const Image &a = a_->image, &b = b_->image;
  last_unexplained_ = 0.5 * (unexplained_change(a, b, warper_->aligned_b(true)) +
                             unexplained_change(b, a, warper_->aligned_a(true)));
  aligned_decided_ = true;
  if (!pair_is_motion(last_unexplained_)) {
    stats_.morph_pairs++;
    return;
  }
  std::shared_ptr<Key> ka = make_key(warper_->aligned_a()), kb = make_key(warper_->aligned_b());
  if (carry_.load()) {
    ensure_residual(*ka);
    ensure_residual(*kb);
  }
  a_in_b_ = std::move(ka);
  b_in_a_ = std::move(kb);
  stats_.aligned_pairs++;
}

void LatentPairInterpolator::set_pair(const Image &a, const Image &b) {
  if (a.width != b.width || a.height != b.height)
    throw Error("latent interpolator: keyframes differ in size (" + std::to_string(a.width) + "x" +
                std::to_string(a.height) + " vs " + std::to_string(b.width) + "x" + std::to_string(b.height) + ")");
  // Built aside and committed at the end: a failure leaves the previous pair intact.
  std::shared_ptr<Key> ka;
  const bool reuse =
      b_ && (same_image(b_->image, a) || (a.channels == 4 && same_image(b_->image, convert_channels(a, 3))));
  ka = reuse ? b_ : make_key(a);
  std::shared_ptr<Key> kb = make_key(b);
  if (carry_.load()) {
    ensure_residual(*ka);
    ensure_residual(*kb);
  }
  a_ = std::move(ka);
  b_ = std::move(kb);
  a_in_b_.reset();
  b_in_a_.reset();
  aligned_decided_ = false;
  last_unexplained_ = 0;
  flow_ready_ = false;
  stats_.pairs++;
  if (reuse) stats_.reused++;
  // Here rather than at the first frames(): the element times set_pair as the pair's setup.
  if (align_now()) ensure_aligned();
  else if (warp_residuals_now()) ensure_flow();
}

// D(slerp(from, to, t)) at the keyframes' size, plus their residuals in place if asked (right when
// both share one geometry, as the aligned pairs do).
std::vector<Image> LatentPairInterpolator::morph(const Key &from, const Key &to, const std::vector<double> &ts,
                                                 bool residuals_in_place) {
  std::vector<Image> out = with_codec(*codec_, "decoding in-betweens", [&](latent::Codec &c) {
    return c.interpolate(*from.latent, *to.latent, ts, config_.batch_size);
  });
  if (out.size() != ts.size())
    throw Error("latent interpolator: codec returned " + std::to_string(out.size()) + " images for " +
                std::to_string(ts.size()) + " positions");
  const int w = from.image.width, h = from.image.height;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].width != w || out[i].height != h) out[i] = resize_bilinear(out[i], w, h);
    if (out[i].channels != 3) out[i] = convert_channels(out[i], 3);
    if (residuals_in_place) add_residuals(out[i], from.residual, to.residual, ts[i]);
  }
  return out;
}

std::vector<Image> LatentPairInterpolator::frames(const std::vector<double> &ts) {
  if (!a_ || !b_) throw Error("latent interpolator: frames() before set_pair()");
  for (double t : ts)
    if (!(t > 0.0 && t < 1.0)) throw Error("latent interpolator: t must be inside (0, 1), got " + std::to_string(t));
  if (ts.empty()) return {};
  const bool carry = carry_.load();
  if (carry) {
    ensure_residual(*a_);
    ensure_residual(*b_);
  }
  std::vector<Image> out;
  if (align_now()) ensure_aligned();
  const bool judged_morph = aligned_decided_ && !a_in_b_;  // its flow is noise: nothing is warped
  if (align_now() && a_in_b_ && b_in_a_) {
    if (carry) {  // carry may have been switched on since the pair was set up
      ensure_residual(*a_in_b_);
      ensure_residual(*b_in_a_);
    }
    const std::vector<Image> in_a = morph(*a_, *b_in_a_, ts, carry), in_b = morph(*a_in_b_, *b_, ts, carry);
    out.reserve(ts.size());
    for (size_t i = 0; i < ts.size(); ++i)
      out.push_back(warper_->warp_images(in_a[i], in_b[i], warper_->motion_field(ts[i])));
  } else if (warp_residuals_now() && !judged_morph) {
    ensure_flow();
    out = morph(*a_, *b_, ts, false);
    for (size_t i = 0; i < out.size(); ++i)
      add_residual(out[i], warper_->warp_residuals(a_->residual, b_->residual, ts[i]));
  } else {
    out = morph(*a_, *b_, ts, carry);
  }
  stats_.frames += out.size();
  return out;
}

void LatentPairInterpolator::reset() {
  a_.reset();
  b_.reset();
  a_in_b_.reset();
  b_in_a_.reset();
  aligned_decided_ = false;
  flow_ready_ = false;
  if (warper_) warper_->reset();
}

}  // namespace dw::interp
