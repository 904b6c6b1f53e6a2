//! A panic while processing one input is caught, not fatal: the batch is
//! processed again from its start, from the store's state, with that input
//! (by its place in the batch) a dead letter `internal_error`. The core is
//! deterministic, so the inputs before it give the same results again;
//! their outputs already reached the sink, and [`Muted`] keeps the second
//! copies from it. Every account is then exactly as if the input had never
//! come, and the partition goes on. Nothing is paid for this on the way
//! through a batch that does not panic but a counter per input.

use super::{Input, Sink};
use crate::accrue::{AccrualRecord, DerivedEvent, NoEffect};
use crate::events::Event;
use crate::time::Timestamp;

/// The dead-letter reason of an input whose processing panicked.
pub const INTERNAL_ERROR: &str = "internal_error";

/// A sink that passes on only what inputs at or after `from` (their place
/// in the batch's work, derived events included) produce.
pub struct Muted<'s, S> {
    pub sink: &'s mut S,
    pub from: usize,
    /// The place of the work being processed.
    pub at: usize,
}

impl<S: Sink> Muted<'_, S> {
    fn open(&self) -> bool {
        self.at >= self.from
    }
}

impl<S: Sink> Sink for Muted<'_, S> {
    fn accrued(&mut self, offset: u64, event: &Event<'_>, records: &[AccrualRecord]) {
        if self.open() {
            self.sink.accrued(offset, event, records);
        }
    }

    fn no_effect(&mut self, offset: u64, event: &Event<'_>, why: NoEffect) {
        if self.open() {
            self.sink.no_effect(offset, event, why);
        }
    }

    fn duplicate(&mut self, offset: u64, event: &Event<'_>, first_seen: Timestamp) {
        if self.open() {
            self.sink.duplicate(offset, event, first_seen);
        }
    }

    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        if self.open() {
            self.sink.dead_letter(input, reason, detail);
        }
    }

    fn derived(&mut self, offset: u64, event: &DerivedEvent) {
        if self.open() {
            self.sink.derived(offset, event);
        }
    }
}

/// The text of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}
