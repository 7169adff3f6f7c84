//! [`ObjectBody`]: the blocking reader a store gets for PUT and UploadPart data.
//!
//! The S3 layer pumps the HTTP body into a bounded channel from an async task; the store reads
//! it on a blocking thread. The body enforces the request's limits while it is read, so a store
//! never has to trust the client:
//! - more bytes than the limit (max object/part size) -> error `TooLarge`,
//! - fewer or more bytes than `Content-Length` -> error `Truncated`,
//! - Content-MD5 mismatch -> error `BadDigest`, reported instead of end-of-file,
//! - the client disconnects or stalls longer than the idle timeout -> error `Client`/`Timeout`.
//!
//! Every failure is an `Err` from `read`, so a store that commits only after `Ok(0)` can never
//! commit bad data. The verdict is also kept in a shared slot the S3 layer reads to report the
//! right S3 error whatever the store turned the I/O error into.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use md5::{Digest, Md5};

use crate::store::ObjectStoreError;

/// Why reading an object body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body ended before (or ran past) the announced length.
    #[error("request body has {received} bytes but Content-Length announced {expected}")]
    Truncated {
        /// Announced length.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The body is larger than allowed.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Content-MD5 does not match.
    #[error("Content-MD5 does not match the received data")]
    BadDigest,
    /// No data arrived for longer than the idle timeout.
    #[error("request body stalled for more than {secs} s")]
    Timeout {
        /// The timeout in seconds.
        secs: u64,
    },
    /// The client connection failed or the stream reported an error.
    #[error("reading the request body failed: {detail}")]
    Client {
        /// What happened.
        detail: String,
    },
}

impl BodyError {
    /// The body verdict inside an I/O error produced by [`ObjectBody`], if that is what it is.
    #[must_use]
    pub fn from_io(e: &io::Error) -> Option<Self> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Self>())
            .cloned()
    }

    fn to_io(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.clone())
    }
}

impl From<BodyError> for ObjectStoreError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Truncated { .. } | BodyError::Client { .. } | BodyError::Timeout { .. } => {
                Self::IncompleteBody {
                    detail: e.to_string(),
                }
            }
            BodyError::TooLarge { limit } => Self::EntityTooLarge {
                size: limit.saturating_add(1),
                max: limit,
            },
            BodyError::BadDigest => Self::BadDigest,
        }
    }
}

/// Size and MD5 of a body that was read completely and passed all checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    /// Bytes read.
    pub size: u64,
    /// MD5 of the bytes.
    pub md5: [u8; 16],
}

impl BodyDigest {
    /// The MD5 as lower-case hex: the S3 ETag of a single-part object.
    #[must_use]
    pub fn etag(&self) -> String {
        crate::parse::hex(&self.md5)
    }
}

/// Limits and checks for one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Exact length announced by the client (`Content-Length` or decoded length), if any.
    pub expected_len: Option<u64>,
    /// Hard upper bound.
    pub max_len: u64,
    /// Expected MD5 (`Content-MD5`).
    pub content_md5: Option<[u8; 16]>,
}

impl BodyLimits {
    /// Only a size bound.
    #[must_use]
    pub fn max(max_len: u64) -> Self {
        Self {
            expected_len: None,
            max_len,
            content_md5: None,
        }
    }
}

/// A chunk sent from the async side.
pub(crate) type BodyChunk = Result<Bytes, BodyError>;

enum Source {
    Channel(tokio::sync::mpsc::Receiver<BodyChunk>),
    Reader(Box<dyn Read + Send>),
}

enum State {
    Reading,
    Done(BodyDigest),
    Failed(BodyError),
}

/// Shared slot holding the body's failure, readable after the body moved into the store call.
#[derive(Debug, Clone, Default)]
pub struct BodyVerdict(Arc<Mutex<Option<BodyError>>>);

impl BodyVerdict {
    /// The failure, if the body failed.
    #[must_use]
    pub fn failure(&self) -> Option<BodyError> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn set(&self, e: &BodyError) {
        if let Ok(mut g) = self.0.lock()
            && g.is_none()
        {
            *g = Some(e.clone());
        }
    }
}

/// The data of a PUT or UploadPart, read by the store with [`Read`]. See the module docs.
pub struct ObjectBody {
    source: Source,
    current: Bytes,
    received: u64,
    limits: BodyLimits,
    md5: Md5,
    state: State,
    verdict: BodyVerdict,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("received", &self.received)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Chunk size used when a body wraps a plain reader.
const READER_CHUNK: usize = 256 * 1024;

impl ObjectBody {
    /// A body fed by a channel from the async side (the S3 layer's bridge).
    pub(crate) fn from_channel(
        rx: tokio::sync::mpsc::Receiver<BodyChunk>,
        limits: BodyLimits,
    ) -> Self {
        Self::new(Source::Channel(rx), limits)
    }

    /// A body that reads from any reader (server-side copies, tests, benchmarks).
    #[must_use]
    pub fn from_reader(reader: Box<dyn Read + Send>, limits: BodyLimits) -> Self {
        Self::new(Source::Reader(reader), limits)
    }

    /// A body over bytes in memory.
    #[must_use]
    pub fn from_bytes(data: Bytes, limits: BodyLimits) -> Self {
        Self::from_reader(Box::new(io::Cursor::new(data)), limits)
    }

    fn new(source: Source, limits: BodyLimits) -> Self {
        Self {
            source,
            current: Bytes::new(),
            received: 0,
            limits,
            md5: Md5::new(),
            state: State::Reading,
            verdict: BodyVerdict::default(),
        }
    }

    /// The limits this body enforces.
    #[must_use]
    pub fn limits(&self) -> BodyLimits {
        self.limits
    }

    /// Size and MD5, available once `read` returned `Ok(0)`.
    #[must_use]
    pub fn digest(&self) -> Option<BodyDigest> {
        match self.state {
            State::Done(d) => Some(d),
            _ => None,
        }
    }

    /// Handle to this body's failure slot.
    #[must_use]
    pub fn verdict(&self) -> BodyVerdict {
        self.verdict.clone()
    }

    /// Reads the next chunk from the source: `Ok(None)` at end of stream.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match &mut self.source {
            // Runs on a blocking-pool thread: blocking_recv is the documented way there.
            Source::Channel(rx) => rx.blocking_recv().transpose(),
            Source::Reader(r) => {
                let mut buf = vec![0u8; READER_CHUNK];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => return Ok(None),
                        Ok(n) => {
                            buf.truncate(n);
                            return Ok(Some(Bytes::from(buf)));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(BodyError::from_io(&e).unwrap_or(BodyError::Client {
                                detail: e.to_string(),
                            }));
                        }
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: BodyError) -> io::Error {
        self.verdict.set(&e);
        let io = e.to_io();
        self.state = State::Failed(e);
        self.current = Bytes::new();
        // Dropping the receiver tells the pump to stop sending.
        self.source = Source::Reader(Box::new(io::empty()));
        io
    }

    fn finish(&mut self) -> io::Result<usize> {
        if let Some(expected) = self.limits.expected_len
            && expected != self.received
        {
            return Err(self.fail(BodyError::Truncated {
                expected,
                received: self.received,
            }));
        }
        let out = std::mem::take(&mut self.md5).finalize();
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&out);
        if let Some(want) = self.limits.content_md5
            && want != md5
        {
            return Err(self.fail(BodyError::BadDigest));
        }
        self.state = State::Done(BodyDigest {
            size: self.received,
            md5,
        });
        Ok(0)
    }
}

impl Read for ObjectBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Done(_) => return Ok(0),
            State::Failed(e) => return Err(e.to_io()),
            State::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Bounded: every iteration either returns or consumes one non-empty chunk or ends.
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                return Ok(n);
            }
            match self.next_chunk() {
                Ok(Some(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                    self.received = self.received.saturating_add(len);
                    if self.received > self.limits.max_len {
                        return Err(self.fail(BodyError::TooLarge {
                            limit: self.limits.max_len,
                        }));
                    }
                    if let Some(expected) = self.limits.expected_len
                        && self.received > expected
                    {
                        return Err(self.fail(BodyError::Truncated {
                            expected,
                            received: self.received,
                        }));
                    }
                    self.md5.update(&chunk);
                    self.current = chunk;
                }
                Ok(None) => return self.finish(),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> [u8; 16] {
        let out = Md5::digest(data);
        let mut a = [0u8; 16];
        a.copy_from_slice(&out);
        a
    }

    fn read_all(b: &mut ObjectBody) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        b.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn good_body_gives_digest() {
        let data = Bytes::from_static(b"hello world");
        let mut b = ObjectBody::from_bytes(
            data.clone(),
            BodyLimits {
                expected_len: Some(11),
                max_len: 100,
                content_md5: Some(md5_of(&data)),
            },
        );
        assert_eq!(read_all(&mut b).unwrap_or_default(), data.to_vec());
        let d = b.digest();
        assert_eq!(d.map(|d| d.size), Some(11));
        assert_eq!(
            d.map(|d| d.etag()).as_deref(),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert!(b.verdict().failure().is_none());
    }

    #[test]
    fn short_body_is_truncated() {
        let mut b = ObjectBody::from_bytes(
            Bytes::from_static(b"abc"),
            BodyLimits {
                expected_len: Some(10),
                max_len: 100,
                content_md5: None,
            },
        );
        let e = read_all(&mut b).err();
        assert!(e.is_some());
        assert_eq!(
            b.verdict().failure(),
            Some(BodyError::Truncated {
                expected: 10,
                received: 3
            })
        );
        assert!(b.digest().is_none());
    }

    #[test]
    fn long_body_is_rejected() {
        let mut b = ObjectBody::from_bytes(Bytes::from(vec![0u8; 1000]), BodyLimits::max(999));
        assert!(read_all(&mut b).is_err());
        assert_eq!(
            b.verdict().failure(),
            Some(BodyError::TooLarge { limit: 999 })
        );
        // The error maps to EntityTooLarge for the store.
        let e: ObjectStoreError = read_all(&mut b)
            .err()
            .map(ObjectStoreError::from)
            .unwrap_or(ObjectStoreError::BadDigest);
        assert!(matches!(
            e,
            ObjectStoreError::EntityTooLarge { max: 999, .. }
        ));
    }

    #[test]
    fn wrong_md5_is_bad_digest() {
        let mut b = ObjectBody::from_bytes(
            Bytes::from_static(b"data"),
            BodyLimits {
                expected_len: Some(4),
                max_len: 100,
                content_md5: Some([0; 16]),
            },
        );
        let e = read_all(&mut b).err().map(ObjectStoreError::from);
        assert_eq!(e, Some(ObjectStoreError::BadDigest));
        assert!(b.digest().is_none());
    }

    #[test]
    fn channel_body_reads_chunks_and_errors() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let h = std::thread::spawn(move || {
            let _ = tx.blocking_send(Ok(Bytes::from_static(b"ab")));
            let _ = tx.blocking_send(Ok(Bytes::from_static(b"cd")));
            let _ = tx.blocking_send(Err(BodyError::Client {
                detail: "gone".into(),
            }));
        });
        let mut b = ObjectBody::from_channel(rx, BodyLimits::max(100));
        let r = read_all(&mut b);
        assert!(r.is_err());
        assert!(matches!(
            b.verdict().failure(),
            Some(BodyError::Client { .. })
        ));
        let _ = h.join();
    }
}
