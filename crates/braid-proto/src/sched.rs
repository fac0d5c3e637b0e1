//! The fair write scheduler's queues.
//!
//! Control frames (SYN, UPD, FIN, NOP) never wait behind data: streams with a control
//! frame due sit in `control`, which [`Session::poll_transmit`](crate::Session::poll_transmit)
//! empties before it sends any data. Streams with data and credit take turns in `data`:
//! each turn sends one frame of at most `max_frame_size` bytes and puts the stream back at
//! the tail. That is deficit round robin with quantum = max frame size: a backlogged stream
//! always fills a whole frame, so every backlogged stream gets the same bytes per round.
//!
//! Membership flags live in each stream, so a stream is queued at most once per queue and
//! the queues are bounded by the number of streams.

use std::collections::VecDeque;

/// Whether a stream is in each queue.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Queued {
    pub(crate) control: bool,
    pub(crate) data: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    control: VecDeque<u32>,
    data: VecDeque<u32>,
}

impl Scheduler {
    pub(crate) fn push_control(&mut self, queued: &mut Queued, id: u32) {
        if !queued.control {
            queued.control = true;
            self.control.push_back(id);
        }
    }

    pub(crate) fn push_data(&mut self, queued: &mut Queued, id: u32) {
        if !queued.data {
            queued.data = true;
            self.data.push_back(id);
        }
    }

    /// The next stream with a control frame due. The caller clears `queued.control`.
    pub(crate) fn pop_control(&mut self) -> Option<u32> {
        self.control.pop_front()
    }

    /// The stream whose turn it is to send data. The caller clears `queued.data`, or
    /// calls [`Scheduler::requeue_data`] after its turn.
    pub(crate) fn pop_data(&mut self) -> Option<u32> {
        self.data.pop_front()
    }

    /// Puts a stream that still has data and credit at the tail, after its turn.
    pub(crate) fn requeue_data(&mut self, id: u32) {
        self.data.push_back(id);
    }

    /// True when no stream waits for a turn.
    pub(crate) fn is_idle(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
    }
}
