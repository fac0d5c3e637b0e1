// Command braid-peer is the Go side of braid's interoperability tests.
//
// It links the real Go implementations (github.com/xtaci/smux and
// github.com/hashicorp/yamux, from Debian's golang-*-dev packages) and
// exposes them through modes selected with -mode:
//
//	golden  print, as JSON lines, the exact bytes Go sends for each frame kind
//	server  listen on -addr, accept one connection, run -scenario on it
//	client  dial -addr, run -scenario on the connection
//	tunnel-client  port forwarding: dial one multiplexed connection to -addr,
//	               listen on -listen, one stream per accepted TCP connection
//	tunnel-server  port forwarding: accept multiplexed connections on -addr,
//	               forward each accepted stream to a new connection to -target
//
// In server and client mode the peer speaks -proto (smux1, smux2 or yamux) over
// one TCP connection and reports what happened as JSON lines on stdout (see
// README.md for the events and the scenarios), so that braid's Rust tests can
// assert on the real Go library's behaviour. The tunnel modes (tunnel.go) map
// streams to TCP connections as kcptun and frp do, for end-to-end tests of
// braid's own tunnel against a Go one.
//
// Build (see README.md):
//
//	cd interop/go && GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/braid-peer .
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

func main() {
	mode := flag.String("mode", "", "what to do: golden, server, client, tunnel-client or tunnel-server")
	var f peerFlags
	f.register(flag.CommandLine)
	var t tunnelFlags
	t.register(flag.CommandLine)
	flag.Parse()

	var err error
	switch *mode {
	case "golden":
		err = runGolden(os.Stdout)
	case "server", "client":
		err = runPeer(*mode == "client", &f)
	case "tunnel-client", "tunnel-server":
		err = runTunnel(*mode == "tunnel-client", &f, &t)
	default:
		fmt.Fprintf(os.Stderr, "braid-peer: unknown or missing -mode %q (want: golden, server, client, tunnel-client, tunnel-server)\n", *mode)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "braid-peer: %s: %v\n", *mode, err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------
// Recording transport
// ---------------------------------------------------------------------------

// recConn wraps a net.Conn and keeps a copy of every byte written through
// it, i.e. exactly what the peer receives on the wire.
// It deliberately exposes only the net.Conn methods, so libraries that probe
// for optional interfaces (smux looks for WriteBuffers) take their plain path.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write records p before passing it on, so that once the peer has seen any
// of these bytes a snapshot already holds all of them (recording afterwards
// would race with a peer that reacts to the bytes before Write returns).
// Bytes the underlying Write did not take are dropped from the record again;
// that relies on one writer at a time, which holds for smux and yamux: each
// session funnels all writes through a single sender goroutine.
func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if n < len(p) {
		c.mu.Lock()
		c.buf.Truncate(c.buf.Len() - (len(p) - n))
		c.mu.Unlock()
	}
	return n, err
}

// snapshot returns a copy of everything written so far.
func (c *recConn) snapshot() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf.Bytes()...)
}

// recordedPipe returns both ends of an in-memory, synchronous connection
// (net.Pipe: no sockets involved), each wrapped in a recorder.
func recordedPipe() (client, server *recConn) {
	a, b := net.Pipe()
	return &recConn{Conn: a}, &recConn{Conn: b}
}

// waitFor polls cond every few milliseconds until it holds or timeout passes.
func waitFor(what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Wire frames and JSON output
// ---------------------------------------------------------------------------

// frame is one frame cut out of a recorded byte stream.
type frame struct {
	kind     string // label, e.g. "syn", "window_update_ack"
	streamID uint32
	header   []byte
	payload  []byte
	decoded  interface{} // header fields (and UPD body) as numbers
}

// maxInlinePayload is the largest payload printed in full. Larger payloads
// (the yamux bulk transfer) are summarised by length and SHA-256 instead.
const maxInlinePayload = 256

// goldenLine is one JSON line of -mode golden output. Field order is fixed by
// the struct, so the output is byte-for-byte reproducible.
type goldenLine struct {
	Proto    string      `json:"proto"`    // smux1, smux2, yamux
	Scenario string      `json:"scenario"` // which driven exchange produced it
	Side     string      `json:"side"`     // client or server: who sent it
	Kind     string      `json:"kind"`
	StreamID uint32      `json:"stream_id"`
	Length   int         `json:"length"` // payload bytes following the header
	Hex      string      `json:"hex"`    // header+payload as on the wire
	Decoded  interface{} `json:"decoded"`
	// Set only when the payload is too large to inline: then Hex holds the
	// header alone.
	PayloadTruncated bool        `json:"payload_truncated,omitempty"`
	PayloadSHA256    string      `json:"payload_sha256,omitempty"`
	Config           interface{} `json:"config"`
}

// emitter writes golden lines, dropping frames already printed for the same
// proto and side (e.g. the SYN repeated by every scenario, periodic NOPs).
type emitter struct {
	enc  *json.Encoder
	seen map[string]bool
}

func newEmitter(w io.Writer) *emitter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &emitter{enc: enc, seen: map[string]bool{}}
}

func (e *emitter) emit(proto, scenario, side string, cfg interface{}, frames []frame) error {
	for _, f := range frames {
		wire := append(append([]byte(nil), f.header...), f.payload...)
		key := proto + "/" + side + "/" + hex.EncodeToString(wire)
		if e.seen[key] {
			continue
		}
		e.seen[key] = true

		line := goldenLine{
			Proto: proto, Scenario: scenario, Side: side,
			Kind: f.kind, StreamID: f.streamID, Length: len(f.payload),
			Hex: hex.EncodeToString(wire), Decoded: f.decoded, Config: cfg,
		}
		if len(f.payload) > maxInlinePayload {
			sum := sha256.Sum256(f.payload)
			line.Hex = hex.EncodeToString(f.header)
			line.PayloadTruncated = true
			line.PayloadSHA256 = hex.EncodeToString(sum[:])
		}
		if err := e.enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// withoutKind splits off frames of one kind (used to move the timer-driven
// NOPs out of the otherwise deterministic wire order).
func withoutKind(frames []frame, kind string) (rest, removed []frame) {
	for _, f := range frames {
		if f.kind == kind {
			removed = append(removed, f)
		} else {
			rest = append(rest, f)
		}
	}
	return rest, removed
}

func runGolden(w io.Writer) error {
	// A hung library call must not hang the test suite that runs us.
	go func() {
		time.Sleep(60 * time.Second)
		fmt.Fprintln(os.Stderr, "braid-peer: golden: watchdog fired after 60s")
		os.Exit(1)
	}()

	e := newEmitter(w)
	for _, version := range []int{1, 2} {
		if err := goldenSmux(e, version); err != nil {
			return fmt.Errorf("smux v%d: %w", version, err)
		}
	}
	if err := goldenYamux(e); err != nil {
		return fmt.Errorf("yamux: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// smux
// ---------------------------------------------------------------------------

// smux header: ver u8 | cmd u8 | length u16 LE | stream id u32 LE, then
// `length` payload bytes (for every command).
const smuxHeaderLen = 8

var smuxCmdNames = map[byte]string{0: "syn", 1: "fin", 2: "psh", 3: "nop", 4: "upd"}

type smuxDecoded struct {
	Ver      uint8   `json:"ver"`
	Cmd      uint8   `json:"cmd"`
	Length   uint16  `json:"length"`
	StreamID uint32  `json:"sid"`
	Consumed *uint32 `json:"upd_consumed,omitempty"` // UPD body, first u32 LE
	Window   *uint32 `json:"upd_window,omitempty"`   // UPD body, second u32 LE
}

// parseSmux cuts a recorded smux byte stream into frames.
func parseSmux(b []byte) ([]frame, error) {
	var out []frame
	for len(b) > 0 {
		if len(b) < smuxHeaderLen {
			return nil, fmt.Errorf("smux: %d trailing bytes, short header", len(b))
		}
		h := b[:smuxHeaderLen]
		n := int(binary.LittleEndian.Uint16(h[2:4]))
		if len(b) < smuxHeaderLen+n {
			return nil, fmt.Errorf("smux: frame wants %d payload bytes, have %d", n, len(b)-smuxHeaderLen)
		}
		d := smuxDecoded{Ver: h[0], Cmd: h[1], Length: uint16(n), StreamID: binary.LittleEndian.Uint32(h[4:8])}
		p := b[smuxHeaderLen : smuxHeaderLen+n]
		name, ok := smuxCmdNames[d.Cmd]
		if !ok {
			name = fmt.Sprintf("cmd%d", d.Cmd)
		}
		if name == "upd" && n == 8 {
			c, wnd := binary.LittleEndian.Uint32(p[0:4]), binary.LittleEndian.Uint32(p[4:8])
			d.Consumed, d.Window = &c, &wnd
		}
		out = append(out, frame{kind: name, streamID: d.StreamID, header: h, payload: p, decoded: d})
		b = b[smuxHeaderLen+n:]
	}
	return out, nil
}

// smuxConfigJSON is the smux.Config printed alongside every smux frame.
type smuxConfigJSON struct {
	Version             int   `json:"version"`
	KeepAliveDisabled   bool  `json:"keepalive_disabled"`
	KeepAliveIntervalMs int64 `json:"keepalive_interval_ms"`
	KeepAliveTimeoutMs  int64 `json:"keepalive_timeout_ms"`
	MaxFrameSize        int   `json:"max_frame_size"`
	MaxReceiveBuffer    int   `json:"max_receive_buffer"`
	MaxStreamBuffer     int   `json:"max_stream_buffer"`
}

func smuxConfigOf(c *smux.Config) smuxConfigJSON {
	return smuxConfigJSON{
		Version:             c.Version,
		KeepAliveDisabled:   c.KeepAliveDisabled,
		KeepAliveIntervalMs: c.KeepAliveInterval.Milliseconds(),
		KeepAliveTimeoutMs:  c.KeepAliveTimeout.Milliseconds(),
		MaxFrameSize:        c.MaxFrameSize,
		MaxReceiveBuffer:    c.MaxReceiveBuffer,
		MaxStreamBuffer:     c.MaxStreamBuffer,
	}
}

// smuxScenario is one driven exchange between a Go smux client and server.
type smuxScenario struct {
	name string
	cfg  *smux.Config
	// write is what the client writes on its stream before closing it.
	write []byte
	// waitNOP: wait until each side has sent at least one keepalive NOP.
	waitNOP bool
}

func goldenSmux(e *emitter, version int) error {
	proto := fmt.Sprintf("smux%d", version)
	scenarios := []smuxScenario{
		{
			// SYN, PSH "hello", FIN from the client; in v2 the server's read
			// of "hello" makes it send UPD. Keepalive on, to catch a NOP.
			name: "basic",
			cfg: &smux.Config{
				Version:           version,
				KeepAliveInterval: 50 * time.Millisecond,
				KeepAliveTimeout:  5 * time.Second,
				MaxFrameSize:      1024,
				MaxReceiveBuffer:  65536,
				MaxStreamBuffer:   8192,
			},
			write:   []byte("hello"),
			waitNOP: true,
		},
		{
			// A write larger than MaxFrameSize is split into several PSH
			// frames. The tiny MaxStreamBuffer makes v2's "half the buffer
			// consumed" UPD rule fire on the second frame too.
			name: "split",
			cfg: &smux.Config{
				Version:           version,
				KeepAliveDisabled: true,
				KeepAliveInterval: 10 * time.Second,
				KeepAliveTimeout:  30 * time.Second,
				MaxFrameSize:      4,
				MaxReceiveBuffer:  4096,
				MaxStreamBuffer:   8,
			},
			write: []byte("abcdefghij"),
		},
	}
	for _, sc := range scenarios {
		cli, srv, err := runSmuxScenario(sc)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		cfg := smuxConfigOf(sc.cfg)
		for _, side := range []struct {
			name   string
			frames []frame
		}{{"client", cli}, {"server", srv}} {
			// NOPs are timer driven and may land anywhere: print them last.
			rest, nops := withoutKind(side.frames, "nop")
			if err := e.emit(proto, sc.name, side.name, cfg, append(rest, nops...)); err != nil {
				return err
			}
		}
	}
	return nil
}

// runSmuxScenario drives one exchange and returns the frames each side sent.
//
// Every step is sequential, so apart from NOPs the order of each side's
// frames is fixed. Server reads use a buffer larger than any frame, and smux
// hands out at most one received frame per Read, so each PSH is consumed by
// exactly one Read and the v2 UPD sequence is deterministic too.
func runSmuxScenario(sc smuxScenario) (cliFrames, srvFrames []frame, err error) {
	cc, sc2 := recordedPipe()
	cli, err := smux.Client(cc, sc.cfg)
	if err != nil {
		return nil, nil, err
	}
	defer cli.Close()
	srv, err := smux.Server(sc2, sc.cfg)
	if err != nil {
		return nil, nil, err
	}
	defer srv.Close()

	cs, err := cli.OpenStream() // SYN
	if err != nil {
		return nil, nil, fmt.Errorf("open: %w", err)
	}
	ss, err := srv.AcceptStream()
	if err != nil {
		return nil, nil, fmt.Errorf("accept: %w", err)
	}
	if _, err := cs.Write(sc.write); err != nil { // PSH (one or more)
		return nil, nil, fmt.Errorf("write: %w", err)
	}
	got := make([]byte, 0, len(sc.write))
	buf := make([]byte, 64)
	for len(got) < len(sc.write) {
		n, err := ss.Read(buf) // v2: may send UPD
		if err != nil {
			return nil, nil, fmt.Errorf("server read: %w", err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, sc.write) {
		return nil, nil, fmt.Errorf("server read %q, want %q", got, sc.write)
	}
	if err := cs.Close(); err != nil { // FIN
		return nil, nil, fmt.Errorf("close: %w", err)
	}
	if n, err := ss.Read(buf); err != io.EOF {
		return nil, nil, fmt.Errorf("server read after FIN: n=%d err=%v, want EOF", n, err)
	}

	if sc.waitNOP {
		hasNOP := func(c *recConn) bool {
			frames, err := parseSmux(c.snapshot())
			if err != nil {
				return false
			}
			for _, f := range frames {
				if f.kind == "nop" {
					return true
				}
			}
			return false
		}
		if err := waitFor("keepalive NOPs", 5*time.Second, func() bool {
			return hasNOP(cc) && hasNOP(sc2)
		}); err != nil {
			return nil, nil, err
		}
	}

	// Session.Close sends nothing in smux, but snapshot first regardless.
	if cliFrames, err = parseSmux(cc.snapshot()); err != nil {
		return nil, nil, fmt.Errorf("client bytes: %w", err)
	}
	if srvFrames, err = parseSmux(sc2.snapshot()); err != nil {
		return nil, nil, fmt.Errorf("server bytes: %w", err)
	}
	return cliFrames, srvFrames, nil
}

// ---------------------------------------------------------------------------
// yamux
// ---------------------------------------------------------------------------

// yamux header (big-endian): version u8 | type u8 | flags u16 | stream id u32
// | length u32. Only Data frames are followed by `length` payload bytes; for
// WindowUpdate length is a window delta, for Ping an opaque ping id, for
// GoAway an error code.
const yamuxHeaderLen = 12

const (
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxTypePing         = 2
	yamuxTypeGoAway       = 3

	yamuxFlagSYN = 1
	yamuxFlagACK = 2
	yamuxFlagFIN = 4
	yamuxFlagRST = 8
)

var yamuxTypeNames = map[uint8]string{
	yamuxTypeData: "data", yamuxTypeWindowUpdate: "window_update",
	yamuxTypePing: "ping", yamuxTypeGoAway: "go_away",
}

type yamuxDecoded struct {
	Version  uint8  `json:"version"`
	Type     uint8  `json:"type"`
	TypeName string `json:"type_name"`
	Flags    uint16 `json:"flags"`
	StreamID uint32 `json:"stream_id"`
	Length   uint32 `json:"length"` // data: payload size; window_update: delta; ping: id; go_away: code
}

// yamuxKind labels a frame. A FIN (carried by a WindowUpdate frame in Go's
// yamux, or by Data if it had a payload) is called "fin"/"data_fin"; other
// flags are appended as suffixes: window_update_syn, ping_ack, ...
func yamuxKind(typ uint8, flags uint16) string {
	base, ok := yamuxTypeNames[typ]
	if !ok {
		base = fmt.Sprintf("type%d", typ)
	}
	if flags&yamuxFlagFIN != 0 {
		if typ == yamuxTypeData {
			base = "data_fin"
		} else {
			base = "fin"
		}
	}
	for _, f := range []struct {
		bit  uint16
		name string
	}{{yamuxFlagSYN, "_syn"}, {yamuxFlagACK, "_ack"}, {yamuxFlagRST, "_rst"}} {
		if flags&f.bit != 0 {
			base += f.name
		}
	}
	if unknown := flags &^ (yamuxFlagSYN | yamuxFlagACK | yamuxFlagFIN | yamuxFlagRST); unknown != 0 {
		base += fmt.Sprintf("_flags%#x", unknown)
	}
	return base
}

// parseYamux cuts a recorded yamux byte stream into frames.
func parseYamux(b []byte) ([]frame, error) {
	var out []frame
	for len(b) > 0 {
		if len(b) < yamuxHeaderLen {
			return nil, fmt.Errorf("yamux: %d trailing bytes, short header", len(b))
		}
		h := b[:yamuxHeaderLen]
		d := yamuxDecoded{
			Version: h[0], Type: h[1], Flags: binary.BigEndian.Uint16(h[2:4]),
			StreamID: binary.BigEndian.Uint32(h[4:8]), Length: binary.BigEndian.Uint32(h[8:12]),
		}
		d.TypeName = yamuxTypeNames[d.Type]
		n := 0
		if d.Type == yamuxTypeData {
			n = int(d.Length)
		}
		if len(b) < yamuxHeaderLen+n {
			return nil, fmt.Errorf("yamux: data frame wants %d bytes, have %d", n, len(b)-yamuxHeaderLen)
		}
		out = append(out, frame{
			kind: yamuxKind(d.Type, d.Flags), streamID: d.StreamID,
			header: h, payload: b[yamuxHeaderLen : yamuxHeaderLen+n], decoded: d,
		})
		b = b[yamuxHeaderLen+n:]
	}
	return out, nil
}

type yamuxConfigJSON struct {
	AcceptBacklog            int    `json:"accept_backlog"`
	EnableKeepAlive          bool   `json:"enable_keepalive"`
	KeepAliveIntervalMs      int64  `json:"keepalive_interval_ms"`
	ConnectionWriteTimeoutMs int64  `json:"connection_write_timeout_ms"`
	MaxStreamWindowSize      uint32 `json:"max_stream_window_size"`
	BulkBytes                int    `json:"bulk_bytes"` // size of the second client write (scenario input)
}

// yamuxBulkLen is the size of the client's second write. It must push the
// receiver past half its 256 KiB window so the receiver sends a WindowUpdate.
const yamuxBulkLen = 200 * 1024

func goldenYamux(e *emitter) error {
	cfg := &yamux.Config{
		AcceptBacklog:          256,
		EnableKeepAlive:        false, // pings only when we ask, for determinism
		KeepAliveInterval:      30 * time.Second,
		ConnectionWriteTimeout: 10 * time.Second,
		MaxStreamWindowSize:    256 * 1024, // the minimum yamux accepts
		LogOutput:              io.Discard,
	}
	cli, srv, err := runYamuxScenario(cfg)
	if err != nil {
		return fmt.Errorf("scenario basic: %w", err)
	}
	cfgJSON := yamuxConfigJSON{
		AcceptBacklog:            cfg.AcceptBacklog,
		EnableKeepAlive:          cfg.EnableKeepAlive,
		KeepAliveIntervalMs:      cfg.KeepAliveInterval.Milliseconds(),
		ConnectionWriteTimeoutMs: cfg.ConnectionWriteTimeout.Milliseconds(),
		MaxStreamWindowSize:      cfg.MaxStreamWindowSize,
		BulkBytes:                yamuxBulkLen,
	}
	if err := e.emit("yamux", "basic", "client", cfgJSON, cli); err != nil {
		return err
	}
	return e.emit("yamux", "basic", "server", cfgJSON, srv)
}

// runYamuxScenario drives: open (WindowUpdate|SYN), accept (WindowUpdate|ACK
// from the server), Data "hello", a 200 KiB Data write whose consumption
// makes the server send a WindowUpdate, close (FIN), two Pings and their
// replies, and
// GoAway. All steps are sequential, so each side's frame order is fixed.
func runYamuxScenario(cfg *yamux.Config) (cliFrames, srvFrames []frame, err error) {
	cc, sc := recordedPipe()
	cli, err := yamux.Client(cc, cfg)
	if err != nil {
		return nil, nil, err
	}
	defer cli.Close()
	srv, err := yamux.Server(sc, cfg)
	if err != nil {
		return nil, nil, err
	}
	defer srv.Close()

	cs, err := cli.OpenStream() // WindowUpdate|SYN, delta 0
	if err != nil {
		return nil, nil, fmt.Errorf("open: %w", err)
	}
	ss, err := srv.AcceptStream() // WindowUpdate|ACK, delta 0
	if err != nil {
		return nil, nil, fmt.Errorf("accept: %w", err)
	}

	hello := []byte("hello")
	if _, err := cs.Write(hello); err != nil { // Data "hello"
		return nil, nil, fmt.Errorf("write hello: %w", err)
	}
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(ss, got); err != nil || !bytes.Equal(got, hello) {
		return nil, nil, fmt.Errorf("server read hello: %q, %v", got, err)
	}

	// Bulk write: a fixed pattern, so its checksum is reproducible.
	bulk := make([]byte, yamuxBulkLen)
	for i := range bulk {
		bulk[i] = byte(i % 251)
	}
	if _, err := cs.Write(bulk); err != nil { // one Data frame (fits the 256 KiB window)
		return nil, nil, fmt.Errorf("write bulk: %w", err)
	}
	// The receiver sends a WindowUpdate from the first Read after which it
	// has consumed at least MaxStreamWindowSize/2 bytes since its last update,
	// with delta = bytes consumed since then. How much one Read returns
	// depends on timing, so read exactly up to the threshold first: the Read
	// that ends it is then the one that fires, and the delta is exactly half
	// the window whatever the timing.
	half := int(cfg.MaxStreamWindowSize / 2)
	got = make([]byte, len(bulk))
	first := half - len(hello)
	if _, err := io.ReadFull(ss, got[:first]); err != nil { // -> WindowUpdate
		return nil, nil, fmt.Errorf("server read bulk: %w", err)
	}
	if _, err := io.ReadFull(ss, got[first:]); err != nil { // below threshold again
		return nil, nil, fmt.Errorf("server read bulk: %w", err)
	}
	if !bytes.Equal(got, bulk) {
		return nil, nil, errors.New("server read corrupted bulk data")
	}

	if err := cs.Close(); err != nil { // WindowUpdate|FIN
		return nil, nil, fmt.Errorf("close: %w", err)
	}
	if n, err := ss.Read(got[:1]); err != io.EOF {
		return nil, nil, fmt.Errorf("server read after FIN: n=%d err=%v, want EOF", n, err)
	}

	// Ping|SYN from the client, echoed as Ping|ACK by the server. Ping ids
	// count up from 0 and travel in the length field; ping twice so that a
	// nonzero id (1) is on record as well.
	for i := 0; i < 2; i++ {
		if _, err := cli.Ping(); err != nil {
			return nil, nil, fmt.Errorf("ping %d: %w", i, err)
		}
	}
	if err := cli.GoAway(); err != nil { // GoAway, code 0 (normal)
		return nil, nil, fmt.Errorf("go away: %w", err)
	}

	// yamux's Session.Close sends nothing in this version; snapshot first anyway.
	if cliFrames, err = parseYamux(cc.snapshot()); err != nil {
		return nil, nil, fmt.Errorf("client bytes: %w", err)
	}
	if srvFrames, err = parseYamux(sc.snapshot()); err != nil {
		return nil, nil, fmt.Errorf("server bytes: %w", err)
	}
	return cliFrames, srvFrames, nil
}

// ===========================================================================
// Peer modes (-mode server, -mode client): one live session over TCP
// ===========================================================================
//
// The peer makes one TCP connection (server: listens on -addr and accepts
// one; client: dials -addr), runs a multiplexer session of -proto over it and
// plays one -scenario. Everything it observes is printed as JSON lines on
// stdout, "event" first:
//
//	{"event":"listening","addr":"127.0.0.1:NNNN"}   server only, first line
//	{"event":"stream_done","stream":3,"role":"acceptor","bytes":N,"sha256":"..."}
//	{"event":"done","ok":true}                       the scenario succeeded
//	{"event":"error","msg":"..."}                    it failed (exit status 1)
//
// plus scenario-specific events (see each scenario). After "done" the peer
// waits for the other side to close the connection, then exits 0: the Rust
// side, not Go, decides when the session ends.

// peerFlags are the settings of the server and client modes.
type peerFlags struct {
	proto    string
	addr     string
	scenario string

	// Library tuning; 0 keeps the library's default.
	maxReceiveBuffer  int
	maxStreamBuffer   int
	maxFrameSize      int
	keepAliveInterval time.Duration
	keepAliveTimeout  time.Duration
	keepAliveDisabled bool

	// yamux tuning; 0 keeps the library's default. -keepalive-interval is
	// shared with smux; yamux's keepalive runs when -enable-keepalive is set
	// (the default, as in yamux) and -keepalive-disabled is not.
	acceptBacklog          int
	maxStreamWindow        uint
	connectionWriteTimeout time.Duration
	enableKeepAlive        bool

	// Scenario parameters; each scenario says which it uses.
	streams    int
	bytes      int64
	replyBytes int64
	seed       uint64
	idle       time.Duration
	readSize   int
	readPause  time.Duration
	writeSize  int
	pings      int

	// The peer gives up (error event, exit status 3) after this long, so a
	// hang never outlives the test that started it.
	timeout time.Duration
}

func (f *peerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.proto, "proto", "smux1", "protocol: smux1, smux2 or yamux")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:0", "server: address to listen on (the actual one is reported); client: address to dial")
	fs.StringVar(&f.scenario, "scenario", "", "what to do on the session: "+scenarioNames())
	fs.IntVar(&f.maxReceiveBuffer, "max-receive-buffer", 0, "smux MaxReceiveBuffer, bytes (0: library default)")
	fs.IntVar(&f.maxStreamBuffer, "max-stream-buffer", 0, "smux MaxStreamBuffer, bytes (0: library default)")
	fs.IntVar(&f.maxFrameSize, "max-frame-size", 0, "smux MaxFrameSize, bytes (0: library default)")
	fs.DurationVar(&f.keepAliveInterval, "keepalive-interval", 0, "smux/yamux KeepAliveInterval (0: library default)")
	fs.DurationVar(&f.keepAliveTimeout, "keepalive-timeout", 0, "smux KeepAliveTimeout (0: library default)")
	fs.BoolVar(&f.keepAliveDisabled, "keepalive-disabled", false, "smux KeepAliveDisabled; yamux: EnableKeepAlive false")
	fs.IntVar(&f.acceptBacklog, "accept-backlog", 0, "yamux AcceptBacklog (0: library default, 256)")
	fs.UintVar(&f.maxStreamWindow, "max-stream-window", 0, "yamux MaxStreamWindowSize, bytes, at least 262144 (0: library default)")
	fs.DurationVar(&f.connectionWriteTimeout, "connection-write-timeout", 0, "yamux ConnectionWriteTimeout, also its ping timeout (0: library default)")
	fs.BoolVar(&f.enableKeepAlive, "enable-keepalive", true, "yamux EnableKeepAlive")
	fs.IntVar(&f.streams, "streams", 1, "number of streams")
	fs.Int64Var(&f.bytes, "bytes", 1<<20, "bytes to send (integrity, both: the largest upload)")
	fs.Int64Var(&f.replyBytes, "reply-bytes", 1<<20, "bytes of the reply (halfclose)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the generated data and sizes")
	fs.DurationVar(&f.idle, "idle", 10*time.Second, "how long the session stays idle (keepalive)")
	fs.IntVar(&f.readSize, "read-size", 1000, "bytes per Read (slowreader)")
	fs.DurationVar(&f.readPause, "read-pause", time.Millisecond, "pause after each Read (slowreader)")
	fs.IntVar(&f.writeSize, "write-size", 1<<20, "bytes per Write of the reply (bigframes)")
	fs.IntVar(&f.pings, "pings", 3, "pings to send (ping)")
	fs.DurationVar(&f.timeout, "timeout", 120*time.Second, "give up after this long")
}

// peer is one side of a live session.
type peer struct {
	sess   muxSession
	client bool // this side dialed the connection
	f      *peerFlags
	out    *reporter

	patOnce sync.Once
	pat     *pattern
}

func runPeer(client bool, f *peerFlags) error {
	out := &reporter{w: os.Stdout}
	err := playScenario(client, f, out)
	if err != nil {
		out.emit("error", kv{"msg": err.Error()})
	}
	return err
}

func playScenario(client bool, f *peerFlags, out *reporter) error {
	sc, ok := scenarios[f.scenario]
	if !ok {
		return fmt.Errorf("unknown or missing -scenario %q (want one of: %s)", f.scenario, scenarioNames())
	}
	go func() {
		time.Sleep(f.timeout)
		out.emit("error", kv{"msg": fmt.Sprintf("watchdog: still running after %v", f.timeout)})
		os.Exit(3)
	}()

	conn, err := connect(client, f.addr, out)
	if err != nil {
		return err
	}
	sess, err := newMuxSession(f, conn, client)
	if err != nil {
		conn.Close()
		return err
	}
	p := &peer{sess: sess, client: client, f: f, out: out}
	if err := sc.run(p); err != nil {
		return err
	}
	out.emit("done", kv{"ok": true})
	p.waitPeerClose()
	return nil
}

// connect makes the session's TCP connection: the client dials, the server
// listens, reports the address it got, and accepts exactly one connection.
func connect(client bool, addr string, out *reporter) (net.Conn, error) {
	if client {
		return net.DialTimeout("tcp", addr, 10*time.Second)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	out.emit("listening", kv{"addr": ln.Addr().String()})
	return ln.Accept()
}

// waitPeerClose returns once the other side has closed the connection (Accept
// then fails with the socket's error, io.EOF for a clean close); streams it
// still opens are closed unread.
func (p *peer) waitPeerClose() {
	defer p.sess.Close()
	for {
		st, err := p.sess.Accept()
		if err != nil {
			return
		}
		st.Close()
	}
}

// ---------------------------------------------------------------------------
// Sessions: what scenarios need from a multiplexer
// ---------------------------------------------------------------------------

// muxSession is the part of a multiplexer session the scenarios use, with an
// adapter for smux (smuxSession) and one for yamux (yamuxSession).
type muxSession interface {
	Open() (muxStream, error)
	Accept() (muxStream, error)
	IsClosed() bool
	Close() error
}

// muxStream is one stream. Close is the library's own: in smux 1.5.16 a full
// close (FIN; the stream can no longer read and is forgotten); in the 2019
// yamux a FIN after which Read returns io.EOF whenever nothing is buffered
// (see scenarioCloseRead).
type muxStream interface {
	io.ReadWriteCloser
	ID() uint32
}

type smuxSession struct{ s *smux.Session }

func (m smuxSession) Open() (muxStream, error) {
	st, err := m.s.OpenStream()
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return st, nil
}

func (m smuxSession) Accept() (muxStream, error) {
	st, err := m.s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (m smuxSession) IsClosed() bool { return m.s.IsClosed() }
func (m smuxSession) Close() error   { return m.s.Close() }

// yamuxControl is what the yamux-only scenarios need beyond muxSession.
type yamuxControl interface {
	GoAway() error
	Ping() (time.Duration, error)
}

type yamuxSession struct{ s *yamux.Session }

// yamuxStream gives *yamux.Stream the ID method of muxStream.
type yamuxStream struct{ *yamux.Stream }

func (s yamuxStream) ID() uint32 { return s.StreamID() }

func (m yamuxSession) Open() (muxStream, error) {
	st, err := m.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return yamuxStream{st}, nil
}

func (m yamuxSession) Accept() (muxStream, error) {
	st, err := m.s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return yamuxStream{st}, nil
}

func (m yamuxSession) IsClosed() bool               { return m.s.IsClosed() }
func (m yamuxSession) Close() error                 { return m.s.Close() }
func (m yamuxSession) GoAway() error                { return m.s.GoAway() }
func (m yamuxSession) Ping() (time.Duration, error) { return m.s.Ping() }

// yamux returns the session's yamux controls, or an error for smux.
func (p *peer) yamux() (yamuxControl, error) {
	y, ok := p.sess.(yamuxControl)
	if !ok {
		return nil, fmt.Errorf("scenario %q needs -proto yamux", p.f.scenario)
	}
	return y, nil
}

// newMuxSession starts the session of -proto over conn with the tuning flags
// applied on top of the library's defaults.
func newMuxSession(f *peerFlags, conn net.Conn, client bool) (muxSession, error) {
	switch f.proto {
	case "smux1", "smux2":
		cfg := smux.DefaultConfig()
		cfg.Version = int(f.proto[4] - '0')
		if f.maxReceiveBuffer > 0 {
			cfg.MaxReceiveBuffer = f.maxReceiveBuffer
		}
		if f.maxStreamBuffer > 0 {
			cfg.MaxStreamBuffer = f.maxStreamBuffer
		}
		if f.maxFrameSize > 0 {
			cfg.MaxFrameSize = f.maxFrameSize
		}
		if f.keepAliveInterval > 0 {
			cfg.KeepAliveInterval = f.keepAliveInterval
		}
		if f.keepAliveTimeout > 0 {
			cfg.KeepAliveTimeout = f.keepAliveTimeout
		}
		cfg.KeepAliveDisabled = f.keepAliveDisabled
		var s *smux.Session
		var err error
		if client {
			s, err = smux.Client(conn, cfg)
		} else {
			s, err = smux.Server(conn, cfg)
		}
		if err != nil {
			return nil, err
		}
		return smuxSession{s}, nil
	case "yamux":
		cfg := yamux.DefaultConfig()
		if f.acceptBacklog > 0 {
			cfg.AcceptBacklog = f.acceptBacklog
		}
		if f.maxStreamWindow > 0 {
			cfg.MaxStreamWindowSize = uint32(f.maxStreamWindow)
		}
		if f.keepAliveInterval > 0 {
			cfg.KeepAliveInterval = f.keepAliveInterval
		}
		if f.connectionWriteTimeout > 0 {
			cfg.ConnectionWriteTimeout = f.connectionWriteTimeout
		}
		cfg.EnableKeepAlive = f.enableKeepAlive && !f.keepAliveDisabled
		// yamux logs to stderr (backlog overflows, frames for unknown streams),
		// which the tests show when something fails.
		var s *yamux.Session
		var err error
		if client {
			s, err = yamux.Client(conn, cfg)
		} else {
			s, err = yamux.Server(conn, cfg)
		}
		if err != nil {
			return nil, err
		}
		return yamuxSession{s}, nil
	default:
		return nil, fmt.Errorf("unsupported -proto %q (want smux1, smux2 or yamux)", f.proto)
	}
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

type scenario struct {
	run  func(p *peer) error
	help string
}

var scenarios = map[string]scenario{
	"echo":       {scenarioEcho, "one stream, the opener's bytes echoed back exactly"},
	"integrity":  {scenarioIntegrity, "-streams concurrent uploads of seeded log-uniform sizes up to -bytes, hashed and echoed"},
	"both":       {scenarioBoth, "integrity, with both sides opening -streams streams at once"},
	"bulk":       {scenarioBulk, "-bytes on one stream, checked by SHA-256"},
	"halfclose":  {scenarioHalfClose, "the other side half-closes; Go reads to EOF, then replies -reply-bytes"},
	"goclose":    {scenarioGoClose, "Go sends -bytes and closes first; then echoes a probe stream"},
	"slowreader": {scenarioSlowReader, "-streams streams of -bytes read slowly by Go (-read-size, -read-pause)"},
	"keepalive":  {scenarioKeepalive, "the session idles for -idle, then carries an echo"},
	"kill":       {scenarioKill, "-streams streams carrying data both ways until the process is killed"},
	"cut":        {scenarioCut, "-streams streams read by Go until the other side cuts the connection"},
	"source":     {scenarioSource, "-streams streams on which Go sends -bytes, then closes"},

	// yamux only
	"goaway":     {scenarioGoAway, "yamux: Go sends GoAway with a stream open, echoes that stream, then opens one"},
	"goawayrecv": {scenarioGoAwayRecv, "yamux: the other side sends GoAway; Go's next open must fail, its open stream echoes"},
	"backlog":    {scenarioBacklog, "yamux: Go leaves streams in its -accept-backlog until told, then accepts and echoes -streams"},
	"openmany":   {scenarioOpenMany, "yamux: Go opens -streams streams and echoes -bytes on each; resets are reported, not fatal"},
	"ping":       {scenarioPing, "yamux: Go pings the other side -pings times"},
	"closeread":  {scenarioCloseRead, "yamux: Go sends -bytes, closes, and then reads the -reply-bytes reply"},
	"bigframes":  {scenarioBigFrames, "yamux: Go reads a -bytes request, replies -reply-bytes in Writes of -write-size"},
}

func scenarioNames() string {
	names := make([]string, 0, len(scenarios))
	for name := range scenarios {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// scenarioEcho: one stream, opened by the client. The opener sends -bytes of
// pattern data while reading the echo, checks it byte for byte and closes;
// the acceptor echoes until end of stream, then closes. Both report
// stream_done (role opener/acceptor) with the bytes they saw.
func scenarioEcho(p *peer) error {
	st, err := p.openOrAccept()
	if err != nil {
		return err
	}
	if p.client {
		return p.echoOpener(st)
	}
	return p.echoAcceptor(st)
}

func (p *peer) echoOpener(st muxStream) error {
	data := p.pattern().bytesAt(0, int(p.f.bytes))
	// Write and read at the same time: writing everything first would stall
	// once the echo fills the window/buffers on the way back.
	written := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		written <- err
	}()
	echo := make([]byte, len(data))
	if _, err := io.ReadFull(st, echo); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if err := <-written; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if i := firstDiff(data, echo); i >= 0 {
		return fmt.Errorf("echo differs from what was sent at byte %d", i)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	p.reportStream(st, "opener", echo)
	return nil
}

func (p *peer) echoAcceptor(st muxStream) error {
	h := sha256.New()
	// Hide smux's WriteTo from io.Copy: 1.5.16's WriteTo returns io.EOF at the
	// end of the stream instead of nil.
	n, err := io.Copy(io.MultiWriter(st, h), struct{ io.Reader }{st})
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	p.out.emit("stream_done", kv{"stream": st.ID(), "role": "acceptor", "bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
	return nil
}

// scenarioIntegrity: the client opens -streams streams at once, each carrying
// an upload whose size is drawn log-uniformly between 1 and -bytes (seeded by
// -seed); the server accepts and serves them (see uploadOpener and
// uploadAcceptor).
func scenarioIntegrity(p *peer) error {
	if p.client {
		return p.openEach(p.f.streams, p.uploadOpener)
	}
	return p.acceptEach(p.f.streams, p.uploadAcceptor)
}

// scenarioBoth: both sides open -streams upload streams at the same time and
// serve the other side's.
func scenarioBoth(p *peer) error {
	accepted := make(chan error, 1)
	go func() { accepted <- p.acceptEach(p.f.streams, p.uploadAcceptor) }()
	if err := p.openEach(p.f.streams, p.uploadOpener); err != nil {
		return err
	}
	return <-accepted
}

// The upload protocol of integrity and both. The opener sends
//
//	length u64 LE | SHA-256 of the data | data
//
// and keeps the stream open. The acceptor reads the whole upload before it
// replies (an echo that stops reading while its write is blocked deadlocks
// smux under load, by design), checks the hash, reports stream_done (role
// acceptor), sends the data back and closes. The opener checks the echo and
// the end of stream, closes, and reports stream_done (role opener).
const uploadHeaderLen = 8 + sha256.Size

func (p *peer) uploadOpener(i int, st muxStream) error {
	size := p.uploadSizes()[i]
	data := p.pattern().bytesAt(streamOffset(i), size)
	sum := sha256.Sum256(data)
	msg := make([]byte, uploadHeaderLen, uploadHeaderLen+size)
	binary.LittleEndian.PutUint64(msg, uint64(size))
	copy(msg[8:], sum[:])
	if _, err := st.Write(append(msg, data...)); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	echo := make([]byte, size)
	if _, err := io.ReadFull(st, echo); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if i := firstDiff(data, echo); i >= 0 {
		return fmt.Errorf("echo of %d bytes differs from the upload at byte %d", size, i)
	}
	if err := expectEOF(st); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	p.reportStream(st, "opener", data)
	return nil
}

func (p *peer) uploadAcceptor(_ int, st muxStream) error {
	hdr := make([]byte, uploadHeaderLen)
	if _, err := io.ReadFull(st, hdr); err != nil {
		return fmt.Errorf("read the upload header: %w", err)
	}
	size := binary.LittleEndian.Uint64(hdr)
	if size > 1<<31 {
		return fmt.Errorf("upload announces %d bytes", size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(st, data); err != nil {
		return fmt.Errorf("read the upload (%d bytes): %w", size, err)
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], hdr[8:]) {
		return fmt.Errorf("upload of %d bytes: SHA-256 %x, announced %x", size, sum, hdr[8:])
	}
	p.reportStream(st, "acceptor", data)
	if _, err := st.Write(data); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return st.Close()
}

// scenarioBulk: one stream, opened by the client, which sends a length (u64
// LE) and then -bytes of pattern data, hashing as it goes. The acceptor
// hashes what it reads, reports stream_done (role acceptor, with "seconds"),
// replies with the raw 32-byte SHA-256 and closes; the opener compares it
// with its own, checks the end of stream and reports (role opener).
func scenarioBulk(p *peer) error {
	st, err := p.openOrAccept()
	if err != nil {
		return err
	}
	if p.client {
		return p.bulkSender(st)
	}
	return p.bulkReceiver(st)
}

func (p *peer) bulkSender(st muxStream) error {
	start := time.Now()
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(p.f.bytes))
	if _, err := st.Write(hdr[:]); err != nil {
		return fmt.Errorf("write the length: %w", err)
	}
	h := sha256.New()
	if err := p.pattern().writeTo(io.MultiWriter(st, h), 0, p.f.bytes); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	digest := make([]byte, sha256.Size)
	if _, err := io.ReadFull(st, digest); err != nil {
		return fmt.Errorf("read the receiver's digest: %w", err)
	}
	sum := h.Sum(nil)
	if !bytes.Equal(digest, sum) {
		return fmt.Errorf("receiver's SHA-256 %x, sent %x", digest, sum)
	}
	if err := expectEOF(st); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	p.out.emit("stream_done", kv{"stream": st.ID(), "role": "opener", "bytes": p.f.bytes,
		"sha256": hex.EncodeToString(sum), "seconds": time.Since(start).Seconds()})
	return nil
}

func (p *peer) bulkReceiver(st muxStream) error {
	start := time.Now()
	var hdr [8]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return fmt.Errorf("read the length: %w", err)
	}
	size := int64(binary.LittleEndian.Uint64(hdr[:]))
	h := sha256.New()
	if _, err := io.CopyN(h, st, size); err != nil {
		return fmt.Errorf("receive %d bytes: %w", size, err)
	}
	sum := h.Sum(nil)
	p.out.emit("stream_done", kv{"stream": st.ID(), "role": "acceptor", "bytes": size,
		"sha256": hex.EncodeToString(sum), "seconds": time.Since(start).Seconds()})
	if _, err := st.Write(sum); err != nil {
		return fmt.Errorf("write the digest: %w", err)
	}
	return st.Close()
}

// startByte is what Go writes first on streams where the other side would
// otherwise write first. smux 1.5.16's OpenStream registers the stream only
// after its SYN is on the wire, and silently drops data arriving before that;
// a peer that waits for this byte never writes too early.
const startByte = 'G'

// scenarioHalfClose: one stream, opened by the client. Go writes the start
// byte, reads the other side's request until end of stream (the other side
// half-closes), reports "request" {stream, bytes, sha256}, writes a reply of
// -reply-bytes pattern bytes in one Write, reports "reply" {stream, bytes,
// written, error} with that Write's result, and closes.
func scenarioHalfClose(p *peer) error {
	st, err := p.openOrAccept()
	if err != nil {
		return err
	}
	if _, err := st.Write([]byte{startByte}); err != nil {
		return fmt.Errorf("write the start byte: %w", err)
	}
	req, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	p.out.emit("request", kv{"stream": st.ID(), "bytes": len(req), "sha256": hexSHA(req)})
	reply := p.pattern().bytesAt(0, int(p.f.replyBytes))
	n, werr := st.Write(reply)
	p.out.emit("reply", kv{"stream": st.ID(), "bytes": len(reply), "written": n, "error": errString(werr)})
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// scenarioGoClose: Go closes first. One stream, opened by the client: Go
// writes -bytes of pattern data and closes it (1.5.16 has only a full close),
// then reports "read_after_close" {stream, bytes, error} with what a Read on
// the closed stream returns. The other side reads to end of stream and may
// write on regardless; Go must drop that data without harm, which the next
// stream proves: Go accepts it and echoes it (scenarioEcho's acceptor).
func scenarioGoClose(p *peer) error {
	st, err := p.openOrAccept()
	if err != nil {
		return err
	}
	if _, err := st.Write(p.pattern().bytesAt(0, int(p.f.bytes))); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	buf := make([]byte, 64)
	n, rerr := st.Read(buf)
	p.out.emit("read_after_close", kv{"stream": st.ID(), "bytes": n, "error": errString(rerr)})
	probe, err := p.sess.Accept()
	if err != nil {
		return fmt.Errorf("accept the probe stream: %w", err)
	}
	return p.echoAcceptor(probe)
}

// scenarioSlowReader: -streams streams, opened by the client, on which the
// other side sends data and Go reads slowly: -read-size bytes per Read and a
// -read-pause sleep after each (pacing, not synchronisation). Go writes the
// start byte first, reads to end of stream, reports stream_done (role
// reader) and closes. Meant for small -max-receive-buffer/-max-stream-buffer.
func scenarioSlowReader(p *peer) error {
	return p.eachStream(p.f.streams, func(_ int, st muxStream) error {
		if _, err := st.Write([]byte{startByte}); err != nil {
			return fmt.Errorf("write the start byte: %w", err)
		}
		h := sha256.New()
		buf := make([]byte, p.f.readSize)
		var total int64
		for {
			n, err := st.Read(buf)
			h.Write(buf[:n])
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read after %d bytes: %w", total, err)
			}
			time.Sleep(p.f.readPause)
		}
		p.out.emit("stream_done", kv{"stream": st.ID(), "role": "reader", "bytes": total, "sha256": hex.EncodeToString(h.Sum(nil))})
		return st.Close()
	})
}

// scenarioSource: -streams streams, opened by the client, on which Go sends
// -bytes of pattern data (the i-th stream from streamOffset(i)) as fast as it
// can, reports stream_done (role sender) and closes. For a slow reader on the
// other side.
func scenarioSource(p *peer) error {
	return p.eachStream(p.f.streams, func(i int, st muxStream) error {
		data := p.pattern().bytesAt(streamOffset(i), int(p.f.bytes))
		if _, err := st.Write(data); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		p.reportStream(st, "sender", data)
		return st.Close()
	})
}

// scenarioKeepalive: the session stays idle for -idle (the client sleeps; the
// server waits in Accept), then must still be open and carry scenarioEcho.
// Run it with short -keepalive-interval and -keepalive-timeout: only the
// keepalives of both sides keep the session alive meanwhile.
func scenarioKeepalive(p *peer) error {
	if p.client {
		time.Sleep(p.f.idle) // the idle period is what is tested, not a synchronisation
		if p.sess.IsClosed() {
			return fmt.Errorf("session closed while idle for %v", p.f.idle)
		}
	}
	if err := scenarioEcho(p); err != nil {
		return err
	}
	if p.sess.IsClosed() {
		return errors.New("session closed after the echo")
	}
	return nil
}

// scenarioKill: -streams streams, opened by the client, carrying pattern data
// in both directions without end. Reports "streaming" {stream} once per stream
// when its first bytes have arrived. The test kills the process meanwhile.
func scenarioKill(p *peer) error {
	return p.eachStream(p.f.streams, func(_ int, st muxStream) error {
		go func() {
			for {
				if err := p.pattern().writeTo(st, 0, patternBlockLen); err != nil {
					p.out.fatal(fmt.Errorf("stream %d: write: %w", st.ID(), err))
				}
			}
		}()
		buf := make([]byte, 64*1024)
		for first := true; ; first = false {
			if _, err := st.Read(buf); err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if first {
				p.out.emit("streaming", kv{"stream": st.ID()})
			}
		}
	})
}

// scenarioCut: the other side cuts the connection without closing its
// streams. -streams streams, opened by the client; Go writes the start byte
// and reads. It reports "received" {stream, bytes, sha256} when -bytes have
// arrived, then reads on and reports how reading ended: "read_end" {stream,
// bytes, error, session_closed}.
func scenarioCut(p *peer) error {
	return p.eachStream(p.f.streams, func(_ int, st muxStream) error {
		if _, err := st.Write([]byte{startByte}); err != nil {
			return fmt.Errorf("write the start byte: %w", err)
		}
		h := sha256.New()
		buf := make([]byte, 64*1024)
		var total int64
		for {
			n, err := st.Read(buf)
			h.Write(buf[:n])
			reached := total < p.f.bytes && total+int64(n) >= p.f.bytes
			total += int64(n)
			if reached {
				p.out.emit("received", kv{"stream": st.ID(), "bytes": total, "sha256": hex.EncodeToString(h.Sum(nil))})
			}
			if err != nil {
				p.out.emit("read_end", kv{"stream": st.ID(), "bytes": total, "error": errString(err),
					"session_closed": p.sess.IsClosed()})
				return nil
			}
		}
	})
}

// ---------------------------------------------------------------------------
// yamux-only scenarios
// ---------------------------------------------------------------------------

// scenarioGoAway: Go sends GoAway (code 0) while a stream is open. The other
// side opens one stream; Go accepts it, calls Session.GoAway, reports
// "go_away_sent" {stream}, then writes the start byte on the stream: it
// follows the GoAway on the wire, so once the other side has read it, it has
// processed the GoAway too. Then Go echoes the stream to its end
// (echoAcceptor): existing streams go on. Finally Go opens a stream itself
// and runs echoOpener on it: GoAway only stops the peer from opening.
func scenarioGoAway(p *peer) error {
	y, err := p.yamux()
	if err != nil {
		return err
	}
	st, err := p.sess.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	if err := y.GoAway(); err != nil {
		return fmt.Errorf("go away: %w", err)
	}
	p.out.emit("go_away_sent", kv{"stream": st.ID()})
	if _, err := st.Write([]byte{startByte}); err != nil {
		return fmt.Errorf("write the start byte: %w", err)
	}
	if err := p.echoAcceptor(st); err != nil {
		return err
	}
	own, err := p.sess.Open()
	if err != nil {
		return fmt.Errorf("open after our GoAway: %w", err)
	}
	return p.echoOpener(own)
}

// scenarioGoAwayRecv: the other side sends GoAway while a stream is open. Go
// opens one stream and reads one byte on it, which the other side writes after
// its GoAway (so Go has processed the GoAway by then). Go then tries to open a
// second stream, which must fail, and reports "open_after_go_away" {stream,
// error}. Then it runs echoOpener on the first stream: existing streams go on.
// Finally it accepts a stream from the other side and echoes it (echoAcceptor):
// GoAway only stops Go from opening.
func scenarioGoAwayRecv(p *peer) error {
	if _, err := p.yamux(); err != nil {
		return err
	}
	st, err := p.sess.Open()
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		return fmt.Errorf("read the signal byte: %w", err)
	}
	second, err := p.sess.Open()
	if err == nil {
		second.Close()
		return fmt.Errorf("opened stream %d after the other side's GoAway", second.ID())
	}
	p.out.emit("open_after_go_away", kv{"stream": st.ID(), "error": err.Error()})
	if err := p.echoOpener(st); err != nil {
		return err
	}
	theirs, err := p.sess.Accept()
	if err != nil {
		return fmt.Errorf("accept after the other side's GoAway: %w", err)
	}
	return p.echoAcceptor(theirs)
}

// scenarioBacklog: Go leaves the streams the other side opens in its accept
// backlog (-accept-backlog) until told to accept them. Go opens a control
// stream first and reports "control" {stream}. The other side accepts it,
// opens its streams (yamux answers each SYN beyond the backlog with RST) and,
// when it is ready, writes one byte on the control stream. Go then reports
// "accepting", accepts -streams streams, echoes each to its end
// (echoAcceptor), and closes the control stream.
func scenarioBacklog(p *peer) error {
	if _, err := p.yamux(); err != nil {
		return err
	}
	ctl, err := p.sess.Open()
	if err != nil {
		return fmt.Errorf("open the control stream: %w", err)
	}
	p.out.emit("control", kv{"stream": ctl.ID()})
	var b [1]byte
	if _, err := io.ReadFull(ctl, b[:]); err != nil {
		return fmt.Errorf("read the go-ahead: %w", err)
	}
	p.out.emit("accepting", kv{})
	err = p.acceptEach(p.f.streams, func(_ int, st muxStream) error { return p.echoAcceptor(st) })
	if err != nil {
		return err
	}
	return ctl.Close()
}

// scenarioOpenMany: Go opens -streams streams one after the other and runs
// echoOpener (-bytes) on each, all at once. A stream the other side resets
// (yamux's answer to a SYN beyond its accept backlog) is reported as
// "stream_reset" {stream, error} instead of failing the scenario; the others
// report stream_done (role opener) as usual.
func scenarioOpenMany(p *peer) error {
	if _, err := p.yamux(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i := 0; i < p.f.streams; i++ {
		st, err := p.sess.Open()
		if err != nil {
			return fmt.Errorf("open stream #%d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.echoOpener(st)
			if errors.Is(err, yamux.ErrConnectionReset) {
				p.out.emit("stream_reset", kv{"stream": st.ID(), "error": err.Error()})
			} else if err != nil {
				p.out.fatal(fmt.Errorf("stream %d: %w", st.ID(), err))
			}
		}()
	}
	wg.Wait()
	return nil
}

// scenarioPing: Go pings the other side -pings times (Session.Ping) and
// reports each round trip as "ping" {n, rtt_us}.
func scenarioPing(p *peer) error {
	y, err := p.yamux()
	if err != nil {
		return err
	}
	for i := 0; i < p.f.pings; i++ {
		rtt, err := y.Ping()
		if err != nil {
			return fmt.Errorf("ping %d: %w", i, err)
		}
		p.out.emit("ping", kv{"n": i, "rtt_us": rtt.Microseconds()})
	}
	return nil
}

// scenarioCloseRead: Go half-closes, then wants the reply. One stream, opened
// by the client: Go writes -bytes of pattern data, calls Close (the 2019 yamux
// has no CloseWrite; Close sends FIN and the stream goes to LocalClose) and
// reads at once, reporting "read_after_close" {stream, bytes, error}. The
// other side replies only after that report. In this version a Read after
// Close returns io.EOF whenever nothing is buffered, instead of waiting. Data
// arriving later is still buffered, so Go then polls Read (every 5 ms, for up
// to 10 s) until -reply-bytes have come and reports "late_reply" {stream,
// bytes, sha256, eof_reads}, eof_reads counting the io.EOF results meanwhile.
func scenarioCloseRead(p *peer) error {
	if _, err := p.yamux(); err != nil {
		return err
	}
	st, err := p.openOrAccept()
	if err != nil {
		return err
	}
	if _, err := st.Write(p.pattern().bytesAt(0, int(p.f.bytes))); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	buf := make([]byte, 64*1024)
	n, rerr := st.Read(buf)
	p.out.emit("read_after_close", kv{"stream": st.ID(), "bytes": n, "error": errString(rerr)})
	reply := append([]byte(nil), buf[:n]...)
	eofs := 0
	var readErr error
	err = waitFor("the reply after Close", 10*time.Second, func() bool {
		for {
			n, err := st.Read(buf)
			reply = append(reply, buf[:n]...)
			if err == io.EOF {
				eofs++
				return int64(len(reply)) >= p.f.replyBytes
			}
			if err != nil {
				readErr = err
				return true
			}
		}
	})
	if err != nil {
		return fmt.Errorf("%w (%d bytes so far)", err, len(reply))
	}
	if readErr != nil {
		return fmt.Errorf("read the reply after %d bytes: %w", len(reply), readErr)
	}
	p.out.emit("late_reply", kv{"stream": st.ID(), "bytes": len(reply), "sha256": hexSHA(reply), "eof_reads": eofs})
	return nil
}

// scenarioBigFrames: one stream, opened by the other side. Go reads a request
// of -bytes pattern bytes and checks it, reports "request" {stream, bytes,
// sha256}, then replies with -reply-bytes pattern bytes (both from offset 0)
// in Writes of -write-size bytes, and closes. yamux sends each Write as one
// Data frame as far as the window allows: run it with a large
// -max-stream-window here and a large window on the other side.
func scenarioBigFrames(p *peer) error {
	if _, err := p.yamux(); err != nil {
		return err
	}
	st, err := p.sess.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	req := make([]byte, p.f.bytes)
	if _, err := io.ReadFull(st, req); err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	if i := firstDiff(req, p.pattern().bytesAt(0, len(req))); i >= 0 {
		return fmt.Errorf("request differs from the pattern at byte %d", i)
	}
	p.out.emit("request", kv{"stream": st.ID(), "bytes": len(req), "sha256": hexSHA(req)})
	reply := p.pattern().bytesAt(0, int(p.f.replyBytes))
	for off := 0; off < len(reply); off += p.f.writeSize {
		end := off + p.f.writeSize
		if end > len(reply) {
			end = len(reply)
		}
		if _, err := st.Write(reply[off:end]); err != nil {
			return fmt.Errorf("write the reply at %d: %w", off, err)
		}
	}
	return st.Close()
}

// ---------------------------------------------------------------------------
// Scenario helpers
// ---------------------------------------------------------------------------

// openOrAccept returns the scenario's stream: the client opens it, the server
// accepts it.
func (p *peer) openOrAccept() (muxStream, error) {
	if p.client {
		st, err := p.sess.Open()
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		return st, nil
	}
	st, err := p.sess.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	return st, nil
}

// eachStream runs fn on n streams at once: the client opens them, the server
// accepts them (i counts in accept order).
func (p *peer) eachStream(n int, fn func(i int, st muxStream) error) error {
	if p.client {
		return p.openEach(n, fn)
	}
	return p.acceptEach(n, fn)
}

// openEach opens n streams concurrently and runs fn on each. The first error
// ends the process (see reporter.fatal): the other goroutines may be blocked
// on a peer that will never answer.
func (p *peer) openEach(n int, fn func(i int, st muxStream) error) error {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st, err := p.sess.Open()
			if err != nil {
				p.out.fatal(fmt.Errorf("open stream #%d: %w", i, err))
			}
			if err := fn(i, st); err != nil {
				p.out.fatal(fmt.Errorf("stream %d: %w", st.ID(), err))
			}
		}(i)
	}
	wg.Wait()
	return nil
}

// acceptEach accepts n streams and serves each in its own goroutine (i counts
// in accept order); errors are fatal as in openEach.
func (p *peer) acceptEach(n int, serve func(i int, st muxStream) error) error {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		st, err := p.sess.Accept()
		if err != nil {
			return fmt.Errorf("accept stream %d of %d: %w", i+1, n, err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := serve(i, st); err != nil {
				p.out.fatal(fmt.Errorf("stream %d: %w", st.ID(), err))
			}
		}(i)
	}
	wg.Wait()
	return nil
}

// reportStream reports a finished stream with the data it carried.
func (p *peer) reportStream(st muxStream, role string, data []byte) {
	p.out.emit("stream_done", kv{"stream": st.ID(), "role": role, "bytes": len(data), "sha256": hexSHA(data)})
}

// uploadSizes are the sizes of the uploads this side opens: log-uniform
// between 1 and -bytes (every order of magnitude equally likely, which keeps
// the total small), drawn from -seed.
func (p *peer) uploadSizes() []int {
	rng := rand.New(rand.NewSource(int64(p.f.seed)))
	maxExp := math.Log2(float64(p.f.bytes))
	sizes := make([]int, p.f.streams)
	for i := range sizes {
		sizes[i] = int(math.Pow(2, rng.Float64()*maxExp))
		if sizes[i] < 1 {
			sizes[i] = 1
		}
	}
	return sizes
}

// streamOffset is where in the pattern the data of a side's i-th stream
// starts, so that different streams carry different bytes.
func streamOffset(i int) int64 { return int64(i) * 1000003 }

// expectEOF checks that the stream has ended: the peer's FIN arrived and no
// data follows.
func expectEOF(r io.Reader) error {
	var b [1]byte
	if n, err := r.Read(b[:]); n != 0 || err != io.EOF {
		return fmt.Errorf("expected end of stream, got %d bytes and error %v", n, err)
	}
	return nil
}

// firstDiff returns the index of the first byte where a and b differ (a
// length difference counts), or -1.
func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		if len(a) < len(b) {
			return len(a)
		}
		return len(b)
	}
	return -1
}

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------

// patternBlockLen is the period of the pattern: 1 MiB + 8 bytes, so that in
// a long transfer no two frames carry the same bytes and a reordered,
// duplicated or lost frame always changes the hash.
const patternBlockLen = 1<<20 + 8

// pattern is the data every scenario sends: the little-endian bytes of the
// SplitMix64 sequence seeded with -seed, repeated with period
// patternBlockLen. braid's tests generate the same bytes
// (crates/braid/tests/interop/mod.rs), so either side can check the other's
// data itself, not only its hash.
type pattern struct{ block []byte }

func newPattern(seed uint64) *pattern {
	b := make([]byte, patternBlockLen)
	x := seed
	for i := 0; i < len(b); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		binary.LittleEndian.PutUint64(b[i:], z)
	}
	return &pattern{block: b}
}

// pattern returns the pattern of -seed, made on first use.
func (p *peer) pattern() *pattern {
	p.patOnce.Do(func() { p.pat = newPattern(p.f.seed) })
	return p.pat
}

// bytesAt returns n bytes of the pattern starting at offset.
func (pt *pattern) bytesAt(offset int64, n int) []byte {
	out := make([]byte, n)
	pos := offset % patternBlockLen
	for k := 0; k < n; pos = 0 {
		k += copy(out[k:], pt.block[pos:])
	}
	return out
}

// writeTo writes n bytes of the pattern, starting at offset, to w in pieces of
// at most one block, without allocating.
func (pt *pattern) writeTo(w io.Writer, offset, n int64) error {
	pos := offset % patternBlockLen
	for n > 0 {
		chunk := pt.block[pos:]
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
		pos = 0
	}
	return nil
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

// kv holds an event's fields.
type kv map[string]interface{}

// reporter prints events as JSON lines, "event" first and the other fields
// sorted, each line with a single Write so that lines from concurrent
// goroutines never interleave.
type reporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *reporter) emit(event string, fields kv) {
	var b bytes.Buffer
	b.WriteString(`{"event":`)
	writeJSON(&b, event)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(',')
		writeJSON(&b, k)
		b.WriteByte(':')
		writeJSON(&b, fields[k])
	}
	b.WriteString("}\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w.Write(b.Bytes())
}

// fatal reports err and ends the process with status 1. Used from
// goroutines: a failed stream must not leave the test waiting for the rest.
func (r *reporter) fatal(err error) {
	r.emit("error", kv{"msg": err.Error()})
	fmt.Fprintf(os.Stderr, "braid-peer: %v\n", err)
	os.Exit(1)
}

func writeJSON(b *bytes.Buffer, v interface{}) {
	j, err := json.Marshal(v)
	if err != nil {
		j, _ = json.Marshal(fmt.Sprint(v))
	}
	b.Write(j)
}
