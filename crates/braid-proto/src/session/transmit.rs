//! Output: frames to send, chosen by the fair scheduler (see [`crate::sched`]).

use super::timers::TimerKind;
use super::{Event, Session, State, Wire};
use crate::frame::yamux::{self, Flags};
use crate::frame::{smux, smux::Cmd};
use crate::stream::{RecvFlow, SendState, StreamId, StreamState};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

/// Payloads up to this size are copied next to their header, so that runs of small
/// frames leave as one chunk; larger ones are handed out as they are, without a copy.
const INLINE_PAYLOAD: usize = 512;

/// Writes frames as chunks: headers and small payloads accumulate in the arena, large
/// payloads go out by reference. It speaks in the protocol-neutral terms of the session
/// (open, data, fin, ...) and encodes them for the wire in use.
struct Emitter<'a> {
    wire: Wire,
    arena: &'a mut BytesMut,
    out: &'a mut Vec<Bytes>,
    total: usize,
    frames: u64,
}

impl Emitter<'_> {
    fn smux_header(&mut self, codec: smux::Codec, cmd: Cmd, len: usize, id: u32) {
        self.arena
            .reserve(smux::HEADER_LEN + len.min(INLINE_PAYLOAD));
        codec.encode_header(cmd, len as u16, id, &mut *self.arena);
        self.total += smux::HEADER_LEN;
        self.frames += 1;
    }

    fn yamux_header(
        &mut self,
        codec: yamux::Codec,
        typ: yamux::Type,
        flags: Flags,
        id: u32,
        len: u32,
    ) {
        self.arena.reserve(yamux::HEADER_LEN + INLINE_PAYLOAD);
        codec.encode_header(typ, flags, id, len, &mut *self.arena);
        self.total += yamux::HEADER_LEN;
        self.frames += 1;
    }

    /// A yamux WindowUpdate, the carrier of SYN, ACK, FIN and RST as Go sends them.
    fn window_update(&mut self, flags: Flags, id: u32, delta: u32) {
        if let Wire::Yamux(c) = self.wire {
            self.yamux_header(c, yamux::Type::WindowUpdate, flags, id, delta);
        }
    }

    fn payload(&mut self, p: Bytes) {
        self.total += p.len();
        if p.len() <= INLINE_PAYLOAD {
            self.arena.put_slice(&p);
        } else {
            self.flush();
            self.out.push(p);
        }
    }

    fn data(&mut self, id: u32, p: Bytes) {
        match self.wire {
            Wire::Smux(c) => self.smux_header(c, Cmd::Psh, p.len(), id),
            Wire::Yamux(c) => {
                self.yamux_header(c, yamux::Type::Data, Flags::NONE, id, p.len() as u32)
            }
            Wire::Detect => return,
        }
        self.payload(p);
    }

    fn syn(&mut self, id: u32, delta: u32, name: &Bytes) {
        match self.wire {
            Wire::Smux(c) => {
                // A gmux name rides as the SYN payload.
                self.smux_header(c, Cmd::Syn, name.len(), id);
                self.payload(name.clone());
            }
            Wire::Yamux(_) => self.window_update(Flags::SYN, id, delta),
            Wire::Detect => {}
        }
    }

    fn fin(&mut self, id: u32) {
        match self.wire {
            Wire::Smux(c) => self.smux_header(c, Cmd::Fin, 0, id),
            Wire::Yamux(_) => self.window_update(Flags::FIN, id, 0),
            Wire::Detect => {}
        }
    }

    fn smux_upd(&mut self, id: u32, consumed: u32, window: u32) {
        if let Wire::Smux(c) = self.wire {
            self.arena.reserve(smux::HEADER_LEN + smux::UPD_LEN);
            c.encode_header(Cmd::Upd, smux::UPD_LEN as u16, id, &mut *self.arena);
            self.arena.put_u32_le(consumed);
            self.arena.put_u32_le(window);
            self.total += smux::HEADER_LEN + smux::UPD_LEN;
            self.frames += 1;
        }
    }

    fn nop(&mut self) {
        if let Wire::Smux(c) = self.wire {
            self.smux_header(c, Cmd::Nop, 0, 0);
        }
    }

    fn ping(&mut self, flags: Flags, value: u32) {
        if let Wire::Yamux(c) = self.wire {
            self.yamux_header(c, yamux::Type::Ping, flags, 0, value);
        }
    }

    fn go_away(&mut self, code: u32) {
        if let Wire::Yamux(c) = self.wire {
            self.yamux_header(c, yamux::Type::GoAway, Flags::NONE, 0, code);
        }
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
        let mut em = Emitter {
            wire: self.wire,
            arena: &mut self.headers,
            out,
            total: 0,
            frames: 0,
        };
        if matches!(self.state, State::Closed(_)) {
            // A session that failed may still owe the peer a GoAway saying why.
            if let Some(code) = self.go_away_due.take() {
                em.go_away(code);
                em.flush();
            }
            self.stats.frames_sent += em.frames;
            return em.total;
        }
        if let Some(ka) = self.keep_alive.as_mut() {
            if std::mem::take(&mut ka.nop_due) {
                em.nop();
            }
        }
        if let Some(code) = self.go_away_due.take() {
            em.go_away(code);
        }
        for value in self.pongs_due.drain(..) {
            em.ping(Flags::ACK, value);
        }
        for value in self.pings_due.drain(..) {
            em.ping(Flags::SYN, value);
        }
        for id in self.refused.drain(..) {
            // smux has no RST: a FIN tells the peer to expect nothing.
            match self.wire {
                Wire::Yamux(_) => em.window_update(Flags::RST, id, 0),
                _ => em.fin(id),
            }
        }
        let limits = DataLimits {
            now,
            max_frame: self.config.max_frame_size,
            wake_below: self.config.stream_send_buffer / 2,
            window: self.config.max_stream_buffer,
        };
        let mut framed = 0;
        // Streams that may be done with, and timers to arm, once the loops are over.
        let mut check = Vec::new();
        let mut timers = Vec::new();
        while let Some(id) = self.sched.pop_control() {
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            st.queued.control = false;
            if let SendState::Reset {
                reason,
                notify: true,
            } = st.send_state
            {
                // yamux's RST (smux tells the peer with its FIN, below).
                if st.is_yamux() {
                    st.send_state = SendState::Reset {
                        reason,
                        notify: false,
                    };
                    em.window_update(Flags::RST, id, 0);
                    check.push((id, false));
                    continue;
                }
            }
            if st.opening.take_syn() {
                let delta = take_window_delta(st);
                em.syn(id, delta, &st.name);
                if st.opening.awaiting_ack() {
                    timers.push((id, TimerKind::Open));
                }
                // The SYN takes the stream's first data frame along, so that a burst of
                // opens goes out as SYN, data, SYN, data... as Go sends it. Otherwise
                // all SYNs would overtake all data, and a peer whose acceptor waits for
                // each stream's first bytes could fill its accept backlog with streams
                // whose data is still behind the other SYNs.
                framed += send_data_frame(
                    &mut em,
                    st,
                    id,
                    &limits,
                    &mut self.events,
                    &mut self.send_pool,
                )
                .0;
            }
            if st.opening.take_ack_due() {
                let delta = take_window_delta(st);
                em.window_update(Flags::ACK, id, delta);
                st.upd_due = false;
            }
            if std::mem::take(&mut st.upd_due) {
                match &mut st.recv_flow {
                    RecvFlow::Smux(w) => em.smux_upd(id, w.consumed(), limits.window as u32),
                    RecvFlow::Yamux(w) => {
                        if let Some(tuner) = self.tuner.as_mut() {
                            tuner.on_update(w, now);
                        }
                        let delta = take_window_delta(st);
                        if delta > 0 {
                            em.window_update(Flags::NONE, id, delta);
                        }
                    }
                    RecvFlow::None => {}
                }
            }
            if let Some(ended) = send_fin_if_ready(&mut em, st, id) {
                check.push((id, ended));
                timers.push((id, TimerKind::Close));
            }
        }

        while em.total < max_bytes {
            let Some((id, level)) = self.sched.pop_data(limits.max_frame) else {
                break;
            };
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            let (n, more) = send_data_frame(
                &mut em,
                st,
                id,
                &limits,
                &mut self.events,
                &mut self.send_pool,
            );
            framed += n;
            self.sched.sent(level, n, self.config.priority_share);
            if more {
                self.sched.requeue_data(id, st.queued.priority);
            } else {
                // Out of data or credit: a write or a window update queues it again.
                st.queued.data = false;
            }
            if let Some(ended) = send_fin_if_ready(&mut em, st, id) {
                check.push((id, ended));
                timers.push((id, TimerKind::Close));
            }
        }
        em.flush();
        let total = em.total;
        self.stats.frames_sent += em.frames;
        self.stats.bytes_sent += framed as u64;

        self.send_buffered -= framed;
        if framed > 0 && self.send_buffered <= self.config.max_send_buffer / 2 {
            for id in std::mem::take(&mut self.send_waiters) {
                if let Some(st) = self.streams.get_mut(&id) {
                    st.send_waiting = false;
                    if std::mem::take(&mut st.write_waiting) {
                        self.events.push_back(Event::Writable(StreamId(id)));
                    }
                }
            }
        }
        if self.is_yamux() {
            for (id, kind) in timers {
                let wanted = self.streams.get(&id).is_some_and(|st| match kind {
                    TimerKind::Open => st.opening.awaiting_ack(),
                    TimerKind::Close => !st.recv_state.fin_received() && st.reset().is_none(),
                    TimerKind::Idle => false,
                });
                if wanted {
                    self.arm_stream_timer(id, kind, now);
                }
            }
        }
        for (id, ended) in check {
            if ended {
                self.report_end(id);
            }
            self.forget_if_done(id);
        }
        self.finish_closing_if_done();
        total
    }
}

struct DataLimits {
    now: Instant,
    max_frame: usize,
    /// A blocked writer is woken once its send buffer is down to this, not at every
    /// frame: fewer wakeups, and each wakeup has room for a large write.
    wake_below: usize,
    /// The receive window we announce (`max_stream_buffer`).
    window: usize,
}

/// yamux: the window delta to announce now (Go's `sendWindowUpdate` arithmetic), recorded
/// as sent. 0 for smux.
fn take_window_delta(st: &mut StreamState) -> u32 {
    match &mut st.recv_flow {
        RecvFlow::Yamux(w) => {
            let delta = w.delta(st.recv.len());
            w.on_update_sent(delta);
            delta
        }
        _ => 0,
    }
}

/// Sends one data frame of the stream, as large as its data, its credit and the frame
/// size allow. Returns the payload length and whether the stream could send more.
fn send_data_frame(
    em: &mut Emitter<'_>,
    st: &mut StreamState,
    id: u32,
    limits: &DataLimits,
    events: &mut VecDeque<Event>,
    pool: &mut crate::send_buf::BlockPool,
) -> (usize, bool) {
    let credit = match st.send_flow.credit() {
        Ok(c) => c,
        Err(o) => {
            // smux v2's ErrConsumed: this stream can no longer write.
            if let SendState::Open | SendState::Consumed(_) = st.send_state {
                st.send_state = SendState::Consumed(o);
            }
            if std::mem::take(&mut st.write_waiting) {
                events.push_back(Event::Writable(StreamId(id)));
            }
            0
        }
    };
    let n = st.send.len().min(credit).min(limits.max_frame);
    if n == 0 {
        return (0, false);
    }
    let payload = st.send.take(n, pool);
    let n = payload.len();
    em.data(id, payload);
    st.send_flow.on_sent(n);
    st.sent_bytes += n as u64;
    st.last_data = limits.now;
    if st.write_waiting && st.send.len() <= limits.wake_below {
        st.write_waiting = false;
        events.push_back(Event::Writable(StreamId(id)));
    }
    (n, !st.send.is_empty() && credit > n)
}

/// Sends the stream's FIN if it is due. Returns None if it was not, else whether it
/// ended the stream (the peer's FIN was in; a reset stream had ended before).
fn send_fin_if_ready(em: &mut Emitter<'_>, st: &mut StreamState, id: u32) -> Option<bool> {
    if !st.fin_ready() {
        return None;
    }
    em.fin(id);
    st.on_fin_sent();
    Some(st.send_state == SendState::FinSent && st.recv_state.fin_received())
}
