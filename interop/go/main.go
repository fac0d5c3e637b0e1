// Command braid-peer is the Go side of braid's interoperability tests.
//
// It links the real Go implementations (github.com/xtaci/smux and
// github.com/hashicorp/yamux, from Debian's golang-*-dev packages) and
// exposes them through modes selected with -mode:
//
//	golden  print, as JSON lines, the exact bytes Go sends for each frame kind
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
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

func main() {
	mode := flag.String("mode", "", "what to do: golden")
	flag.Parse()

	var err error
	switch *mode {
	case "golden":
		err = runGolden(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "braid-peer: unknown or missing -mode %q (want: golden)\n", *mode)
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
