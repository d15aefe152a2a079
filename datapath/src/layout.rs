//! Sizes of a worker's per-SA state, in one place: the worker's types
//! have them (`worker.rs` checks that at compile time), and an SA's
//! memory footprint counts them (`sa.rs`). A leaf module, so neither has
//! to import the other for them.

/// Bytes a worker keeps per SA index besides the replay bitmap: its
/// replay slot (`worker::SaSlot`: the window's bitmap pointer and state).
pub(crate) const SLOT_BYTES: usize = 24;
/// And its counter cell (`worker::SaCounterCell`: six counters shared by
/// the directions and the generation).
pub(crate) const COUNTER_CELL_BYTES: usize = 56;
