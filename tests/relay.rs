//! A NATS relay for fault tests: a TCP proxy between one client and a nats-server that speaks
//! just enough of the NATS protocol to lose chosen replies. A reply is lost the way a network
//! loses it: the server did what was asked (stored the write), the client never hears so.
//!
//! Choose a request by its subject's prefix and its rank among the requests to that prefix
//! ([`Relay::lose_reply`]): the relay notes the reply subject of that `PUB`/`HPUB` and drops
//! the `MSG`/`HMSG` the server sends to it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Rules {
    /// (subject prefix, which request to it — 1 is the next —, requests to it seen so far).
    lose: Vec<(String, usize, usize)>,
    /// Reply subjects whose reply is to be dropped.
    drop: HashSet<String>,
    /// Replies dropped so far.
    dropped: usize,
}

#[derive(Clone)]
pub struct Relay {
    port: u16,
    rules: Arc<Mutex<Rules>>,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules = Arc::new(Mutex::new(Rules::default()));
        let (up, r) = (upstream.to_string(), rules.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&up).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(BufReader::new(cr), sw, r.clone(), Direction::ToServer));
                tokio::spawn(pump(BufReader::new(sr), cw, r.clone(), Direction::ToClient));
            }
        });
        Relay { port, rules }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Loses the reply to the `nth` next request (1: the next) whose subject starts with
    /// `prefix` (e.g. `$KV.CLOSEFLOW_LOCKS.`).
    pub fn lose_reply(&self, prefix: &str, nth: usize) {
        self.rules
            .lock()
            .unwrap()
            .lose
            .push((prefix.to_string(), nth, 0));
    }

    /// Replies dropped so far.
    pub fn dropped(&self) -> usize {
        self.rules.lock().unwrap().dropped
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Copies one direction op by op; a payload is read whole, by its announced size.
async fn pump(
    mut from: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rules: Arc<Mutex<Rules>>,
    dir: Direction,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let op = parts
            .first()
            .map(|p| p.to_ascii_uppercase())
            .unwrap_or_default();
        // The payload's size is the op's last argument; with headers, the total.
        let payload = match op.as_str() {
            "PUB" | "HPUB" | "MSG" | "HMSG" => parts.last().and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        };
        let mut body = Vec::new();
        if let Some(n) = payload {
            body.resize(n + 2, 0);
            if from.read_exact(&mut body).await.is_err() {
                return;
            }
        }
        let forward = {
            let mut r = rules.lock().unwrap();
            match (dir, op.as_str()) {
                (Direction::ToServer, "PUB" | "HPUB") => {
                    let subject = parts.get(1).copied().unwrap_or_default();
                    // PUB subj [reply] n; HPUB subj [reply] h n.
                    let args = if op == "PUB" { 3 } else { 4 };
                    let reply = (parts.len() > args).then(|| parts[2].to_string());
                    let mut lose = false;
                    for (prefix, nth, seen) in r.lose.iter_mut() {
                        if subject.starts_with(prefix.as_str()) {
                            *seen += 1;
                            lose |= *seen == *nth;
                        }
                    }
                    r.lose.retain(|(_, nth, seen)| seen < nth);
                    if let (true, Some(reply)) = (lose, reply) {
                        r.drop.insert(reply);
                    }
                    true
                }
                (Direction::ToClient, "MSG" | "HMSG") => {
                    let subject = parts.get(1).copied().unwrap_or_default();
                    if r.drop.remove(subject) {
                        r.dropped += 1;
                        false
                    } else {
                        true
                    }
                }
                _ => true,
            }
        };
        if forward && (to.write_all(&line).await.is_err() || to.write_all(&body).await.is_err()) {
            return;
        }
    }
}
