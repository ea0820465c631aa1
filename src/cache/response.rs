//! Whole responses stored as they are sent: the body, its strong ETag and
//! its gzip and br variants, all made once when the entry is filled. A hit
//! slices the stored bytes (no copy, no JSON decoding, no decompression) and
//! the HTTP layer picks the variant the client accepts.
//!
//! The frame is our own (a few length-prefixed fields behind a marker that
//! no JSON value can start with) because it must be sliced without copying
//! and without a decoding pass; a serde format would copy every field. The
//! [`super::codec`] stores frames raw, never LZ4: their variants are already
//! compressed, and decompressing on every hit is what this module removes.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{Cache, record};
use crate::kv::keys::KeyTemplate;

/// First two bytes of every frame: `0xFF` never starts JSON (nor any UTF-8
/// text), so a frame is told apart from the plain values other families store.
pub const MARKER: [u8; 2] = [0xFF, b'R'];

/// Bodies of at most this many bytes get no compressed variants: the saving
/// is a few bytes and the headers cost more.
pub const COMPRESS_ABOVE: usize = 1024;

/// Bodies larger than this get no compressed variants either: compressing
/// them would hold a blocking thread for a long time and the stored entry
/// would triple. No response of the API comes near it (the largest, a
/// page of 100 properties or the 100 featured ones, is under 600 KiB).
pub const COMPRESS_AT_MOST: usize = 2 * 1024 * 1024;

/// gzip level used at fill time (the zlib default: good ratio, a few ms on
/// the featured list).
const GZIP_LEVEL: u32 = 6;
/// Brotli quality used at fill time: 11 takes about a second on the featured
/// list, 5 a few milliseconds for most of its gain.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;

/// A cached response: what is sent, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// Strong entity tag of the identity body, quoted (`"…"`); the compressed
    /// variants carry it with a suffix (see [`Self::etag_for`]).
    pub etag: Bytes,
    /// The body as is.
    pub identity: Bytes,
    /// The body gzip-compressed, when the body is large enough.
    pub gzip: Option<Bytes>,
    /// The body br-compressed, when the body is large enough.
    pub br: Option<Bytes>,
}

/// A content coding of a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

impl Coding {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }
}

/// The strong tag of `body`: 128 bits of its SHA-256, quoted.
pub fn etag_of(body: &[u8]) -> Bytes {
    let d = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for b in &d[..16] {
        tag.push_str(&format!("{b:02x}"));
    }
    tag.push('"');
    Bytes::from(tag)
}

impl CachedResponse {
    /// Builds the entry for `body`: its tag and, above [`COMPRESS_ABOVE`]
    /// bytes, its gzip and br variants (the only time they are compressed).
    /// Runs on the calling thread: see [`CachedResponse::build_off_thread`]
    /// for the request path.
    pub fn build(body: Bytes) -> anyhow::Result<Self> {
        let etag = etag_of(&body);
        let (gzip, br) = if (COMPRESS_ABOVE + 1..=COMPRESS_AT_MOST).contains(&body.len()) {
            (Some(gzip(&body)?), Some(brotli(&body)?))
        } else {
            (None, None)
        };
        Ok(CachedResponse {
            etag,
            identity: body,
            gzip,
            br,
        })
    }

    /// [`CachedResponse::build`] for the request path: a body that will be
    /// compressed is built on the blocking pool (gzip and br of a large
    /// list take milliseconds, which must not stall an async worker thread
    /// and every request queued on it).
    pub async fn build_off_thread(body: Bytes) -> anyhow::Result<Self> {
        if body.len() <= COMPRESS_ABOVE {
            return Self::build(body);
        }
        tokio::task::spawn_blocking(move || Self::build(body)).await?
    }

    /// An uncompressed response with a given tag (a body that changes per
    /// request, such as a detail with its live view count).
    pub fn identity_only(etag: Bytes, identity: Bytes) -> Self {
        CachedResponse {
            etag,
            identity,
            gzip: None,
            br: None,
        }
    }

    /// The body to send in `coding`, `None` when that variant is not stored.
    pub fn body(&self, coding: Coding) -> Option<&Bytes> {
        match coding {
            Coding::Identity => Some(&self.identity),
            Coding::Gzip => self.gzip.as_ref(),
            Coding::Br => self.br.as_ref(),
        }
    }

    /// The codings stored, best first (br, gzip, identity).
    pub fn codings(&self) -> impl Iterator<Item = Coding> + '_ {
        [Coding::Br, Coding::Gzip, Coding::Identity]
            .into_iter()
            .filter(|c| self.body(*c).is_some())
    }

    /// The strong tag of one variant: a compressed variant is another
    /// representation, so it gets its own tag (`"…-gzip"`, `"…-br"`), as
    /// RFC 9110 asks of strong validators.
    pub fn etag_for(&self, coding: Coding) -> Bytes {
        match coding.header() {
            None => self.etag.clone(),
            Some(suffix) => {
                let inner = &self.etag[..self.etag.len().saturating_sub(1)];
                let mut t = BytesMut::with_capacity(self.etag.len() + suffix.len() + 1);
                t.put_slice(inner);
                t.put_u8(b'-');
                t.put_slice(suffix.as_bytes());
                t.put_u8(b'"');
                t.freeze()
            }
        }
    }

    /// Whether `tag` (opaque part in quotes, as in `If-None-Match`) is the
    /// tag of one of this response's variants.
    pub fn has_tag(&self, tag: &[u8]) -> bool {
        self.codings().any(|c| self.etag_for(c) == tag)
    }

    /// The stored frame: marker, then the tag, the body and both variants,
    /// each with a `u32` big-endian length (`u32::MAX`: absent).
    pub fn encode(&self) -> Bytes {
        let parts = [
            Some(&self.etag),
            Some(&self.identity),
            self.gzip.as_ref(),
            self.br.as_ref(),
        ];
        let len = MARKER.len()
            + parts
                .iter()
                .map(|p| 4 + p.map_or(0, |b| b.len()))
                .sum::<usize>();
        let mut out = BytesMut::with_capacity(len);
        out.put_slice(&MARKER);
        for p in parts {
            match p {
                Some(b) => {
                    out.put_u32(b.len() as u32);
                    out.put_slice(b);
                }
                None => out.put_u32(u32::MAX),
            }
        }
        out.freeze()
    }

    /// The response framed by [`Self::encode`]; every field is a slice of
    /// `stored` (no copy).
    pub fn decode(stored: Bytes) -> anyhow::Result<Self> {
        anyhow::ensure!(stored.starts_with(&MARKER), "not a stored response");
        let mut at = MARKER.len();
        let mut next = || -> anyhow::Result<Option<Bytes>> {
            let len = stored
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .context("truncated stored response")?;
            at += 4;
            if len == u32::MAX {
                return Ok(None);
            }
            let end = at + len as usize;
            anyhow::ensure!(end <= stored.len(), "truncated stored response");
            let part = stored.slice(at..end);
            at = end;
            Ok(Some(part))
        };
        let etag = next()?.context("stored response without a tag")?;
        let identity = next()?.context("stored response without a body")?;
        let gzip = next()?;
        let br = next()?;
        Ok(CachedResponse {
            etag,
            identity,
            gzip,
            br,
        })
    }
}

fn gzip(body: &[u8]) -> anyhow::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(GZIP_LEVEL),
    );
    enc.write_all(body)?;
    Ok(Bytes::from(enc.finish()?))
}

fn brotli(body: &[u8]) -> anyhow::Result<Bytes> {
    let mut out = Vec::with_capacity(body.len() / 4);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, BROTLI_QUALITY, BROTLI_WINDOW);
        w.write_all(body)?;
        w.flush()?;
    }
    Ok(Bytes::from(out))
}

impl Cache {
    /// Cache-aside for a whole response keyed by namespace generations: the
    /// stored [`CachedResponse`], or `compute()`'s body built into one
    /// (tag and compressed variants made here, once) and stored for `ttl`.
    /// An entry that is not a frame (written by an older version of the
    /// service) counts as an error and is answered from a fresh computation.
    pub async fn response_in<F, Fut>(
        &self,
        family: &'static str,
        template: &KeyTemplate,
        ttl: Duration,
        compute: F,
    ) -> anyhow::Result<CachedResponse>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Bytes>>,
    {
        // With a near-cache: fresh generations first (shared round trip),
        // then the entry from process memory when held (see `near`).
        let started = Instant::now();
        let near_key = match self.near() {
            Some(_) => self
                .fresh_generations(template)
                .await
                .map(|g| template.render(&g)),
            None => None,
        };
        if let (Some(near), Some(key)) = (self.near(), &near_key)
            && let Some(hit) = near.get(key).await
        {
            crate::telemetry::observe(
                "cache_latency_seconds",
                &[("family", family)],
                started.elapsed().as_secs_f64(),
            );
            record(self.stats(), family, "near_hit");
            return Ok(hit);
        }
        let mut slot = Some(compute);
        let mut built = None;
        let fill = once(|| build_framed(&mut slot, &mut built));
        let stored = match &near_key {
            Some(key) => self.get_or_compute_bytes(family, key, ttl, fill).await?,
            None => {
                self.get_or_compute_bytes_in(family, template, ttl, fill)
                    .await?
            }
        };
        let response = match built {
            Some(response) => response,
            None => match CachedResponse::decode(stored) {
                Ok(r) => r,
                Err(e) => {
                    record(self.stats(), family, "error");
                    tracing::warn!(family, error = %e, "cached entry is not a stored response; computing");
                    let compute = slot.ok_or(e)?;
                    return CachedResponse::build_off_thread(compute().await?).await;
                }
            },
        };
        if let (Some(near), Some(key)) = (self.near(), near_key) {
            near.insert(key, response.clone(), ttl).await;
        }
        Ok(response)
    }
}

/// Lets the compiler see a closure as `FnOnce` where it is defined (it
/// hands out borrows of what it captured, which only a `FnOnce` may).
fn once<F: FnOnce() -> R, R>(f: F) -> F {
    f
}

/// The miss path's computation: runs `compute` (once), builds the stored
/// response and keeps it in `built`, so the caller that computed does not
/// decode what it just encoded; returns the frame to store.
async fn build_framed<F, Fut>(
    compute: &mut Option<F>,
    built: &mut Option<CachedResponse>,
) -> anyhow::Result<Bytes>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Bytes>>,
{
    let compute = compute
        .take()
        .ok_or_else(|| anyhow::anyhow!("cache computation called twice"))?;
    let response = CachedResponse::build_off_thread(compute().await?).await?;
    let framed = response.encode();
    *built = Some(response);
    Ok(framed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn frames_round_trip_without_copying() -> anyhow::Result<()> {
        let body = Bytes::from("{\"title\":\"Lovely home in Nairobi\"},".repeat(100));
        let r = CachedResponse::build(body.clone())?;
        let stored = r.encode();
        let back = CachedResponse::decode(stored.clone())?;
        assert_eq!(back, r);
        assert_eq!(back.identity, body);
        // The body is a view into the stored frame, not a copy.
        let range = stored.as_ptr() as usize..stored.as_ptr() as usize + stored.len();
        assert!(range.contains(&(back.identity.as_ptr() as usize)));
        // The store's codec keeps frames raw (one header byte, no LZ4), so a
        // hit never decompresses.
        let framed = super::super::codec::encode(&stored);
        assert_eq!(framed.len(), stored.len() + 1);
        assert_eq!(super::super::codec::decode(framed)?, stored);
        Ok(())
    }

    #[test]
    fn variants_decode_to_the_body() -> anyhow::Result<()> {
        let body = Bytes::from("{\"city\":\"Accra\",\"price\":\"85.50\"},".repeat(200));
        let r = CachedResponse::build(body.clone())?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&r.gzip.clone().context("gzip")?[..]).read_to_end(&mut out)?;
        assert_eq!(out, body);
        let mut out = Vec::new();
        brotli::Decompressor::new(&r.br.clone().context("br")?[..], 4096).read_to_end(&mut out)?;
        assert_eq!(out, body);
        assert!(r.br.as_ref().map_or(0, |b| b.len()) < body.len() / 4);
        Ok(())
    }

    #[test]
    fn small_bodies_have_no_variants_and_tags_differ_per_variant() -> anyhow::Result<()> {
        let small = CachedResponse::build(Bytes::from_static(b"{\"id\":1}"))?;
        assert_eq!(small.gzip, None);
        assert_eq!(small.codings().collect::<Vec<_>>(), vec![Coding::Identity]);
        let big = CachedResponse::build(Bytes::from(vec![b'a'; 4096]))?;
        let huge = CachedResponse::build(Bytes::from(vec![b'a'; COMPRESS_AT_MOST + 1]))?;
        assert_eq!(
            (huge.gzip, huge.br),
            (None, None),
            "over the bound: identity only"
        );
        let tags: Vec<_> = big.codings().map(|c| big.etag_for(c)).collect();
        assert_eq!(tags.len(), 3);
        assert!(tags[0] != tags[1] && tags[1] != tags[2]);
        assert!(
            tags.iter()
                .all(|t| t.starts_with(b"\"") && t.ends_with(b"\""))
        );
        assert!(big.has_tag(&tags[0]) && !small.has_tag(&tags[0]));
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CachedResponse::decode(Bytes::from_static(b"{}")).is_err());
        assert!(CachedResponse::decode(Bytes::from_static(&[0xFF, b'R', 0, 0])).is_err());
        assert!(CachedResponse::decode(Bytes::from_static(&[0xFF, b'R', 0, 0, 0, 9, 1])).is_err());
    }
}
