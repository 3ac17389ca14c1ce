//! `capstan bench etcd`: the same create load as `capstan bench api`, sent straight to an
//! etcd v3 server, so Capstan's numbers stand next to the store stock Kubernetes uses.
//!
//! It speaks etcd's real gRPC API (not the JSON gateway, which would slow etcd down): a
//! unary call is an HTTP/2 POST to `/etcdserverpb.KV/Put` over plain TCP (h2c with prior
//! knowledge), its body one length-prefixed protobuf message, its outcome `grpc-status` in
//! the trailers. Each client puts a new key every time, as the API server does for a create,
//! and clients share a few HTTP/2 connections the way etcd's Go client multiplexes. The
//! report has the shape of `capstan bench api --json` (the puts are `verbs.create`), so
//! `capstan bench plot` and the comparison script treat both alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{Method, Request, Uri, header};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde::Serialize;

use super::api::VerbReport;
use super::client::Sender;

/// Options of `capstan bench etcd`.
#[derive(Debug, Clone, Args)]
pub struct EtcdBenchArgs {
    /// etcd's client URL (plain HTTP; the gRPC API is served there).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:2379")]
    pub endpoint: String,
    /// Concurrent clients, each putting one key at a time.
    #[arg(long, value_name = "C", default_value_t = 32)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,
    /// Size of each value, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_bytes: usize,
    /// Puts per second offered over all clients (0: every client as fast as it can).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub rate: f64,
    /// Clients sharing one HTTP/2 connection.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub clients_per_connection: usize,
    /// Key prefix; each put writes `<prefix>/<run>-<client>-<n>`.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "/registry/configmaps/bench"
    )]
    pub prefix: String,
    /// Print the report as JSON (the shape of `capstan bench api --json`).
    #[arg(long)]
    pub json: bool,
}

/// etcd's `PutRequest` (api/etcdserverpb/rpc.proto).
#[derive(Clone, PartialEq, Message)]
pub struct PutRequest {
    /// The key to write.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Its new value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// A lease to attach (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Return the previous key-value.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// etcd's `ResponseHeader`.
#[derive(Clone, PartialEq, Message)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The member that answered.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The store's revision after the request.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// The raft term.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// etcd's `PutResponse` (the previous key-value, field 2, is not asked for).
#[derive(Clone, PartialEq, Message)]
pub struct PutResponse {
    /// Where the store stands after the put.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// One HTTP/2 connection to an etcd member; clone it to send concurrently.
#[derive(Clone)]
pub struct EtcdClient {
    sender: Sender,
    put_uri: Uri,
}

impl EtcdClient {
    /// Connects to `endpoint` (`http://host:port`) with HTTP/2 prior knowledge.
    pub async fn connect(endpoint: &str) -> anyhow::Result<EtcdClient> {
        let base: Uri = endpoint
            .parse()
            .with_context(|| format!("bad etcd endpoint {endpoint}"))?;
        if base.scheme_str() != Some("http") {
            bail!("only plain http:// etcd endpoints are supported, not {endpoint}");
        }
        let authority = base
            .authority()
            .with_context(|| format!("etcd endpoint {endpoint} has no host"))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(2379);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("cannot connect to etcd at {endpoint}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP/2 handshake with etcd at {endpoint}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "etcd connection ended");
            }
        });
        let put_uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/etcdserverpb.KV/Put")
            .build()?;
        Ok(EtcdClient { sender, put_uri })
    }

    /// Writes `value` at `key`; the answer's header carries the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<PutResponse> {
        let message = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.put_uri.clone())
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(Full::new(grpc_frame(&message)))?;
        let mut sender = self.sender.clone();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        if !status.is_success() {
            bail!("etcd answered HTTP {status}");
        }
        // A failed call may answer with headers only ("trailers-only"), so look there first.
        let grpc = |name: &str| {
            headers
                .get(name)
                .or_else(|| trailers.as_ref().and_then(|t| t.get(name)))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match grpc("grpc-status").as_deref() {
            Some("0") => {}
            Some(code) => bail!(
                "etcd put failed: grpc-status {code}: {}",
                grpc("grpc-message").unwrap_or_default()
            ),
            None => bail!("etcd's answer has no grpc-status"),
        }
        let message = grpc_unframe(body)?;
        Ok(PutResponse::decode(message)?)
    }
}

/// A gRPC message on the wire: an uncompressed flag, the length (big-endian) and the bytes.
fn grpc_frame(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut buffer = BytesMut::with_capacity(5 + length);
    buffer.put_u8(0);
    buffer.put_u32(length as u32);
    // Encoding into a buffer with enough room cannot fail.
    let _ = message.encode(&mut buffer);
    buffer.freeze()
}

/// The one message in a unary gRPC answer.
fn grpc_unframe(mut body: Bytes) -> anyhow::Result<Bytes> {
    if body.len() < 5 {
        bail!(
            "etcd's answer is {} bytes, too short for a gRPC message",
            body.len()
        );
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        bail!("etcd answered with a compressed message, which was not asked for");
    }
    if body.len() < length {
        bail!(
            "etcd's answer is cut short ({} of {length} bytes)",
            body.len()
        );
    }
    Ok(body.split_to(length))
}

/// What `capstan bench etcd` measured, in the shape of `capstan bench api --json`.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdBenchReport {
    /// etcd members driven (one endpoint).
    pub servers: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Watchers (none: this bench only writes).
    pub watchers: usize,
    /// Always `create`: every put writes a new key.
    pub workload: String,
    /// Puts per second offered, or null at full speed.
    pub rate_offered: Option<f64>,
    /// Seconds from the first put to the last answer.
    pub duration_s: f64,
    /// Size of each value.
    pub value_bytes: usize,
    /// Requests that succeeded.
    pub ops: u64,
    /// The same per second.
    pub ops_per_sec: f64,
    /// Writes that succeeded (every op is a write).
    pub writes: u64,
    /// The same per second.
    pub writes_per_sec: f64,
    /// Conflicts (none: every key is new).
    pub conflicts: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Per verb; the puts are `create`.
    pub verbs: BTreeMap<String, VerbReport>,
    /// No watchers, so null.
    pub watch: Option<serde_json::Value>,
    /// Watch events missed (no watchers: 0).
    pub events_missed: u64,
    /// Watch events delivered twice (no watchers: 0).
    pub events_duplicated: u64,
    /// Watch events out of order (no watchers: 0).
    pub events_out_of_order: u64,
    /// Watch relists (no watchers: 0).
    pub relists: u64,
    /// HTTP/2 connections the clients shared.
    pub connections: usize,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// What one client did.
#[derive(Default)]
struct ClientOutcome {
    latencies_ms: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the bench and prints its report (text, or JSON with `--json`).
pub async fn run(args: EtcdBenchArgs) -> anyhow::Result<EtcdBenchReport> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report)
}

/// Runs the bench and returns its report without printing it.
pub async fn measure(args: &EtcdBenchArgs) -> anyhow::Result<EtcdBenchReport> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.duration.is_nan() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.rate < 0.0 {
        bail!("--rate must not be negative");
    }
    let per_connection = args.clients_per_connection.max(1);
    let connections = args.clients.div_ceil(per_connection);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(EtcdClient::connect(&args.endpoint).await?);
    }
    let run_id = format!("{:08x}", rand::random::<u32>());
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    // Each client gets an equal share of the offered rate.
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.clients as f64 / args.rate));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        let client = clients[index / per_connection].clone();
        let prefix = format!("{}/{run_id}-{index}-", args.prefix.trim_end_matches('/'));
        let value = value.clone();
        // Paced clients start spread over one interval, not all at once.
        let offset = interval
            .map(|every| every.mul_f64(index as f64 / args.clients as f64))
            .unwrap_or_default();
        tasks.spawn(async move {
            let mut outcome = ClientOutcome::default();
            let mut ticker = interval.map(|every| {
                let mut ticker = tokio::time::interval_at((started + offset).into(), every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                ticker
            });
            let mut n: u64 = 0;
            loop {
                if let Some(ticker) = ticker.as_mut() {
                    // Stop at the deadline rather than sleep past it for one more tick.
                    if tokio::time::timeout_at(deadline.into(), ticker.tick())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                let key = format!("{prefix}{n}");
                n += 1;
                let sent = Instant::now();
                match client.put(key.as_bytes(), &value).await {
                    Ok(_) => outcome
                        .latencies_ms
                        .push(sent.elapsed().as_secs_f64() * 1000.0),
                    Err(error) => {
                        outcome.errors += 1;
                        if outcome.first_error.is_none() {
                            outcome.first_error = Some(format!("{error:#}"));
                        }
                    }
                }
            }
            outcome
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome.context("a bench client panicked")?;
        latencies.extend(outcome.latencies_ms);
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let create = VerbReport::from_samples(latencies, errors, elapsed);
    let (puts, per_sec) = (create.count, create.per_sec);
    Ok(EtcdBenchReport {
        servers: 1,
        clients: args.clients,
        watchers: 0,
        workload: "create".into(),
        rate_offered: (args.rate > 0.0).then_some(args.rate),
        duration_s: elapsed,
        value_bytes: args.value_bytes,
        ops: puts,
        ops_per_sec: per_sec,
        writes: puts,
        writes_per_sec: per_sec,
        conflicts: 0,
        errors,
        verbs: BTreeMap::from([("create".to_string(), create)]),
        watch: None,
        events_missed: 0,
        events_duplicated: 0,
        events_out_of_order: 0,
        relists: 0,
        connections,
        first_error,
    })
}

fn print_text(report: &EtcdBenchReport) {
    let rate = report
        .rate_offered
        .map(|rate| format!("{rate:.0}/s offered"))
        .unwrap_or_else(|| "full speed".into());
    println!(
        "etcd put: {} clients over {} connections, {rate}, {}-byte values, {:.1} s",
        report.clients, report.connections, report.value_bytes, report.duration_s
    );
    if let Some(create) = report.verbs.get("create") {
        println!(
            "  {} puts, {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; {} errors",
            create.count,
            create.per_sec,
            create.p50_ms,
            create.p90_ms,
            create.p99_ms,
            create.errors
        );
    }
    if let Some(error) = &report.first_error {
        println!("  first error: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_framed_and_an_answer_unframed() {
        let request = PutRequest {
            key: b"/a".to_vec(),
            value: b"b".to_vec(),
            ..PutRequest::default()
        };
        let frame = grpc_frame(&request);
        assert_eq!(frame[0], 0, "uncompressed");
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 5
        );
        // key (field 1, bytes) then value (field 2, bytes), as etcd's rpc.proto numbers them.
        assert_eq!(&frame[5..], &[0x0a, 2, b'/', b'a', 0x12, 1, b'b']);

        let answer = PutResponse {
            header: Some(ResponseHeader {
                revision: 42,
                ..ResponseHeader::default()
            }),
        };
        let decoded =
            PutResponse::decode(grpc_unframe(grpc_frame(&answer)).expect("a whole frame unframes"))
                .expect("decodes");
        assert_eq!(decoded.header.map(|h| h.revision), Some(42));
        assert!(grpc_unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
    }
}
