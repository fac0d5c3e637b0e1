package main

// ===========================================================================
// Tunnel modes (-mode tunnel-client, -mode tunnel-server): port forwarding
// with one stream per forwarded TCP connection
// ===========================================================================
//
// These modes map streams to connections the way Go tunnels built on smux or
// yamux do (kcptun, frp), so that braid's tunnel (`braid server`, `braid
// client`) can be tested against a Go program doing the same:
//
//	tunnel-client  dials one multiplexed connection to -addr and listens on
//	               -listen; every accepted TCP connection gets one stream
//	tunnel-server  listens on -addr for multiplexed connections; every stream
//	               it accepts is forwarded to a new TCP connection to -target
//
// With -tls-cert/-tls-key (tunnel-server) the carriers are TLS, and with
// -tls-ca as well the server requires client certificates signed by that CA
// (mutual TLS). The tunnel-client turns TLS on with -tls-ca (the CA of the
// server's certificate, checked against the host of -addr) and presents
// -tls-cert/-tls-key if given. Go's crypto/tls, defaults otherwise.
//
// Each connection and its stream are copied both ways. smux 1.5.16 has no
// half-close (Stream.Close ends both directions), so, as kcptun does, the pair
// is closed as a whole as soon as either direction ends: applications using
// the tunnel must read everything they expect before they close their side.
//
// Events (JSON lines on stdout, "event" first, as in the other modes):
//
//	{"event":"listening","addr":"127.0.0.1:NNNN"}   first line, the address bound
//	{"event":"session_start","session":1,"remote":"127.0.0.1:NNNN"}
//	{"event":"session_end","session":1,"error":"..."}
//	{"event":"forwarded","session":1,"stream":3,"to_stream":N,"from_stream":M}
//	{"event":"dial_failed","session":1,"stream":3,"error":"..."}  tunnel-server
//	{"event":"handshake_failed","remote":"...","error":"..."}   tunnel-server, TLS
//	{"event":"error","msg":"..."}                    fatal, exit status 1
//
// "forwarded" reports a finished connection/stream pair with the bytes copied
// into the stream (to_stream) and out of it (from_stream). The tunnel-client
// exits with status 0 once its session has ended; the tunnel-server runs until
// it is killed. Both give up after -timeout (exit status 3), so that a test
// that died never leaves one behind for long.

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// tunnelFlags are the settings of the tunnel modes beyond peerFlags (which
// supply -addr, -proto, the library tuning and -timeout).
type tunnelFlags struct {
	listen  string
	target  string
	tlsCert string
	tlsKey  string
	tlsCA   string
}

func (t *tunnelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.listen, "listen", "127.0.0.1:0", "tunnel-client: address to accept local connections on (the actual one is reported)")
	fs.StringVar(&t.target, "target", "", "tunnel-server: HOST:PORT each accepted stream is forwarded to")
	fs.StringVar(&t.tlsCert, "tls-cert", "", "TLS certificate chain (PEM): the server's (turns TLS on), or the client's for mutual TLS")
	fs.StringVar(&t.tlsKey, "tls-key", "", "private key (PEM) of -tls-cert")
	fs.StringVar(&t.tlsCA, "tls-ca", "", "CA (PEM): tunnel-server: clients must present a certificate it signed; tunnel-client: turns TLS on and checks the server's certificate")
}

// tlsConfig is the TLS configuration the flags ask for, or nil for plain TCP.
func (t *tunnelFlags) tlsConfig(client bool, addr string) (*tls.Config, error) {
	if (t.tlsCert == "") != (t.tlsKey == "") {
		return nil, fmt.Errorf("-tls-cert and -tls-key go together")
	}
	on := t.tlsCert != ""
	if client {
		on = t.tlsCA != ""
	}
	if !on {
		if t.tlsCert != "" || t.tlsCA != "" {
			return nil, fmt.Errorf("TLS needs -tls-cert/-tls-key on the tunnel-server and -tls-ca on the tunnel-client")
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(t.tlsCert, t.tlsKey)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if t.tlsCA != "" {
		pem, err := os.ReadFile(t.tlsCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in -tls-ca %s", t.tlsCA)
		}
		if client {
			cfg.RootCAs = pool
		} else {
			cfg.ClientCAs = pool
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	if client {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	return cfg, nil
}

// runTunnel runs -mode tunnel-client or tunnel-server.
func runTunnel(client bool, f *peerFlags, t *tunnelFlags) error {
	out := &reporter{w: os.Stdout}
	go func() {
		time.Sleep(f.timeout)
		out.emit("error", kv{"msg": fmt.Sprintf("watchdog: still running after %v", f.timeout)})
		os.Exit(3)
	}()
	var err error
	if client {
		err = tunnelClient(f, t, out)
	} else {
		err = tunnelServer(f, t, out)
	}
	if err != nil {
		out.emit("error", kv{"msg": err.Error()})
	}
	return err
}

// tunnelClient: one session to -addr; each local connection accepted on
// -listen is forwarded over a stream of its own.
func tunnelClient(f *peerFlags, t *tunnelFlags, out *reporter) error {
	tlsCfg, err := t.tlsConfig(true, f.addr)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", f.addr, 10*time.Second)
	if err != nil {
		return err
	}
	if tlsCfg != nil {
		tconn := tls.Client(conn, tlsCfg)
		tconn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tconn.Handshake(); err != nil {
			conn.Close()
			return fmt.Errorf("TLS handshake: %w", err)
		}
		tconn.SetDeadline(time.Time{})
		conn = tconn
	}
	sess, err := newMuxSession(f, conn, true)
	if err != nil {
		conn.Close()
		return err
	}
	ln, err := net.Listen("tcp", t.listen)
	if err != nil {
		sess.Close()
		return err
	}
	out.emit("listening", kv{"addr": ln.Addr().String()})
	out.emit("session_start", kv{"session": 1, "remote": conn.RemoteAddr().String()})

	// The other side opens no streams; Accept returns once the session has
	// ended, and then the tunnel has nothing left to do.
	go func() {
		err := drainAccept(sess)
		out.emit("session_end", kv{"session": 1, "error": errString(err)})
		os.Exit(0)
	}()

	for {
		local, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept a local connection: %w", err)
		}
		st, err := sess.Open()
		if err != nil {
			local.Close()
			return fmt.Errorf("open a stream: %w", err)
		}
		go func() {
			toStream, fromStream := pipeBoth(local, st)
			out.emit("forwarded", kv{"session": 1, "stream": st.ID(), "to_stream": toStream, "from_stream": fromStream})
		}()
	}
}

// tunnelServer: accepts multiplexed connections on -addr (any number, each
// its own session) and forwards every stream to a new connection to -target.
func tunnelServer(f *peerFlags, t *tunnelFlags, out *reporter) error {
	if t.target == "" {
		return fmt.Errorf("-mode tunnel-server needs -target HOST:PORT")
	}
	tlsCfg, err := t.tlsConfig(false, f.addr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	out.emit("listening", kv{"addr": ln.Addr().String()})
	for n := 1; ; n++ {
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept a connection: %w", err)
		}
		if tlsCfg != nil {
			tconn := tls.Server(conn, tlsCfg)
			tconn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tconn.Handshake(); err != nil {
				out.emit("handshake_failed", kv{"remote": conn.RemoteAddr().String(), "error": err.Error()})
				conn.Close()
				n--
				continue
			}
			tconn.SetDeadline(time.Time{})
			conn = tconn
		}
		sess, err := newMuxSession(f, conn, false)
		if err != nil {
			conn.Close()
			return err
		}
		out.emit("session_start", kv{"session": n, "remote": conn.RemoteAddr().String()})
		n := n // one per goroutine (Go 1.19 shares loop variables)
		go func() {
			err := serveTunnelSession(sess, n, t.target, out)
			out.emit("session_end", kv{"session": n, "error": errString(err)})
		}()
	}
}

// serveTunnelSession forwards each stream of sess to -target until the
// session ends, and returns Accept's error then.
func serveTunnelSession(sess muxSession, n int, target string, out *reporter) error {
	defer sess.Close()
	for {
		st, err := sess.Accept()
		if err != nil {
			return err
		}
		go func() {
			remote, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err != nil {
				// smux has no way to refuse a stream; ending it is all we can do.
				out.emit("dial_failed", kv{"session": n, "stream": st.ID(), "error": err.Error()})
				st.Close()
				return
			}
			toStream, fromStream := pipeBoth(remote, st)
			out.emit("forwarded", kv{"session": n, "stream": st.ID(), "to_stream": toStream, "from_stream": fromStream})
		}()
	}
}

// drainAccept closes every stream the other side opens and returns Accept's
// error once the session has ended.
func drainAccept(sess muxSession) error {
	for {
		st, err := sess.Accept()
		if err != nil {
			return err
		}
		st.Close()
	}
}

// pipeBoth copies conn to st and st to conn at the same time. When either
// direction ends, for whatever reason, both are closed (kcptun's way: smux
// 1.5.16 cannot close one direction only), which also ends the other copy.
// It returns the bytes copied into the stream and out of it.
func pipeBoth(conn net.Conn, st muxStream) (toStream, fromStream int64) {
	var once sync.Once
	closeBoth := func() {
		conn.Close()
		st.Close()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		toStream, _ = io.Copy(st, conn)
		once.Do(closeBoth)
	}()
	go func() {
		defer wg.Done()
		fromStream, _ = io.Copy(conn, st)
		once.Do(closeBoth)
	}()
	wg.Wait()
	return toStream, fromStream
}
