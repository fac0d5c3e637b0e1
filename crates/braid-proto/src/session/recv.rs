//! Input: frames from the peer, for both protocols.

use super::{Event, Session, State, Wire, MAX_QUEUED_REPLIES};
use crate::error::{ConnectionError, ProtocolViolation, ResetReason};
use crate::frame::{smux, yamux};
use crate::stream::{Opening, RecvFlow, RecvState, SendFlow, SendState, StreamId};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

impl Session {
    /// Consumes whole frames from the front of `buf` while [`Session::wants_read`] holds.
    /// A partial frame, and every frame after reading paused, stays in `buf` for the
    /// next call. Returns the error that ended the session, if it has ended.
    pub fn handle_input(
        &mut self,
        now: Instant,
        buf: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        self.now = self.now.max(now);
        if matches!(self.wire, Wire::Detect) && !buf.is_empty() && !self.is_closed() {
            if let Err(e) = self.detect(buf[0], now) {
                self.fail(e);
            }
        }
        while self.wants_read() {
            let result: Result<Option<()>, ConnectionError> = match self.wire {
                Wire::Smux(codec) => match codec.decode(buf) {
                    Ok(f) => Ok(f.map(|f| self.on_smux(f))),
                    Err(e) => Err(e.into()),
                },
                Wire::Yamux(codec) => match codec.decode(buf) {
                    Ok(f) => Ok(f.map(|f| self.on_yamux(f, now))),
                    Err(e) => Err(e.into()),
                },
                Wire::Detect => Ok(None),
            };
            match result {
                Ok(Some(())) => {
                    self.stats.frames_received += 1;
                    if let Some(ka) = self.keep_alive.as_mut() {
                        ka.data_ready = true;
                    }
                }
                Ok(None) => break,
                Err(e) => self.fail(e),
            }
        }
        match &self.state {
            State::Closed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn on_smux(&mut self, frame: smux::Frame) {
        match frame {
            smux::Frame::Nop { .. } => {}
            // A SYN payload is a gmux name; the codec rejects it unless names are on.
            smux::Frame::Syn { stream_id, name } => {
                if self.is_ours(stream_id) {
                    return self.fail(ProtocolViolation::WrongParity(stream_id).into());
                }
                // A duplicate SYN for a live stream is ignored, as Go does. While closing
                // or after go_away, new streams are ignored (smux cannot refuse them).
                if self.streams.contains_key(&stream_id) || !self.taking_new_streams() {
                    return;
                }
                if self.config.accept_streams {
                    self.queue_incoming(stream_id, name);
                } else if self.refused.len() < MAX_QUEUED_REPLIES {
                    self.refused.push_back(stream_id);
                }
            }
            smux::Frame::Fin { stream_id } => self.on_remote_fin(stream_id),
            smux::Frame::Psh { stream_id, data } => self.on_data(stream_id, data),
            smux::Frame::Upd {
                stream_id,
                consumed,
                window,
            } => {
                if let Some(st) = self.streams.get_mut(&stream_id) {
                    if let SendFlow::Smux(w) = &mut st.send_flow {
                        w.on_update(consumed, window);
                    }
                    if !st.send.is_empty() {
                        self.sched.push_data(&mut st.queued, stream_id);
                    }
                }
            }
        }
    }

    /// Applies a yamux frame in Go's order: SYN opens the stream, ACK completes our
    /// open, then the data or window delta, then FIN, then RST.
    fn on_yamux(&mut self, frame: yamux::Frame, now: Instant) {
        let (stream_id, flags, data, delta) = match frame {
            yamux::Frame::Data {
                stream_id,
                flags,
                data,
            } => (stream_id, flags, Some(data), 0),
            yamux::Frame::WindowUpdate {
                stream_id,
                flags,
                delta,
            } => (stream_id, flags, None, delta),
            yamux::Frame::Ping { flags, opaque } => return self.on_ping(flags, opaque, now),
            yamux::Frame::GoAway { code } => {
                if code == yamux::GO_AWAY_NORMAL {
                    if !std::mem::replace(&mut self.remote_go_away, true) {
                        self.events.push_back(Event::GoAway);
                    }
                } else {
                    self.fail(ConnectionError::GoAway(code));
                }
                return;
            }
        };
        use yamux::Flags;
        if flags.contains(Flags::SYN) {
            if self.is_ours(stream_id) {
                return self.fail(ProtocolViolation::WrongParity(stream_id).into());
            }
            if self.streams.contains_key(&stream_id) {
                return self.fail(ProtocolViolation::DuplicateStream(stream_id).into());
            }
            if !self.taking_new_streams()
                || !self.config.accept_streams
                || self.accept_queue.len() >= self.config.accept_backlog
            {
                // Refused with RST; its data is dropped below as for any unknown stream.
                if self.refused.len() < MAX_QUEUED_REPLIES {
                    self.refused.push_back(stream_id);
                }
            } else {
                self.queue_incoming(stream_id, Bytes::new());
            }
        }
        let Some(st) = self.streams.get_mut(&stream_id) else {
            // Late frames for streams we no longer know are ignored, as Go does.
            return;
        };
        if flags.contains(Flags::ACK) && st.opening.take_ack() {
            self.unacked -= 1;
            if std::mem::take(&mut self.open_waiting) {
                self.events.push_back(Event::Openable);
            }
        }
        if delta > 0 {
            if let SendFlow::Yamux(credit) = &mut st.send_flow {
                let Some(c) = credit.checked_add(delta) else {
                    let window = *credit;
                    return self.fail(
                        ProtocolViolation::WindowOverflow {
                            stream_id,
                            window,
                            delta,
                        }
                        .into(),
                    );
                };
                *credit = c;
                if !st.send.is_empty() {
                    self.sched.push_data(&mut st.queued, stream_id);
                }
            }
        }
        if let Some(data) = data {
            if let RecvFlow::Yamux(w) = &mut st.recv_flow {
                let left = w.remaining();
                if !w.on_data(data.len()) {
                    let violation = ProtocolViolation::WindowExceeded {
                        stream_id,
                        length: data.len(),
                        window: left,
                    };
                    return self.fail(violation.into());
                }
            }
            self.on_data(stream_id, data);
        }
        if flags.contains(Flags::FIN) {
            if self
                .streams
                .get(&stream_id)
                .is_some_and(|st| st.recv_state.fin_received() && st.reset().is_none())
            {
                return self.fail(ProtocolViolation::DuplicateFin(stream_id).into());
            }
            self.on_remote_fin(stream_id);
        }
        if flags.contains(Flags::RST) {
            self.reset_stream(stream_id, ResetReason::ByPeer, false);
        }
    }

    fn on_ping(&mut self, flags: yamux::Flags, value: u32, now: Instant) {
        if flags.contains(yamux::Flags::SYN) {
            // Go answers any ping request, whatever its stream id.
            if self.pongs_due.len() < MAX_QUEUED_REPLIES {
                self.pongs_due.push_back(value);
            }
        } else if flags.contains(yamux::Flags::ACK) {
            let find = |list: &mut VecDeque<(u32, Instant)>| {
                let pos = list.iter().position(|(v, _)| *v == value)?;
                list.remove(pos).map(|(_, sent)| sent)
            };
            let Some(sent) = find(&mut self.pings).or_else(|| find(&mut self.internal_pings))
            else {
                return;
            };
            let rtt = now.saturating_duration_since(sent);
            self.stats.rtt = Some(rtt);
            let mut internal = false;
            if let Some(ka) = self.keep_alive.as_mut() {
                if ka.ping == Some(value) {
                    ka.ping = None;
                    self.timers.stop(super::timers::Timer::PingTimeout);
                    internal = true;
                }
            }
            if let Some(tuner) = self.tuner.as_mut() {
                tuner.rtt = Some(rtt);
                if tuner.probe == Some(value) {
                    tuner.probe = None;
                    internal = true;
                }
            }
            if !internal {
                self.events.push_back(Event::Pong { id: value, rtt });
            }
        }
    }

    /// Ids of this side's parity: clients open odd ids, servers even ones.
    fn is_ours(&self, id: u32) -> bool {
        let odd = id % 2 == 1;
        match self.side {
            crate::Side::Client => odd,
            crate::Side::Server => !odd,
        }
    }

    fn taking_new_streams(&self) -> bool {
        matches!(self.state, State::Open) && !self.local_go_away
    }

    fn queue_incoming(&mut self, id: u32, name: Bytes) {
        // Names are charged to the receive budget until the stream is accepted, and
        // copied so that they do not keep the read buffer alive.
        self.budget.spend(name.len());
        let name = match name.is_empty() {
            true => name,
            false => Bytes::copy_from_slice(&name),
        };
        self.insert_stream(id, Opening::Done, name);
        self.accept_queue.push_back(id);
        if self.accept_waiting {
            self.accept_waiting = false;
            self.events.push_back(Event::Incoming);
        }
    }

    /// yamux: gives the window of data that was discarded (a dropped or reset stream's)
    /// back at once, so that the peer's writer is not left waiting for credit that
    /// reading would have returned.
    pub(super) fn give_back_window(&mut self, stream_id: u32) {
        let Some(st) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if let (RecvFlow::Yamux(w), false) = (&st.recv_flow, st.recv_state.fin_received()) {
            if w.update_due(0) {
                st.upd_due = true;
                self.sched.push_control(&mut st.queued, stream_id);
            }
        }
    }

    fn on_data(&mut self, stream_id: u32, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let Some(st) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if st.released || st.recv_state.fin_received() || st.reset().is_some() {
            // Dropped: for smux as Go drops data of streams it does not know.
            self.give_back_window(stream_id);
            return;
        }
        self.budget.spend(data.len());
        st.last_data = self.now;
        st.received_bytes += data.len() as u64;
        self.stats.bytes_received += data.len() as u64;
        st.recv.push(data, &mut self.pins);
        if st.read_waiting {
            st.read_waiting = false;
            self.events.push_back(Event::Readable(StreamId(stream_id)));
        }
    }

    fn on_remote_fin(&mut self, stream_id: u32) {
        let Some(st) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if st.recv_state.fin_received() {
            return;
        }
        st.recv_state = RecvState::Finished {
            peer_first: !st.send_state.write_closed(),
        };
        if !st.released && st.reset().is_none() {
            st.read_waiting = false;
            self.events.push_back(Event::Finished(StreamId(stream_id)));
        }
        // Our FIN was out: this one ends the stream (a reset ended it before).
        if st.send_state == SendState::FinSent {
            self.report_end(stream_id);
        }
        self.forget_if_done(stream_id);
    }
}
