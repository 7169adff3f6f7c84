//! Lingering close for HTTP connections.
//!
//! A server that answers before it has read the whole request (413 on an oversized body, 403 on
//! a refused upload) and then closes leaves the client's unsent or unread bytes in its receive
//! queue. Closing a socket with unread data makes the kernel reset the connection (TCP RST; on
//! Unix sockets the peer's next read fails with `ECONNRESET`), and the reset can discard the
//! answer before the client reads it: the client sees "connection reset" instead of the error
//! that says what was wrong. Web servers solve this with a lingering close (nginx's
//! `lingering_close`): shut the write side, then read and discard what the client still sends
//! for a bounded time and volume, then close. [`Lingering`] does this in `poll_shutdown`, which
//! hyper calls when it ends a connection.
//!
//! The other half is saying so: RFC 9110 §15 asks a server that answers before reading the whole
//! request content to say whether it will close the connection. A client that sent
//! `Expect: 100-continue` and got a final answer instead (botocore does this for every PUT) does
//! not send the content and reuses the connection unless told otherwise; hyper, draining the
//! content it announced, then takes the first bytes of the *next* request as that content (seen
//! as `UT /bucket/key` failing its signature). [`track`] notices a request whose content was not
//! read to its end and [`BodyEnd::close_if_unread`] marks the answer `Connection: close`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closing connection keeps reading what the client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much a closing connection reads and discards at most.
pub const LINGER_BYTES: u64 = 16 << 20;

/// An I/O stream whose shutdown drains the peer before it completes (see the module docs).
#[derive(Debug)]
pub struct Lingering<I> {
    inner: I,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// Write side shut; reading until EOF, the byte budget or the deadline.
    Draining {
        deadline: Pin<Box<tokio::time::Sleep>>,
        left: u64,
    },
    Closed,
}

impl<I> Lingering<I> {
    /// Wraps a connection.
    pub const fn new(inner: I) -> Self {
        Self {
            inner,
            state: State::Open,
        }
    }

    /// The wrapped connection.
    pub const fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    let r = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    if r.is_err() {
                        this.state = State::Closed;
                        return Poll::Ready(r);
                    }
                    this.state = State::Draining {
                        deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        left: LINGER_BYTES,
                    };
                }
                State::Draining { deadline, left } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            let n = buf.filled().len() as u64;
                            *left = left.saturating_sub(n);
                            if *left == 0 {
                                this.state = State::Closed;
                            }
                        }
                        // EOF or an error: the client is gone; nothing left to protect.
                        _ => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Whether a request's content was read to its end (see [`track`]).
#[derive(Debug, Clone)]
pub struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    /// Marks an HTTP/1 answer `Connection: close` when the request content was not read to its
    /// end, so that neither the client nor hyper reuses a connection whose framing is unknown.
    pub fn close_if_unread<T>(&self, version: http::Version, resp: &mut http::Response<T>) {
        if version < http::Version::HTTP_2 && !self.0.load(Ordering::Acquire) {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
}

/// A request body that records when it has been read to its end.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    end: Arc<AtomicBool>,
}

/// Wraps a request body so that [`BodyEnd`] can tell whether it was read to its end.
pub fn track<B: Body>(body: B) -> (TrackedBody<B>, BodyEnd) {
    let end = Arc::new(AtomicBool::new(body.is_end_stream()));
    (
        TrackedBody {
            inner: body,
            end: Arc::clone(&end),
        },
        BodyEnd(end),
    )
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.end.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The scenario that loses answers without lingering: the server answers and closes while
    /// the client is still sending; the client must still read the whole answer.
    #[tokio::test]
    async fn answer_survives_unread_request_bytes() {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let (mut cr, mut cw) = client.into_split();
        let server = tokio::spawn(async move {
            let mut s = Lingering::new(server);
            let mut first = [0u8; 16];
            s.read_exact(&mut first).await.unwrap();
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n")
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        });
        let sender = tokio::spawn(async move {
            // 4 MiB: far more than the socket buffers hold, so most of it arrives after the
            // server has answered.
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..64 {
                if cw.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut answer = Vec::new();
        cr.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 413"));
        server.await.unwrap();
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn draining_is_bounded_in_time() {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let mut s = Lingering::new(server);
        // The client never sends and never closes: shutdown ends at the deadline.
        let t0 = tokio::time::Instant::now();
        s.shutdown().await.unwrap();
        assert!(t0.elapsed() >= LINGER_TIME);
        drop(client);
    }

    #[tokio::test]
    async fn draining_is_bounded_in_volume() {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let (_cr, mut cw) = client.into_split();
        let sender = tokio::spawn(async move {
            let chunk = vec![0u8; 64 << 10];
            let mut sent = 0u64;
            while cw.write_all(&chunk).await.is_ok() {
                sent += chunk.len() as u64;
                assert!(sent <= 2 * LINGER_BYTES, "drain read past its budget");
            }
        });
        let mut s = Lingering::new(server);
        s.shutdown().await.unwrap();
        drop(s);
        sender.await.unwrap();
    }
}
