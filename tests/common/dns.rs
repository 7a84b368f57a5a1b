//! A DNS stand-in for the tests: UDP on 127.0.0.1, answers that can be
//! changed while it runs, NXDOMAIN for anything else. Used for DKIM keys
//! (TXT) and for blocklist zones (A + TXT, refusals, timeouts).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, TXT};
use hickory_resolver::proto::rr::{RData, Record, RecordType};

#[derive(Debug, Clone)]
pub enum Answer {
    /// A records and TXT records (each a list of character-strings of at
    /// most 255 bytes, which resolvers join) at one name; a query for
    /// another type gets NODATA.
    Records {
        a: Vec<Ipv4Addr>,
        txt: Vec<Vec<Vec<u8>>>,
    },
    ServFail,
    /// No reply at all.
    Silent,
}

impl Answer {
    /// A blocklist listing: return codes and an optional TXT reason.
    pub fn listed(codes: &[[u8; 4]], reason: Option<&str>) -> Answer {
        Answer::Records {
            a: codes.iter().map(|c| Ipv4Addr::from(*c)).collect(),
            txt: reason.map(txt).into_iter().collect(),
        }
    }

    /// TXT records only (DKIM keys).
    pub fn txt(records: &[&str]) -> Answer {
        Answer::Records {
            a: Vec::new(),
            txt: records.iter().map(|r| txt(r)).collect(),
        }
    }
}

/// A record value as DNS carries it: strings of at most 255 bytes.
pub fn txt(value: &str) -> Vec<Vec<u8>> {
    value.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
}

/// By lowercase name without the final dot; `*.zone` matches every name
/// under `zone`.
pub type Zone = HashMap<String, Answer>;

pub struct DnsStandIn {
    port: u16,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsStandIn {
    pub fn start(zone: Zone) -> DnsStandIn {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind DNS stand-in");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let port = sock.local_addr().expect("local addr").port();
        let zone = Arc::new(Mutex::new(zone));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (Arc::clone(&stop), Arc::clone(&zone));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let (n, peer) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue;
                    }
                    Err(e) => panic!("DNS stand-in: {e}"),
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&shared.lock().unwrap(), &query);
                if let Some(Ok(bytes)) = reply.map(|r| r.to_vec()) {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        DnsStandIn {
            port,
            zone,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes (or with `None`, removes) the answer for `name`.
    pub fn set(&self, name: &str, answer: Option<Answer>) {
        let mut zone = self.zone.lock().unwrap();
        match answer {
            Some(a) => zone.insert(name.to_string(), a),
            None => zone.remove(name),
        };
    }
}

fn lookup_zone(zone: &Zone, name: &str) -> Option<Answer> {
    zone.get(name).cloned().or_else(|| {
        zone.iter()
            .find(|(k, _)| {
                k.strip_prefix("*.")
                    .is_some_and(|z| name.ends_with(&format!(".{z}")))
            })
            .map(|(_, a)| a.clone())
    })
}

fn answer(zone: &Zone, query: &Message) -> Option<Message> {
    let mut r = Message::response(query.metadata.id, query.metadata.op_code);
    r.metadata.recursion_desired = query.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = true;
    for q in &query.queries {
        r.add_query(q.clone());
    }
    let Some(q) = query.queries.first() else {
        r.metadata.response_code = ResponseCode::FormErr;
        return Some(r);
    };
    let name = q.name().to_string();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match lookup_zone(zone, &name) {
        Some(Answer::Silent) => return None,
        Some(Answer::ServFail) => r.metadata.response_code = ResponseCode::ServFail,
        Some(Answer::Records { a, txt }) => match q.query_type() {
            RecordType::A => {
                for addr in a {
                    r.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(addr))));
                }
            }
            RecordType::TXT => {
                for strings in txt {
                    let t = TXT::from_bytes(strings.iter().map(Vec::as_slice).collect());
                    r.add_answer(Record::from_rdata(q.name().clone(), 60, RData::TXT(t)));
                }
            }
            _ => {} // NODATA
        },
        None => r.metadata.response_code = ResponseCode::NXDomain,
    }
    Some(r)
}

impl Drop for DnsStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
