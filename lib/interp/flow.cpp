// Optical-flow pair interpolation with OpenCV DIS (see flow.h).
#include "interp/flow.h"

#include "interp/plan.h"

#ifdef DW_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/video/tracking.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dw::interp {

const char *flow_preset_name(FlowPreset preset) {
  switch (preset) {
    case FlowPreset::Ultrafast: return "ultrafast";
    case FlowPreset::Fast: return "fast";
    case FlowPreset::Medium: return "medium";
  }
  return "?";
}

bool MotionField::fits(int w, int h) const {
  if (w <= 0 || h <= 0 || width != w || height != h) return false;
  const size_t n = static_cast<size_t>(w) * h;
  return from_a.size() == 2 * n && from_b.size() == 2 * n && weight_a.size() == n;
}

#ifdef DW_HAVE_OPENCV

namespace {

// Same size, same bytes: b of the previous pair is usually a of this one, so its grey copy is kept.
bool same_image(const Image &x, const Image &y) {
  return x.width == y.width && x.height == y.height && x.channels == y.channels && x.pixels == y.pixels;
}

class FlowInterpolator final : public PairInterpolator, public PairWarper {
 public:
  explicit FlowInterpolator(const FlowConfig &config) : config_(config) {
    if (config.threads > 0) cv::setNumThreads(config.threads);
    int preset = cv::DISOpticalFlow::PRESET_FAST;
    if (config.preset == FlowPreset::Ultrafast) preset = cv::DISOpticalFlow::PRESET_ULTRAFAST;
    if (config.preset == FlowPreset::Medium) preset = cv::DISOpticalFlow::PRESET_MEDIUM;
    dis_ = cv::DISOpticalFlow::create(preset);
    // Half-size flow for ultrafast: flow fields of camera motion are smooth, the warp stays full size.
    flow_scale_ = config.preset == FlowPreset::Ultrafast ? 0.5 : 1.0;
    // On the half-size image the preset's finest scale 2 would leave the flow at 1/8 of the frame:
    // too coarse for rotation/zoom (mid-pair sharpness 0.79 on the bench's zoom+rotate). Scale 1
    // there = the 1/4 grid fast has on the full frame, at no measurable cost (0.88).
    if (config.preset == FlowPreset::Ultrafast) dis_->setFinestScale(1);
  }

  std::string describe() const override {
    return std::string("flow (OpenCV DIS ") + flow_preset_name(config_.preset) +
           (config_.occlusion ? ", occlusion-aware" : "") + ")";
  }

  void reset() override {
    prev_b_ = Image();
    prev_b_grey_.release();
    a_.release();
    b_.release();
  }

  void set_pair(const Image &a, const Image &b) override {
    if (a.empty() || b.empty()) throw Error("flow: empty keyframe");
    if (a.width != b.width || a.height != b.height)
      throw Error("flow: keyframes differ in size (" + std::to_string(a.width) + "x" + std::to_string(a.height) +
                  " and " + std::to_string(b.width) + "x" + std::to_string(b.height) + ")");
    w_ = a.width;
    h_ = a.height;
    a_ = to_rgb(a);
    b_ = to_rgb(b);
    cv::Mat grey_a;
    if (!prev_b_grey_.empty() && same_image(prev_b_, a))
      grey_a = prev_b_grey_;
    else
      grey_a = to_grey(a_);
    cv::Mat grey_b = to_grey(b_);
    prev_b_ = b;
    prev_b_grey_ = grey_b;

    cv::Mat ab, ba;
    dis_->calc(grey_a, grey_b, ab);
    dis_->calc(grey_b, grey_a, ba);
    if (config_.occlusion) {
      occ_a_ = occlusion(ab, ba);
      occ_b_ = occlusion(ba, ab);
    }
    ab_ = upscale(ab);
    ba_ = upscale(ba);
    if (config_.occlusion) {
      occ_a_ = upscale_plain(occ_a_);
      occ_b_ = upscale_plain(occ_b_);
    }
  }

  std::vector<Image> frames(const std::vector<double> &ts) override {
    if (a_.empty()) throw Error("flow: frames() before set_pair()");
    std::vector<Image> out;
    out.reserve(ts.size());
    for (double t : ts) out.push_back(frame(t));
    return out;
  }

 private:
  static cv::Mat to_rgb(const Image &img) {
    cv::Mat m(img.height, img.width, img.channels == 4 ? CV_8UC4 : CV_8UC3, const_cast<uint8_t *>(img.pixels.data()));
    cv::Mat rgb;
    if (img.channels == 4)
      cv::cvtColor(m, rgb, cv::COLOR_RGBA2RGB);
    else
      rgb = m.clone();
    return rgb;
  }

  cv::Mat to_grey(const cv::Mat &rgb) const {
    cv::Mat grey;
    cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
    if (flow_scale_ != 1.0) {
      cv::Mat small;
      cv::resize(grey, small, cv::Size(), flow_scale_, flow_scale_, cv::INTER_AREA);
      return small;
    }
    return grey;
  }

  // Occlusion of each pixel of the first image of `fwd`: where it lands, the backward flow should
  // point back (plan.h: occlusion_from_consistency).
  // Where each pixel lands along `flow`: a remap map (absolute positions).
  static cv::Mat landing_map(const cv::Mat &flow) {
    cv::Mat map(flow.rows, flow.cols, CV_32FC2);
    for (int y = 0; y < flow.rows; ++y) {
      const auto *f = flow.ptr<cv::Vec2f>(y);
      auto *m = map.ptr<cv::Vec2f>(y);
      for (int x = 0; x < flow.cols; ++x) m[x] = cv::Vec2f(x + f[x][0], y + f[x][1]);
    }
    return map;
  }

  static cv::Mat occlusion(const cv::Mat &fwd, const cv::Mat &bwd) {
    const int h = fwd.rows, w = fwd.cols;
    const cv::Mat map = landing_map(fwd);
    cv::Mat back;
    cv::remap(bwd, back, map, cv::noArray(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    cv::Mat occ(h, w, CV_32F);
    for (int y = 0; y < h; ++y) {
      const auto *f = fwd.ptr<cv::Vec2f>(y);
      const auto *b = back.ptr<cv::Vec2f>(y);
      const auto *m = map.ptr<cv::Vec2f>(y);
      auto *o = occ.ptr<float>(y);
      for (int x = 0; x < w; ++x) {
        const float ex = f[x][0] + b[x][0], ey = f[x][1] + b[x][1];
        const float mag2 = f[x].dot(f[x]) + b[x].dot(b[x]);
        float u = occlusion_from_consistency(ex * ex + ey * ey, mag2);
        // Landing outside B: nothing there to match (content leaving the frame).
        if (m[x][0] < 0 || m[x][1] < 0 || m[x][0] > w - 1 || m[x][1] > h - 1) u = 1.0f;
        o[x] = u;
      }
    }
    return occ;
  }

  cv::Mat upscale(const cv::Mat &flow) const {
    if (flow.cols == w_ && flow.rows == h_) return flow;
    cv::Mat up;
    cv::resize(flow, up, cv::Size(w_, h_), 0, 0, cv::INTER_LINEAR);
    up *= static_cast<double>(w_) / flow.cols;
    return up;
  }
  cv::Mat upscale_plain(const cv::Mat &m) const {
    if (m.cols == w_ && m.rows == h_) return m;
    cv::Mat up;
    cv::resize(m, up, cv::Size(w_, h_), 0, 0, cv::INTER_LINEAR);
    return up;
  }

  // Flow from each pixel of the in-between at t back to one keyframe, by forward-splatting that
  // keyframe's flow to where its pixels are at t (a 2x2 footprint so zooms leave no cracks); where
  // pixels collide, the one that is visible in both keyframes wins (lower occlusion), so an
  // occluder's flow is not overwritten by what it covers. Pixels nobody lands on are not seen by
  // that keyframe at t (hole = 1): they fall back to the linear approximation of plan.h and take
  // the other keyframe's colour.
  void splat(const cv::Mat &flow, const cv::Mat &occ, double s, cv::Mat &out, cv::Mat &hole) const {
    out.create(h_, w_, CV_32FC2);
    hole.create(h_, w_, CV_32F);
    score_.create(h_, w_, CV_32F);
    score_.setTo(cv::Scalar(1e9f));
    const float sf = static_cast<float>(s);
    for (int y = 0; y < h_; ++y) {
      const auto *f = flow.ptr<cv::Vec2f>(y);
      const float *o = occ.empty() ? nullptr : occ.ptr<float>(y);
      for (int x = 0; x < w_; ++x) {
        const float px = x + sf * f[x][0], py = y + sf * f[x][1];
        const int x0 = static_cast<int>(std::floor(px)), y0 = static_cast<int>(std::floor(py));
        const float base = o ? 4.0f * o[x] : 0.0f;
        for (int dy = 0; dy < 2; ++dy) {
          const int qy = y0 + dy;
          if (qy < 0 || qy >= h_) continue;
          float *sc = score_.ptr<float>(qy);
          auto *dst = out.ptr<cv::Vec2f>(qy);
          for (int dx = 0; dx < 2; ++dx) {
            const int qx = x0 + dx;
            if (qx < 0 || qx >= w_) continue;
            const float d = std::fabs(qx - px) + std::fabs(qy - py);
            const float v = base + d;
            if (v < sc[qx]) {
              sc[qx] = v;
              dst[qx] = cv::Vec2f(-sf * f[x][0], -sf * f[x][1]);
            }
          }
        }
      }
    }
    for (int y = 0; y < h_; ++y) {
      const float *sc = score_.ptr<float>(y);
      float *ho = hole.ptr<float>(y);
      for (int x = 0; x < w_; ++x) ho[x] = sc[x] > 1e8f ? 1.0f : 0.0f;
    }
  }

  // Backward-warp maps from the in-between at t into A and B, and A's blend weight per pixel (B's is
  // 1 - it): shared by the in-betweens and by warp_residuals().
  struct Warp {
    cv::Mat map_a, map_b, ka;
  };
  Warp prepare(double t) const {
    const FlowCoefs c = intermediate_flow_coefs(t);
    cv::Mat to_a, to_b, hole_a, hole_b;
    splat(ab_, occ_a_, t, to_a, hole_a);
    splat(ba_, occ_b_, 1.0 - t, to_b, hole_b);
    Warp w;
    w.map_a.create(h_, w_, CV_32FC2);
    w.map_b.create(h_, w_, CV_32FC2);
    cv::Mat &map_a = w.map_a, &map_b = w.map_b;
    cv::parallel_for_(cv::Range(0, h_), [&](const cv::Range &r) {
      for (int y = r.start; y < r.end; ++y) {
        const auto *ab = ab_.ptr<cv::Vec2f>(y);
        const auto *ba = ba_.ptr<cv::Vec2f>(y);
        const auto *ta = to_a.ptr<cv::Vec2f>(y);
        const auto *tb = to_b.ptr<cv::Vec2f>(y);
        const float *ha = hole_a.ptr<float>(y);
        const float *hb = hole_b.ptr<float>(y);
        auto *ma = map_a.ptr<cv::Vec2f>(y);
        auto *mb = map_b.ptr<cv::Vec2f>(y);
        for (int x = 0; x < w_; ++x) {
          if (ha[x] > 0)
            ma[x] = cv::Vec2f(x + c.to_a_from_ab * ab[x][0] + c.to_a_from_ba * ba[x][0],
                              y + c.to_a_from_ab * ab[x][1] + c.to_a_from_ba * ba[x][1]);
          else
            ma[x] = cv::Vec2f(x + ta[x][0], y + ta[x][1]);
          if (hb[x] > 0)
            mb[x] = cv::Vec2f(x + c.to_b_from_ab * ab[x][0] + c.to_b_from_ba * ba[x][0],
                              y + c.to_b_from_ab * ab[x][1] + c.to_b_from_ba * ba[x][1]);
          else
            mb[x] = cv::Vec2f(x + tb[x][0], y + tb[x][1]);
        }
      }
    });
    w.ka.create(h_, w_, CV_32F);
    const float plain_a = static_cast<float>(1.0 - t);
    if (!config_.occlusion) {
      w.ka.setTo(cv::Scalar(plain_a));
      return w;
    }
    cv::Mat oa, ob;
    cv::remap(occ_a_, oa, map_a, cv::noArray(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    cv::remap(occ_b_, ob, map_b, cv::noArray(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    for (int y = 0; y < h_; ++y) {
      const float *qa = oa.ptr<float>(y), *qb = ob.ptr<float>(y);
      const float *ha = hole_a.ptr<float>(y), *hb = hole_b.ptr<float>(y);
      float *k = w.ka.ptr<float>(y);
      for (int x = 0; x < w_; ++x) k[x] = occlusion_blend(t, std::max(qa[x], hb[x]), std::max(qb[x], ha[x])).a;
    }
    return w;
  }

  Image frame(double t) {
    const Warp w = prepare(t);
    return blend_warped(a_, b_, w.map_a, w.map_b, w.ka);
  }

  // ia, ib (RGB, A's and B's geometry) backward-warped along the maps (bicubic: the keyframes'
  // detail is what a linear warp would soften) and blended, A weighted by ka.
  Image blend_warped(const cv::Mat &ia, const cv::Mat &ib, const cv::Mat &map_a, const cv::Mat &map_b,
                     const cv::Mat &ka) const {
    cv::Mat wa, wb;
    cv::remap(ia, wa, map_a, cv::noArray(), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    cv::remap(ib, wb, map_b, cv::noArray(), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    Image out(w_, h_, 3);
    cv::parallel_for_(cv::Range(0, h_), [&](const cv::Range &r) {
      for (int y = r.start; y < r.end; ++y) {
        const uint8_t *pa = wa.ptr<uint8_t>(y);
        const uint8_t *pb = wb.ptr<uint8_t>(y);
        const float *k = ka.ptr<float>(y);
        uint8_t *dst = out.row(y);
        for (int x = 0; x < w_; ++x) {
          const float wa_ = k[x], wb_ = 1.0f - wa_;
          for (int ch = 0; ch < 3; ++ch)
            dst[3 * x + ch] = cv::saturate_cast<uint8_t>(wa_ * pa[3 * x + ch] + wb_ * pb[3 * x + ch]);
        }
      }
    });
    return out;
  }

  // `from` sampled along `flow` (a full-size flow of the other keyframe's pixels into `from`), with
  // `own` kept where `occ` (the other keyframe's occlusion) says nothing in `from` matches.
  Image align(const cv::Mat &from, const cv::Mat &own, const cv::Mat &flow, const cv::Mat &occ) const {
    if (from.empty()) throw Error("flow: aligned image before set_pair()");
    cv::Mat moved;
    cv::remap(from, moved, landing_map(flow), cv::noArray(), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    Image out(w_, h_, 3);
    for (int y = 0; y < h_; ++y) {
      const uint8_t *pm = moved.ptr<uint8_t>(y), *po = own.ptr<uint8_t>(y);
      const float *o = occ.empty() ? nullptr : occ.ptr<float>(y);
      uint8_t *dst = out.row(y);
      for (int x = 0; x < w_; ++x) {
        const float u = o ? o[x] : 0.0f;
        for (int ch = 0; ch < 3; ++ch)
          dst[3 * x + ch] = cv::saturate_cast<uint8_t>((1.0f - u) * pm[3 * x + ch] + u * po[3 * x + ch]);
      }
    }
    return out;
  }

  cv::Mat rgb_of_pair_size(const Image &img, const char *what) const {
    if (img.width != w_ || img.height != h_ || (img.channels != 3 && img.channels != 4))
      throw Error(std::string("flow: ") + what + " is not an RGB image of the pair's size (" + std::to_string(w_) +
                  "x" + std::to_string(h_) + ")");
    return to_rgb(img);
  }

 public:
  MotionField motion_field(double t) override {
    if (a_.empty()) throw Error("flow: motion_field() before set_pair()");
    const Warp w = prepare(std::clamp(t, 0.0, 1.0));
    MotionField f;
    f.width = w_;
    f.height = h_;
    const size_t n = static_cast<size_t>(w_) * h_;
    f.from_a.resize(2 * n);
    f.from_b.resize(2 * n);
    f.weight_a.resize(n);
    for (int y = 0; y < h_; ++y) {
      std::memcpy(f.from_a.data() + 2 * static_cast<size_t>(y) * w_, w.map_a.ptr<float>(y), 2 * sizeof(float) * w_);
      std::memcpy(f.from_b.data() + 2 * static_cast<size_t>(y) * w_, w.map_b.ptr<float>(y), 2 * sizeof(float) * w_);
      std::memcpy(f.weight_a.data() + static_cast<size_t>(y) * w_, w.ka.ptr<float>(y), sizeof(float) * w_);
    }
    return f;
  }

  Image aligned_a(bool raw) const override { return align(a_, b_, ba_, raw ? cv::Mat() : occ_b_); }
  Image aligned_b(bool raw) const override { return align(b_, a_, ab_, raw ? cv::Mat() : occ_a_); }

  Image warp_images(const Image &in_a, const Image &in_b, const MotionField &field) const override {
    if (a_.empty()) throw Error("flow: warp_images() before set_pair()");
    if (!field.fits(w_, h_))
      throw Error("flow: motion field is not of the pair's size (" + std::to_string(w_) + "x" + std::to_string(h_) + ")");
    const cv::Mat ia = rgb_of_pair_size(in_a, "image in A's geometry");
    const cv::Mat ib = rgb_of_pair_size(in_b, "image in B's geometry");
    const cv::Mat map_a(h_, w_, CV_32FC2, const_cast<float *>(field.from_a.data()));
    const cv::Mat map_b(h_, w_, CV_32FC2, const_cast<float *>(field.from_b.data()));
    const cv::Mat ka(h_, w_, CV_32F, const_cast<float *>(field.weight_a.data()));
    return blend_warped(ia, ib, map_a, map_b, ka);
  }

  using PairWarper::warp_residuals;
  Residual warp_residuals(const Residual &ra, const Residual &rb, const MotionField &field) override {
    if (a_.empty()) throw Error("flow: warp_residuals() before set_pair()");
    if (ra.width != w_ || ra.height != h_ || rb.width != w_ || rb.height != h_ ||
        ra.data.size() != static_cast<size_t>(w_) * h_ * 3 || rb.data.size() != ra.data.size())
      throw Error("flow: residuals are not of the pair's size (" + std::to_string(w_) + "x" + std::to_string(h_) + ")");
    if (!field.fits(w_, h_))
      throw Error("flow: motion field is not of the pair's size (" + std::to_string(w_) + "x" + std::to_string(h_) + ")");
    cv::Mat map_a(h_, w_, CV_32FC2, const_cast<float *>(field.from_a.data()));
    cv::Mat map_b(h_, w_, CV_32FC2, const_cast<float *>(field.from_b.data()));
    // Cubic, like the keyframes' warp: the residual is the fine detail a linear warp would soften.
    cv::Mat ma(h_, w_, CV_16SC3, const_cast<int16_t *>(ra.data.data()));
    cv::Mat mb(h_, w_, CV_16SC3, const_cast<int16_t *>(rb.data.data()));
    cv::Mat wa, wb;
    cv::remap(ma, wa, map_a, cv::noArray(), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    cv::remap(mb, wb, map_b, cv::noArray(), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    Residual out;
    out.width = w_;
    out.height = h_;
    out.data.resize(ra.data.size());
    for (int y = 0; y < h_; ++y) {
      const int16_t *pa = wa.ptr<int16_t>(y), *pb = wb.ptr<int16_t>(y);
      const float *k = field.weight_a.data() + static_cast<size_t>(y) * w_;
      int16_t *dst = out.data.data() + static_cast<size_t>(y) * w_ * 3;
      for (int x = 0; x < w_; ++x)
        for (int ch = 0; ch < 3; ++ch)
          dst[3 * x + ch] = cv::saturate_cast<int16_t>(k[x] * pa[3 * x + ch] + (1.0f - k[x]) * pb[3 * x + ch]);
    }
    return out;
  }

 private:
  FlowConfig config_;
  cv::Ptr<cv::DISOpticalFlow> dis_;
  double flow_scale_ = 1.0;
  int w_ = 0, h_ = 0;
  cv::Mat a_, b_;          // RGB keyframes
  cv::Mat ab_, ba_;        // flows at full size (CV_32FC2)
  cv::Mat occ_a_, occ_b_;  // occlusion of A's / B's pixels (CV_32F)
  Image prev_b_;
  cv::Mat prev_b_grey_;
  mutable cv::Mat score_;  // splat scratch
};

}  // namespace

bool flow_available() { return true; }

std::unique_ptr<PairInterpolator> create_flow_interpolator(const FlowConfig &config) {
  try {
    return std::make_unique<FlowInterpolator>(config);
  } catch (const cv::Exception &e) {
    throw Error(std::string("flow: OpenCV: ") + e.what());
  }
}

std::unique_ptr<PairWarper> create_pair_warper(const FlowConfig &config) {
  try {
    return std::make_unique<FlowInterpolator>(config);
  } catch (const cv::Exception &e) {
    throw Error(std::string("flow: OpenCV: ") + e.what());
  }
}

#else  // no OpenCV in this build

bool flow_available() { return false; }

std::unique_ptr<PairInterpolator> create_flow_interpolator(const FlowConfig &) {
  throw Error("flow: this build has no OpenCV (meson option opencv; install libopencv-video-dev)");
}

std::unique_ptr<PairWarper> create_pair_warper(const FlowConfig &) {
  throw Error("flow: this build has no OpenCV (meson option opencv; install libopencv-video-dev)");
}

#endif

}  // namespace dw::interp
