//! Forward-mode benchmark: the added latency of agentd's model proxy.
//! One run measures, against the same scripted upstream on loopback (a
//! bare hyper server answering a fixed Chat Completions body):
//! - a non-streamed request straight to the upstream (the floor) and
//!   through the proxy's Unix socket (p50/p99, interleaved);
//! - time to the first byte of a stream, straight and proxied;
//! - proxied requests per second with 8 clients.
//!
//! The proxy runs in-process with a real gateway (no audit log) and
//! decides the answer's tool call (no active message: a denial, recorded
//! nowhere, so only the decision path is timed). `--quick` for a smoke run.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::api::{forward_routes, serve_limited, Access, ConnLimits, Listener};
use agentd::config::ForwardConfig;
use agentd::forward::proxy::Proxy;
use agentd::gateway::{Gateway, Settings};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const WHOLE: &str = r#"{"id":"chatcmpl-b","object":"chat.completion","created":1,"model":"gpt-b","choices":[{"index":0,"message":{"role":"assistant","content":"hello there","tool_calls":[{"id":"call_b","type":"function","function":{"name":"exec_command","arguments":"{\"cmd\":\"ls -l\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;

fn stream_body() -> String {
    let mut s = String::new();
    for i in 0..20 {
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str("data: [DONE]\n\n");
    s
}

async fn upstream(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stream = body.windows(14).any(|w| w == b"\"stream\":true");
    let (ct, b) = if stream {
        ("text/event-stream", stream_body())
    } else {
        ("application/json", WHOLE.to_string())
    };
    Ok(Response::builder()
        .header("content-type", ct)
        .body(Full::new(Bytes::from(b)))
        .unwrap())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect_tcp(port: u16) -> Sender {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn connect_unix(path: &std::path::Path) -> Sender {
    let s = tokio::net::UnixStream::connect(path).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn request(stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-b","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post("/v1/chat/completions")
        .header("host", "x")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// One request; returns (time to the first body byte, time to the end).
async fn once(tx: &mut Sender, stream: bool) -> (Duration, Duration) {
    tx.ready().await.unwrap();
    let t = Instant::now();
    let resp = tx.send_request(request(stream)).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if first.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(t.elapsed());
        }
    }
    (first.unwrap_or_else(|| t.elapsed()), t.elapsed())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 300 } else { 3000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        // The upstream.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = tcp.accept().await.unwrap();
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), hyper::service::service_fn(upstream))
                        .await;
                });
            }
        });
        // The proxy, in-process, with a real gateway.
        let gw = Arc::new(
            Gateway::open(
                dir.path(),
                Settings {
                    timestamp_window_secs: 60,
                    nonce_ttl_secs: 600,
                    active_message_ttl_secs: 900,
                    session_ttl_secs: 0,
                    unverified_per_minute: 0,
                },
                None,
            )
            .unwrap(),
        );
        let mut cfg = ForwardConfig::default();
        cfg.openai.url = format!("http://127.0.0.1:{port}");
        let proxy = Arc::new(Proxy::new(gw, &cfg, false).unwrap());
        let sock = dir.path().join("model.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_limited(
            Listener::Unix(listener),
            forward_routes::routes(proxy, Access::resolve("agentd-admin", "agentd-agent")),
            stop_rx,
            Duration::from_millis(100),
            ConnLimits::default(),
        ));

        let mut direct = connect_tcp(port).await;
        let mut proxied = connect_unix(&sock).await;
        for _ in 0..50 {
            once(&mut direct, false).await;
            once(&mut proxied, false).await;
        }
        let (mut d, mut p, mut dt, mut pt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            d.push(once(&mut direct, false).await.1.as_secs_f64() * 1e6);
            p.push(once(&mut proxied, false).await.1.as_secs_f64() * 1e6);
            dt.push(once(&mut direct, true).await.0.as_secs_f64() * 1e6);
            pt.push(once(&mut proxied, true).await.0.as_secs_f64() * 1e6);
        }
        // Throughput: 8 clients, each its own connection, proxied.
        let window = Duration::from_secs(if quick { 1 } else { 3 });
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let sock = sock.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = connect_unix(&sock).await;
                let mut k = 0u64;
                while t0.elapsed() < window {
                    once(&mut c, false).await;
                    k += 1;
                }
                k
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let rps = total as f64 / t0.elapsed().as_secs_f64();

        let (d50, d99, p50, p99) = (
            pct(&mut d, 0.5),
            pct(&mut d, 0.99),
            pct(&mut p, 0.5),
            pct(&mut p, 0.99),
        );
        let (dt50, pt50, dt99, pt99) = (
            pct(&mut dt, 0.5),
            pct(&mut pt, 0.5),
            pct(&mut dt, 0.99),
            pct(&mut pt, 0.99),
        );
        println!("forward proxy, {n} requests each, interleaved (µs)");
        println!("{:<58} {:>9} {:>9}", "measurement", "p50", "p99");
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "direct to the upstream, whole answer (floor)", d50, d99
        );
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "through agentd (decides 1 tool call), whole answer", p50, p99
        );
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "added by agentd",
            p50 - d50,
            p99 - d99
        );
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "direct, time to first byte of a stream (floor)", dt50, dt99
        );
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "through agentd, time to first byte of a stream", pt50, pt99
        );
        println!(
            "{:<58} {:>9.1} {:>9.1}",
            "added to the first byte",
            pt50 - dt50,
            pt99 - dt99
        );
        println!("through agentd, 8 clients: {rps:.0} requests/s");
        println!(
            "target: ≤ 1000 µs added at p50: {}",
            if p50 - d50 <= 1000.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    });
}
