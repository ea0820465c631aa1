//! HTTP caching of stored responses ([`CachedResponse`]): content-coding
//! negotiation among the variants made at fill time, the strong `ETag` and
//! `If-None-Match` → 304, `Cache-Control` and `Vary`.
//!
//! Why `max-age=0, must-revalidate` and not a longer max-age: `API.md`
//! promises that no read starting after a write's response sees the old
//! values, and that every detail call counts a view. A client or CDN
//! serving from its own copy for N seconds would break both, so copies may
//! be kept but are revalidated on every use, which the ETag makes cheap (a
//! 304 without a body). A longer lifetime is one constant here, once the
//! contract allows that staleness.
//!
//! The two header parsers are hand-written (a few lines each) rather than a
//! typed-header crate: this is the only place that needs them, and they only
//! decide between variants we already hold, so a misparse can at worst send
//! a full 200 instead of a 304 or identity instead of br.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cache::response::{CachedResponse, Coding};

/// `Cache-Control` of answers that are the same for everybody (lists,
/// featured, details): shared caches may keep them, revalidating each time.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";
/// `Cache-Control` of per-user answers (dashboard): only the user's own
/// browser may keep them, revalidating each time.
pub const PRIVATE_CACHE_CONTROL: &str = "private, max-age=0, must-revalidate";

/// Who an answer is for, which decides `Cache-Control` and `Vary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The same bytes for every caller: `Vary: Accept-Encoding`.
    Public,
    /// Depends on the session cookie: `Vary: Cookie, Accept-Encoding`.
    Private,
}

impl Audience {
    fn cache_control(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Audience::Public => PUBLIC_CACHE_CONTROL,
            Audience::Private => PRIVATE_CACHE_CONTROL,
        })
    }

    fn vary(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Audience::Public => "Accept-Encoding",
            Audience::Private => "Cookie, Accept-Encoding",
        })
    }
}

/// The request headers a stored answer depends on (`Accept-Encoding`,
/// `If-None-Match`), taken from the request without copying the rest of
/// its headers (axum's `HeaderMap` extractor clones them all).
#[derive(Debug, Default)]
pub struct Conditional(HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for Conditional {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut kept = HeaderMap::new();
        for name in [header::ACCEPT_ENCODING, header::IF_NONE_MATCH] {
            for value in parts.headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Ok(Conditional(kept))
    }
}

/// The answer to a GET from a stored response: 304 without a body when the
/// client's `If-None-Match` names one of its tags, otherwise 200 with the
/// best variant the client accepts (br, then gzip, then identity).
pub fn respond(request: &Conditional, entry: &CachedResponse, audience: Audience) -> Response {
    let request = &request.0;
    let coding = negotiate(request, entry);
    let tag = entry.etag_for(coding);
    let mut response = if not_modified(request, entry) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = entry.body(coding).cloned().unwrap_or_default();
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(enc) = coding.header() {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        r
    };
    let h = response.headers_mut();
    // Room for these and the rate-limit and request-id headers added on
    // the way out, so the map is allocated once, not grown and rehashed.
    h.reserve(12);
    if let Ok(tag) = HeaderValue::from_maybe_shared(tag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(header::CACHE_CONTROL, audience.cache_control());
    h.insert(header::VARY, audience.vary());
    response
}

/// The variant to send: the best stored one whose coding the client's
/// `Accept-Encoding` allows (`q=0` forbids; other weights are not ranked,
/// since br is smaller than gzip for every body we store).
fn negotiate(request: &HeaderMap, entry: &CachedResponse) -> Coding {
    // Most answers have no variant to choose from (small bodies): then the
    // header is not even read.
    if entry.codings().nth(1).is_none() {
        return Coding::Identity;
    }
    let accepted = || {
        request
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let coding = parts.next()?.trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .filter_map(|q| q.trim().parse::<f32>().ok())
                    .next()
                    .unwrap_or(1.0);
                (!coding.is_empty()).then_some((coding, q > 0.0))
            })
    };
    let allows = |name: &str| {
        accepted()
            .find(|(c, _)| c.eq_ignore_ascii_case(name))
            .or_else(|| accepted().find(|(c, _)| *c == "*"))
            .is_some_and(|(_, ok)| ok)
    };
    entry
        .codings()
        .find(|c| c.header().is_none_or(allows))
        .unwrap_or(Coding::Identity)
}

/// Whether `If-None-Match` names a tag of `entry` (weak comparison, as RFC
/// 9110 prescribes for this header) or is `*`.
fn not_modified(request: &HeaderMap, entry: &CachedResponse) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .any(|t| t == b"*" || entry.has_tag(t.strip_prefix(b"W/").unwrap_or(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.append(k.clone(), v);
            }
        }
        h
    }

    fn big() -> anyhow::Result<CachedResponse> {
        CachedResponse::build(Bytes::from("{\"a\":\"b\"},".repeat(300)))
    }

    #[test]
    fn negotiation_picks_the_best_accepted_variant() -> anyhow::Result<()> {
        let e = big()?;
        let ae = |v: &str| negotiate(&headers(&[(header::ACCEPT_ENCODING, v)]), &e);
        assert_eq!(negotiate(&HeaderMap::new(), &e), Coding::Identity);
        assert_eq!(ae("gzip, deflate, br"), Coding::Br);
        assert_eq!(ae("gzip"), Coding::Gzip);
        assert_eq!(ae("br;q=0, gzip;q=0.5"), Coding::Gzip);
        assert_eq!(ae("*"), Coding::Br);
        assert_eq!(ae("*;q=0"), Coding::Identity);
        assert_eq!(ae("deflate"), Coding::Identity);
        let small = CachedResponse::build(Bytes::from_static(b"{}"))?;
        assert_eq!(
            negotiate(&headers(&[(header::ACCEPT_ENCODING, "br")]), &small),
            Coding::Identity
        );
        Ok(())
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() -> anyhow::Result<()> {
        let e = big()?;
        let tag = String::from_utf8(e.etag_for(Coding::Gzip).to_vec())?;
        let inm = |v: &str| not_modified(&headers(&[(header::IF_NONE_MATCH, v)]), &e);
        assert!(inm(&tag));
        assert!(inm(&format!("\"x\", W/{tag}")));
        assert!(inm("*"));
        assert!(!inm("\"x\""));
        assert!(!not_modified(&HeaderMap::new(), &e));
        Ok(())
    }
}
