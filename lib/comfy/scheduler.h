// The feedback-loop scheduler of comfykeyframesrc: every decision about ComfyUI jobs that can be
// stated without GStreamer or a network, for a POOL of backends (one is a pool of one). Pad-less and
// clock-free like rtpjitterbuffer's rtptimerqueue: the caller passes monotonic time in, submits the
// jobs it is handed, and reports what became of them; tests drive it with fake time and results.
//
// What it decides:
//  - admission / backpressure: at most max_in_flight jobs outstanding, and outstanding + keyframes
//    waiting downstream <= max_in_flight, so a slow downstream throttles generation; num_keyframes
//    bounds the jobs too (none wasted);
//  - each job's prompt, seed and denoise (by job index; retries keep theirs);
//  - each job's input: the NEWEST keyframe when the job is queued. A server-side reference
//    ("x.png [output]") is used only on the backend that produced it; anywhere else, and after
//    ErrorKind::MissingInput, the scheduler's own copy of the bytes is uploaded;
//  - the backend: the available one that will finish first (its estimated free time + its measured
//    generation time, an EWMA); a backend is unavailable while its health is Unreachable or
//    Unresponsive or its last job failed because it was down, and rejoins on health Ok or a success;
//  - retries: every delay comes from a dw::comfy::Backoff. Outage errors (Unreachable, Timeout)
//    never spend a retry and mark the backend down: the job is re-queued at once when another
//    backend is available, else after the pool's outage backoff, forever unless max_outage_s says
//    otherwise. Other Error::retry_free failures (a restarted server forgot the job) are re-queued
//    after the job's backoff without spending a retry.
//    A job whose input was missing on the server is re-queued at once with the bytes. A rejected
//    workflow is fatal; other failures spend one of max_retries, each after the job's own backoff;
//  - injection: jobs of the old lineage are cancelled, the injected image feeds the next job;
//  - discontinuity: the first keyframe after every backend was down, if it comes much later than
//    the recent keyframe period, is flagged so downstream does not interpolate across the gap.
//
// Keyframe indices are not the scheduler's business: the caller numbers keyframes in delivery
// order, and each accepted job yields exactly one keyframe (a re-queued job is cancelled on the
// backend it left), so indices stay strictly increasing with no loss or repeat.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comfy/backoff.h"
#include "comfy/client.h"
#include "comfy/error.h"

namespace dw::comfy {

enum class SeedMode { Fixed = 0, Increment = 1, Random = 2 };

// What the next jobs are made of; may change while running (live properties).
struct LoopParams {
  std::string prompt;
  std::vector<std::string> prompts;  // rotated every prompt_interval jobs; overrides prompt when not empty
  unsigned prompt_interval = 8;
  int64_t seed = 0;
  SeedMode seed_mode = SeedMode::Increment;
  double denoise = 0.5;
  unsigned max_in_flight = 1;
  int64_t num_keyframes = -1;  // -1 = endless
  unsigned max_retries = 3;    // counted retries of one keyframe
  uint32_t max_outage_s = 0;   // every backend down longer than this is fatal; 0 = never
};

struct SchedulerConfig {
  size_t backends = 1;
  bool bootstrap = false;  // the first job runs with denoise 1.0 (its input is a generated image)
  std::string upload_prefix = "dreamwindow_";
  uint32_t retry_initial_ms = 250, retry_max_ms = 10000;  // Backoff of counted retries and outages
  uint64_t rng_seed = 0;                                  // 0 = random (random seeds, jitter)
  int64_t default_generation_us = 1000000;  // estimate for a backend that has not finished a job yet
  double ewma_alpha = 0.3;                  // weight of the newest generation time / keyframe period
  double gap_factor = 3.0;  // a post-outage keyframe later than this x the period is a discontinuity
};

// A job to submit now.
struct JobPlan {
  uint64_t ticket = 0;     // the scheduler's handle of the job (stays with it across retries)
  size_t backend = 0;
  uint64_t job_index = 0;  // submission order of new jobs (retries keep theirs): prompt/seed rotation
  unsigned attempt = 0;    // counted retries so far
  std::string prompt;
  int64_t seed = 0;
  double denoise = 0;
  bool bootstrap = false;
  std::string input_value;          // LoadImage value valid on `backend`, or (when empty)
  std::vector<uint8_t> upload_png;  // bytes to upload first, under upload_name
  std::string upload_name;
};

// The caller's queue of finished keyframes not yet pushed, counted for backpressure.
struct Downstream {
  size_t ready = 0;
  uint64_t pushed = 0;
};

// A finished job.
struct Delivery {
  bool accepted = false;  // false: the job is not (any longer) the scheduler's; drop the image
  uint64_t job_index = 0;
  size_t backend = 0;
  std::string prompt;
  int64_t seed = 0;
  bool discont = false;  // the first keyframe after an outage gap
  // Lineage: keyframes (accepted jobs and injections) are numbered in delivery order, which is the
  // caller's keyframe index. `parent` is the keyframe this one was made from (-1: the seed image).
  // A strict loop has parent == index - 1; with k jobs in flight it is about index - k.
  uint64_t index = 0;
  int64_t parent = -1;
};

// A failed job.
struct Failure {
  enum class Action { Ignore, Retry, Fatal } action = Action::Ignore;
  enum class Fatal { None, Rejected, RetriesExhausted, OutageTooLong } fatal = Fatal::None;
  bool counted = false;  // Retry that spent one of max_retries (worth a warning)
  unsigned attempt = 0;  // counted retries after this one
  unsigned max_retries = 0;
  uint64_t job_index = 0;
  size_t backend = 0;
  uint32_t delay_ms = 0;  // Retry: when the job is due again
  std::string message;    // what failed (the client's description)
};

// A backend's state changed in a way people should hear about (each transition once).
struct Notice {
  size_t backend = 0;
  Health health = Health::Unknown;  // Ok = recovered; Unreachable / Unresponsive = down; Degraded
  std::string message;
  int64_t down_us = 0;  // Ok after a down state: how long it was down
};

// A job to forget on its backend's client (it was re-queued elsewhere, or made stale).
struct Cancel {
  size_t backend = 0;
  std::string prompt_id;
  bool tell_server = false;  // interrupt / delete it on the server too
};

struct BackendStats {
  Health health = Health::Unknown;  // as the client last reported it
  bool available = true;            // jobs may go there
  uint32_t error_streak = 0;
  int64_t last_success_us = -1;     // monotonic; -1 never
  int64_t generation_us = -1;       // EWMA of its generation (service) time; -1 unknown
  unsigned running = 0;
  uint64_t jobs_succeeded = 0, jobs_failed = 0, jobs_requeued = 0;
};

struct SchedulerStats {
  uint64_t jobs_queued = 0;  // submissions, retries included
  uint64_t jobs_succeeded = 0, jobs_failed = 0;
  uint64_t jobs_retried = 0;    // re-queued after a failure (free or counted)
  uint64_t jobs_discarded = 0;  // cancelled by an injection
  uint64_t injections = 0;
  unsigned in_flight = 0;  // submitted, not finished
  unsigned pending = 0;    // waiting for a retry delay or an available backend
  int64_t last_generation_us = -1, total_generation_us = 0;
  bool outage = false;     // no backend available now
  uint64_t outages = 0;    // times every backend went down
};

class Scheduler {
 public:
  // `first_input`: encoded image (PNG) the first job starts from.
  Scheduler(SchedulerConfig config, LoopParams params, std::vector<uint8_t> first_input);

  void set_params(const LoopParams &params) { params_ = params; }
  const LoopParams &params() const { return params_; }

  // Jobs to submit now (due retries first, then new jobs as admission allows). Each is in flight
  // from here on; report the client's prompt id with started().
  std::vector<JobPlan> plan(int64_t now_us, const Downstream &downstream);
  void started(uint64_t ticket, const std::string &prompt_id);
  // Monotonic time at which plan() has a delayed job to hand out; -1 = none.
  int64_t next_wakeup_us() const;

  // The job produced a keyframe (decoded and checked by the caller). `image`: the encoded bytes,
  // kept as the next job's input (and for re-uploads); `server_value`: the LoadImage value of the
  // output on that backend ("" if the image came over the websocket).
  Delivery succeeded(uint64_t ticket, int64_t now_us, std::vector<uint8_t> image, const std::string &server_value,
                     int64_t generation_us);
  Failure failed(uint64_t ticket, int64_t now_us, const Error &error);
  // The backend's client reported a health change. A backend that went down has its jobs moved
  // to the pending queue (see take_cancels()).
  void health_changed(size_t backend, Health health, int64_t now_us, const std::string &message);

  // An injected keyframe (encoded PNG) replaces the lineage. Returns the jobs to cancel.
  std::vector<Cancel> inject(std::vector<uint8_t> png);
  // Prompt the next new job will get (an injected keyframe is labelled with it).
  std::string next_prompt() const { return pick_prompt(jobs_started_); }

  std::vector<Cancel> take_cancels();
  std::vector<Notice> take_notices();

  SchedulerStats stats() const;
  std::vector<BackendStats> backend_stats() const;
  size_t backends() const { return backends_.size(); }
  // Outstanding jobs: in flight + pending.
  size_t outstanding() const { return in_flight_.size() + pending_.size(); }

 private:
  struct Input {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    std::string server_value;  // valid on `backend` only
    long backend = -1;
    int64_t keyframe = -1;     // its keyframe index; -1 = the seed image
  };
  struct Job {
    uint64_t ticket = 0, job_index = 0;
    unsigned attempt = 0;
    std::string prompt;
    int64_t seed = 0;
    double denoise = 0;
    bool bootstrap = false;
    Input input;
    Backoff backoff;
    long backend = -1;
    std::string prompt_id;
    int64_t submitted_us = 0, not_before_us = 0;
  };
  struct Backend {
    BackendStats st;
    bool down_by_error = false;    // its last job failed because it was down
    Backoff backoff;               // paces probe jobs while down_by_error
    int64_t probe_at_us = 0;
    Health reported = Health::Ok;  // last state announced by a Notice
    int64_t down_since_us = -1, last_attempt_us = -1, last_finish_us = -1;
  };

  std::string pick_prompt(uint64_t job_index) const;
  int64_t pick_seed(uint64_t job_index);
  bool available(size_t b) const;
  bool any_available() const;
  long choose_backend(int64_t now_us) const;
  int64_t estimated_finish_us(size_t b, int64_t now_us) const;
  JobPlan submit(Job job, size_t backend, int64_t now_us);
  bool admit_new(const Downstream &d) const;
  Job new_job();
  void requeue(Job job, int64_t not_before_us);
  void backend_down(size_t b, Health why, int64_t now_us, const std::string &message);
  void backend_up(size_t b, int64_t now_us);
  void update_outage(int64_t now_us);
  Failure outage_failure(Job job, int64_t now_us, const Error &error);
  Failure counted_failure(Job job, int64_t now_us, const Error &error);
  void notify(size_t b, Health h, const std::string &message, int64_t down_us);

  SchedulerConfig config_;
  LoopParams params_;
  std::vector<Backend> backends_;
  Input latest_;  // the newest keyframe: what the next new job starts from
  std::map<uint64_t, Job> in_flight_;
  std::deque<Job> pending_;
  std::vector<Cancel> cancels_;
  std::vector<Notice> notices_;
  SchedulerStats stats_;
  Backoff outage_backoff_;
  std::mt19937_64 rng_;
  uint64_t next_ticket_ = 1, jobs_started_ = 0, upload_slot_ = 0, delivered_ = 0;
  int64_t outage_since_us_ = -1, last_delivery_us_ = -1, period_us_ = -1;
  bool gap_ = false;
};

}  // namespace dw::comfy
