//! The session state machine: one multiplexed connection, seen from one side.
//!
//! Methods come in four groups, as in quinn-proto: getters; `handle_*` inputs (bytes from
//! the connection, time); commands from the application (open, accept, read, write,
//! close); and `poll_*` outputs (bytes to send, events, the next deadline).

mod recv;
mod transmit;

use crate::config::{Config, Protocol, Side};
use crate::error::{ConnectionError, OpenError, ReadError, WriteError};
use crate::flow::ReceiveBudget;
use crate::frame::smux::Codec;
use crate::sched::Scheduler;
use crate::stream::{Fin, StreamId, StreamState};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Something the application or its driver should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Inbound streams wait in the accept queue: call [`Session::accept`].
    Incoming,
    /// Data arrived on a stream whose last read found nothing.
    Readable(StreamId),
    /// Room freed on a stream whose last write was refused or cut short.
    Writable(StreamId),
    /// The peer sent FIN: reads return end of stream once the buffered data is read.
    Finished(StreamId),
    /// The session ended; every stream's pending and later calls fail (after buffered
    /// data has been read). Raised once.
    Closed(ConnectionError),
}

#[derive(Debug)]
enum State {
    Open,
    /// [`Session::close`] was called: FINs are flushed until `deadline`.
    Closing {
        deadline: Instant,
    },
    Closed(ConnectionError),
}

/// Keepalive timers, started with the session as Go starts its tickers.
#[derive(Debug)]
struct KeepAlive {
    next_ping: Instant,
    next_check: Instant,
    /// A frame was read since the last check (Go's `dataReady`).
    data_ready: bool,
}

/// One side of a multiplexed connection, without I/O. See the [crate docs](crate) for the
/// run loop that drives it.
#[derive(Debug)]
pub struct Session {
    config: Config,
    side: Side,
    codec: Codec,
    state: State,
    streams: HashMap<u32, StreamState>,
    /// The last id this side used (Go's `nextStreamID`): 1 for a client, 0 for a server,
    /// and `open` adds 2 before use.
    last_id: u32,
    ids_exhausted: bool,
    accept_queue: VecDeque<u32>,
    accept_waiting: bool,
    budget: ReceiveBudget,
    /// Bytes in all streams' send buffers.
    send_buffered: usize,
    /// Streams whose writes were refused because `max_send_buffer` was reached.
    send_waiters: Vec<u32>,
    sched: Scheduler,
    nop_due: bool,
    keep_alive: Option<KeepAlive>,
    events: VecDeque<Event>,
    /// Arena that frame headers (and small payloads) are written into.
    headers: BytesMut,
    /// Set by [`Session::close`].
    close_deadline: Option<Instant>,
}

impl Session {
    /// A new session. `config` must be valid (see [`Config::validate`]).
    ///
    /// # Panics
    /// If `config` is invalid: validate user-supplied configs first.
    pub fn new(config: Config, side: Side, now: Instant) -> Session {
        if let Err(e) = config.validate() {
            panic!("{e}");
        }
        let keep_alive = (!config.keep_alive_disabled).then(|| KeepAlive {
            next_ping: now + config.keep_alive_interval,
            next_check: now + config.keep_alive_timeout,
            data_ready: false,
        });
        Session {
            codec: Codec::new(config.protocol.smux_version()),
            side,
            state: State::Open,
            streams: HashMap::new(),
            last_id: match side {
                Side::Client => 1,
                Side::Server => 0,
            },
            ids_exhausted: false,
            accept_queue: VecDeque::new(),
            accept_waiting: true,
            budget: ReceiveBudget::new(config.max_receive_buffer),
            send_buffered: 0,
            send_waiters: Vec::new(),
            sched: Scheduler::default(),
            nop_due: false,
            keep_alive,
            events: VecDeque::new(),
            headers: BytesMut::new(),
            close_deadline: None,
            config,
        }
    }

    // ---- getters ----

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which side this session is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Streams the session still tracks: open, half-closed, waiting to be accepted, or
    /// released but with data or a FIN still to send.
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// When a graceful close started by [`Session::close`] gives up flushing; kept after
    /// the session has ended, so that a driver can bound its own final flush by it.
    pub fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&ConnectionError> {
        match &self.state {
            State::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// False while the session must not read more frames: the receive budget is spent
    /// (the application has `max_receive_buffer` bytes unread), the accept queue is full,
    /// or the session has ended. Bytes already given to [`Session::handle_input`] stay in
    /// the caller's buffer meanwhile; feed them again once this turns true.
    pub fn wants_read(&self) -> bool {
        !self.is_closed() && !self.reading_paused()
    }

    /// True when [`Session::poll_transmit`] may have frames to send (a keepalive, control
    /// frames, or streams with data; data waiting for v2 credit can make this true while
    /// nothing can be sent yet).
    pub fn wants_transmit(&self) -> bool {
        !self.is_closed() && (self.nop_due || !self.sched.is_idle())
    }

    /// Bytes of received stream data not yet read by the application, all streams.
    pub fn buffered_recv(&self) -> usize {
        self.streams.values().map(|s| s.recv_len).sum()
    }

    /// Bytes written by the application and not yet framed, all streams.
    pub fn buffered_send(&self) -> usize {
        self.send_buffered
    }

    /// Whether the stream is known (open, half-closed or waiting to be accepted).
    pub fn has_stream(&self, id: StreamId) -> bool {
        self.streams.get(&id.0).is_some_and(|s| !s.released)
    }

    fn reading_paused(&self) -> bool {
        self.budget.is_spent() || self.accept_queue.len() >= self.config.accept_backlog
    }

    fn is_v2(&self) -> bool {
        self.config.protocol == Protocol::SmuxV2
    }

    fn closed_error(&self) -> Option<ConnectionError> {
        self.close_reason().cloned()
    }

    // ---- inputs: see recv.rs for handle_input ----

    /// Advances timers to `now`: sends keepalives, ends the session on keepalive or
    /// close timeout. Call it when [`Session::poll_timeout`] has passed (calling it
    /// earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let State::Closing { deadline } = self.state {
            if now >= deadline {
                self.fail(ConnectionError::LocallyClosed);
                return;
            }
        }
        let paused = self.reading_paused();
        let interval = self.config.keep_alive_interval;
        let timeout = self.config.keep_alive_timeout;
        let Some(ka) = self.keep_alive.as_mut() else {
            return;
        };
        if now >= ka.next_ping {
            self.nop_due = true;
            ka.next_ping = now + interval;
        }
        if now >= ka.next_check {
            // Go never times out while reading is paused on purpose.
            if !ka.data_ready && !paused {
                self.fail(ConnectionError::KeepAliveTimeout(timeout));
                return;
            }
            ka.data_ready = false;
            ka.next_check = now + timeout;
        }
    }

    /// Records that the transport failed or reached end of file. The session ends with
    /// `reason`; data already buffered in streams stays readable.
    pub fn handle_transport_closed(&mut self, reason: ConnectionError) {
        if !self.is_closed() {
            self.fail(reason);
        }
    }

    // ---- commands ----

    /// Opens a stream. It is registered at once and its SYN goes out with the next
    /// [`Session::poll_transmit`], so a reply can never arrive for an unknown stream.
    pub fn open(&mut self) -> Result<StreamId, OpenError> {
        match &self.state {
            State::Open => {}
            State::Closing { .. } => return Err(OpenError::Closing),
            State::Closed(e) => return Err(OpenError::SessionClosed(e.clone())),
        }
        if self.ids_exhausted {
            return Err(OpenError::IdsExhausted);
        }
        let Some(id) = self.last_id.checked_add(2) else {
            // Go sets goAway and fails every later open; the session itself lives on.
            self.ids_exhausted = true;
            return Err(OpenError::IdsExhausted);
        };
        self.last_id = id;
        let mut st = StreamState::new(true);
        self.sched.push_control(&mut st.queued, id);
        self.streams.insert(id, st);
        Ok(StreamId(id))
    }

    /// Takes the next inbound stream, if one is waiting.
    pub fn accept(&mut self) -> Option<StreamId> {
        let id = self.accept_queue.pop_front();
        if id.is_none() {
            self.accept_waiting = true;
        }
        id.map(StreamId)
    }

    /// Queues `data` on a stream and returns how many bytes were taken (all of them, or
    /// as many as the stream's and the session's send buffers had room for).
    /// `Err(WriteError::Blocked)` means no room: wait for [`Event::Writable`].
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        let session_room = self.config.max_send_buffer - self.send_buffered;
        let closed = self.closed_error();
        let stream_cap = self.config.stream_send_buffer;
        let st = match self.streams.get_mut(&id.0) {
            Some(st) if !st.released => st,
            _ => return Err(WriteError::UnknownStream(id)),
        };
        if let Some(e) = closed {
            return Err(WriteError::SessionClosed(e));
        }
        if st.fin != Fin::Open {
            return Err(WriteError::Closed(id));
        }
        if let Some(o) = st.overconsumed {
            return Err(WriteError::Consumed {
                stream: id,
                written: o.written,
                consumed: o.consumed,
            });
        }
        if data.is_empty() {
            return Ok(0);
        }
        let stream_room = stream_cap.saturating_sub(st.send.len());
        let n = data.len().min(stream_room).min(session_room);
        if n < data.len() {
            if session_room < stream_room && !st.write_waiting {
                self.send_waiters.push(id.0);
            }
            st.write_waiting = true;
        }
        if n == 0 {
            return Err(WriteError::Blocked);
        }
        st.send.extend_from_slice(&data[..n]);
        self.send_buffered += n;
        self.sched.push_data(&mut st.queued, id.0);
        Ok(n)
    }

    /// Copies buffered data into `buf`. `Ok(0)` is end of stream (the peer's FIN, after
    /// all its data); `Err(ReadError::Blocked)` means wait for [`Event::Readable`].
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<usize, ReadError> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_with(id, |st| {
            let n = st.read_into(buf);
            (n, n)
        })
        .map(|(n, _)| n)
    }

    /// Takes up to `max` buffered bytes without copying. `Ok(None)` is end of stream.
    pub fn read_chunk(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let (n, chunk) = self.read_with(id, |st| {
            let chunk = st.read_chunk(max.max(1));
            (chunk.as_ref().map_or(0, |c| c.len()), chunk)
        })?;
        Ok((n > 0).then_some(chunk).flatten())
    }

    /// Shared read logic: `take` moves data out of the stream and returns its length.
    fn read_with<T>(
        &mut self,
        id: StreamId,
        take: impl FnOnce(&mut StreamState) -> (usize, T),
    ) -> Result<(usize, T), ReadError> {
        let v2 = self.is_v2();
        let window = self.config.max_stream_buffer;
        let closed = self.closed_error();
        let st = match self.streams.get_mut(&id.0) {
            Some(st) if !st.released => st,
            _ => return Err(ReadError::UnknownStream(id)),
        };
        if st.recv_len == 0 {
            if st.remote_fin {
                return Ok((0, take(st).1));
            }
            if let Some(e) = closed {
                return Err(ReadError::SessionClosed(e));
            }
            st.read_waiting = true;
            return Err(ReadError::Blocked);
        }
        let (n, out) = take(st);
        if v2 && closed.is_none() && st.recv_window.on_read(n, window) {
            st.upd_due = true;
            self.sched.push_control(&mut st.queued, id.0);
        }
        self.budget.refund(n);
        Ok((n, out))
    }

    /// Half-close: no more writes; a FIN follows the data already written. Reading goes
    /// on until the peer's FIN. Idempotent; never sends a second FIN.
    pub fn close_write(&mut self, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id.0) else {
            return;
        };
        if st.fin == Fin::Open {
            st.fin = Fin::Pending;
            if st.fin_ready() {
                self.sched.push_control(&mut st.queued, id.0);
            }
        }
    }

    /// Full close, as when the application drops the stream: FIN after the data already
    /// written, unread data discarded (its budget returned), later data from the peer
    /// ignored. The stream is forgotten once its FIN is sent.
    pub fn close_stream(&mut self, id: StreamId) {
        self.close_write(id);
        let closed = self.is_closed();
        let Some(st) = self.streams.get_mut(&id.0) else {
            return;
        };
        st.released = true;
        let dropped = st.discard_recv();
        self.budget.refund(dropped);
        if closed {
            // No FIN will ever be sent: nothing is left to do for this stream.
            self.send_buffered -= st.send.len();
            self.streams.remove(&id.0);
            return;
        }
        self.forget_if_done(id.0);
    }

    /// Begins a graceful close: every stream is closed for writing, buffered data and
    /// FINs are flushed, then the session ends with [`ConnectionError::LocallyClosed`]
    /// (or when `config.close_timeout` has passed). New streams are neither opened nor
    /// accepted meanwhile. smux has no GOAWAY: the peer sees the connection close.
    pub fn close(&mut self, now: Instant) {
        if !matches!(self.state, State::Open) {
            return;
        }
        let deadline = now + self.config.close_timeout;
        self.close_deadline = Some(deadline);
        self.state = State::Closing { deadline };
        // Streams nobody accepted are closed too; they stay until their FIN is out.
        for id in std::mem::take(&mut self.accept_queue) {
            if let Some(st) = self.streams.get_mut(&id) {
                st.released = true;
            }
        }
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.close_write(StreamId(id));
        }
        self.finish_closing_if_done();
    }

    // ---- outputs: see transmit.rs for poll_transmit ----

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = match self.state {
            State::Open => None,
            State::Closing { deadline } => Some(deadline),
            State::Closed(_) => return None,
        };
        let ka = self
            .keep_alive
            .as_ref()
            .map(|ka| ka.next_ping.min(ka.next_check));
        match (closing, ka) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internal ----

    /// Ends the session. Streams keep their buffered data for reading.
    fn fail(&mut self, reason: ConnectionError) {
        if self.is_closed() {
            return;
        }
        for id in self.accept_queue.drain(..) {
            self.streams.remove(&id);
        }
        self.streams.retain(|_, st| !st.released);
        self.state = State::Closed(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }

    /// Removes a released stream once its FIN is on the wire.
    fn forget_if_done(&mut self, id: u32) {
        // A sent FIN means the send buffer is empty, and a released stream keeps no
        // received data, so nothing is left to account for.
        if self
            .streams
            .get(&id)
            .is_some_and(|st| st.released && st.fin == Fin::Sent)
        {
            self.streams.remove(&id);
        }
    }

    fn finish_closing_if_done(&mut self) {
        if matches!(self.state, State::Closing { .. })
            && self.streams.values().all(|st| st.fin == Fin::Sent)
        {
            self.fail(ConnectionError::LocallyClosed);
        }
    }

    #[cfg(test)]
    pub(crate) fn set_last_id(&mut self, id: u32) {
        self.last_id = id;
    }

    #[cfg(test)]
    pub(crate) fn budget_tokens(&self) -> i64 {
        self.budget.tokens()
    }
}
