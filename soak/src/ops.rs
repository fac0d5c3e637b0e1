//! One stream operation, from either end: the opener draws a plan and sends it as a
//! header, the acceptor reads it, and both play their part. Each end checks what it
//! sees against what the plan promises for the protocol:
//!
//! | plan | the end that does not act sees |
//! |---|---|
//! | transfer, slow | every byte, verified, then EOF |
//! | sender resets after `cut` bytes | at most `cut` bytes, then yamux `ConnectionReset`, smux EOF |
//! | sender drops after `cut` bytes | exactly `cut` bytes, then EOF |
//! | receiver resets after reading `cut` | sender reads yamux `ConnectionReset`, smux EOF |
//! | receiver drops after reading `cut` | sender reads EOF |
//!
//! A sender whose receiver reset or dropped keeps writing: yamux and smux v1 writes
//! complete (yamux may fail with `ConnectionReset` after a reset), smux v2 writes could
//! wait for good for window the peer will never give, so the sender resets its stream
//! once it reads the peer's end (braid's documented advice). The actor itself checks
//! that after `Stream::reset` both reading and writing fail with `ConnectionReset`.
//!
//! On a session that the soak dropped, any read or write may instead fail with a
//! connection error (`ConnectionReset`, `ConnectionAborted`, `BrokenPipe`), after
//! verified data only; a clean EOF still has to be exactly where the plan puts it.

use crate::pattern::{self, Dir, Mismatch};
use crate::plan::{log_size, OpKind, Pace, Plan, Role, HEADER_LEN};
use crate::state::{Ctx, OpTrace, Pair, RegKey};
use braid::{OwnedReadHalf, OwnedWriteHalf, Protocol, Side, Stream};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::fmt;
use std::io::{self, ErrorKind};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How an operation ended, when it ended as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exactly as planned.
    Done,
    /// Cut short by a session drop, with a connection error and verified data only.
    Cut,
}

/// `Err` is the failure's description.
pub(crate) type OpResult = Result<Outcome, String>;

/// Largest single read or write.
const IO_CHUNK: usize = 64 * 1024;

/// Errors a stream of a dropped session may end with: our killed transport's
/// `ConnectionReset`, or the peer's view of it (RST: `ConnectionReset`, `BrokenPipe`;
/// end of file: `ConnectionAborted`).
fn is_connection_loss(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// What one end runs on.
pub(crate) struct Env<'a> {
    pub ctx: &'a Ctx,
    pub pair: &'a Pair,
    pub trace: &'a OpTrace,
}

impl Env<'_> {
    fn dead(&self) -> bool {
        self.pair.is_dead()
    }

    fn protocol(&self) -> Protocol {
        self.pair.protocol
    }

    fn yamux(&self) -> bool {
        self.pair.protocol == Protocol::Yamux
    }

    /// A connection error is fine once the session was dropped.
    fn loss(&self, e: &io::Error) -> bool {
        self.dead() && is_connection_loss(e.kind())
    }
}

/// Opens a stream on `side`'s session and plays the opener's part of `plan`.
pub(crate) async fn opener(env: &Env<'_>, side: Side, plan: Plan) -> OpResult {
    env.trace.set_phase("opening");
    let stream = match env.pair.session(side).open_stream().await {
        Ok(s) => s,
        Err(e) if env.loss(&e) => return Ok(Outcome::Cut),
        Err(e) => return Err(format!("open_stream failed: {e} ({:?})", e.kind())),
    };
    env.ctx.counters(env.pair).add_opened();
    env.trace.set_stream(stream.id().0);
    // Registered before the first byte can reach the acceptor: it checks the header
    // against this, and needs it if the stream ends before the header arrives.
    env.ctx.register(
        RegKey {
            protocol: env.pair.index,
            generation: env.pair.generation,
            opener: side,
            stream_id: stream.id().0,
        },
        plan,
    );
    let (r, mut w) = stream.into_split();
    env.trace.set_phase("header");
    if let Err(e) = w.write_all(&plan.encode()).await {
        return if env.loss(&e) {
            Ok(Outcome::Cut)
        } else {
            Err(format!("writing the header failed: {e} ({:?})", e.kind()))
        };
    }
    run_side(env, Role::Opener, plan, r, w).await
}

/// Plays the acceptor's part for a stream the peer (`opener`) opened.
pub(crate) async fn acceptor(env: &Env<'_>, opener: Side, stream: Stream) -> OpResult {
    let id = stream.id().0;
    env.trace.set_stream(id);
    env.trace.set_phase("header");
    let (mut r, w) = stream.into_split();
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let early_end = loop {
        if got == HEADER_LEN {
            break None;
        }
        match r.read(&mut header[got..]).await {
            Ok(0) => break Some(ReadHow::Eof),
            Ok(n) => got += n,
            Err(e) => break Some(ReadHow::Error(e)),
        }
    };
    let registered = env.ctx.unregister(RegKey {
        protocol: env.pair.index,
        generation: env.pair.generation,
        opener,
        stream_id: id,
    });
    let Some(how) = early_end else {
        let plan = Plan::decode(&header)
            .ok_or_else(|| format!("received a corrupt header: {header:02x?}"))?;
        env.trace.set_plan(plan);
        // Only acceptors take registrations (and the session dropper those of a dead
        // session): the opener registered before writing the header.
        match registered {
            Some(reg) if reg != plan => {
                return Err(format!(
                    "the header says [{plan}] but the opener registered [{reg}]"
                ))
            }
            None if !env.dead() => {
                return Err(format!(
                    "the header [{plan}] arrived but no plan was registered for the stream"
                ))
            }
            _ => {}
        }
        return run_side(env, Role::Acceptor, plan, r, w).await;
    };
    // The stream ended before the whole header arrived.
    if let ReadHow::Error(e) = &how {
        if env.loss(e) {
            return Ok(Outcome::Cut);
        }
    }
    let Some(plan) = registered else {
        return Err(format!(
            "the stream ended after {got} of {HEADER_LEN} header bytes ({how}), and its \
             opener registered no plan for it"
        ));
    };
    env.trace.set_plan(plan);
    if !plan.header_may_be_lost() {
        return Err(format!(
            "the stream ended after {got} of {HEADER_LEN} header bytes ({how}), which the \
             plan does not allow"
        ));
    }
    if header[..got] != plan.encode()[..got] {
        return Err(format!(
            "the first {got} header bytes differ from the plan's: {:02x?}",
            &header[..got]
        ));
    }
    let end = ReadEnd { got: 0, how };
    let expect = if env.yamux() {
        Expect::ResetAtMost(0)
    } else {
        Expect::EofAt(0)
    };
    judge_read(env, &end, "the stream's end before the header", expect)
}

/// The data phase of either end.
async fn run_side(
    env: &Env<'_>,
    role: Role,
    plan: Plan,
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
) -> OpResult {
    let (out_dir, in_dir) = match role {
        Role::Opener => (Dir::Forward, Dir::Back),
        Role::Acceptor => (Dir::Back, Dir::Forward),
    };
    let (out_len, in_len) = match role {
        Role::Opener => (plan.fwd_len, plan.back_len),
        Role::Acceptor => (plan.back_len, plan.fwd_len),
    };
    let out_key = pattern::key(plan.seed, out_dir);
    let in_key = pattern::key(plan.seed, in_dir);
    let sizes_seed = pattern::mix(plan.seed ^ out_key);
    env.trace.set_phase("transfer");

    if matches!(plan.kind, OpKind::Transfer | OpKind::Slow) {
        let writer = async {
            write_data(env, &mut w, out_key, sizes_seed, out_len, plan.slow_writer).await?;
            w.shutdown().await
        };
        let reader = read_data(env, &mut r, in_key, in_len, None, plan.slow_reader);
        let (wres, end) = tokio::join!(writer, reader);
        env.trace.set_phase("checking");
        let a = judge_write(env, wres, "writing", false)?;
        let b = judge_read(env, &end, "reading", Expect::EofAt(in_len))?;
        return Ok(worst(a, b));
    }

    // Reset and Drop: data flows one way; one end acts after `cut` bytes.
    let i_send = out_len > 0;
    let i_act = match plan.actor {
        crate::plan::Actor::Sender => i_send,
        crate::plan::Actor::Receiver => !i_send,
        crate::plan::Actor::None => return Err(format!("plan [{plan}] has no actor")),
    };
    let reset = plan.kind == OpKind::Reset;
    match (i_send, i_act) {
        // The sender acts after writing `cut` bytes.
        (true, true) => {
            let res = write_data(env, &mut w, out_key, sizes_seed, plan.cut, Pace::default()).await;
            let written = judge_write(env, res, "writing up to the cut", false)?;
            if written == Outcome::Cut {
                return Ok(Outcome::Cut);
            }
            env.trace.set_phase("acting");
            if reset {
                w.reset();
                check_after_reset(env, &mut r, &mut w).await
            } else {
                drop(w);
                drop(r);
                Ok(Outcome::Done)
            }
        }
        // The receiver acts after reading `cut` bytes; it keeps its write side open
        // until then, so that smux peers learn of the act from its FIN.
        (false, true) => {
            let end = read_data(env, &mut r, in_key, in_len, Some(plan.cut), Pace::default()).await;
            let read = judge_read(
                env,
                &end,
                "reading up to the cut",
                Expect::StoppedAt(plan.cut),
            )?;
            if read == Outcome::Cut {
                return Ok(Outcome::Cut);
            }
            env.trace.set_phase("acting");
            if reset {
                r.reset();
                check_after_reset(env, &mut r, &mut w).await
            } else {
                drop(w);
                drop(r);
                Ok(Outcome::Done)
            }
        }
        // We send; the peer reads `cut` bytes, then resets or drops.
        (true, false) => {
            let writer = async {
                write_data(env, &mut w, out_key, sizes_seed, out_len, Pace::default()).await?;
                w.shutdown().await
            };
            let reader = async {
                let end = read_data(env, &mut r, in_key, 0, None, Pace::default()).await;
                // The peer has ended its side. smux v2: it will never give window
                // again, so a write still waiting, or data and FIN still queued after
                // a finished write, would wait for good: stop them.
                if env.protocol() == Protocol::SmuxV2 {
                    r.reset();
                }
                end
            };
            let (wres, end) = tokio::join!(writer, reader);
            env.trace.set_phase("checking");
            // yamux: a reset reaches us as RST; smux (and a yamux drop) as FIN.
            let expect = if reset && env.yamux() {
                Expect::ResetAtMost(0)
            } else {
                Expect::EofAt(0)
            };
            let b = judge_read(env, &end, "reading the peer's end", expect)?;
            // Writes into a stream the peer reset may fail with ConnectionReset (yamux
            // RST, or our own reset on smux v2); into one it dropped they complete,
            // except on smux v2 where we reset.
            let may_fail = (reset && env.yamux()) || env.protocol() == Protocol::SmuxV2;
            let a = judge_write(env, wres, "writing after the peer's act", may_fail)?;
            Ok(worst(a, b))
        }
        // We receive; the peer writes `cut` bytes, then resets or drops.
        (false, false) => {
            let _ = w.shutdown().await; // nothing to send: FIN now
            let end = read_data(env, &mut r, in_key, in_len, None, Pace::default()).await;
            env.trace.set_phase("checking");
            let expect = match (reset, env.yamux()) {
                // A reset drops what was not sent yet.
                (true, true) => Expect::ResetAtMost(plan.cut),
                (true, false) => Expect::EofAtMost(plan.cut),
                // Data written before a drop is always sent before the FIN.
                (false, _) => Expect::EofAt(plan.cut),
            };
            judge_read(env, &end, "reading", expect)
        }
    }
}

fn worst(a: Outcome, b: Outcome) -> Outcome {
    if a == Outcome::Cut || b == Outcome::Cut {
        Outcome::Cut
    } else {
        Outcome::Done
    }
}

/// After our own `reset()`, both reading and writing must fail with `ConnectionReset`.
async fn check_after_reset(
    env: &Env<'_>,
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
) -> OpResult {
    env.trace.set_phase("checking");
    match w.write(b"x").await {
        Ok(n) => return Err(format!("a write after our reset succeeded ({n} bytes)")),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => {
            return Err(format!(
                "a write after our reset failed with {:?} ({e}), expected ConnectionReset",
                e.kind()
            ))
        }
    }
    let mut byte = [0u8; 1];
    match r.read(&mut byte).await {
        Ok(n) => Err(format!(
            "a read after our reset returned Ok({n}), expected ConnectionReset"
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(if env.dead() {
            Outcome::Cut
        } else {
            Outcome::Done
        }),
        Err(e) => Err(format!(
            "a read after our reset failed with {:?} ({e}), expected ConnectionReset",
            e.kind()
        )),
    }
}

/// Writes `len` bytes of content, in writes of log-uniform random sizes (or paced
/// steps), and counts them in the trace.
async fn write_data(
    env: &Env<'_>,
    w: &mut OwnedWriteHalf,
    key: u64,
    sizes_seed: u64,
    len: u64,
    pace: Pace,
) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(sizes_seed);
    let mut buf = vec![0u8; IO_CHUNK.min(len as usize)];
    let mut off = 0u64;
    while off < len {
        let step = if pace.is_paced() {
            pace.chunk as u64
        } else {
            log_size(&mut rng, 1, IO_CHUNK as u64)
        };
        let n = step.min(len - off) as usize;
        pattern::fill(key, off, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        off += n as u64;
        env.trace.set_written(off);
        if pace.is_paced() {
            tokio::time::sleep(Duration::from_micros(pace.pause_us.into())).await;
        }
    }
    Ok(())
}

/// How reading ended.
pub(crate) enum ReadHow {
    /// End of stream.
    Eof,
    /// We stopped at the cut, as the plan says.
    Stopped,
    /// A read failed.
    Error(io::Error),
    /// More data than the plan's length.
    Overrun(u64),
    /// A byte differs from the content.
    Corrupt(Mismatch),
}

impl fmt::Display for ReadHow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadHow::Eof => f.write_str("EOF"),
            ReadHow::Stopped => f.write_str("stopped at the cut"),
            ReadHow::Error(e) => write!(f, "error {:?} ({e})", e.kind()),
            ReadHow::Overrun(n) => write!(f, "{n} bytes beyond the plan's length"),
            ReadHow::Corrupt(m) => write!(
                f,
                "wrong data: byte at offset {} is {:#04x}, expected {:#04x}",
                m.offset, m.got, m.expected
            ),
        }
    }
}

pub(crate) struct ReadEnd {
    got: u64,
    how: ReadHow,
}

/// Reads and verifies up to `len` bytes (or stops after `stop_at`), until EOF or an
/// error.
async fn read_data(
    env: &Env<'_>,
    r: &mut OwnedReadHalf,
    key: u64,
    len: u64,
    stop_at: Option<u64>,
    pace: Pace,
) -> ReadEnd {
    let cap = if pace.is_paced() {
        pace.chunk as usize
    } else {
        IO_CHUNK
    };
    let mut buf = vec![0u8; cap];
    let mut scratch = Vec::with_capacity(cap);
    let mut got = 0u64;
    let counters = env.ctx.counters(env.pair);
    loop {
        if stop_at.is_some_and(|s| got >= s) {
            return ReadEnd {
                got,
                how: ReadHow::Stopped,
            };
        }
        let want = match stop_at {
            Some(s) => cap.min((s - got) as usize),
            None => cap,
        };
        let n = match r.read(&mut buf[..want]).await {
            Ok(0) => {
                return ReadEnd {
                    got,
                    how: ReadHow::Eof,
                }
            }
            Ok(n) => n,
            Err(e) => {
                return ReadEnd {
                    got,
                    how: ReadHow::Error(e),
                }
            }
        };
        if got + n as u64 > len {
            let ok = (len - got) as usize;
            let how = match pattern::verify(key, got, &buf[..ok], &mut scratch) {
                Err(m) => ReadHow::Corrupt(m),
                Ok(()) => ReadHow::Overrun(got + n as u64 - len),
            };
            return ReadEnd { got, how };
        }
        if let Err(m) = pattern::verify(key, got, &buf[..n], &mut scratch) {
            return ReadEnd {
                got,
                how: ReadHow::Corrupt(m),
            };
        }
        got += n as u64;
        env.trace.set_read(got);
        counters.add_verified(n as u64);
        if pace.is_paced() {
            tokio::time::sleep(Duration::from_micros(pace.pause_us.into())).await;
        }
    }
}

/// The ends a plan allows a reader.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// EOF after exactly this many bytes.
    EofAt(u64),
    /// EOF after at most this many bytes.
    EofAtMost(u64),
    /// `ConnectionReset` after at most this many bytes.
    ResetAtMost(u64),
    /// Stopped by us at exactly this many bytes.
    StoppedAt(u64),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::EofAt(n) => write!(f, "EOF after exactly {n} bytes"),
            Expect::EofAtMost(n) => write!(f, "EOF after at most {n} bytes"),
            Expect::ResetAtMost(n) => write!(f, "ConnectionReset after at most {n} bytes"),
            Expect::StoppedAt(n) => write!(f, "{n} bytes before our cut"),
        }
    }
}

fn judge_read(env: &Env<'_>, end: &ReadEnd, what: &str, expect: Expect) -> OpResult {
    let got = end.got;
    let ok = match (&end.how, expect) {
        (ReadHow::Eof, Expect::EofAt(n)) => got == n,
        (ReadHow::Eof, Expect::EofAtMost(n)) => got <= n,
        (ReadHow::Error(e), Expect::ResetAtMost(n)) if e.kind() == ErrorKind::ConnectionReset => {
            got <= n
        }
        (ReadHow::Stopped, Expect::StoppedAt(n)) => got == n,
        // Verified data, then the connection's error: a dropped session.
        (ReadHow::Error(e), _) if env.loss(e) => return Ok(Outcome::Cut),
        _ => false,
    };
    if ok {
        return Ok(Outcome::Done);
    }
    Err(format!(
        "{what}: expected {expect}, got {} after {got} verified bytes",
        end.how
    ))
}

fn judge_write(env: &Env<'_>, res: io::Result<()>, what: &str, may_reset: bool) -> OpResult {
    match res {
        Ok(()) => Ok(Outcome::Done),
        Err(e) if may_reset && e.kind() == ErrorKind::ConnectionReset => Ok(Outcome::Done),
        Err(e) if env.loss(&e) => Ok(Outcome::Cut),
        Err(e) => Err(format!(
            "{what}: failed with {:?} ({e}) after {} bytes",
            e.kind(),
            env.trace.written()
        )),
    }
}
