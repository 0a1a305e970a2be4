//! A minimal Marathon for benchmarks: serves a fixed `/v2/apps` body and a `/v2/events` SSE stream
//! fed by the benchmark, and counts `/v2/apps` fetches.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

pub struct FakeMarathon {
    pub addr: SocketAddr,
    pub fetches: Arc<AtomicUsize>,
    events: broadcast::Sender<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeMarathon {
    pub async fn start(apps_body: Bytes) -> FakeMarathon {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fetches = Arc::new(AtomicUsize::new(0));
        let (events, _) = broadcast::channel(4096);
        let (f, ev) = (fetches.clone(), events.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, ev, body) = (f.clone(), ev.clone(), apps_body.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (f, ev, body) = (f.clone(), ev.clone(), body.clone());
                        async move { Ok::<_, Infallible>(route(req, f, ev, body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeMarathon {
            addr,
            fetches,
            events,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends one SSE event to every connected stream.
    pub fn send(&self, event_type: &str, data: &str) {
        let frame = format!("event: {event_type}\ndata: {data}\n\n");
        let _ = self.events.send(Bytes::from(frame));
    }

    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn route(
    req: Request<hyper::body::Incoming>,
    fetches: Arc<AtomicUsize>,
    events: broadcast::Sender<Bytes>,
    apps: Bytes,
) -> Response<BoxBody<Bytes, Infallible>> {
    match req.uri().path() {
        "/v2/apps" => {
            fetches.fetch_add(1, Ordering::Relaxed);
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(apps).boxed())
                .expect("response")
        }
        "/v2/events" => {
            let rx = events.subscribe();
            let hello = Bytes::from_static(b"event: event_stream_attached\ndata: {\"eventType\":\"event_stream_attached\",\"remoteAddress\":\"127.0.0.1\"}\n\n");
            let stream =
                futures_util::stream::unfold((Some(hello), rx), |(first, mut rx)| async move {
                    if let Some(b) = first {
                        return Some((Ok::<_, Infallible>(Frame::data(b)), (None, rx)));
                    }
                    loop {
                        match rx.recv().await {
                            Ok(b) => return Some((Ok(Frame::data(b)), (None, rx))),
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(stream).boxed())
                .expect("response")
        }
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()).boxed())
            .expect("response"),
    }
}
