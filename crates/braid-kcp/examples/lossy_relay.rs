//! A UDP relay that drops a share of the datagrams each way, for benchmarks of KCP
//! under loss (scripts/bench-kcp.sh): `lossy_relay LISTEN TARGET LOSS SEED`, e.g.
//! `lossy_relay 127.0.0.1:29950 127.0.0.1:29900 0.02 1`. One client at a time (the last
//! address heard from).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: lossy_relay LISTEN TARGET LOSS SEED");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().expect("LISTEN: an address");
    let target: SocketAddr = args[2].parse().expect("TARGET: an address");
    let loss: f64 = args[3].parse().expect("LOSS: a fraction");
    let seed: u64 = args[4].parse().expect("SEED: a number");
    let front = Arc::new(UdpSocket::bind(listen).expect("bind LISTEN"));
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
    back.connect(target).expect("connect TARGET");
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let mut buf = [0u8; 2048];
        loop {
            // Port unreachable (the server not up yet) shows up here: keep relaying.
            let Ok(n) = b.recv(&mut buf) else { continue };
            let to = *c.lock().unwrap();
            if let Some(to) = to {
                if !rng.gen_bool(loss) {
                    let _ = f.send_to(&buf[..n], to);
                }
            }
        }
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf) else {
            continue;
        };
        *client.lock().unwrap() = Some(from);
        if !rng.gen_bool(loss) {
            let _ = back.send(&buf[..n]);
        }
    }
}
