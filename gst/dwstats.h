/* Names of the stats structures and element messages of the dreamwindow elements, declared once.
 *
 * Each element builds its `stats` property (application/x-<element>-stats) and posts its element
 * messages (dreamwindow-*) with these names only; the app (tools/dreamwindow) and the tests read them
 * with these names only, so a rename is a compile-visible change in one place. One section per
 * element; an element's owner adds its new fields in its own section. Field types and meanings are
 * documented in docs/elements/<element>.md. */
#pragma once

/* ---- comfykeyframesrc ------------------------------------------------------------------------ */
#define DW_STATS_COMFYKEYFRAMESRC_NAME "application/x-comfykeyframesrc-stats"
#define DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES "keyframes"                       /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_JOBS_QUEUED "jobs-queued"                   /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_JOBS_SUCCEEDED "jobs-succeeded"             /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_JOBS_FAILED "jobs-failed"                   /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_JOBS_RETRIED "jobs-retried"                 /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_JOBS_DISCARDED "jobs-discarded"             /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_INJECTIONS "injections"                     /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_LAST_GENERATION_TIME "last-generation-time" /* guint64 ns */
#define DW_STATS_COMFYKEYFRAMESRC_MEAN_GENERATION_TIME "mean-generation-time" /* guint64 ns */
#define DW_STATS_COMFYKEYFRAMESRC_SERVER_WAIT_TIME "server-wait-time"         /* guint64 ns */
#define DW_STATS_COMFYKEYFRAMESRC_IN_FLIGHT "in-flight"                       /* guint */
#define DW_STATS_COMFYKEYFRAMESRC_READY "ready"                               /* guint */
#define DW_STATS_COMFYKEYFRAMESRC_RECONNECTS "reconnects"                     /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_CONNECTED "connected"                       /* gboolean */
#define DW_STATS_COMFYKEYFRAMESRC_PENDING "pending"                           /* guint: jobs waiting to be re-sent */
#define DW_STATS_COMFYKEYFRAMESRC_OUTAGE "outage"                             /* gboolean: no backend available */
#define DW_STATS_COMFYKEYFRAMESRC_OUTAGES "outages"                           /* guint64: times all went down */
#define DW_STATS_COMFYKEYFRAMESRC_BACKENDS "backends"                         /* GstValueArray of structures: */
/* One structure per backend of the `server` list, in its order. */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_NAME "application/x-comfykeyframesrc-backend"
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_SERVER "server"                     /* string: base URL (the label) */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_HEALTH "health"                     /* string: unknown|ok|unreachable|unresponsive|degraded */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_AVAILABLE "available"               /* gboolean: jobs may go there */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_CONNECTED "connected"               /* gboolean: websocket up */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_ERROR_STREAK "error-streak"         /* guint: failures since the last success */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_SINCE_SUCCESS "since-last-success"  /* gint64 ns; -1 = never */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_GENERATION_TIME "generation-time"   /* gint64 ns EWMA; -1 = unknown */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_RUNNING "running"                   /* guint: jobs there now */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_SUCCEEDED "jobs-succeeded"     /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_FAILED "jobs-failed"           /* guint64 */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_REQUEUED "jobs-requeued"       /* guint64: moved off it (down) */
#define DW_STATS_COMFYKEYFRAMESRC_BACKEND_RECONNECTS "reconnects"             /* guint64 */

/* Element message posted when a backend goes down, degrades or recovers (warnings carry the text). */
#define DW_MSG_BACKEND_NAME "dreamwindow-backend"
#define DW_MSG_BACKEND_SERVER "server"       /* string */
#define DW_MSG_BACKEND_INDEX "backend"       /* guint: position in the server list */
#define DW_MSG_BACKEND_EVENT "event"         /* string: down | degraded | recovered */
#define DW_MSG_BACKEND_HEALTH "health"       /* string, as in the stats */
#define DW_MSG_BACKEND_MESSAGE "message"     /* string: why */
#define DW_MSG_BACKEND_DOWN_TIME "down-time" /* guint64 ns: recovered after this long */

/* Element message posted per keyframe pushed. */
#define DW_MSG_KEYFRAME_NAME "dreamwindow-keyframe"
#define DW_MSG_KEYFRAME_INDEX "index"                     /* guint64 */
#define DW_MSG_KEYFRAME_RUNNING_TIME "running-time"       /* guint64 ns */
#define DW_MSG_KEYFRAME_GENERATION_TIME "generation-time" /* guint64 ns */
#define DW_MSG_KEYFRAME_PROMPT "prompt"                   /* string */
#define DW_MSG_KEYFRAME_SEED "seed"                       /* gint64 */
#define DW_MSG_KEYFRAME_INJECTED "injected"               /* gboolean */
#define DW_MSG_KEYFRAME_REASON "reason"                   /* string */
#define DW_MSG_KEYFRAME_DISCONT "discont"                 /* gboolean: first after an outage gap (buffer DISCONT) */
#define DW_MSG_KEYFRAME_SERVER "server"                   /* string: backend that made it ("" injected) */
#define DW_MSG_KEYFRAME_PARENT "parent-index"             /* gint64: keyframe it was made from; -1 seed image */

/* ---- cachetap -------------------------------------------------------------------------------- */
#define DW_STATS_CACHETAP_NAME "application/x-cachetap-stats"
#define DW_STATS_CACHETAP_KEYFRAMES "keyframes"                     /* guint64 */
#define DW_STATS_CACHETAP_ANALYSED "analysed"                       /* guint64 */
#define DW_STATS_CACHETAP_ANALYSES_SKIPPED "analyses-skipped"       /* guint64 */
#define DW_STATS_CACHETAP_QUEUED "queued"                           /* guint */
#define DW_STATS_CACHETAP_ADDED "added"                             /* guint64 */
#define DW_STATS_CACHETAP_REJECTED "rejected"                       /* guint64 */
#define DW_STATS_CACHETAP_EVICTED "evicted"                         /* guint64 */
#define DW_STATS_CACHETAP_ENTRIES "entries"                         /* guint */
#define DW_STATS_CACHETAP_WARM_ENTRIES "warm-entries"               /* guint */
#define DW_STATS_CACHETAP_INJECTIONS "injections"                   /* guint64 */
#define DW_STATS_CACHETAP_INJECTIONS_REFUSED "injections-refused"   /* guint64 */
#define DW_STATS_CACHETAP_NO_CANDIDATE "no-candidate"               /* guint64 */
#define DW_STATS_CACHETAP_COLLAPSES_MILD "collapses-mild"           /* guint64 */
#define DW_STATS_CACHETAP_COLLAPSES_SEVERE "collapses-severe"       /* guint64 */
#define DW_STATS_CACHETAP_COLLAPSE_LEVEL "collapse-level"           /* string */
#define DW_STATS_CACHETAP_COLLAPSE_REASON "collapse-reason"         /* string */
#define DW_STATS_CACHETAP_LAST_SIMILARITY "last-similarity"         /* gdouble */
#define DW_STATS_CACHETAP_WINDOW_SIMILARITY "window-similarity"     /* gdouble */
#define DW_STATS_CACHETAP_DIVERSITY "diversity"                     /* gdouble */
#define DW_STATS_CACHETAP_CLUSTERS "clusters"                       /* guint */
#define DW_STATS_CACHETAP_MAX_REDUNDANCY "max-redundancy"           /* gdouble */
#define DW_STATS_CACHETAP_DIVERSITY_THRESHOLD "diversity-threshold" /* gdouble */
#define DW_STATS_CACHETAP_MONITOR_RUNS "monitor-runs"               /* guint64 */
#define DW_STATS_CACHETAP_ERRORS "errors"                           /* guint64 */
#define DW_STATS_CACHETAP_MEAN_ANALYSIS_TIME "mean-analysis-time"   /* guint64 ns */
#define DW_STATS_CACHETAP_MAX_ANALYSIS_TIME "max-analysis-time"     /* guint64 ns */
#define DW_STATS_CACHETAP_EMBEDDING "embedding"                     /* string */

/* Element message posted when cachetap asks for an injection. */
#define DW_MSG_INJECTION_NAME "dreamwindow-injection"
#define DW_MSG_INJECTION_REASON "reason"                       /* string */
#define DW_MSG_INJECTION_LEVEL "level"                         /* string */
#define DW_MSG_INJECTION_SIMILARITY "similarity"               /* gdouble */
#define DW_MSG_INJECTION_WINDOW_SIMILARITY "window-similarity" /* gdouble */
#define DW_MSG_INJECTION_ENTRY "entry"                         /* string */
#define DW_MSG_INJECTION_ENTRY_PROMPT "entry-prompt"           /* string */
#define DW_MSG_INJECTION_STRENGTH "strength"                   /* gdouble */
#define DW_MSG_INJECTION_KEYFRAME_INDEX "keyframe-index"       /* guint64 */
#define DW_MSG_INJECTION_RUNNING_TIME "running-time"           /* guint64 ns */

/* Element message posted after each diversity-monitor run. */
#define DW_MSG_CACHE_NAME "dreamwindow-cache"
#define DW_MSG_CACHE_ENTRIES "entries"                         /* guint */
#define DW_MSG_CACHE_DIVERSITY "diversity"                     /* gdouble */
#define DW_MSG_CACHE_MEAN_SIMILARITY "mean-similarity"         /* gdouble */
#define DW_MSG_CACHE_CLUSTERS "clusters"                       /* guint */
#define DW_MSG_CACHE_LARGEST_CLUSTER "largest-cluster"         /* guint */
#define DW_MSG_CACHE_MAX_REDUNDANCY "max-redundancy"           /* gdouble */
#define DW_MSG_CACHE_MOST_REDUNDANT "most-redundant"           /* string */
#define DW_MSG_CACHE_DIVERSITY_THRESHOLD "diversity-threshold" /* gdouble */
#define DW_MSG_CACHE_RUNNING_TIME "running-time"               /* guint64 ns */

/* ---- vaeinterp ------------------------------------------------------------------------------- */
#define DW_STATS_VAEINTERP_NAME "application/x-vaeinterp-stats"
#define DW_STATS_VAEINTERP_KEYFRAMES "keyframes"                   /* guint64 */
#define DW_STATS_VAEINTERP_KEYFRAMES_ENCODED "keyframes-encoded"   /* guint64 */
#define DW_STATS_VAEINTERP_KEYFRAMES_OUT "keyframes-out"           /* guint64 */
#define DW_STATS_VAEINTERP_INBETWEENS_OUT "inbetweens-out"         /* guint64 */
#define DW_STATS_VAEINTERP_FRAMES_OUT "frames-out"                 /* guint64 */
#define DW_STATS_VAEINTERP_PAIRS "pairs"                           /* guint64 */
#define DW_STATS_VAEINTERP_PAIRS_RESTARTED "pairs-restarted"       /* guint64 */
#define DW_STATS_VAEINTERP_ERRORS "errors"                         /* guint64 */
#define DW_STATS_VAEINTERP_ENCODE_MS_LAST "encode-ms-last"         /* gdouble */
#define DW_STATS_VAEINTERP_ENCODE_MS_MEAN "encode-ms-mean"         /* gdouble */
#define DW_STATS_VAEINTERP_DECODE_MS_LAST "decode-ms-last"         /* gdouble */
#define DW_STATS_VAEINTERP_DECODE_MS_MEAN "decode-ms-mean"         /* gdouble */
#define DW_STATS_VAEINTERP_INTERP_FPS_LAST "interp-fps-last"       /* gdouble */
#define DW_STATS_VAEINTERP_INTERP_FPS_MEAN "interp-fps-mean"       /* gdouble */
#define DW_STATS_VAEINTERP_FRAMES_LAST "frames-last"               /* guint */
#define DW_STATS_VAEINTERP_KEYFRAME_PERIOD "keyframe-period"       /* guint64 ns */
#define DW_STATS_VAEINTERP_QUEUE_DEPTH "queue-depth"               /* guint */
#define DW_STATS_VAEINTERP_MAX_PENDING "max-pending"               /* guint */
#define DW_STATS_VAEINTERP_BACKPRESSURE_MS "backpressure-ms"       /* gdouble */
#define DW_STATS_VAEINTERP_LOCK_ACQUISITIONS "lock-acquisitions"   /* guint64 */
#define DW_STATS_VAEINTERP_LOCK_WAIT_MS_TOTAL "lock-wait-ms-total" /* gdouble */
#define DW_STATS_VAEINTERP_LOCK_WAIT_MS_MAX "lock-wait-ms-max"     /* gdouble */
#define DW_STATS_VAEINTERP_BACKEND "backend"                       /* string */
#define DW_STATS_VAEINTERP_TRANSITIONS "transitions"               /* guint64: pairs planned as a short transition */
#define DW_STATS_VAEINTERP_VFI_MODEL_CALLS "vfi-model-calls"       /* guint64, backend=vfi */
#define DW_STATS_VAEINTERP_VFI_PEAK_LIVE "vfi-peak-live-intermediates" /* guint64, backend=vfi */
#define DW_STATS_VAEINTERP_MOTION_PAIRS "motion-compensated-pairs" /* guint64, latent backends: morphed in each keyframe's geometry and warped */
#define DW_STATS_VAEINTERP_MORPH_PAIRS "morph-pairs"               /* guint64, latent backends: flow did not explain the change, slerped in place */

/* Element message posted per interpolated pair. */
#define DW_MSG_INTERP_NAME "dreamwindow-interp"
#define DW_MSG_INTERP_KEYFRAME_INDEX "keyframe-index"           /* guint64 */
#define DW_MSG_INTERP_NEXT_KEYFRAME_INDEX "next-keyframe-index" /* guint64 */
#define DW_MSG_INTERP_INBETWEENS "inbetweens"                   /* guint */
#define DW_MSG_INTERP_INTERVAL "interval"                       /* guint64 ns */
#define DW_MSG_INTERP_RUNNING_TIME "running-time"               /* guint64 ns */
#define DW_MSG_INTERP_ENCODE_MS "encode-ms"                     /* gdouble */
#define DW_MSG_INTERP_DECODE_MS "decode-ms"                     /* gdouble */
#define DW_MSG_INTERP_INTERP_FPS "interp-fps"                   /* gdouble */
#define DW_MSG_INTERP_LOCK_WAIT_MS "lock-wait-ms"               /* gdouble */
#define DW_MSG_INTERP_QUEUE_DEPTH "queue-depth"                 /* guint */
#define DW_MSG_INTERP_BACKEND "backend"                         /* string */
#define DW_MSG_INTERP_KIND "kind"                               /* string: interpolate | transition */

/* ---- flightbuffer ---------------------------------------------------------------------------- */
#define DW_STATS_FLIGHTBUFFER_NAME "application/x-flightbuffer-stats"
#define DW_STATS_FLIGHTBUFFER_STATE "state"                               /* string */
#define DW_STATS_FLIGHTBUFFER_FILL_TIME "fill-time"                       /* guint64 ns */
#define DW_STATS_FLIGHTBUFFER_FILL_FRAMES "fill-frames"                   /* guint */
#define DW_STATS_FLIGHTBUFFER_PREBUFFER_TIME "prebuffer-time"             /* guint64 ns */
#define DW_STATS_FLIGHTBUFFER_TARGET_FILL "target-fill"                   /* guint64 ns */
#define DW_STATS_FLIGHTBUFFER_MAX_SIZE_TIME "max-size-time"               /* guint64 ns */
#define DW_STATS_FLIGHTBUFFER_INPUT_RATE "input-rate"                     /* gdouble frames/s */
#define DW_STATS_FLIGHTBUFFER_OUTPUT_RATE "output-rate"                   /* gdouble frames/s */
#define DW_STATS_FLIGHTBUFFER_OUTPUT_FPS "output-fps"                     /* gdouble frames/s */
#define DW_STATS_FLIGHTBUFFER_PLAYBACK_RATE "playback-rate"               /* gdouble */
#define DW_STATS_FLIGHTBUFFER_FRAMES_IN "frames-in"                       /* guint64 */
#define DW_STATS_FLIGHTBUFFER_FRAMES_OUT "frames-out"                     /* guint64 */
#define DW_STATS_FLIGHTBUFFER_FRAMES_REPEATED "frames-repeated"           /* guint64 */
#define DW_STATS_FLIGHTBUFFER_FRAMES_SKIPPED "frames-skipped"             /* guint64 */
#define DW_STATS_FLIGHTBUFFER_UNDERRUNS "underruns"                       /* guint64 */
#define DW_STATS_FLIGHTBUFFER_DROPS "drops"                               /* guint64 */
#define DW_STATS_FLIGHTBUFFER_DROPPED_INBETWEENS "dropped-inbetweens"     /* guint64 */
#define DW_STATS_FLIGHTBUFFER_DROPPED_KEYFRAMES "dropped-keyframes"       /* guint64 */
#define DW_STATS_FLIGHTBUFFER_LATE_TICKS "late-ticks"                     /* guint64 */
#define DW_STATS_FLIGHTBUFFER_PREBUFFER_INCOMPLETE "prebuffer-incomplete" /* guint64 */
#define DW_STATS_FLIGHTBUFFER_RUNNING_TIME "running-time"                 /* guint64 ns */
/* Content rate (issue 10): new pictures per second beside output-rate; a repeat of the previous
 * output (same buffer memory, or same DwFrameMeta kind/index/position) is never counted. */
#define DW_STATS_FLIGHTBUFFER_DISTINCT_RATE "distinct-rate"               /* gdouble frames/s */
#define DW_STATS_FLIGHTBUFFER_FRAMES_DISTINCT "frames-distinct"           /* guint64 */
#define DW_STATS_FLIGHTBUFFER_DISCONTINUITIES "discontinuities"           /* guint64 (outages, DISCONT) */

/* Element message posted on state changes and every stats-interval: the stats fields above plus
 * event (and reason). */
#define DW_MSG_BUFFER_NAME "dreamwindow-buffer"
#define DW_MSG_BUFFER_EVENT "event"   /* string */
#define DW_MSG_BUFFER_REASON "reason" /* string */

/* Prefix every dreamwindow element message name starts with. */
#define DW_MSG_PREFIX "dreamwindow-"
