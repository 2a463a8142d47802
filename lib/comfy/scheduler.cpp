#include "comfy/scheduler.h"

#include <algorithm>
#include <limits>

namespace dw::comfy {

namespace {

bool is_down(Health h) { return h == Health::Unreachable || h == Health::Unresponsive; }

}  // namespace

Scheduler::Scheduler(SchedulerConfig config, LoopParams params, std::vector<uint8_t> first_input)
    : config_(std::move(config)),
      params_(std::move(params)),
      outage_backoff_(config_.retry_initial_ms, config_.retry_max_ms, 0.5, config_.rng_seed),
      rng_(config_.rng_seed ? config_.rng_seed : std::random_device{}()) {
  backends_.resize(std::max<size_t>(1, config_.backends));
  for (size_t b = 0; b < backends_.size(); ++b)
    backends_[b].backoff = Backoff(config_.retry_initial_ms, config_.retry_max_ms, 0.5,
                                   config_.rng_seed ? config_.rng_seed + 1000 + b : 0);
  latest_.bytes = std::make_shared<const std::vector<uint8_t>>(std::move(first_input));
}

std::string Scheduler::pick_prompt(uint64_t job_index) const {
  if (params_.prompts.empty()) return params_.prompt;
  uint64_t interval = std::max(1u, params_.prompt_interval);
  return params_.prompts[(job_index / interval) % params_.prompts.size()];
}

int64_t Scheduler::pick_seed(uint64_t job_index) {
  constexpr uint64_t kMask = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  switch (params_.seed_mode) {
    case SeedMode::Fixed: return params_.seed;
    case SeedMode::Increment: return static_cast<int64_t>((static_cast<uint64_t>(params_.seed) + job_index) & kMask);
    case SeedMode::Random: break;
  }
  return static_cast<int64_t>(rng_() & kMask);
}

// Up: jobs may go there. A backend down by a job error while its client still reports it healthy
// (e.g. a job timed out) gets a probe job after its own backoff; health Ok or a success lets it rejoin.
bool Scheduler::available(size_t b) const {
  const Backend &be = backends_[b];
  return !is_down(be.st.health) && !be.down_by_error;
}

bool Scheduler::any_available() const {
  for (size_t b = 0; b < backends_.size(); ++b)
    if (available(b)) return true;
  return false;
}

// Estimated monotonic time a new job would finish on b: its queue drains at its generation time; a
// job running past its estimate is assumed to need half an estimate more. A backend that has not
// finished a job yet, or whose estimate is stale (idle for 10 estimates: it was passed over), is
// assumed as fast as the fastest known one, so it gets tried (again) and a slow first measurement
// cannot exclude it for good.
int64_t Scheduler::estimated_finish_us(size_t b, int64_t now_us) const {
  const Backend &be = backends_[b];
  int64_t g = be.st.generation_us;
  if (g >= 0 && be.st.running == 0 && be.last_finish_us >= 0 && now_us - be.last_finish_us > 10 * g) g = -1;
  if (g < 0) {
    for (const Backend &o : backends_)
      if (o.st.generation_us >= 0 && (g < 0 || o.st.generation_us < g)) g = o.st.generation_us;
    if (g < 0) g = config_.default_generation_us;
  }
  if (be.st.running == 0) return now_us + g;
  int64_t oldest = now_us;
  for (const auto &entry : in_flight_)
    if (entry.second.backend == static_cast<long>(b)) oldest = std::min(oldest, entry.second.submitted_us);
  int64_t running = be.st.running;
  return std::max(oldest + running * g, now_us + running * g / 2) + g;
}

// The available backend that finishes first; ties go to fewer running jobs, then to the one tried
// longest ago (so equal backends take turns).
long Scheduler::choose_backend(int64_t now_us) const {
  long best = -1;
  int64_t best_finish = 0;
  for (size_t b = 0; b < backends_.size(); ++b) {
    const Backend &be = backends_[b];
    bool probe = !is_down(be.st.health) && be.down_by_error && now_us >= be.probe_at_us;
    if (!available(b) && !probe) continue;
    int64_t finish = estimated_finish_us(b, now_us);
    const Backend *cur = best >= 0 ? &backends_[best] : nullptr;
    if (!cur || finish < best_finish ||
        (finish == best_finish && (be.st.running < cur->st.running ||
                                   (be.st.running == cur->st.running && be.last_attempt_us < cur->last_attempt_us)))) {
      best = static_cast<long>(b);
      best_finish = finish;
    }
  }
  if (best >= 0) return best;
  // Every backend is down: probe the one tried longest ago (the job's own delay paces this).
  for (size_t b = 0; b < backends_.size(); ++b)
    if (best < 0 || backends_[b].last_attempt_us < backends_[best].last_attempt_us) best = static_cast<long>(b);
  return best;
}

bool Scheduler::admit_new(const Downstream &d) const {
  size_t max = std::max(1u, params_.max_in_flight);
  size_t outstanding = this->outstanding();
  if (outstanding >= max || outstanding + d.ready > max) return false;
  if (params_.num_keyframes >= 0 &&
      d.pushed + d.ready + outstanding >= static_cast<uint64_t>(params_.num_keyframes))
    return false;
  return true;
}

Scheduler::Job Scheduler::new_job() {
  Job job;
  job.ticket = next_ticket_++;
  job.job_index = jobs_started_++;
  job.prompt = pick_prompt(job.job_index);
  job.seed = pick_seed(job.job_index);
  job.denoise = params_.denoise;
  if (job.job_index == 0 && config_.bootstrap) {
    job.bootstrap = true;
    job.denoise = 1.0;  // the generated first input only sets the colours: txt2img-like
  }
  job.input = latest_;
  job.backoff = Backoff(config_.retry_initial_ms, config_.retry_max_ms, 0.5,
                        config_.rng_seed ? config_.rng_seed + job.ticket : 0);
  return job;
}

JobPlan Scheduler::submit(Job job, size_t backend, int64_t now_us) {
  Backend &be = backends_[backend];
  be.last_attempt_us = now_us;
  be.st.running++;
  job.backend = static_cast<long>(backend);
  job.submitted_us = now_us;
  JobPlan p;
  p.ticket = job.ticket;
  p.backend = backend;
  p.job_index = job.job_index;
  p.attempt = job.attempt;
  p.prompt = job.prompt;
  p.seed = job.seed;
  p.denoise = job.denoise;
  p.bootstrap = job.bootstrap;
  if (!job.input.server_value.empty() && job.input.backend == static_cast<long>(backend)) {
    p.input_value = job.input.server_value;
  } else {
    // An output reference only exists on the backend that produced it: elsewhere, the bytes.
    // Rotating names, overwritten: the input directory does not grow, and a name is not reused
    // while a queued job may still read it.
    p.upload_png = *job.input.bytes;
    p.upload_name = config_.upload_prefix + std::to_string(upload_slot_++ % (std::max(1u, params_.max_in_flight) + 2)) +
                    ".png";
  }
  stats_.jobs_queued++;
  in_flight_.emplace(job.ticket, std::move(job));
  return p;
}

std::vector<JobPlan> Scheduler::plan(int64_t now_us, const Downstream &downstream) {
  std::vector<JobPlan> out;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->not_before_us > now_us) {
      ++it;
      continue;
    }
    long b = choose_backend(now_us);
    Job job = std::move(*it);
    it = pending_.erase(it);
    out.push_back(submit(std::move(job), static_cast<size_t>(b), now_us));
  }
  while (admit_new(downstream)) out.push_back(submit(new_job(), static_cast<size_t>(choose_backend(now_us)), now_us));
  return out;
}

void Scheduler::started(uint64_t ticket, const std::string &prompt_id) {
  auto it = in_flight_.find(ticket);
  if (it != in_flight_.end()) it->second.prompt_id = prompt_id;
}

int64_t Scheduler::next_wakeup_us() const {
  int64_t next = -1;
  for (const Job &job : pending_)
    if (next < 0 || job.not_before_us < next) next = job.not_before_us;
  return next;
}

void Scheduler::notify(size_t b, Health h, const std::string &message, int64_t down_us) {
  backends_[b].reported = h;
  notices_.push_back(Notice{b, h, message, down_us});
}

void Scheduler::backend_down(size_t b, Health why, int64_t now_us, const std::string &message) {
  Backend &be = backends_[b];
  if (!is_down(be.reported)) {
    be.down_since_us = now_us;
    notify(b, why, message, 0);
  }
}

void Scheduler::backend_up(size_t b, int64_t now_us) {
  Backend &be = backends_[b];
  // Back from an outage (maybe restarted, maybe other hardware): measure it afresh.
  if (be.down_by_error || is_down(be.reported)) be.st.generation_us = -1;
  be.down_by_error = false;
  be.backoff.reset();
  if (be.reported != Health::Ok)
    notify(b, Health::Ok, "", is_down(be.reported) && be.down_since_us >= 0 ? now_us - be.down_since_us : 0);
  be.down_since_us = -1;
}

void Scheduler::update_outage(int64_t now_us) {
  bool any = any_available();
  if (!any && outage_since_us_ < 0) {
    outage_since_us_ = now_us;
    gap_ = true;
    stats_.outages++;
  } else if (any && outage_since_us_ >= 0) {
    outage_since_us_ = -1;
    outage_backoff_.reset();
    for (Job &job : pending_) job.not_before_us = std::min(job.not_before_us, now_us);  // retry at once
  }
  stats_.outage = !any;
}

void Scheduler::requeue(Job job, int64_t not_before_us) {
  job.backend = -1;
  job.prompt_id.clear();
  job.not_before_us = not_before_us;
  stats_.jobs_retried++;
  pending_.push_back(std::move(job));
}

Delivery Scheduler::succeeded(uint64_t ticket, int64_t now_us, std::vector<uint8_t> image,
                              const std::string &server_value, int64_t generation_us) {
  Delivery d;
  auto it = in_flight_.find(ticket);
  if (it == in_flight_.end()) return d;
  Job job = std::move(it->second);
  in_flight_.erase(it);
  size_t b = static_cast<size_t>(job.backend);
  Backend &be = backends_[b];
  be.st.running--;
  be.st.jobs_succeeded++;
  be.st.error_streak = 0;
  be.st.last_success_us = now_us;
  // Service time: a job queued behind another on the same server waited for it first.
  int64_t service = std::max<int64_t>(1, now_us - std::max(job.submitted_us, be.last_finish_us));
  be.st.generation_us = be.st.generation_us < 0
                            ? service
                            : static_cast<int64_t>(config_.ewma_alpha * service +
                                                   (1 - config_.ewma_alpha) * be.st.generation_us);
  be.last_finish_us = now_us;
  if (be.st.health != Health::Unreachable && be.st.health != Health::Unresponsive) backend_up(b, now_us);
  update_outage(now_us);

  latest_.bytes = std::make_shared<const std::vector<uint8_t>>(std::move(image));
  latest_.server_value = server_value;
  latest_.backend = static_cast<long>(b);
  latest_.keyframe = static_cast<int64_t>(delivered_);
  d.index = delivered_++;
  d.parent = job.input.keyframe;
  stats_.jobs_succeeded++;
  stats_.last_generation_us = generation_us;
  stats_.total_generation_us += std::max<int64_t>(0, generation_us);

  int64_t period = period_us_ > 0 ? period_us_ : config_.default_generation_us;
  d.discont = gap_ && last_delivery_us_ >= 0 && now_us - last_delivery_us_ > config_.gap_factor * period;
  if (!gap_ && last_delivery_us_ >= 0) {
    int64_t interval = now_us - last_delivery_us_;
    period_us_ = period_us_ < 0 ? interval
                                : static_cast<int64_t>(config_.ewma_alpha * interval + (1 - config_.ewma_alpha) * period_us_);
  }
  gap_ = false;
  last_delivery_us_ = now_us;

  d.accepted = true;
  d.job_index = job.job_index;
  d.backend = b;
  d.prompt = std::move(job.prompt);
  d.seed = job.seed;
  return d;
}

Failure Scheduler::outage_failure(Job job, int64_t now_us, const Error &error) {
  size_t b = static_cast<size_t>(job.backend);
  Backend &be = backends_[b];
  be.down_by_error = true;
  be.probe_at_us = now_us + static_cast<int64_t>(be.backoff.next_ms()) * 1000;
  be.st.jobs_requeued++;
  backend_down(b, error.kind == ErrorKind::Timeout ? Health::Unresponsive : Health::Unreachable, now_us,
               error.describe());
  update_outage(now_us);

  Failure f;
  f.job_index = job.job_index;
  f.backend = b;
  f.message = error.describe();
  if (outage_since_us_ >= 0 && params_.max_outage_s > 0 &&
      now_us - outage_since_us_ > static_cast<int64_t>(params_.max_outage_s) * 1000000) {
    f.action = Failure::Action::Fatal;
    f.fatal = Failure::Fatal::OutageTooLong;
    return f;
  }
  f.action = Failure::Action::Retry;
  f.delay_ms = any_available() ? 0 : outage_backoff_.next_ms();
  requeue(std::move(job), now_us + static_cast<int64_t>(f.delay_ms) * 1000);
  return f;
}

Failure Scheduler::counted_failure(Job job, int64_t now_us, const Error &error) {
  Failure f;
  f.job_index = job.job_index;
  f.backend = static_cast<size_t>(job.backend);
  f.max_retries = params_.max_retries;
  f.message = error.describe();
  if (job.attempt >= params_.max_retries) {
    f.action = Failure::Action::Fatal;
    f.fatal = Failure::Fatal::RetriesExhausted;
    f.attempt = job.attempt;
    return f;
  }
  job.attempt++;
  f.action = Failure::Action::Retry;
  f.counted = true;
  f.attempt = job.attempt;
  f.delay_ms = job.backoff.next_ms();
  requeue(std::move(job), now_us + static_cast<int64_t>(f.delay_ms) * 1000);
  return f;
}

Failure Scheduler::failed(uint64_t ticket, int64_t now_us, const Error &error) {
  auto it = in_flight_.find(ticket);
  if (it == in_flight_.end()) return Failure();
  Job job = std::move(it->second);
  in_flight_.erase(it);
  Backend &be = backends_[static_cast<size_t>(job.backend)];
  be.st.running--;
  be.st.jobs_failed++;
  be.st.error_streak++;
  stats_.jobs_failed++;

  switch (error.kind) {
    case ErrorKind::Cancelled: {  // only when the client goes away (stopping): nothing to do
      Failure f;
      f.job_index = job.job_index;
      return f;
    }
    case ErrorKind::InvalidPrompt:
    case ErrorKind::InvalidWorkflow: {
      Failure f;
      f.action = Failure::Action::Fatal;
      f.fatal = Failure::Fatal::Rejected;
      f.job_index = job.job_index;
      f.backend = static_cast<size_t>(job.backend);
      f.message = error.describe();
      return f;
    }
    case ErrorKind::MissingInput:
      if (!job.input.server_value.empty()) {
        // The server lost the output the job named (restarted with a clean output dir): upload our
        // own copy instead, at once, without spending a retry.
        if (latest_.bytes == job.input.bytes) latest_.server_value.clear();
        job.input.server_value.clear();
        Failure f;
        f.action = Failure::Action::Retry;
        f.job_index = job.job_index;
        f.backend = static_cast<size_t>(job.backend);
        f.message = error.describe();
        requeue(std::move(job), now_us);
        return f;
      }
      return counted_failure(std::move(job), now_us, error);
    default: break;
  }
  if (error.kind == ErrorKind::Unreachable || error.kind == ErrorKind::Timeout)
    return outage_failure(std::move(job), now_us, error);
  if (error.retry_free) {
    // Not the job's fault (e.g. a restarted server forgot it): again, paced by the job's backoff
    // so a server that keeps forgetting cannot spin us, but without spending a retry.
    Failure f;
    f.action = Failure::Action::Retry;
    f.job_index = job.job_index;
    f.backend = static_cast<size_t>(job.backend);
    f.message = error.describe();
    f.delay_ms = job.backoff.next_ms();
    requeue(std::move(job), now_us + static_cast<int64_t>(f.delay_ms) * 1000);
    return f;
  }
  return counted_failure(std::move(job), now_us, error);
}

void Scheduler::health_changed(size_t backend, Health health, int64_t now_us, const std::string &message) {
  if (backend >= backends_.size()) return;
  Backend &be = backends_[backend];
  be.st.health = health;
  if (is_down(health)) {
    backend_down(backend, health, now_us, message);
    // Its jobs will not finish there: forget them on its client and re-queue them now.
    std::vector<uint64_t> moved;
    for (const auto &entry : in_flight_)
      if (entry.second.backend == static_cast<long>(backend)) moved.push_back(entry.first);
    update_outage(now_us);
    for (uint64_t ticket : moved) {
      Job job = std::move(in_flight_[ticket]);
      in_flight_.erase(ticket);
      be.st.running--;
      be.st.jobs_requeued++;
      cancels_.push_back(Cancel{backend, job.prompt_id, false});
      int64_t delay_ms = any_available() ? 0 : outage_backoff_.next_ms();
      requeue(std::move(job), now_us + delay_ms * 1000);
    }
  } else if (health == Health::Ok) {
    backend_up(backend, now_us);
    update_outage(now_us);
  } else if (health == Health::Degraded && be.reported == Health::Ok) {
    notify(backend, Health::Degraded, message, 0);
  }
}

std::vector<Cancel> Scheduler::inject(std::vector<uint8_t> png) {
  std::vector<Cancel> cancels;
  for (auto &entry : in_flight_) {
    cancels.push_back(Cancel{static_cast<size_t>(entry.second.backend), entry.second.prompt_id, true});
    backends_[static_cast<size_t>(entry.second.backend)].st.running--;
  }
  stats_.jobs_discarded += in_flight_.size();
  stats_.injections++;
  in_flight_.clear();
  pending_.clear();
  latest_.bytes = std::make_shared<const std::vector<uint8_t>>(std::move(png));
  latest_.server_value.clear();
  latest_.backend = -1;
  latest_.keyframe = static_cast<int64_t>(delivered_++);  // the injected image is a keyframe too
  return cancels;
}

std::vector<Cancel> Scheduler::take_cancels() {
  std::vector<Cancel> out;
  out.swap(cancels_);
  return out;
}

std::vector<Notice> Scheduler::take_notices() {
  std::vector<Notice> out;
  out.swap(notices_);
  return out;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s = stats_;
  s.in_flight = static_cast<unsigned>(in_flight_.size());
  s.pending = static_cast<unsigned>(pending_.size());
  return s;
}

std::vector<BackendStats> Scheduler::backend_stats() const {
  std::vector<BackendStats> out;
  for (size_t b = 0; b < backends_.size(); ++b) {
    BackendStats s = backends_[b].st;
    s.available = available(b);
    out.push_back(s);
  }
  return out;
}

}  // namespace dw::comfy
