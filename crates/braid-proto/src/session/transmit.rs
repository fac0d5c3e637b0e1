//! Output: frames to send, chosen by the fair scheduler (see [`crate::sched`]).

use super::{Event, Session, State};
use crate::frame::smux::{Cmd, Codec, HEADER_LEN, UPD_LEN};
use crate::stream::{Fin, StreamId, StreamState};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

/// Payloads up to this size are copied next to their header, so that runs of small
/// frames leave as one chunk; larger ones are handed out as they are, without a copy.
const INLINE_PAYLOAD: usize = 512;

/// Writes frames as chunks: headers and small payloads accumulate in the arena, large
/// payloads go out by reference.
struct Emitter<'a> {
    codec: Codec,
    arena: &'a mut BytesMut,
    out: &'a mut Vec<Bytes>,
    total: usize,
}

impl Emitter<'_> {
    fn frame(&mut self, cmd: Cmd, stream_id: u32, payload: Option<Bytes>) {
        let len = payload.as_ref().map_or(0, |p| p.len());
        self.arena.reserve(HEADER_LEN + len.min(INLINE_PAYLOAD));
        self.codec
            .encode_header(cmd, len as u16, stream_id, &mut *self.arena);
        self.total += HEADER_LEN + len;
        if let Some(p) = payload {
            if p.len() <= INLINE_PAYLOAD {
                self.arena.put_slice(&p);
            } else {
                self.flush();
                self.out.push(p);
            }
        }
    }

    fn upd(&mut self, stream_id: u32, consumed: u32, window: u32) {
        self.arena.reserve(HEADER_LEN + UPD_LEN);
        self.codec
            .encode_header(Cmd::Upd, UPD_LEN as u16, stream_id, &mut *self.arena);
        self.arena.put_u32_le(consumed);
        self.arena.put_u32_le(window);
        self.total += HEADER_LEN + UPD_LEN;
    }

    fn flush(&mut self) {
        if !self.arena.is_empty() {
            self.out.push(self.arena.split().freeze());
        }
    }
}

impl Session {
    /// Appends the next frames to send to `out`, as chunks to write in order (ideally
    /// with one vectored write), and returns their total length. Control frames come
    /// first; data fills up to about `max_bytes` (one frame may exceed it). Returns 0
    /// when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<Bytes>, max_bytes: usize) -> usize {
        let _ = now; // smux sends nothing time-stamped; yamux pings will use it.
        if matches!(self.state, State::Closed(_)) {
            return 0;
        }
        let mut em = Emitter {
            codec: self.codec,
            arena: &mut self.headers,
            out,
            total: 0,
        };
        if std::mem::take(&mut self.nop_due) {
            em.frame(Cmd::Nop, 0, None);
        }
        let window = self.config.max_stream_buffer as u32;
        let data_limits = DataLimits {
            v2: self.config.protocol == crate::Protocol::SmuxV2,
            max_frame: self.config.max_frame_size,
            wake_below: self.config.stream_send_buffer / 2,
        };
        let mut framed = 0;
        // Released streams whose FIN goes out now are forgotten at the end.
        let mut finished = Vec::new();
        while let Some(id) = self.sched.pop_control() {
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            st.queued.control = false;
            if std::mem::take(&mut st.syn_due) {
                em.frame(Cmd::Syn, id, None);
                // The SYN takes the stream's first data frame along, so that a burst of
                // opens goes out as SYN, data, SYN, data... as Go sends it. Otherwise
                // all SYNs would overtake all data, and a peer whose acceptor waits for
                // each stream's first bytes could fill its accept backlog with streams
                // whose data is still behind the other SYNs.
                framed += send_data_frame(&mut em, st, id, &data_limits, &mut self.events).0;
            }
            if std::mem::take(&mut st.upd_due) {
                em.upd(id, st.recv_window.consumed(), window);
            }
            if send_fin_if_ready(&mut em, st, id) {
                finished.push(id);
            }
        }

        while em.total < max_bytes {
            let Some(id) = self.sched.pop_data() else {
                break;
            };
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            let (n, more) = send_data_frame(&mut em, st, id, &data_limits, &mut self.events);
            framed += n;
            if more {
                self.sched.requeue_data(id);
            } else {
                // Out of data or credit: a write or an UPD queues it again.
                st.queued.data = false;
            }
            if send_fin_if_ready(&mut em, st, id) {
                finished.push(id);
            }
        }
        em.flush();
        let total = em.total;

        self.send_buffered -= framed;
        if framed > 0 && self.send_buffered <= self.config.max_send_buffer / 2 {
            for id in std::mem::take(&mut self.send_waiters) {
                if let Some(st) = self.streams.get_mut(&id) {
                    if std::mem::take(&mut st.write_waiting) {
                        self.events.push_back(Event::Writable(StreamId(id)));
                    }
                }
            }
        }
        for id in finished {
            self.forget_if_done(id);
        }
        self.finish_closing_if_done();
        total
    }
}

struct DataLimits {
    v2: bool,
    max_frame: usize,
    /// A blocked writer is woken once its send buffer is down to this, not at every
    /// frame: fewer wakeups, and each wakeup has room for a large write.
    wake_below: usize,
}

/// Sends one data frame of the stream, as large as its data, its credit (v2) and the
/// frame size allow. Returns the payload length and whether the stream could send more.
fn send_data_frame(
    em: &mut Emitter<'_>,
    st: &mut StreamState,
    id: u32,
    limits: &DataLimits,
    events: &mut VecDeque<Event>,
) -> (usize, bool) {
    let credit = if limits.v2 {
        match st.send_window.credit() {
            Ok(c) => c,
            Err(o) => {
                // Go's ErrConsumed: this stream can no longer write.
                st.overconsumed = Some(o);
                if std::mem::take(&mut st.write_waiting) {
                    events.push_back(Event::Writable(StreamId(id)));
                }
                0
            }
        }
    } else {
        usize::MAX
    };
    let n = st.send.len().min(credit).min(limits.max_frame);
    if n == 0 {
        return (0, false);
    }
    let payload = st.send.split_to(n).freeze();
    em.frame(Cmd::Psh, id, Some(payload));
    st.send_window.on_sent(n);
    if st.write_waiting && st.send.len() <= limits.wake_below {
        st.write_waiting = false;
        events.push_back(Event::Writable(StreamId(id)));
    }
    (n, !st.send.is_empty() && credit > n)
}

/// Sends the stream's FIN if it is due; returns true if the stream is now done with.
fn send_fin_if_ready(em: &mut Emitter<'_>, st: &mut StreamState, id: u32) -> bool {
    if !st.fin_ready() {
        return false;
    }
    em.frame(Cmd::Fin, id, None);
    st.fin = Fin::Sent;
    st.released
}
