// Latent backend: a dw::latent::Codec (taesd / torchscript / blend) as a PairInterpolator. Each
// keyframe is encoded once (a stream's b is the next pair's a: its latent is reused), the
// in-betweens are slerped in latent space and decoded in batches (Codec::interpolate).
//
// Residual carry (on by default; plan.h's make_residual/add_residuals): a VAE round trip is softer
// than the keyframe (TAEF2 ~31 dB), so plain decodes next to an original keyframe make it pop. With
//   frame_t = D(slerp(zA, zB, t)) + (1 - t)(A - D(zA)) + t(B - D(zB))   (clamped to 0..255)
// the in-betweens converge to the originals at t -> 0 and t -> 1. Costs one extra decode per
// keyframe (D(zA), cached with its latent). The keyframes themselves are never produced here: the
// element pushes the originals, bit-exact.
//
// Motion-compensated residual carry (on by default in OpenCV builds, flow_available()): on motion
// the in-place residuals put the keyframes' detail where it was in A and B, not where it is at t
// (ghosted detail, a pop on zoom/rotate). With it, the pair's bidirectional optical flow is computed
// once per pair (flow.h PairWarper) and both residuals are warped to t and blended with the flow
// backend's occlusion-aware weights before being added. Without OpenCV, for frames under 32 px and
// for lossless codecs (blend: zero residuals): in-place residuals.
//
// Motion-compensated latents (on by default in OpenCV builds, for codecs with a latent space): warped residuals alone still sit on D(slerp(zA, zB, t)), a latent crossfade of two
// poses that changes fastest near the keyframes (a pop on zoom+rotate). Moving the latents
// themselves does not work (a TAESD latent cell is an 8x8 patch: resampling it at sub-cell offsets
// decodes to a mix of neighbours, i.e. a crossfade again). So the latent morph is made where the
// geometry is fixed, and the motion is done in pixels by the flow backend's warp:
//   B_A = B moved into A's geometry (PairWarper::aligned_b), A_B likewise
//   M_A(t) = D(slerp(zA, E(B_A), t)) + (1 - t)(A - D(zA)) + t(B_A - D(E(B_A)))   (A's geometry)
//   M_B(t) = D(slerp(E(A_B), zB, t)) + ...                                       (B's geometry)
//   frame_t = M_A(t) and M_B(t) warped to t and blended (PairWarper::warp_images)
// On pure motion B_A ~ A, so the in-between is the flow backend's. On a morph the flow is noise and
// it would be a blend of two differently distorted morphs, so a pair whose flow does not explain
// its change (plan.h pair_is_motion) keeps the in-place carry. Costs two extra encodes and keyframe
// decodes per motion pair and two decodes per in-between.
//
// Not thread-safe: one caller (the element's worker); set_residual_carry() may be called from any
// thread and takes effect at the next frames().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"
#include "interp/flow.h"
#include "interp/interpolator.h"
#include "latent/codec.h"

namespace dw::interp {

struct LatentPairConfig {
  bool residual_carry = true;
  int batch_size = 4;  // in-betweens decoded per batch (1..64)
  // Warp the residuals along the pair's optical flow (ignored, i.e. in place, without OpenCV).
  bool motion_compensated_residuals = true;
  FlowPreset residual_flow_preset = FlowPreset::Fast;
  // Morph in each keyframe's geometry and warp (above; needs OpenCV and a codec with a latent
  // space: blend stays a crossfade). Takes precedence over motion_compensated_residuals.
  bool motion_compensated_latents = true;
};

struct LatentPairStats {
  uint64_t pairs = 0;
  uint64_t encodes = 0;            // keyframes encoded
  uint64_t reused = 0;             // pairs whose a was the previous pair's b (no encode)
  uint64_t keyframe_decodes = 0;   // D(z) of keyframes for their residuals
  uint64_t frames = 0;
  uint64_t flows = 0;              // pairs whose flow was computed for motion-compensated residuals
  uint64_t aligned_pairs = 0;      // pairs morphed in each keyframe's geometry (motion-compensated latents)
  uint64_t morph_pairs = 0;        // pairs whose flow did not explain the change: carried in place
};

class LatentPairInterpolator final : public PairInterpolator {
 public:
  // codec: from dw::latent::ModelRegistry::acquire (shared with cachetap; every call goes through
  // its lock). Throws Error for a null codec or a batch size outside 1..64.
  explicit LatentPairInterpolator(std::shared_ptr<latent::SharedCodec> codec, LatentPairConfig config = {});
  ~LatentPairInterpolator() override;
  std::string describe() const override;
  // Encodes b (and a unless it is the previous b); with residual carry also decodes both latents.
  // Throws Error (codec failures included, with their message).
  void set_pair(const Image &a, const Image &b) override;
  std::vector<Image> frames(const std::vector<double> &ts) override;
  void reset() override;
  void set_residual_carry(bool on) { carry_.store(on); }
  bool residual_carry() const { return carry_.load(); }
  // Off: residuals added in place. Takes effect at the next frames(); on needs flow_available().
  void set_motion_compensated_residuals(bool on) { mc_.store(on); }
  // True when on and this build has optical flow.
  bool motion_compensated_residuals() const { return mc_.load() && flow_available(); }
  // Off: D(slerp(zA, zB, t)) plus the warped residuals. Takes effect at the next frames().
  void set_motion_compensated_latents(bool on) { mcl_.store(on); }
  // True when on, this build has optical flow and the codec has a latent space.
  bool motion_compensated_latents() const;
  LatentPairStats stats() const { return stats_; }
  // plan.h unexplained_change of the current pair (0 until motion compensation decided on it).
  double last_unexplained_change() const { return last_unexplained_; }

 private:
  struct Key;
  std::shared_ptr<Key> make_key(const Image &img);
  void ensure_residual(Key &k);
  void ensure_flow();
  bool warp_residuals_now() const;
  bool align_now() const;
  void ensure_aligned();
  std::vector<Image> morph(const Key &from, const Key &to, const std::vector<double> &ts, bool residuals_in_place);
  std::shared_ptr<latent::SharedCodec> codec_;
  LatentPairConfig config_;
  std::atomic<bool> carry_;
  std::atomic<bool> mc_;
  std::atomic<bool> mcl_;
  std::unique_ptr<PairWarper> warper_;  // created on first use
  bool flow_ready_ = false;              // warper_ holds the current pair's flows
  std::shared_ptr<Key> a_, b_;
  std::shared_ptr<Key> a_in_b_, b_in_a_;  // aligned keyframes (motion-compensated latents), per pair
  bool aligned_decided_ = false;          // this pair's motion/morph decision is made
  double last_unexplained_ = 0;           // its plan.h unexplained_change
  LatentPairStats stats_;
};

}  // namespace dw::interp
