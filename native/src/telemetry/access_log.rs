//! The access log: one JSON line per request and per mirror copy, written by
//! a thread of its own. Requests hand lines over through a bounded channel and
//! never wait: when the writer falls behind, lines are dropped and counted.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// Lines queued for the writer at most.
const QUEUE_LINES: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Counts {
    /// Lines the writer took off the queue, written or not.
    processed: AtomicU64,
    written: AtomicU64,
    /// Refused at a full queue, or failed to write.
    dropped: AtomicU64,
}

/// What the writer is handed: a line, or word to reopen its file.
#[derive(Debug)]
enum Message {
    Line(Vec<u8>),
    /// logrotate moved the file away: write on in a new one at the same path.
    Reopen,
}

#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Message>,
    counts: Arc<Counts>,
    sent: AtomicU64,
    /// The fields each line keeps; `None`: all of them.
    fields: Option<Vec<&'static str>>,
}

/// Every field a line can have, as `Record` names them.
pub const FIELDS: [&str; 24] = [
    "time",
    "hop",
    "request_id",
    "method",
    "protocol",
    "authority",
    "path",
    "virtual_service",
    "route",
    "destination",
    "subset",
    "status",
    "grpc_status",
    "duration_us",
    "bytes_in",
    "bytes_out",
    "mirrored",
    "outcome",
    "reason",
    "client_cert",
    "client",
    "user_agent",
    "upstream",
    "response_flags",
];

#[derive(Debug, Serialize)]
pub struct AccessLogReport {
    pub written: u64,
    pub dropped: u64,
}

impl AccessLog {
    /// Opens `target` for appending (`-` is standard output) and starts the writer.
    /// `fields`: the ones each line keeps (of `FIELDS`); `None`: all.
    pub fn open(target: &str, fields: Option<&[String]>) -> io::Result<Self> {
        let fields = fields.map(chosen).transpose()?;
        let sink = open_sink(target)?;
        let (tx, rx) = sync_channel::<Message>(QUEUE_LINES);
        let counts = Arc::new(Counts::default());
        let written = counts.clone();
        let target = target.to_owned();
        std::thread::Builder::new()
            .name("pymirror-access-log".into())
            .spawn(move || write_lines(&rx, sink, &target, &written))?;
        Ok(Self {
            tx,
            counts,
            sent: AtomicU64::new(0),
            fields,
        })
    }

    /// Has the writer reopen its file (after logrotate moved it); lines already
    /// queued go to the old one. Waits for a full queue: it is rare and bounded.
    pub fn reopen(&self) {
        let _ = self.tx.send(Message::Reopen);
    }

    pub fn write(&self, record: &Record) {
        let mut line = match &self.fields {
            None => serde_json::to_vec(record).unwrap_or_default(),
            // A chosen field set goes through a map: a cost only those who ask for it pay.
            Some(keep) => match serde_json::to_value(record) {
                Ok(serde_json::Value::Object(mut map)) => {
                    map.retain(|name, _| keep.contains(&name.as_str()));
                    serde_json::to_vec(&map).unwrap_or_default()
                }
                _ => Vec::new(),
            },
        };
        line.push(b'\n');
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {
                self.sent.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Waits (bounded) until every line handed over so far is written.
    pub fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.counts.processed.load(Relaxed) < self.sent.load(Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn report(&self) -> AccessLogReport {
        AccessLogReport {
            written: self.counts.written.load(Relaxed),
            dropped: self.counts.dropped.load(Relaxed),
        }
    }
}

/// `names` as fields of `FIELDS`, or an error naming the first unknown one and the known.
fn chosen(names: &[String]) -> io::Result<Vec<&'static str>> {
    names
        .iter()
        .map(|name| {
            FIELDS.iter().copied().find(|f| f == name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "unknown access log field `{name}`; the fields are: {}",
                        FIELDS.join(", ")
                    ),
                )
            })
        })
        .collect()
}

fn open_sink(target: &str) -> io::Result<Box<dyn Write + Send>> {
    Ok(if target == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(OpenOptions::new().create(true).append(true).open(target)?)
    })
}

/// The writer: writes what is queued and flushes once the queue is empty, so lines
/// show up promptly without a write call per line under load.
fn write_lines(rx: &Receiver<Message>, sink: Box<dyn Write + Send>, target: &str, counts: &Counts) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let count = if out.write_all(&line).is_ok() {
                        &counts.written
                    } else {
                        &counts.dropped
                    };
                    count.fetch_add(1, Relaxed);
                    batch += 1;
                }
                Message::Reopen => {
                    let _ = out.flush();
                    // A file that cannot be opened now keeps the old one.
                    if let Ok(sink) = open_sink(target) {
                        out = BufWriter::with_capacity(64 * 1024, sink);
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        counts.processed.fetch_add(batch, Relaxed);
    }
    let _ = out.flush();
}

/// Which hop a line describes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hop {
    Primary,
    Mirror,
}

/// One access-log line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub time: String,
    pub hop: Hop,
    pub request_id: String,
    pub method: String,
    /// The client's protocol on primary lines (`HTTP/1.1`, `HTTP/2`); the
    /// protocol the copy went in on mirror lines.
    pub protocol: &'static str,
    pub authority: String,
    pub path: String,
    pub virtual_service: Option<String>,
    pub route: Option<String>,
    pub destination: Option<String>,
    pub subset: Option<String>,
    /// 0 when no response came (a failed or timed-out mirror copy).
    pub status: u16,
    /// A gRPC call's `grpc-status` (from the answer's trailers, or its
    /// headers when it had no body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// From the request's head to the end of the answer's body, in whole microseconds.
    pub duration_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Primary lines: whether copies of this request went to a mirror.
    pub mirrored: bool,
    /// Mirror lines: answered, cut, failed, timed_out or dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Mirror lines that failed: why (`connect`, `reset`, `protocol`,
    /// `framing`, `body_incomplete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// MUTUAL: the subject of the client's verified certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// The client's address and port (the connection's peer).
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The endpoint that answered (`host:port`); absent when none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Envoy's flag for an answer the proxy made or changed (`UF`, `NR`, `UO`,
    /// `UT`, `FI`...); absent for an upstream's own answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'static str>,
}

impl Record {
    /// A line for a request that started at `started_at` (the line's time).
    pub fn new(hop: Hop, started_at: SystemTime) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(started_at).to_string(),
            hop,
            request_id: String::new(),
            method: String::new(),
            protocol: "",
            authority: String::new(),
            path: String::new(),
            virtual_service: None,
            route: None,
            destination: None,
            subset: None,
            grpc_status: None,
            status: 0,
            duration_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            mirrored: false,
            outcome: None,
            reason: None,
            client_cert: None,
            client: String::new(),
            user_agent: None,
            upstream: None,
            response_flags: None,
        }
    }
}

/// A line being filled in while its request is served; written when the
/// response body ends (or is dropped, if the client went away).
#[derive(Debug)]
pub struct PendingLine {
    log: Arc<AccessLog>,
    pub record: Record,
    started: Instant,
    pub bytes_in: Arc<AtomicU64>,
}

impl PendingLine {
    pub fn start(log: Arc<AccessLog>, request: &http::request::Parts) -> Self {
        let mut record = Record::new(Hop::Primary, SystemTime::now());
        let text = |v: Option<&http::HeaderValue>| {
            v.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        };
        record.request_id = text(request.headers.get("x-request-id"));
        record.method = request.method.to_string();
        record.protocol = protocol_label(request.version);
        record.authority = match request.uri.authority() {
            Some(a) => a.to_string(),
            None => text(request.headers.get(http::header::HOST)),
        };
        record.path = request
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string);
        record.user_agent = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self {
            log,
            record,
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The line of a mirror copy of this request, to be finished by the copy.
    pub fn for_mirror(
        &self,
        host: &str,
        subset: Option<&str>,
        authority: String,
        protocol: &'static str,
    ) -> Self {
        let mut record = self.record.clone();
        record.protocol = protocol;
        record.hop = Hop::Mirror;
        record.destination = Some(host.to_owned());
        record.subset = subset.map(str::to_owned);
        record.authority = authority;
        record.mirrored = false;
        Self {
            log: self.log.clone(),
            record,
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn finish(mut self, bytes_out: u64) {
        self.record.duration_us =
            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.record.bytes_in = self.bytes_in.load(Relaxed);
        self.record.bytes_out = bytes_out;
        self.log.write(&self.record);
    }
}

/// How the access log names an HTTP version.
pub fn protocol_label(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_as_json() {
        let path = std::env::temp_dir().join(format!("pymirror-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(path.to_str().unwrap(), None).unwrap();
        for i in 0..3 {
            let mut r = Record::new(Hop::Primary, SystemTime::now());
            r.request_id = format!("id-{i}");
            r.status = 200;
            log.write(&r);
        }
        log.settle(Duration::from_secs(5));
        assert_eq!(log.report().written, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["request_id"], "id-2");
        assert_eq!(lines[0]["hop"], "primary");
        assert!(lines[0].get("outcome").is_none());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_reopen_writes_on_in_a_new_file_at_the_same_path() {
        let dir = std::env::temp_dir().join(format!("pymirror-rotate-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (path, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
        let log = AccessLog::open(path.to_str().unwrap(), None).unwrap();
        log.write(&Record::new(Hop::Primary, SystemTime::now()));
        log.settle(Duration::from_secs(5));
        std::fs::rename(&path, &rotated).unwrap(); // what logrotate does
        log.write(&Record::new(Hop::Primary, SystemTime::now())); // still to the old file
        log.reopen();
        log.write(&Record::new(Hop::Mirror, SystemTime::now()));
        log.settle(Duration::from_secs(5));
        let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!((lines(&rotated), lines(&path)), (2, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record with every optional field set: each of its keys, and no other.
    fn full_record() -> Record {
        let mut r = Record::new(Hop::Mirror, SystemTime::now());
        r.virtual_service = Some("vs".into());
        r.route = Some("0".into());
        r.destination = Some("reviews".into());
        r.subset = Some("v2".into());
        r.grpc_status = Some(0);
        r.outcome = Some("failed");
        r.reason = Some("connect");
        r.client_cert = Some("CN=client".into());
        r.user_agent = Some("curl".into());
        r.upstream = Some("10.0.0.1:80".into());
        r.response_flags = Some("UF");
        r
    }

    #[test]
    fn the_field_list_is_the_records_fields() {
        let value = serde_json::to_value(full_record()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }

    #[test]
    fn a_chosen_field_set_keeps_those_fields_only() {
        let path = std::env::temp_dir().join(format!("pymirror-fields-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let fields = ["status".to_owned(), "upstream".to_owned(), "hop".to_owned()];
        let log = AccessLog::open(path.to_str().unwrap(), Some(&fields)).unwrap();
        log.write(&full_record());
        log.settle(Duration::from_secs(5));
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["hop", "status", "upstream"]);
        let _ = std::fs::remove_file(&path);
        let unknown = AccessLog::open("-", Some(&["status".to_owned(), "nope".to_owned()]));
        let message = unknown.unwrap_err().to_string();
        assert!(message.starts_with("unknown access log field `nope`; the fields are: time, hop"));
    }
}
