//! The tap: where every frame and command summary leaves the data path for the
//! recorder.
//!
//! The gateway calls [`Tap::record_request`] for a client's request *before*
//! forwarding it: an error there means the command is refused (fail closed), so
//! nothing runs unrecorded. Everything else goes through [`Tap::record`], which
//! must not block the hot path (the recorder batches behind a bounded channel).

use std::sync::{Arc, Mutex};

use crate::TapEvent;

/// The tap cannot take an event; the gateway refuses the command.
#[derive(Debug, Clone, thiserror::Error)]
#[error("recording unavailable: {0}")]
pub struct TapError(pub String);

pub trait Tap: Send + Sync + 'static {
    /// Records a client request. Returns once the request is safe from a killed
    /// gateway process (written to the spool); an error refuses the command.
    fn record_request(&self, event: TapEvent) -> Result<(), TapError>;

    /// Records anything else: responses, summaries, session rows. Must not block.
    fn record(&self, event: TapEvent);

    /// Whether recording keeps up (for `/readyz`): an error says what is wrong,
    /// e.g. archive uploads stuck. Must not block (called by the admin
    /// endpoint's handler).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Records nothing. For a gateway with recording disabled, and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopTap;

impl Tap for NoopTap {
    fn record_request(&self, _event: TapEvent) -> Result<(), TapError> {
        Ok(())
    }
    fn record(&self, _event: TapEvent) {}
}

/// Keeps every event in memory, for tests to assert on.
#[derive(Debug, Default, Clone)]
pub struct MemoryTap {
    events: Arc<Mutex<Vec<TapEvent>>>,
    fail_requests: Arc<Mutex<Option<String>>>,
}

impl MemoryTap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<TapEvent> {
        self.events.lock().expect("tap lock").clone()
    }

    /// Makes every later request fail, as a full spool would.
    pub fn fail_requests(&self, reason: Option<&str>) {
        *self.fail_requests.lock().expect("tap lock") = reason.map(str::to_string);
    }
}

impl Tap for MemoryTap {
    fn record_request(&self, event: TapEvent) -> Result<(), TapError> {
        if let Some(reason) = self.fail_requests.lock().expect("tap lock").clone() {
            return Err(TapError(reason));
        }
        self.events.lock().expect("tap lock").push(event);
        Ok(())
    }

    fn record(&self, event: TapEvent) {
        self.events.lock().expect("tap lock").push(event);
    }
}
