//! Input: frames from the peer.

use super::{Event, Session, State};
use crate::error::ConnectionError;
use crate::frame::smux::Frame;
use crate::stream::{StreamId, StreamState};
use bytes::BytesMut;
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
        let _ = now; // smux frames carry no timing; yamux pings will use it.
        while self.wants_read() {
            match self.codec.decode(buf) {
                Ok(Some(frame)) => {
                    if let Some(ka) = self.keep_alive.as_mut() {
                        ka.data_ready = true;
                    }
                    self.on_frame(frame);
                }
                Ok(None) => break,
                Err(e) => self.fail(ConnectionError::Protocol(e)),
            }
        }
        match &self.state {
            State::Closed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Nop { .. } => {}
            // gmux names are not supported yet; the codec rejects SYN payloads.
            Frame::Syn { stream_id, .. } => self.on_syn(stream_id),
            Frame::Fin { stream_id } => {
                if let Some(st) = self.streams.get_mut(&stream_id) {
                    if !st.remote_fin {
                        st.remote_fin = true;
                        if !st.released {
                            st.read_waiting = false;
                            self.events.push_back(Event::Finished(StreamId(stream_id)));
                        }
                    }
                }
            }
            Frame::Psh { stream_id, data } => {
                if data.is_empty() {
                    return;
                }
                // Data for unknown, released or finished streams is dropped, as Go
                // drops it for streams it does not know (smux has no RST).
                let Some(st) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                if st.released || st.remote_fin {
                    return;
                }
                self.budget.spend(data.len());
                st.recv_len += data.len();
                st.recv.push_back(data);
                if st.read_waiting {
                    st.read_waiting = false;
                    self.events.push_back(Event::Readable(StreamId(stream_id)));
                }
            }
            Frame::Upd {
                stream_id,
                consumed,
                window,
            } => {
                if let Some(st) = self.streams.get_mut(&stream_id) {
                    st.send_window.on_update(consumed, window);
                    if !st.send.is_empty() {
                        self.sched.push_data(&mut st.queued, stream_id);
                    }
                }
            }
        }
    }

    fn on_syn(&mut self, id: u32) {
        // A duplicate SYN for a live stream is ignored, as Go does. While closing, new
        // streams are not taken (smux cannot refuse them; their data is dropped).
        if self.streams.contains_key(&id) || !matches!(self.state, State::Open) {
            return;
        }
        self.streams.insert(id, StreamState::new(false));
        self.accept_queue.push_back(id);
        if self.accept_waiting {
            self.accept_waiting = false;
            self.events.push_back(Event::Incoming);
        }
    }
}
