//! The session state machine: one multiplexed connection, seen from one side.
//!
//! Methods come in four groups, as in quinn-proto: getters; `handle_*` inputs (bytes from
//! the connection, time); commands from the application (open, accept, close, and on
//! one stream through the borrowed view of view.rs: read, write, close, reset); and
//! `poll_*` outputs (bytes to send, events, the next deadline). Timers are in timers.rs.
//!
//! One state machine serves smux and yamux: streams, buffers, half-close, the scheduler
//! and the budget are shared; the protocols differ in their frames (recv.rs and
//! transmit.rs translate) and their flow control (see [`crate::stream::SendFlow`]).

mod recv;
mod timers;
mod transmit;
mod view;

pub use view::{StreamMut, StreamRef};

use crate::config::{Config, Side};
use crate::error::{
    ConnectionError, OpenError, ProtocolViolation, ReadError, ResetReason, WriteError,
};
use crate::flow::{ReceiveBudget, WindowTuner};
use crate::frame::{smux, yamux};
use crate::recv_buf::Pins;
use crate::sched::Scheduler;
use crate::stream::{Opening, RecvState, SendState, StreamEnd, StreamId, StreamState};
use bytes::{Bytes, BytesMut};
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// Streams by id, with a fast hasher seeded per table (ids are chosen by the peer, so
/// the seed matters; SipHash was a visible share of a small message's cost).
type StreamMap<V> = HashMap<u32, V, foldhash::fast::RandomState>;
use std::time::{Duration, Instant};

/// Something the application or its driver should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Inbound streams wait in the accept queue: call [`Session::accept`].
    Incoming,
    /// The stream has ended (both sides finished, a reset, or the session ended):
    /// [`StreamMut::end`] says why. Raised once per stream still held by the
    /// application.
    StreamEnded(StreamId),
    /// Data arrived on a stream whose last read found nothing.
    Readable(StreamId),
    /// Room freed on a stream whose last write was refused or cut short.
    Writable(StreamId),
    /// The peer sent FIN: reads return end of stream once the buffered data is read.
    Finished(StreamId),
    /// The stream was reset (by the peer's RST or a stream timeout): its reads and writes
    /// now fail.
    Reset(StreamId),
    /// yamux: the peer acknowledged streams; an `open` refused with
    /// [`OpenError::Blocked`] can be retried.
    Openable,
    /// yamux: the reply to [`Session::ping`] number `id` arrived after `rtt`.
    Pong {
        /// The value `ping` returned.
        id: u32,
        /// Round-trip time.
        rtt: Duration,
    },
    /// yamux: the peer sent GoAway(0): it accepts no new streams; existing ones go on.
    GoAway,
    /// The session ended; every stream's pending and later calls fail (after buffered
    /// data has been read). Raised once.
    Closed(ConnectionError),
}

#[derive(Debug)]
enum State {
    Open,
    /// [`Session::close`] was called: FINs are flushed until `Timer::Close`.
    Closing,
    Closed(ConnectionError),
}

/// The frame format in use.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Smux(smux::Codec),
    Yamux(yamux::Codec),
    /// [`Protocol::Auto`](crate::Protocol::Auto) before the client's first byte.
    Detect,
}

impl Wire {
    fn for_config(config: &Config) -> Wire {
        match (config.protocol.smux_version(), config.protocol) {
            (Some(v), _) => Wire::Smux(smux::Codec {
                version: v,
                syn_names: config.stream_names,
            }),
            (None, crate::Protocol::Yamux) => {
                let largest = match config.window_auto_tuning {
                    true => config.auto_window_max,
                    false => config.max_stream_buffer,
                };
                Wire::Yamux(yamux::Codec::new(largest as u32))
            }
            (None, _) => Wire::Detect,
        }
    }
}

/// One side of a multiplexed connection, without I/O. See the [crate docs](crate) for the
/// run loop that drives it.
#[derive(Debug)]
pub struct Session {
    config: Config,
    side: Side,
    wire: Wire,
    state: State,
    /// The latest time given to an input; timers armed by commands start from it.
    now: Instant,
    streams: StreamMap<StreamState>,
    /// The id the next `open` uses; None once the ids are exhausted.
    next_id: Option<u32>,
    accept_queue: VecDeque<u32>,
    accept_waiting: bool,
    budget: ReceiveBudget,
    /// Read buffers that received payloads keep alive.
    pins: Pins,
    /// Bytes in all streams' send buffers.
    send_buffered: usize,
    /// Spent send blocks, reused by every stream's writes.
    send_pool: crate::send_buf::BlockPool,
    /// Streams whose writes were refused because `max_send_buffer` was reached, first
    /// come first served. A stream is in it at most once (`StreamState::send_waiting`),
    /// and gone streams are pruned as it grows, so that neither repeated refusals nor
    /// churn grow it past the streams that exist.
    send_waiters: VecDeque<u32>,
    sched: Scheduler,
    keep_alive: Option<timers::KeepAlive>,
    /// The session's deadlines: keepalive, close, protocol detection.
    timers: timers::TimerTable,
    /// Per-stream deadlines (yamux open and close timeouts), checked lazily.
    stream_timers: BinaryHeap<timers::StreamTimer>,
    /// Serial number of the last stream registered (see `StreamState::serial`).
    next_serial: u64,
    /// `stream_timers` is pruned of gone streams' timers when it reaches this length.
    timers_prune_at: usize,
    events: VecDeque<Event>,
    /// Arena that frame headers (and small payloads) are written into.
    headers: BytesMut,

    // yamux only.
    /// Our outbound streams whose SYN is not acknowledged yet.
    unacked: usize,
    /// An `open` was refused for `unacked`: raise `Openable` when it drops.
    open_waiting: bool,
    /// We sent (or will send) GoAway(0): inbound SYNs get RST.
    local_go_away: bool,
    /// The peer sent GoAway(0): `open` fails.
    remote_go_away: bool,
    /// A GoAway to send, with its code.
    go_away_due: Option<u32>,
    /// Streams we refused and do not keep: yamux RST, smux FIN.
    refused: VecDeque<u32>,
    /// The application's pings awaiting a reply: (value, when sent).
    pings: VecDeque<(u32, Instant)>,
    /// The session's own pings (keepalive, window tuning) awaiting a reply.
    internal_pings: VecDeque<(u32, Instant)>,
    next_ping_value: u32,
    /// Pings to send, and replies owed to the peer.
    pings_due: VecDeque<u32>,
    pongs_due: VecDeque<u32>,
    /// Receive-window auto-tuning, when configured.
    tuner: Option<WindowTuner>,
    /// Counters for [`Session::stats`].
    stats: SessionStats,
}

/// Counters of a session, from [`Session::stats`]. Cheap to take at any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Frames sent and received (all kinds).
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Stream payload bytes sent (framed) and received.
    pub bytes_sent: u64,
    /// Stream payload bytes received.
    pub bytes_received: u64,
    /// Streams the session tracks.
    pub streams: usize,
    /// Received bytes not yet read by the application.
    pub buffered_recv: usize,
    /// Written bytes not yet framed.
    pub buffered_send: usize,
    /// The last round trip measured by a ping (yamux).
    pub rtt: Option<Duration>,
}

/// Counters and flow-control state of one stream, from [`StreamMut::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Payload bytes framed for sending.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Received bytes not yet read.
    pub buffered_recv: usize,
    /// Written bytes not yet framed.
    pub buffered_send: usize,
    /// Bytes the peer lets us send now (`None`: smux v1, no per-stream limit).
    pub send_window: Option<usize>,
    /// The receive window we offer (`None`: smux v1).
    pub recv_window: Option<usize>,
    /// The stream's idle timeout.
    pub idle_timeout: Option<Duration>,
}

/// Replies owed and refusals queued are bounded: a peer that floods pings or SYNs while
/// not reading our answers loses the excess instead of growing our memory.
const MAX_QUEUED_REPLIES: usize = 1024;
/// Outstanding [`Session::ping`]s.
const MAX_PINGS: usize = 64;
/// Outstanding pings of the session's own; the oldest is forgotten beyond this.
const MAX_INTERNAL_PINGS: usize = 8;

impl Session {
    /// A new session. `config` must be valid (see [`Config::validate`]).
    ///
    /// # Panics
    /// If `config` is invalid: validate user-supplied configs first.
    pub fn new(config: Config, side: Side, now: Instant) -> Session {
        let mut s = Session::unstarted(config, side, now);
        s.start_tuner(now);
        s
    }

    fn unstarted(config: Config, side: Side, now: Instant) -> Session {
        if let Err(e) = config.validate_for(side) {
            panic!("{e}");
        }
        let wire = Wire::for_config(&config);
        let first_id = match (wire, side) {
            // Go smux adds 2 to 1 (client) or 0 (server) before the first use.
            (Wire::Smux(_), Side::Client) => 3,
            (Wire::Yamux(_), Side::Client) => 1,
            (_, Side::Server) => 2,
            (Wire::Detect, Side::Client) => unreachable!("validated: Auto is for servers"),
        };
        let mut timers = timers::TimerTable::default();
        let keep_alive = match wire {
            // Nothing is sent before the protocol is known.
            Wire::Detect => {
                timers.set(timers::Timer::Detect, now + config.detect_timeout);
                None
            }
            Wire::Yamux(_) => timers::KeepAlive::start(&config, side, true, now, &mut timers),
            Wire::Smux(_) => timers::KeepAlive::start(&config, side, false, now, &mut timers),
        };
        Session {
            keep_alive,
            timers,
            wire,
            side,
            state: State::Open,
            now,
            streams: StreamMap::default(),
            next_id: Some(first_id),
            accept_queue: VecDeque::new(),
            accept_waiting: true,
            budget: ReceiveBudget::new(config.max_receive_buffer),
            pins: Pins::new(config.max_receive_buffer),
            send_buffered: 0,
            send_pool: Default::default(),
            send_waiters: VecDeque::new(),
            sched: Scheduler::default(),
            stream_timers: BinaryHeap::new(),
            next_serial: 0,
            timers_prune_at: 64,
            events: VecDeque::new(),
            headers: BytesMut::new(),
            unacked: 0,
            open_waiting: false,
            local_go_away: false,
            remote_go_away: false,
            go_away_due: None,
            refused: VecDeque::new(),
            pings: VecDeque::new(),
            internal_pings: VecDeque::new(),
            next_ping_value: 0,
            pings_due: VecDeque::new(),
            pongs_due: VecDeque::new(),
            tuner: None,
            stats: SessionStats::default(),
            config,
        }
    }

    /// Starts auto-tuning for yamux when configured, with a first ping to learn the RTT.
    fn start_tuner(&mut self, now: Instant) {
        if self.is_yamux() && self.config.window_auto_tuning {
            let mut tuner = WindowTuner::new(
                self.config.max_stream_buffer,
                self.config.auto_window_max,
                self.config.max_receive_buffer,
            );
            tuner.probe = Some(self.queue_ping(now, true));
            self.tuner = Some(tuner);
        }
    }

    // ---- getters ----

    /// The session's configuration. For [`Protocol::Auto`](crate::Protocol::Auto), once
    /// the client has spoken, the detected protocol's.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which side this session is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Streams the session still tracks: open, half-closed, waiting to be accepted, or
    /// released but with data, a FIN or (yamux) the peer's FIN still outstanding.
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// When a graceful close gives up flushing; kept after the session has ended, so that
    /// a driver can bound its own final flush by it. Also set when the session fails with
    /// a frame still to send (yamux GoAway after a protocol violation).
    pub fn close_deadline(&self) -> Option<Instant> {
        self.timers.get(timers::Timer::Close)
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&ConnectionError> {
        match &self.state {
            State::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// The capacity of a stream's send buffer (tests: drained buffers are given back).
    #[cfg(test)]
    pub(crate) fn send_capacity(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id.0).map(|st| st.send.capacity())
    }

    /// How many more bytes the frame at the front of `buf` (input not yet taken by
    /// [`Session::handle_input`]) needs before it is whole: 0 when `buf` is empty or starts
    /// with a whole frame. Drivers use it to read a frame's rest into the same buffer
    /// instead of copying the part already received.
    ///
    /// ```
    /// use braid_proto::{Config, Protocol, Session, Side};
    /// let session = Session::new(Config::new(Protocol::SmuxV1), Side::Client, std::time::Instant::now());
    /// // A PSH header announcing 100 bytes of payload, 10 of which have arrived.
    /// let mut input = vec![1, 2, 100, 0, 3, 0, 0, 0];
    /// input.extend([0; 10]);
    /// assert_eq!(session.input_needed(&input), 90);
    /// assert_eq!(session.input_needed(&input[..3]), 5); // the header's rest
    /// ```
    pub fn input_needed(&self, buf: &[u8]) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let (header, len) = match self.wire {
            Wire::Smux(_) => (smux::HEADER_LEN, smux::Codec::frame_len(buf)),
            Wire::Yamux(_) => (yamux::HEADER_LEN, yamux::Codec::frame_len(buf)),
            Wire::Detect => return 0,
        };
        len.unwrap_or(header).saturating_sub(buf.len())
    }

    /// Announces that the bytes given to [`Session::handle_input`] from now on come from
    /// a new read buffer of `size` bytes (its allocation). Large payloads are handed to
    /// streams as slices of that buffer, which keeps all of it allocated until they are
    /// read; with announcements the session counts those buffers and copies payloads
    /// instead once they would add up to more than `max_receive_buffer`. A driver that
    /// never announces its buffers gets slices always.
    ///
    /// ```
    /// use braid_proto::{Config, Protocol, Session, Side};
    /// let mut session = Session::new(Config::new(Protocol::Yamux), Side::Server, std::time::Instant::now());
    /// let mut input = bytes::BytesMut::with_capacity(256 * 1024);
    /// session.note_input_buffer(input.capacity());
    /// ```
    pub fn note_input_buffer(&mut self, size: usize) {
        self.pins.new_buffer(size);
    }

    /// False while the session must not read more frames: the receive budget is spent
    /// (the application has `max_receive_buffer` bytes unread), the smux accept queue is
    /// full, or the session has ended. Bytes already given to [`Session::handle_input`]
    /// stay in the caller's buffer meanwhile; feed them again once this turns true.
    pub fn wants_read(&self) -> bool {
        !self.is_closed() && !self.reading_paused()
    }

    /// True when [`Session::poll_transmit`] may have frames to send (data waiting for
    /// flow-control credit can make this true while nothing can be sent yet).
    pub fn wants_transmit(&self) -> bool {
        if self.is_closed() {
            return self.go_away_due.is_some();
        }
        !self.sched.is_idle()
            || self.keep_alive.as_ref().is_some_and(|k| k.nop_due)
            || self.go_away_due.is_some()
            || !self.refused.is_empty()
            || !self.pings_due.is_empty()
            || !self.pongs_due.is_empty()
    }

    /// Bytes of received stream data not yet read by the application, all streams.
    pub fn buffered_recv(&self) -> usize {
        // The budget is spent by exactly the bytes that wait in streams.
        (self.config.max_receive_buffer as i64 - self.budget.tokens()).max(0) as usize
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            streams: self.streams.len(),
            buffered_recv: self.buffered_recv(),
            buffered_send: self.send_buffered,
            ..self.stats.clone()
        }
    }

    // See [`StreamMut::stats`].
    fn stream_stats(&self, id: StreamId) -> Option<StreamStats> {
        use crate::stream::{RecvFlow, SendFlow};
        let st = self.streams.get(&id.0)?;
        Some(StreamStats {
            bytes_sent: st.sent_bytes,
            bytes_received: st.received_bytes,
            buffered_recv: st.recv_len(),
            buffered_send: st.send.len(),
            send_window: match st.send_flow {
                SendFlow::Unlimited => None,
                ref f => f.credit().ok(),
            },
            recv_window: match &st.recv_flow {
                RecvFlow::None => None,
                RecvFlow::Smux(_) => Some(self.config.max_stream_buffer),
                RecvFlow::Yamux(w) => Some(w.max as usize),
            },
            idle_timeout: st.idle_timeout,
        })
    }

    /// Bytes written by the application and not yet framed, all streams.
    pub fn buffered_send(&self) -> usize {
        self.send_buffered
    }

    /// Whether the stream is known (open, half-closed or waiting to be accepted).
    pub fn has_stream(&self, id: StreamId) -> bool {
        self.streams.get(&id.0).is_some_and(|s| !s.released)
    }

    fn is_yamux(&self) -> bool {
        matches!(self.wire, Wire::Yamux(_))
    }

    fn reading_paused(&self) -> bool {
        // yamux refuses SYNs beyond the backlog with RST; smux can only stop reading.
        self.budget.is_spent()
            || (!self.is_yamux() && self.accept_queue.len() >= self.config.accept_backlog)
    }

    fn closed_error(&self) -> Option<ConnectionError> {
        self.close_reason().cloned()
    }

    /// Records that the transport failed or reached end of file. The session ends with
    /// `reason`; data already buffered in streams stays readable.
    pub fn handle_transport_closed(&mut self, now: Instant, reason: ConnectionError) {
        self.now = self.now.max(now);
        if !self.is_closed() {
            self.fail(reason);
        }
    }

    // ---- commands ----

    /// Opens a stream. It is registered at once and its SYN goes out with the next
    /// [`Session::poll_transmit`], so a reply can never arrive for an unknown stream.
    pub fn open(&mut self) -> Result<StreamId, OpenError> {
        self.open_with(Bytes::new())
    }

    /// Opens a stream with a gmux name, sent as the SYN payload exactly as gmux does
    /// (needs `Config::stream_names`, smux only; names up to 65535 bytes). The peer reads
    /// it with [`StreamMut::name`].
    pub fn open_named(&mut self, name: &[u8]) -> Result<StreamId, OpenError> {
        if !self.config.stream_names {
            return Err(OpenError::NamesDisabled);
        }
        if name.len() > smux::MAX_PAYLOAD {
            return Err(OpenError::NameTooLong(name.len()));
        }
        self.open_with(Bytes::copy_from_slice(name))
    }

    fn open_with(&mut self, name: Bytes) -> Result<StreamId, OpenError> {
        match &self.state {
            State::Open => {}
            State::Closing => return Err(OpenError::Closing),
            State::Closed(e) => return Err(OpenError::SessionClosed(e.clone())),
        }
        if self.remote_go_away {
            return Err(OpenError::RemoteGoAway);
        }
        if matches!(self.wire, Wire::Detect) {
            // The client has not spoken yet: we cannot know which protocol to open with.
            self.open_waiting = true;
            return Err(OpenError::Blocked);
        }
        if self.is_yamux() && self.unacked >= self.config.max_unacked_opens {
            self.open_waiting = true;
            return Err(OpenError::Blocked);
        }
        let id = self.next_id.ok_or(OpenError::IdsExhausted)?;
        // smux: the id after the last wraps to 0 or 1 and every later open fails (Go's
        // ErrGoAway). yamux: Go refuses ids from 2^32-2 on (ErrStreamsExhausted).
        let limit = if self.is_yamux() {
            u32::MAX - 2
        } else {
            u32::MAX
        };
        if id > limit {
            self.next_id = None;
            return Err(OpenError::IdsExhausted);
        }
        self.next_id = id.checked_add(2);
        if self.is_yamux() {
            // Counted from now, as Go takes its semaphore before writing the SYN.
            self.unacked += 1;
        }
        let opening = Opening::SynDue {
            ack_awaited: self.is_yamux(),
        };
        self.insert_stream(id, opening, name);
        Ok(StreamId(id))
    }

    /// Registers a new stream (ours with its SYN due, or the peer's) and arms its idle
    /// timer.
    fn insert_stream(&mut self, id: u32, opening: Opening, name: Bytes) {
        let mut st = StreamState::new(&self.config, opening, self.now, name);
        self.next_serial += 1;
        st.serial = self.next_serial;
        if opening.syn_due() {
            self.sched.push_control(&mut st.queued, id);
        }
        self.streams.insert(id, st);
        self.arm_stream_timer(id, timers::TimerKind::Idle, self.now);
    }

    // See [`StreamMut::name`].
    fn stream_name(&self, id: StreamId) -> Option<&[u8]> {
        self.streams.get(&id.0).map(|st| &st.name[..])
    }

    // See [`StreamMut::set_idle_timeout`].
    fn set_idle_timeout(&mut self, id: StreamId, timeout: Option<Duration>) {
        let Some(st) = self.streams.get_mut(&id.0) else {
            return;
        };
        st.idle_timeout = timeout;
        self.arm_stream_timer(id.0, timers::TimerKind::Idle, self.now);
    }

    // See [`StreamMut::set_priority`].
    fn set_priority(&mut self, id: StreamId, priority: u8) {
        if let Some(st) = self.streams.get_mut(&id.0) {
            st.queued.priority = priority;
        }
    }

    // See [`StreamMut::priority`].
    fn priority(&self, id: StreamId) -> Option<u8> {
        self.streams.get(&id.0).map(|st| st.queued.priority)
    }

    // See [`StreamMut::idle_timeout`].
    fn idle_timeout(&self, id: StreamId) -> Option<Duration> {
        self.streams.get(&id.0).and_then(|st| st.idle_timeout)
    }

    /// Takes the next inbound stream, if one is waiting. yamux acknowledges it now (an
    /// ACK that came late could trip Go's stream-open timeout).
    pub fn accept(&mut self) -> Option<StreamId> {
        let Some(id) = self.accept_queue.pop_front() else {
            self.accept_waiting = true;
            return None;
        };
        if let Some(st) = self.streams.get(&id) {
            // The name was charged to the budget while the stream waited.
            self.budget.refund(st.name.len());
        }
        if self.is_yamux() {
            if let Some(st) = self.streams.get_mut(&id) {
                st.opening = Opening::AckDue;
                self.sched.push_control(&mut st.queued, id);
            }
        }
        Some(StreamId(id))
    }

    // See [`StreamMut::write`].
    fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        self.write_with(id, data.len(), |send, pool, n| {
            send.extend_from_slice(&data[..n], pool)
        })
    }

    // See [`StreamMut::write_chunk`].
    fn write_chunk(&mut self, id: StreamId, data: Bytes) -> Result<usize, WriteError> {
        self.write_with(id, data.len(), |send, pool, n| {
            send.push_chunk(data.slice(..n), pool)
        })
    }

    /// Shared write logic: `put` queues the first `n` of `len` bytes.
    fn write_with(
        &mut self,
        id: StreamId,
        len: usize,
        put: impl FnOnce(&mut crate::send_buf::SendBuf, &mut crate::send_buf::BlockPool, usize),
    ) -> Result<usize, WriteError> {
        let session_room = self.config.max_send_buffer - self.send_buffered;
        let closed = self.closed_error();
        let stream_cap = self.config.stream_send_buffer;
        let max_frame = self.config.max_frame_size;
        let st = match self.streams.get_mut(&id.0) {
            Some(st) if !st.released => st,
            _ => return Err(WriteError::UnknownStream(id)),
        };
        if let Some(reason) = st.reset() {
            return Err(WriteError::Reset(id, reason));
        }
        if let Some(e) = closed {
            return Err(WriteError::SessionClosed(e));
        }
        match st.send_state {
            SendState::Open => {}
            SendState::Consumed(o) => {
                return Err(WriteError::Consumed {
                    stream: id,
                    written: o.written,
                    consumed: o.consumed,
                })
            }
            _ => return Err(WriteError::Closed(id)),
        }
        if len == 0 {
            return Ok(0);
        }
        let stream_room = stream_cap.saturating_sub(st.send.len());
        let n = len.min(stream_room).min(session_room);
        let wait_for_session = n < len && session_room < stream_room;
        if n < len {
            st.write_waiting = true;
        }
        if n > 0 {
            st.send.set_frame_size(max_frame);
            put(&mut st.send, &mut self.send_pool, n);
            self.send_buffered += n;
            self.sched.push_data(&mut st.queued, id.0);
        }
        if wait_for_session && !std::mem::replace(&mut st.send_waiting, true) {
            self.send_waiters.push_back(id.0);
            let live = &self.streams;
            if self.send_waiters.len() > 2 * live.len() {
                self.send_waiters
                    .retain(|id| live.get(id).is_some_and(|st| st.send_waiting));
            }
        }
        match n {
            0 => Err(WriteError::Blocked),
            n => Ok(n),
        }
    }

    // See [`StreamMut::read`].
    fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<usize, ReadError> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_with(id, |st, pins| {
            let n = st.recv.read_into(buf, pins);
            (n, n)
        })
        .map(|(n, _)| n)
    }

    // See [`StreamMut::read_chunk`].
    fn read_chunk(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let (n, chunk) = self.read_with(id, |st, pins| {
            let chunk = st.recv.read_chunk(max.max(1), pins);
            (chunk.as_ref().map_or(0, |c| c.len()), chunk)
        })?;
        Ok((n > 0).then_some(chunk).flatten())
    }

    // See [`StreamMut::read_chunks`].
    fn read_chunks(
        &mut self,
        id: StreamId,
        bufs: &mut [Bytes],
    ) -> Result<Option<usize>, ReadError> {
        if bufs.is_empty() {
            return Ok(Some(0));
        }
        let (n, count) = self.read_with(id, |st, pins| {
            let (mut n, mut count) = (0, 0);
            for slot in bufs.iter_mut() {
                let Some(chunk) = st.recv.read_chunk(usize::MAX, pins) else {
                    break;
                };
                n += chunk.len();
                *slot = chunk;
                count += 1;
            }
            (n, count)
        })?;
        Ok((n > 0).then_some(count))
    }

    /// Shared read logic: `take` moves data out of the stream and returns its length.
    fn read_with<T>(
        &mut self,
        id: StreamId,
        take: impl FnOnce(&mut StreamState, &mut Pins) -> (usize, T),
    ) -> Result<(usize, T), ReadError> {
        let window = self.config.max_stream_buffer;
        let closed = self.closed_error();
        let st = match self.streams.get_mut(&id.0) {
            Some(st) if !st.released => st,
            _ => return Err(ReadError::UnknownStream(id)),
        };
        if let Some(reason) = st.reset() {
            return Err(ReadError::Reset(id, reason));
        }
        let fin_received = st.recv_state.fin_received();
        if st.recv_len() == 0 {
            if fin_received {
                return Ok((0, take(st, &mut self.pins).1));
            }
            if let Some(e) = closed {
                return Err(ReadError::SessionClosed(e));
            }
            st.read_waiting = true;
            return Err(ReadError::Blocked);
        }
        let (n, out) = take(st, &mut self.pins);
        // After the peer's FIN no more data comes: a window update would be noise.
        if closed.is_none() && !fin_received && st.recv_flow.on_read(n, window, st.recv_len()) {
            st.upd_due = true;
            self.sched.push_control(&mut st.queued, id.0);
        }
        self.budget.refund(n);
        Ok((n, out))
    }

    // See [`StreamMut::close_write`].
    fn close_write(&mut self, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id.0) else {
            return;
        };
        if !st.send_state.write_closed() {
            st.send_state = SendState::FinPending;
            if st.fin_ready() {
                self.sched.push_control(&mut st.queued, id.0);
            }
        }
    }

    // See [`StreamMut::end`].
    fn stream_end(&self, id: StreamId) -> Option<StreamEnd> {
        let st = self.streams.get(&id.0)?;
        match (st.send_state, st.recv_state) {
            (SendState::Reset { reason, .. }, _) => Some(StreamEnd::Reset(reason)),
            (SendState::FinSent, RecvState::Finished { peer_first: true }) => {
                Some(StreamEnd::PeerFin)
            }
            (SendState::FinSent, RecvState::Finished { peer_first: false }) => {
                Some(StreamEnd::LocalClose)
            }
            // A session ends every stream it still holds unfinished.
            _ => self.close_reason().cloned().map(StreamEnd::Session),
        }
    }

    /// Raises [`Event::StreamEnded`] for a stream that has just finished, if the
    /// application holds it. Called once per stream, by the transition that finished it.
    fn report_end(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(|st| !st.released) {
            self.events.push_back(Event::StreamEnded(StreamId(id)));
        }
    }

    // See [`StreamMut::close`].
    fn close_stream(&mut self, id: StreamId) {
        self.close_write(id);
        let closed = self.is_closed();
        let Some(st) = self.streams.get_mut(&id.0) else {
            return;
        };
        st.released = true;
        let dropped = st.recv.clear(&mut self.pins);
        self.budget.refund(dropped);
        if closed {
            // Nothing will be sent any more: nothing is left to do for this stream.
            self.send_buffered -= st.send.len();
            self.streams.remove(&id.0);
            return;
        }
        if st.reset().is_none() {
            // The discarded data's window goes back to the peer's writer, which would
            // otherwise wait for credit until the close timeout resets the stream.
            self.give_back_window(id.0);
        }
        self.forget_if_done(id.0);
        // A released stream that cannot finish (its data waits for credit a peer that
        // forgot the stream will never give, or yamux waits for the peer's FIN) is reset
        // after `stream_close_timeout` rather than kept for the whole session.
        if self.streams.contains_key(&id.0) {
            self.arm_stream_timer(id.0, timers::TimerKind::Close, self.now);
        }
    }

    // See [`StreamMut::reset`].
    fn reset(&mut self, id: StreamId) {
        if !self.is_closed() {
            self.reset_stream(id.0, ResetReason::Locally, true);
        }
    }

    /// yamux: sends GoAway(0): the peer may open no more streams (later SYNs get RST);
    /// existing streams go on. smux has no GoAway: new inbound streams are ignored
    /// instead (their data is dropped).
    pub fn go_away(&mut self) {
        if self.local_go_away || self.is_closed() {
            return;
        }
        self.local_go_away = true;
        if self.is_yamux() {
            self.go_away_due = Some(yamux::GO_AWAY_NORMAL);
        }
    }

    /// yamux: sends a ping and returns its id; [`Event::Pong`] reports the round trip.
    /// None for smux (its NOP is not echoed) or when too many pings are outstanding or
    /// the session has ended.
    pub fn ping(&mut self, now: Instant) -> Option<u32> {
        if !self.is_yamux() || self.is_closed() || self.pings.len() >= MAX_PINGS {
            return None;
        }
        Some(self.queue_ping(now, false))
    }

    /// Forgets the application's ping `id` (its caller stopped waiting): it no longer
    /// counts against the pings that may be outstanding, and its reply is ignored.
    pub fn forget_ping(&mut self, id: u32) {
        self.pings.retain(|(v, _)| *v != id);
    }

    /// Queues a ping. The application's pings (at most [`MAX_PINGS`], refused beyond) and
    /// the session's own (keepalive, window tuning) are kept apart, so that the session's
    /// never push out one the application waits for.
    fn queue_ping(&mut self, now: Instant, internal: bool) -> u32 {
        let value = self.next_ping_value;
        self.next_ping_value = self.next_ping_value.wrapping_add(1);
        let list = match internal {
            true => &mut self.internal_pings,
            false => &mut self.pings,
        };
        if internal && list.len() >= MAX_INTERNAL_PINGS {
            list.pop_front(); // its reply, if it ever comes, is ignored
        }
        list.push_back((value, now));
        self.pings_due.push_back(value);
        value
    }

    /// Begins a graceful close: every stream is closed for writing, buffered data and
    /// FINs are flushed, then the session ends with [`ConnectionError::LocallyClosed`]
    /// (or when `config.close_timeout` has passed). New streams are neither opened nor
    /// accepted meanwhile. Neither smux nor Go's yamux sends a GoAway on close: the peer
    /// sees the connection end.
    pub fn close(&mut self, now: Instant) {
        if !matches!(self.state, State::Open) {
            return;
        }
        self.timers
            .set(timers::Timer::Close, now + self.config.close_timeout);
        self.state = State::Closing;
        // Streams nobody accepted are closed too; they stay until their FIN is out.
        for id in std::mem::take(&mut self.accept_queue) {
            if let Some(st) = self.streams.get_mut(&id) {
                st.released = true;
                let dropped = st.recv.clear(&mut self.pins);
                self.budget.refund(dropped + st.name.len());
            }
        }
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.close_write(StreamId(id));
        }
        self.finish_closing_if_done();
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internal ----

    /// Ends the session. Streams keep their buffered data for reading.
    fn fail(&mut self, reason: ConnectionError) {
        if self.is_closed() {
            return;
        }
        for id in self.accept_queue.drain(..) {
            if let Some(mut st) = self.streams.remove(&id) {
                let dropped = st.recv.clear(&mut self.pins);
                self.budget.refund(dropped + st.name.len());
            }
        }
        // Released streams go: nothing of theirs will be sent or read any more.
        let mut unsendable = 0;
        self.streams.retain(|_, st| {
            if st.released {
                unsendable += st.send.len();
            }
            !st.released
        });
        self.send_buffered -= unsendable;
        if self.is_yamux() && matches!(reason, ConnectionError::Protocol(_)) {
            // Tell the peer why, as Go does; the driver flushes it until the deadline.
            self.go_away_due = Some(yamux::GO_AWAY_PROTOCOL_ERROR);
        }
        // However the session ended, the driver's last flush and shutdown are bounded.
        if self.timers.get(timers::Timer::Close).is_none() {
            self.timers
                .set(timers::Timer::Close, self.now + self.config.close_timeout);
        }
        // Streams not finished yet end with the session (see `stream_end`).
        for (id, st) in self.streams.iter() {
            if !st.finished() {
                self.events.push_back(Event::StreamEnded(StreamId(*id)));
            }
        }
        self.state = State::Closed(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }

    /// Removes a released stream once nothing is left to do for it.
    fn forget_if_done(&mut self, id: u32) {
        let yamux = self.is_yamux();
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        let done = st.released
            && match st.send_state {
                // The peer has been told (RST, or smux's FIN).
                SendState::Reset { notify, .. } => !notify,
                // A sent FIN means the send buffer is empty, and a released stream keeps
                // no received data, so nothing is left to account for.
                SendState::FinSent => !yamux || st.recv_state.fin_received(),
                _ => false,
            };
        if done {
            if st.opening.awaiting_ack() {
                self.unacked -= 1;
            }
            if let (Some(tuner), crate::stream::RecvFlow::Yamux(w)) =
                (&mut self.tuner, &st.recv_flow)
            {
                tuner.release(w);
            }
            self.streams.remove(&id);
        }
    }

    fn finish_closing_if_done(&mut self) {
        if matches!(self.state, State::Closing)
            && self
                .streams
                .values()
                .all(|st| matches!(st.send_state, SendState::FinSent | SendState::Reset { .. }))
        {
            self.fail(ConnectionError::LocallyClosed);
        }
    }

    /// Marks a stream reset, dropping its buffers. With `tell_peer`, yamux sends RST and
    /// smux, which has no RST, a FIN.
    fn reset_stream(&mut self, id: u32, reason: ResetReason, tell_peer: bool) {
        let yamux = self.is_yamux();
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.reset().is_some() {
            return;
        }
        // Both FINs exchanged: the stream had ended already.
        let had_ended = st.finished();
        // yamux sends RST; smux, which has no RST, a FIN unless its FIN is out already.
        let notify = tell_peer && (yamux || st.send_state != SendState::FinSent);
        st.send_state = SendState::Reset { reason, notify };
        self.send_buffered -= st.send.len();
        st.send.clear();
        let dropped = st.recv.clear(&mut self.pins);
        self.budget.refund(dropped);
        if st.opening.take_ack() {
            self.unacked -= 1;
            if std::mem::take(&mut self.open_waiting) {
                self.events.push_back(Event::Openable);
            }
        }
        if tell_peer {
            self.sched.push_control(&mut st.queued, id);
        }
        if !st.released && reason != ResetReason::Locally {
            self.events.push_back(Event::Reset(StreamId(id)));
        }
        if !had_ended {
            self.report_end(id);
        }
        self.forget_if_done(id);
    }

    /// [`Protocol::Auto`](crate::Protocol::Auto): settles on the protocol the client's
    /// first byte names.
    fn detect(&mut self, first: u8, now: Instant) -> Result<(), ConnectionError> {
        let protocol = crate::Protocol::from_first_byte(first)
            .ok_or(ProtocolViolation::UnknownProtocol(first))?;
        self.config = self.config.detected(protocol);
        self.wire = Wire::for_config(&self.config);
        self.budget = ReceiveBudget::new(self.config.max_receive_buffer);
        self.pins = Pins::new(self.config.max_receive_buffer);
        self.timers.stop(timers::Timer::Detect);
        let yamux = self.is_yamux();
        self.keep_alive =
            timers::KeepAlive::start(&self.config, self.side, yamux, now, &mut self.timers);
        self.start_tuner(now);
        if std::mem::take(&mut self.open_waiting) {
            self.events.push_back(Event::Openable);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_next_id(&mut self, id: u32) {
        self.next_id = Some(id);
    }

    #[cfg(test)]
    pub(crate) fn tuner_granted(&self) -> Option<usize> {
        self.tuner.as_ref().map(|t| t.granted())
    }

    #[cfg(test)]
    pub(crate) fn send_waiters_len(&self) -> usize {
        self.send_waiters.len()
    }

    #[cfg(test)]
    pub(crate) fn stream_timers_len(&self) -> usize {
        self.stream_timers.len()
    }

    #[cfg(test)]
    pub(crate) fn budget_tokens(&self) -> i64 {
        self.budget.tokens()
    }
}
