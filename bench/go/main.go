// Command braid-bench-go is the Go peer of braid-bench: it runs one workload with one
// Go multiplexer (client and server in this process, over loopback TCP) and prints one
// JSON line with the result, in the same form as `braid-bench peer`.
//
// It links Debian's github.com/xtaci/smux and github.com/hashicorp/yamux and is built
// in GOPATH mode:
//
//	cd bench/go && GO111MODULE=off GOPATH=/usr/share/gocode go build -o braid-bench-go .
//
// Both libraries run with their DefaultConfig (yamux logs to stderr, its default).
// Neither has a usable half-close: xtaci/smux's Close ends both directions, and
// hashicorp/yamux (Debian's 2019 snapshot) sends a FIN but then reads EOF as soon as the
// receive buffer is empty, so a reply sent after the FIN is lost. Bulk senders therefore
// announce the length in an 8-byte big-endian prefix instead of half-closing.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

// reply is the byte a bulk receiver answers with once it has read everything.
const reply = 0xA5

// sample is the result line; the field names match the Rust peer's.
type sample struct {
	OK          bool     `json:"ok"`
	Error       string   `json:"error,omitempty"`
	Note        string   `json:"note,omitempty"`
	ElapsedS    float64  `json:"elapsed_s"`
	Bytes       uint64   `json:"bytes"`
	Streams     uint64   `json:"streams"`
	MBPerS      *float64 `json:"mb_per_s,omitempty"`
	RoundTrips  *uint64  `json:"round_trips,omitempty"`
	P50Us       *float64 `json:"p50_us,omitempty"`
	P99Us       *float64 `json:"p99_us,omitempty"`
	StreamsPerS *float64 `json:"streams_per_s,omitempty"`
	CPUS        float64  `json:"cpu_s"`
	PeakRSSKiB  uint64   `json:"peak_rss_kib"`
}

// stream is what the workloads need of a multiplexed stream.
type stream interface {
	io.ReadWriter
	Close() error
}

// mux is one library: it opens client streams and accepts server streams.
type mux struct {
	open   func() (stream, error)
	accept func() (stream, error)
	// halfClose: Close ends only our sending side, the peer can still reply.
	halfClose bool
	// note says how bulk senders mark the end without half-close.
	note string
}

// tcpPair connects two loopback TCP sockets (Go sets TCP_NODELAY by default).
func tcpPair() (net.Conn, net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type acc struct {
		c   net.Conn
		err error
	}
	ch := make(chan acc, 1)
	go func() {
		c, err := ln.Accept()
		ch <- acc{c, err}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	a := <-ch
	if a.err != nil {
		client.Close()
		return nil, nil, a.err
	}
	return client, a.c, nil
}

func newMux(lib string) (*mux, error) {
	client, server, err := tcpPair()
	if err != nil {
		return nil, err
	}
	switch lib {
	case "smux1", "smux2":
		config := smux.DefaultConfig()
		if lib == "smux2" {
			config.Version = 2
		}
		cs, err := smux.Client(client, config)
		if err != nil {
			return nil, err
		}
		ss, err := smux.Server(server, config)
		if err != nil {
			return nil, err
		}
		return &mux{
			open:      func() (stream, error) { return cs.OpenStream() },
			accept:    func() (stream, error) { return ss.AcceptStream() },
			halfClose: false,
			note:      "no half-close: 8-byte length prefix",
		}, nil
	case "yamux":
		cs, err := yamux.Client(client, yamux.DefaultConfig())
		if err != nil {
			return nil, err
		}
		ss, err := yamux.Server(server, yamux.DefaultConfig())
		if err != nil {
			return nil, err
		}
		return &mux{
			open:   func() (stream, error) { return cs.OpenStream() },
			accept: func() (stream, error) { return ss.AcceptStream() },
			// This version (2019) half-closes on the wire, but a stream closed locally
			// reads EOF as soon as its buffer is empty: the reply would be lost.
			halfClose: false,
			note:      "reads after Close see EOF (2019 version): 8-byte length prefix",
		}, nil
	}
	return nil, fmt.Errorf("unknown library %q (smux1, smux2, yamux)", lib)
}

// readFull fills buf; ok=false when the stream ended before the first byte.
func readFull(r io.Reader, buf []byte) (bool, error) {
	n, err := io.ReadFull(r, buf)
	if err == io.EOF && n == 0 {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %d of %d bytes: %w", n, len(buf), err)
	}
	return true, nil
}

// readToEnd reads until EOF and returns the byte count.
func readToEnd(r io.Reader, buf []byte) (uint64, error) {
	var total uint64
	for {
		n, err := r.Read(buf)
		total += uint64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// firstError keeps the first error reported from many goroutines.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func bulk(m *mux, streams int, perStream uint64, chunk int) (*sample, error) {
	var serverErr firstError
	var serverWG sync.WaitGroup
	serverWG.Add(1)
	go func() {
		defer serverWG.Done()
		var wg sync.WaitGroup
		for i := 0; i < streams; i++ {
			s, err := m.accept()
			if err != nil {
				serverErr.set(fmt.Errorf("accept %d of %d: %w", i, streams, err))
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serverErr.set(receiveAndReply(m, s, perStream, chunk))
			}()
		}
		wg.Wait()
	}()

	// One payload buffer shared by all senders (they only read it), so that the peak RSS
	// reflects the library rather than 1000 copies of it.
	payload := make([]byte, chunk)
	for i := range payload {
		payload[i] = 0x5A
	}
	var clientErr firstError
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	start := time.Now()
	for i := 0; i < streams; i++ {
		s, err := m.open()
		if err != nil {
			clientErr.set(fmt.Errorf("open %d: %w", i, err))
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clientErr.set(sendAndWait(m, s, perStream, payload))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	if err := clientErr.get(); err != nil {
		time.Sleep(100 * time.Millisecond)
		if serr := serverErr.get(); serr != nil {
			return nil, fmt.Errorf("server: %v; client: %v", serr, err)
		}
		return nil, err
	}
	serverWG.Wait()
	if err := serverErr.get(); err != nil {
		return nil, fmt.Errorf("server: %v", err)
	}
	total := perStream * uint64(streams)
	mbps := float64(total) / elapsed / 1e6
	s := &sample{OK: true, ElapsedS: elapsed, Bytes: total, Streams: uint64(streams),
		MBPerS: &mbps, CPUS: cpu, PeakRSSKiB: peakRSSKiB()}
	s.Note = m.note
	return s, nil
}

func sendAndWait(m *mux, s stream, bytes uint64, buf []byte) error {
	defer s.Close()
	chunk := len(buf)
	if !m.halfClose {
		var prefix [8]byte
		binary.BigEndian.PutUint64(prefix[:], bytes)
		if _, err := s.Write(prefix[:]); err != nil {
			return err
		}
	}
	for left := bytes; left > 0; {
		n := uint64(chunk)
		if left < n {
			n = left
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	if m.halfClose {
		if err := s.Close(); err != nil {
			return err
		}
	}
	var r [1]byte
	ok, err := readFull(s, r[:])
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("stream ended without the reply")
	}
	if r[0] != reply {
		return fmt.Errorf("wrong reply byte %#02x", r[0])
	}
	extra, err := readToEnd(s, make([]byte, 64))
	if err != nil {
		return err
	}
	if extra != 0 {
		return fmt.Errorf("%d unexpected bytes after the reply", extra)
	}
	return nil
}

func receiveAndReply(m *mux, s stream, expected uint64, chunk int) error {
	defer s.Close()
	buf := make([]byte, chunk)
	if m.halfClose {
		got, err := readToEnd(s, buf)
		if err != nil {
			return err
		}
		if got != expected {
			return fmt.Errorf("received %d bytes, expected %d", got, expected)
		}
	} else {
		var prefix [8]byte
		ok, err := readFull(s, prefix[:])
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("stream ended before the length prefix")
		}
		announced := binary.BigEndian.Uint64(prefix[:])
		if announced != expected {
			return fmt.Errorf("length prefix says %d bytes, expected %d", announced, expected)
		}
		for left := announced; left > 0; {
			want := uint64(len(buf))
			if left < want {
				want = left
			}
			n, err := s.Read(buf[:want])
			left -= uint64(n)
			if err == io.EOF && left > 0 {
				return fmt.Errorf("received %d bytes, expected %d", expected-left, expected)
			}
			if err != nil && err != io.EOF {
				return err
			}
		}
	}
	if _, err := s.Write([]byte{reply}); err != nil {
		return err
	}
	return nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func latency(m *mux, roundTrips uint64, size int) (*sample, error) {
	serverDone := make(chan error, 1)
	go func() {
		s, err := m.accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer s.Close()
		buf := make([]byte, size)
		for {
			ok, err := readFull(s, buf)
			if err != nil || !ok {
				serverDone <- err
				return
			}
			if _, err := s.Write(buf); err != nil {
				serverDone <- err
				return
			}
		}
	}()

	rtts := make([]int64, 0, roundTrips)
	cpu0 := cpuSeconds()
	start := time.Now()
	s, err := m.open()
	if err != nil {
		return nil, err
	}
	msg := make([]byte, size)
	echo := make([]byte, size)
	for i := uint64(0); i < roundTrips; i++ {
		for j := range msg {
			msg[j] = byte(i)*31 + byte(j)
		}
		t0 := time.Now()
		if _, err := s.Write(msg); err != nil {
			return nil, err
		}
		ok, err := readFull(s, echo)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("stream ended at round trip %d", i)
		}
		rtts = append(rtts, time.Since(t0).Nanoseconds())
		if string(echo) != string(msg) {
			return nil, fmt.Errorf("echo differs at round trip %d", i)
		}
	}
	s.Close()
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	select {
	case err := <-serverDone:
		if err != nil {
			return nil, fmt.Errorf("server: %v", err)
		}
	case <-time.After(10 * time.Second):
		return nil, errors.New("server did not see the end of the stream")
	}
	sort.Slice(rtts, func(a, b int) bool { return rtts[a] < rtts[b] })
	p50 := float64(percentile(rtts, 50)) / 1e3
	p99 := float64(percentile(rtts, 99)) / 1e3
	return &sample{OK: true, ElapsedS: elapsed, Streams: 1, RoundTrips: &roundTrips,
		P50Us: &p50, P99Us: &p99, CPUS: cpu, PeakRSSKiB: peakRSSKiB()}, nil
}

func churn(m *mux, duration time.Duration) (*sample, error) {
	var serverErr firstError
	go func() {
		for {
			s, err := m.accept()
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				var b [1]byte
				ok, err := readFull(s, b[:])
				if err == nil && !ok {
					err = errors.New("stream ended before its byte")
				}
				if err == nil {
					_, err = s.Write(b[:])
				}
				serverErr.set(err)
			}()
		}
	}()

	cpu0 := cpuSeconds()
	start := time.Now()
	var done uint64
	var clientErr error
	for {
		s, err := m.open()
		if err != nil {
			clientErr = err
			break
		}
		b := [1]byte{byte(done)}
		if _, err := s.Write(b[:]); err != nil {
			clientErr = err
			break
		}
		var echo [1]byte
		ok, err := readFull(s, echo[:])
		if err == nil && !ok {
			err = fmt.Errorf("stream %d ended without the echo", done)
		}
		if err == nil && echo != b {
			err = fmt.Errorf("wrong echo on stream %d", done)
		}
		if err != nil {
			clientErr = err
			break
		}
		s.Close()
		done++
		if time.Since(start) >= duration {
			break
		}
	}
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	if clientErr != nil {
		if serr := serverErr.get(); serr != nil {
			return nil, fmt.Errorf("server: %v; client: %v", serr, clientErr)
		}
		return nil, clientErr
	}
	if serr := serverErr.get(); serr != nil {
		return nil, fmt.Errorf("server: %v", serr)
	}
	rate := float64(done) / elapsed
	return &sample{OK: true, ElapsedS: elapsed, Streams: done, StreamsPerS: &rate,
		CPUS: cpu, PeakRSSKiB: peakRSSKiB()}, nil
}

// cpuSeconds is user + system CPU time of this process from /proc/self/stat (in clock
// ticks of 10 ms), as the Rust peer measures it.
func cpuSeconds() float64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	text := string(data)
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(text[i+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// peakRSSKiB is VmHWM from /proc/self/status.
func peakRSSKiB() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func main() {
	lib := flag.String("lib", "", "library: smux1, smux2 or yamux")
	workload := flag.String("workload", "", "workload: bulk, latency or churn")
	streams := flag.Int("streams", 1, "bulk: number of streams")
	bytes := flag.Uint64("bytes", 1000000, "bulk: bytes per stream")
	chunk := flag.Int("chunk", 128*1024, "bulk: size of each write")
	roundTrips := flag.Uint64("round-trips", 1000, "latency: number of round trips")
	size := flag.Int("size", 64, "latency: message size in bytes")
	durationMs := flag.Uint64("duration-ms", 1000, "churn: how long to run, in milliseconds")
	flag.Parse()

	result, err := func() (*sample, error) {
		switch *workload {
		case "bulk", "latency", "churn":
		default:
			return nil, fmt.Errorf("unknown workload %q (bulk, latency, churn)", *workload)
		}
		if *streams < 1 || *chunk < 1 || *size < 1 || *roundTrips < 1 {
			return nil, errors.New("--streams, --chunk, --size and --round-trips must be at least 1")
		}
		m, err := newMux(*lib)
		if err != nil {
			return nil, err
		}
		switch *workload {
		case "bulk":
			return bulk(m, *streams, *bytes, *chunk)
		case "latency":
			return latency(m, *roundTrips, *size)
		default:
			return churn(m, time.Duration(*durationMs)*time.Millisecond)
		}
	}()
	if err != nil {
		result = &sample{Error: err.Error()}
	}
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
}
