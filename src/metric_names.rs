//! The names of the Prometheus series this program exports. A leaf: it imports nothing
//! of this crate, so storage (which counts busy answers and the write queue) and the
//! routes (which count stored messages) name their series without depending on the
//! telemetry module that serves them.

/// HTTP requests answered, by method, route template and status.
pub const REQUESTS: &str = "neptun_http_requests_total";
/// Time to answer a request, by route template (a histogram).
pub const LATENCY: &str = "neptun_http_request_duration_seconds";
/// Messages stored (counted by the create-messages route).
pub const MESSAGES_STORED: &str = "neptun_messages_stored_total";
/// Create-messages requests of the batch form that were stored.
pub const BATCHES_STORED: &str = "neptun_batches_stored_total";
/// Writes waiting for or running on the writer thread.
pub const WRITE_QUEUE_DEPTH: &str = "neptun_db_write_queue_depth";
/// Statements that waited past the busy timeout for a lock: SQLITE_BUSY, or PostgreSQL's
/// lock timeout, deadlock and serialization failures.
pub const DB_BUSY: &str = "neptun_db_busy_total";
/// Open events streams.
pub const OPEN_STREAMS: &str = "neptun_events_open_streams";
/// Events sent on events streams.
pub const EVENTS_SENT: &str = "neptun_events_sent_total";
/// Events streams that began with a `reset` (their Last-Event-ID was too old).
pub const STREAMS_RESET: &str = "neptun_events_streams_reset_total";
/// Time from a change's commit to its event being sent, in seconds (a histogram).
pub const EVENTS_LAG: &str = "neptun_events_lag_seconds";
/// Open HTTP connections.
pub const OPEN_CONNECTIONS: &str = "neptun_http_open_connections";
/// Resident memory of the process, in bytes.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
