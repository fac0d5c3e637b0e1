// Command braid-bench-go is the Go peer of `braid bench --peers`: it runs one workload
// with one Go multiplexer (client and server in this process, over loopback TCP) and
// prints one JSON line with the result, in the same form and with the same flags as
// `braid bench-child` (crates/braid-cli/src/bench/workload.rs has the Rust side of each
// workload; this file does the same steps).
//
// It links Debian's github.com/xtaci/smux and github.com/hashicorp/yamux and is built
// in GOPATH mode:
//
//	cd bench/go && GO111MODULE=off GOPATH=/usr/share/gocode go build -o braid-bench-go .
//
// Both libraries run with their DefaultConfig (yamux logs to stderr, its default).
package main

import (
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
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

// reply is the byte a bulk receiver answers with once it has read everything.
const reply = 0xA5

// warmUp is the number of untimed latency round trips before the timed ones.
const warmUp = 100

// series is each receiving stream's byte count over time (bulk, when asked for).
type series struct {
	TS    []float64  `json:"t_s"`
	Bytes [][]uint64 `json:"bytes"`
}

// sample is the result line; the field names match the Rust child's.
type sample struct {
	OK           bool     `json:"ok"`
	Error        string   `json:"error,omitempty"`
	Note         string   `json:"note,omitempty"`
	ElapsedS     float64  `json:"elapsed_s"`
	Bytes        uint64   `json:"bytes"`
	Streams      uint64   `json:"streams"`
	MBPerS       *float64 `json:"mb_per_s,omitempty"`
	RoundTrips   *uint64  `json:"round_trips,omitempty"`
	P50Us        *float64 `json:"p50_us,omitempty"`
	P99Us        *float64 `json:"p99_us,omitempty"`
	StreamsPerS  *float64 `json:"streams_per_s,omitempty"`
	RSSGrowthKiB *uint64  `json:"rss_growth_kib,omitempty"`
	CPUS         float64  `json:"cpu_s"`
	PeakRSSKiB   uint64   `json:"peak_rss_kib"`
	Series       *series  `json:"series,omitempty"`
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
			open:   func() (stream, error) { return cs.OpenStream() },
			accept: func() (stream, error) { return ss.AcceptStream() },
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

// sampler records each counter every period until stopped.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	s    series
}

func startSampler(counters []uint64, start time.Time, period time.Duration) *sampler {
	sm := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-sm.stop:
				return
			case <-tick.C:
				sm.record(counters, time.Since(start).Seconds())
			}
		}
	}()
	return sm
}

func (sm *sampler) record(counters []uint64, t float64) {
	sm.s.TS = append(sm.s.TS, t)
	if sm.s.Bytes == nil {
		sm.s.Bytes = make([][]uint64, len(counters))
	}
	for i := range counters {
		sm.s.Bytes[i] = append(sm.s.Bytes[i], atomic.LoadUint64(&counters[i]))
	}
}

// finish stops sampling and adds the final counts at end seconds.
func (sm *sampler) finish(counters []uint64, end float64) *series {
	close(sm.stop)
	<-sm.done
	sm.record(counters, end)
	return &sm.s
}

// bulk: the client opens the streams at once, each writes perStream bytes in
// chunk-sized writes and waits for a one-byte reply; the server reads each with a
// chunk-sized buffer until all its bytes arrived and replies. Streams stay open.
func bulk(m *mux, streams int, perStream uint64, chunk int, samplePeriod time.Duration) (*sample, error) {
	counters := make([]uint64, streams)
	var serverErr firstError
	var serverWG sync.WaitGroup
	var held []stream
	var heldMu sync.Mutex
	keep := func(s stream) {
		heldMu.Lock()
		held = append(held, s)
		heldMu.Unlock()
	}
	defer func() {
		for _, s := range held {
			s.Close()
		}
	}()
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
			keep(s)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				serverErr.set(receiveAndReply(s, perStream, chunk, &counters[i]))
			}(i)
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
	var sm *sampler
	if samplePeriod > 0 {
		sm = startSampler(counters, start, samplePeriod)
	}
	for i := 0; i < streams; i++ {
		s, err := m.open()
		if err != nil {
			clientErr.set(fmt.Errorf("open %d: %w", i, err))
			break
		}
		keep(s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			clientErr.set(sendAndWait(s, perStream, payload))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	var ser *series
	if sm != nil {
		ser = sm.finish(counters, elapsed)
	}
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
	return &sample{OK: true, ElapsedS: elapsed, Bytes: total, Streams: uint64(streams),
		MBPerS: &mbps, CPUS: cpu, PeakRSSKiB: peakRSSKiB(), Series: ser}, nil
}

func sendAndWait(s stream, bytes uint64, buf []byte) error {
	chunk := uint64(len(buf))
	for left := bytes; left > 0; {
		n := chunk
		if left < n {
			n = left
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
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
	return nil
}

func receiveAndReply(s stream, expected uint64, chunk int, counter *uint64) error {
	buf := make([]byte, chunk)
	var got uint64
	for got < expected {
		n, err := s.Read(buf)
		got += uint64(n)
		atomic.StoreUint64(counter, got)
		if err == io.EOF && got < expected {
			return fmt.Errorf("stream ended after %d of %d bytes", got, expected)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	if got != expected {
		return fmt.Errorf("received %d bytes, expected %d", got, expected)
	}
	_, err := s.Write([]byte{reply})
	return err
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
	for i := uint64(0); i < warmUp+roundTrips; i++ {
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
		if i >= warmUp {
			rtts = append(rtts, time.Since(t0).Nanoseconds())
		}
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

// churn: for duration, each of workers goroutines opens a stream, sends one byte, reads
// its echo and closes the stream, over and over. The server echoes and closes.
func churn(m *mux, duration time.Duration, workers int) (*sample, error) {
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

	var clientErr firstError
	var total uint64
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var done uint64
			defer func() { atomic.AddUint64(&total, done) }()
			for clientErr.get() == nil {
				s, err := m.open()
				if err != nil {
					clientErr.set(err)
					return
				}
				b := [1]byte{byte(done)}
				if _, err := s.Write(b[:]); err != nil {
					clientErr.set(err)
					return
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
					clientErr.set(err)
					return
				}
				s.Close()
				done++
				if time.Since(start) >= duration {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	if err := clientErr.get(); err != nil {
		if serr := serverErr.get(); serr != nil {
			return nil, fmt.Errorf("server: %v; client: %v", serr, err)
		}
		return nil, err
	}
	if serr := serverErr.get(); serr != nil {
		return nil, fmt.Errorf("server: %v", serr)
	}
	rate := float64(total) / elapsed
	return &sample{OK: true, ElapsedS: elapsed, Streams: total, StreamsPerS: &rate,
		CPUS: cpu, PeakRSSKiB: peakRSSKiB()}, nil
}

// idle: after one warm-up stream that carries a byte each way, the client opens streams
// streams while the server accepts them, and nobody writes; reports the RSS growth.
func idle(m *mux, streams int) (*sample, error) {
	first, err := m.open()
	if err != nil {
		return nil, err
	}
	defer first.Close()
	if _, err := first.Write([]byte{1}); err != nil {
		return nil, err
	}
	peer, err := m.accept()
	if err != nil {
		return nil, err
	}
	defer peer.Close()
	var b [1]byte
	if ok, err := readFull(peer, b[:]); err != nil || !ok {
		return nil, fmt.Errorf("warm-up stream: %v", err)
	}
	if _, err := peer.Write(b[:]); err != nil {
		return nil, err
	}
	if ok, err := readFull(first, b[:]); err != nil || !ok {
		return nil, fmt.Errorf("warm-up stream: %v", err)
	}

	before := rssKiB()
	cpu0 := cpuSeconds()
	start := time.Now()
	accepted := make(chan error, 1)
	var held []stream
	go func() {
		for i := 0; i < streams; i++ {
			s, err := m.accept()
			if err != nil {
				accepted <- fmt.Errorf("accept %d of %d: %w", i, streams, err)
				return
			}
			held = append(held, s)
		}
		accepted <- nil
	}()
	opened := make([]stream, 0, streams)
	for i := 0; i < streams; i++ {
		s, err := m.open()
		if err != nil {
			return nil, fmt.Errorf("open %d: %w", i, err)
		}
		opened = append(opened, s)
	}
	if err := <-accepted; err != nil {
		return nil, err
	}
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	growth := rssKiB()
	if growth > before {
		growth -= before
	} else {
		growth = 0
	}
	res := &sample{OK: true, ElapsedS: elapsed, Streams: uint64(streams), RSSGrowthKiB: &growth,
		CPUS: cpu, PeakRSSKiB: peakRSSKiB()}
	for _, s := range append(opened, held...) {
		s.Close()
	}
	return res, nil
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

// statusKiB is a field of /proc/self/status in KiB.
func statusKiB(field string) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func peakRSSKiB() uint64 { return statusKiB("VmHWM:") }

func rssKiB() uint64 { return statusKiB("VmRSS:") }

func main() {
	lib := flag.String("lib", "", "library: smux1, smux2 or yamux")
	workload := flag.String("workload", "", "workload: bulk, latency, churn or idle")
	streams := flag.Int("streams", 1, "bulk, idle: number of streams")
	bytes := flag.Uint64("bytes", 1000000, "bulk: bytes per stream")
	chunk := flag.Int("chunk", 128*1024, "bulk: size of each write and read buffer")
	roundTrips := flag.Uint64("round-trips", 1000, "latency: number of timed round trips")
	size := flag.Int("size", 64, "latency: message size in bytes")
	durationMs := flag.Uint64("duration-ms", 1000, "churn: how long to run, in milliseconds")
	workers := flag.Int("workers", 1, "churn: client goroutines at once")
	sampleMs := flag.Uint64("sample-ms", 0, "bulk: sample each stream's bytes this often (0: off)")
	// Accepted for symmetry with the Rust child; the runner sets GOMAXPROCS=1 instead.
	flag.Bool("current-thread", false, "ignored: set GOMAXPROCS=1")
	flag.Parse()

	result, err := func() (*sample, error) {
		switch *workload {
		case "bulk", "latency", "churn", "idle":
		default:
			return nil, fmt.Errorf("unknown workload %q (bulk, latency, churn, idle)", *workload)
		}
		if *streams < 1 || *chunk < 1 || *size < 1 || *roundTrips < 1 || *workers < 1 {
			return nil, errors.New("--streams, --chunk, --size, --round-trips and --workers must be at least 1")
		}
		m, err := newMux(*lib)
		if err != nil {
			return nil, err
		}
		switch *workload {
		case "bulk":
			return bulk(m, *streams, *bytes, *chunk, time.Duration(*sampleMs)*time.Millisecond)
		case "latency":
			return latency(m, *roundTrips, *size)
		case "churn":
			return churn(m, time.Duration(*durationMs)*time.Millisecond, *workers)
		default:
			return idle(m, *streams)
		}
	}()
	if err != nil {
		result = &sample{Error: err.Error()}
	}
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
}
