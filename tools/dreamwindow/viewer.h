// One browser viewer: a websocket (signalling, server offers, trickle ICE) and its pipeline branch
//   tee. ! queue leaky=downstream ! rtp<codec>pay ! capsfilter ! webrtcbin bundle-policy=max-bundle
// (docs/webrtc.md). Only built with the `webrtc` meson option.
#pragma once

#include <gst/gst.h>
#include <libsoup/soup.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "protocol.h"

namespace dw::app {

class Viewer : public std::enable_shared_from_this<Viewer> {
 public:
  // All methods run on `context` (the app's), except where noted.
  Viewer(uint64_t id, SoupWebsocketConnection *ws, GMainContext *context);
  ~Viewer();

  // Adds and links the branch (elements PLAYING before the tee pad is linked), asks the encoder for a
  // keyframe. False and *error on failure (nothing left behind).
  bool attach(GstElement *pipeline, GstElement *tee, const std::string &codec, std::string *error);
  // A signalling message from the browser, already parsed and validated (protocol.h).
  void on_signal(const SignalMessage &message);
  // Queues a JSON text for the browser (any thread); it is sent from `context`, in order.
  void send(std::string text);
  // Unlinks the branch when its tee pad is idle, then releases the pad, sets the elements to NULL and
  // removes them; `done` runs on `context` afterwards. Idempotent.
  void detach(std::function<void()> done);
  // Closes the websocket (if still open) with `code`.
  void close(unsigned short code, const std::string &reason);

  uint64_t id() const { return id_; }
  std::string remote() const { return remote_; }
  gint64 connected_us() const { return connected_us_; }
  std::string ice_state() const;       // webrtcbin ice-connection-state nick
  std::string connection_state() const;  // webrtcbin connection-state nick

 private:
  void flush();
  void on_negotiation_needed();
  void finish_detach();

  uint64_t id_;
  SoupWebsocketConnection *ws_;  // ref'd; touched on context_ only
  GMainContext *context_;
  std::string remote_;
  gint64 connected_us_;
  std::mutex out_lock_;
  std::deque<std::string> out_;
  GstElement *pipeline_ = nullptr, *tee_ = nullptr;
  GstElement *queue_ = nullptr, *pay_ = nullptr, *capsfilter_ = nullptr, *webrtc_ = nullptr;
  GstPad *tee_pad_ = nullptr;
  bool detaching_ = false;
  std::function<void()> detach_done_;
  std::mutex detach_lock_;

  friend struct ViewerCallbacks;
};

}  // namespace dw::app
