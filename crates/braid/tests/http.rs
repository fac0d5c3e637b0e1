//! HTTP/1.1 over braid: a hyper server and a hyper client, one HTTP connection per braid
//! stream, over loopback TCP and over an in-memory duplex pipe, for smux v1 and v2.
//!
//! The server echoes each request body and reports its SHA-256 and length in headers;
//! the client sends 200 concurrent POSTs with seeded random bodies (0..=256 KiB) and
//! checks status, echoed body and headers. Then the client closes its session and the
//! server must see every HTTP connection end cleanly.

use braid::{Config, ConnectionError, Protocol, Session, Side};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};

const REQUESTS: usize = 200;
const MAX_BODY: usize = 256 * 1024;
/// Generous bound for a whole run (a few seconds on a 2-core machine, debug build).
const DEADLINE: Duration = Duration::from_secs(120);
const SHA_HEADER: &str = "x-body-sha256";
const LEN_HEADER: &str = "x-body-len";

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The service: echo the body, with its SHA-256 and length in headers.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let response = Response::builder()
        .header(SHA_HEADER, sha256_hex(&body))
        .header(LEN_HEADER, body.len())
        .body(Full::new(body))
        .expect("valid response");
    Ok(response)
}

/// Accepts braid streams and serves one HTTP/1.1 connection on each, until the session
/// ends; then waits for every connection and returns how many there were.
async fn serve(session: Session) -> usize {
    let mut conns = JoinSet::new();
    while let Some(stream) = session.accept_stream().await {
        conns.spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(echo)),
        );
    }
    let mut served = 0;
    while let Some(res) = conns.join_next().await {
        if let Err(e) = join(res) {
            panic!("server connection {served} failed: {e}");
        }
        served += 1;
    }
    served
}

/// The body of request `i`: seeded, so every run sends the same bytes. The first two
/// requests pin the extremes (empty and the largest body).
fn request_body(i: usize) -> Bytes {
    let mut rng = StdRng::seed_from_u64(0x6272_6169_6400 + i as u64);
    let len = match i {
        0 => 0,
        1 => MAX_BODY,
        _ => rng.gen_range(0..=MAX_BODY),
    };
    let mut body = vec![0u8; len];
    rng.fill(&mut body[..]);
    Bytes::from(body)
}

/// One request on its own braid stream and its own HTTP connection.
async fn request(session: Session, i: usize) {
    let body = request_body(i);
    let stream = session.open_stream().await.expect("open_stream");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);

    let req = Request::post(format!("/echo/{i}"))
        .header(HOST, "braid.test")
        .header(CONTENT_LENGTH, body.len())
        .body(Full::new(body.clone()))
        .expect("valid request");
    let resp = sender.send_request(req).await.expect("send_request");
    assert_eq!(resp.status(), StatusCode::OK, "request {i}");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("request {i}: no {name} header"))
            .to_str()
            .expect("ASCII header")
            .to_owned()
    };
    assert_eq!(header(SHA_HEADER), sha256_hex(&body), "request {i}");
    assert_eq!(header(LEN_HEADER), body.len().to_string(), "request {i}");
    let echoed = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    assert_eq!(echoed.len(), body.len(), "request {i}: echoed length");
    assert!(echoed == body, "request {i}: echoed body differs");

    // Dropping the sender ends the HTTP connection: hyper shuts the stream down (FIN).
    drop(sender);
    join(conn.await).expect("client connection");
}

/// A task's result; a panic in the task is re-raised here with its own message.
fn join<T>(res: Result<T, JoinError>) -> T {
    res.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn run(client: Session, server: Session) {
    let test = async {
        let server_task = tokio::spawn(serve(server.clone()));
        let mut requests = JoinSet::new();
        for i in 0..REQUESTS {
            requests.spawn(request(client.clone(), i));
        }
        while let Some(res) = requests.join_next().await {
            join(res);
        }

        // Every HTTP connection has ended on the client side: closing the session
        // flushes the last FINs, so the server sees each connection end cleanly.
        client.close().await;
        assert!(matches!(
            client.closed().await,
            ConnectionError::LocallyClosed
        ));
        assert_eq!(join(server_task.await), REQUESTS);
        server.closed().await;
        assert!(server.is_closed());
    };
    tokio::time::timeout(DEADLINE, test)
        .await
        .expect("HTTP over braid did not finish in time");
}

async fn tcp_sessions(protocol: Protocol) -> (Session, Session) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (dialed, (accepted, _)) = (dialed.expect("connect"), accepted.expect("accept"));
    let client =
        Session::from_tcp(dialed, Config::new(protocol), Side::Client).expect("client session");
    let server =
        Session::from_tcp(accepted, Config::new(protocol), Side::Server).expect("server session");
    (client, server)
}

fn duplex_sessions(protocol: Protocol) -> (Session, Session) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = Session::client(a, Config::new(protocol)).expect("client session");
    let server = Session::server(b, Config::new(protocol)).expect("server session");
    (client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tcp_smux_v1() {
    let (client, server) = tcp_sessions(Protocol::SmuxV1).await;
    run(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tcp_smux_v2() {
    let (client, server) = tcp_sessions(Protocol::SmuxV2).await;
    run(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_duplex_smux_v1() {
    let (client, server) = duplex_sessions(Protocol::SmuxV1);
    run(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_duplex_smux_v2() {
    let (client, server) = duplex_sessions(Protocol::SmuxV2);
    run(client, server).await;
}
