//! The fair write scheduler's queues.
//!
//! Control frames (SYN, UPD, FIN, NOP...) never wait behind data: streams with a control
//! frame due sit in `control`, which [`Session::poll_transmit`](crate::Session::poll_transmit)
//! empties before it sends any data.
//!
//! Streams with data and credit wait in one queue per priority (0 lowest, 255 highest).
//! Within a priority they take turns: each turn sends one frame of at most
//! `max_frame_size` bytes and puts the stream back at the tail. That is deficit round
//! robin with quantum = max frame size: a backlogged stream always fills a whole frame, so
//! every backlogged stream of a priority gets the same bytes per round.
//!
//! Higher priorities go first, but not forever: for every byte sent at the top priority,
//! `share`/(100 - `share`) bytes of credit accrue to the lower ones, and while that credit
//! covers a frame the next lower priority with data (in rotation) sends one. So waiting
//! lower priorities always get at least `share` percent of the link between them.
//!
//! Membership flags live in each stream, so a stream is queued at most once per queue and
//! the queues are bounded by the number of streams.

use std::collections::VecDeque;

/// Room an emptied priority queue keeps for the next streams.
const KEEP_CAPACITY: usize = 64;

/// A stream's queue membership and priority.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Queued {
    pub(crate) control: bool,
    pub(crate) data: bool,
    pub(crate) priority: u8,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    control: VecDeque<u32>,
    /// Data queues by priority, ascending. A queue that empties stays (with its
    /// allocation): one stream sending message after message would otherwise create and
    /// drop its priority's queue for every frame.
    data: Vec<(u8, VecDeque<u32>)>,
    /// Streams in the data queues.
    data_len: usize,
    /// Bytes owed to priorities below the top one.
    lower_credit: i64,
    /// The lower priority served last, so that they take turns.
    lower_cursor: Option<u8>,
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
            self.requeue_data(id, queued.priority);
        }
    }

    /// The highest priority with a stream waiting, below `below` (all: `None`).
    fn top_below(&self, below: Option<u8>) -> Option<u8> {
        self.data
            .iter()
            .rev()
            .filter(|(p, q)| below.is_none_or(|b| *p < b) && !q.is_empty())
            .map(|(p, _)| *p)
            .next()
    }

    /// The next stream with a control frame due. The caller clears `queued.control`.
    pub(crate) fn pop_control(&mut self) -> Option<u32> {
        self.control.pop_front()
    }

    /// The stream whose turn it is to send data, with the priority it was queued at. The
    /// caller clears `queued.data`, or calls [`Scheduler::requeue_data`] after its turn;
    /// either way it reports what was sent with [`Scheduler::sent`].
    pub(crate) fn pop_data(&mut self, frame: usize) -> Option<(u32, u8)> {
        let top = self.top_below(None)?;
        let mut level = top;
        if self.lower_credit >= frame as i64 {
            // A lower priority's turn, in rotation from the one below the last served.
            let below = self.lower_cursor.filter(|c| *c < top).unwrap_or(top);
            let next = self
                .top_below(Some(below))
                .or_else(|| self.top_below(Some(top)));
            if let Some(p) = next {
                level = p;
                self.lower_cursor = Some(p);
            }
        }
        let (_, queue) = self
            .data
            .iter_mut()
            .find(|(p, _)| *p == level)
            .expect("level has a queue");
        let id = queue.pop_front().expect("the level has a stream waiting");
        if queue.is_empty() && queue.capacity() > KEEP_CAPACITY {
            // A burst of many streams left it large: no need to keep that.
            queue.shrink_to(KEEP_CAPACITY);
        }
        self.data_len -= 1;
        Some((id, level))
    }

    /// Accounts `bytes` sent from priority `level` for the lower priorities' share.
    pub(crate) fn sent(&mut self, level: u8, bytes: usize, share: u8) {
        let top = self.top_below(None).unwrap_or(level).max(level);
        let lower_waiting = self.top_below(Some(top)).is_some();
        if level == top && lower_waiting {
            let share = share.min(99) as i64;
            self.lower_credit += bytes as i64 * share / (100 - share);
        } else if level < top {
            self.lower_credit = (self.lower_credit - bytes as i64).max(0);
        }
        if !lower_waiting && level == top {
            // Nobody below is waiting: no debt carries over.
            self.lower_credit = 0;
        }
    }

    /// Puts a stream that still has data and credit at the tail of its priority.
    pub(crate) fn requeue_data(&mut self, id: u32, priority: u8) {
        let i = match self.data.binary_search_by_key(&priority, |(p, _)| *p) {
            Ok(i) => i,
            Err(i) => {
                self.data.insert(i, (priority, VecDeque::new()));
                i
            }
        };
        self.data[i].1.push_back(id);
        self.data_len += 1;
    }

    /// True when no stream waits for a turn.
    pub(crate) fn is_idle(&self) -> bool {
        self.control.is_empty() && self.data_len == 0
    }
}
