/* vaeinterp: turns a stream of keyframes into a smooth stream by interpolating between each pair of
 * keyframes: optical flow (OpenCV DIS), a frame-interpolation model (RIFE/FILM TorchScript), a latent
 * space (TAESD, a TorchScript VAE) or a plain pixel crossfade. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_VAE_INTERP (gst_vae_interp_get_type())
G_DECLARE_FINAL_TYPE(GstVaeInterp, gst_vae_interp, GST, VAE_INTERP, GstElement)

typedef enum {
  GST_VAE_INTERP_BACKEND_AUTO = 0,
  GST_VAE_INTERP_BACKEND_TAESD = 1,
  GST_VAE_INTERP_BACKEND_TORCHSCRIPT = 2,
  GST_VAE_INTERP_BACKEND_BLEND = 3,
  GST_VAE_INTERP_BACKEND_FLOW = 4, /* registered only in builds with OpenCV */
  GST_VAE_INTERP_BACKEND_VFI = 5,  /* registered only in builds with LibTorch */
} GstVaeInterpBackend;

typedef enum {
  GST_VAE_INTERP_FLOW_PRESET_ULTRAFAST = 0,
  GST_VAE_INTERP_FLOW_PRESET_FAST = 1,
  GST_VAE_INTERP_FLOW_PRESET_MEDIUM = 2,
} GstVaeInterpFlowPreset;

typedef enum {
  GST_VAE_INTERP_PRECISION_AUTO = 0,
  GST_VAE_INTERP_PRECISION_FP32 = 1,
  GST_VAE_INTERP_PRECISION_FP16 = 2,
  GST_VAE_INTERP_PRECISION_BF16 = 3,
} GstVaeInterpPrecision;

GType gst_vae_interp_backend_get_type(void);
#define GST_TYPE_VAE_INTERP_BACKEND (gst_vae_interp_backend_get_type())
GType gst_vae_interp_precision_get_type(void);
#define GST_TYPE_VAE_INTERP_PRECISION (gst_vae_interp_precision_get_type())
GType gst_vae_interp_flow_preset_get_type(void);
#define GST_TYPE_VAE_INTERP_FLOW_PRESET (gst_vae_interp_flow_preset_get_type())

G_END_DECLS
