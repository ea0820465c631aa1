//! The query of the public property list: its parameters as sent, their
//! validation (400 for what does not fit), the canonical text the cached
//! response is keyed by, and the opaque cursor that continues a list at
//! any depth for the cost of one page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::db::properties::{Position, PropertyFilter};
use time::OffsetDateTime;

use crate::domain::{Money, StayDates, check_text};
use crate::error::{ApiError, FieldErrors};

/// Deepest row a page number may reach (`page × page_size`): an offset
/// reads every row before it, so deeper pages go by cursor (API.md).
pub const MAX_PAGE_DEPTH: u64 = 10_000;

/// Query of the public list, as sent.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1; `page × page_size` at most 10000 (deeper: `cursor`).
    #[param(minimum = 1, maximum = 10000, nullable = false)]
    pub page: Option<u32>,
    /// Results per page (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub page_size: Option<u32>,
    /// City, any case.
    #[param(min_length = 1, max_length = 100, nullable = false)]
    pub city: Option<String>,
    /// Country, any case.
    #[param(min_length = 1, max_length = 100, nullable = false)]
    pub country: Option<String>,
    /// Lowest price per night, a decimal string (`"50.00"`).
    #[param(pattern = "^[0-9]{1,12}\\.[0-9]{2}$", nullable = false)]
    pub min_price: Option<String>,
    /// Highest price per night, a decimal string (`"150.00"`).
    #[param(pattern = "^[0-9]{1,12}\\.[0-9]{2}$", nullable = false)]
    pub max_price: Option<String>,
    /// Guests the property must take.
    #[param(minimum = 1, maximum = 50, nullable = false)]
    pub guests: Option<i32>,
    /// First night of a stay the property must be free for (no confirmed
    /// booking overlaps it): `YYYY-MM-DD`, today or later, with `check_out`.
    #[param(format = Date, nullable = false, example = "2030-01-10")]
    pub check_in: Option<String>,
    /// Day of departure of that stay: after `check_in`, at most 90 nights
    /// later. A search with dates may lag bookings by up to 30 seconds.
    #[param(format = Date, nullable = false, example = "2030-01-14")]
    pub check_out: Option<String>,
    /// The `next_cursor` of the previous page, sent with the same filters
    /// instead of `page`: the next page in id order, at any depth.
    #[param(min_length = 1, max_length = 64, nullable = false)]
    pub cursor: Option<String>,
}

/// A validated list query and its canonical form (the cache key part), so
/// that parameter order, case of city/country and defaults do not matter.
#[derive(Debug)]
pub struct NormalizedList {
    pub filter: PropertyFilter,
    /// The page number shown (with a cursor: the one it continues to).
    pub page: u32,
    pub page_size: u32,
    pub position: Position,
    pub canonical: String,
    /// Identifies the filters: a cursor carries it, so one made for
    /// another query is refused.
    filter_tag: [u8; 8],
}

impl ListQuery {
    /// Validates the query (a 400 naming the bad parameter) and fills in defaults.
    pub fn normalize(self) -> Result<NormalizedList, ApiError> {
        let bad = |m: &str| ApiError::InvalidRequest(m.to_owned());
        let page_size = self.page_size.unwrap_or(20);
        if !(1..=100).contains(&page_size) {
            return Err(bad("page_size must be between 1 and 100"));
        }
        let text = |v: Option<String>, name: &str| -> Result<Option<String>, ApiError> {
            match v.map(|s| s.trim().to_lowercase()) {
                Some(s) if check_text(&s, 1, 100).is_err() => Err(bad(&format!(
                    "{name} must be 1 to 100 characters, without control characters"
                ))),
                other => Ok(other),
            }
        };
        let money = |v: Option<String>, name: &str| -> Result<Option<Money>, ApiError> {
            v.map(|s| {
                Money::parse(&s).map_err(|_| bad(&format!("{name} must be a decimal like 85.50")))
            })
            .transpose()
        };
        let filter = PropertyFilter {
            city: text(self.city, "city")?,
            country: text(self.country, "country")?,
            min_price: money(self.min_price, "min_price")?,
            max_price: money(self.max_price, "max_price")?,
            guests: self.guests,
            stay: None,
        };
        if filter.guests.is_some_and(|g| !(1..=50).contains(&g)) {
            return Err(bad("guests must be between 1 and 50"));
        }
        let filter = PropertyFilter {
            stay: stay(self.check_in, self.check_out)?,
            ..filter
        };
        let filters = serde_json::to_string(&(
            &filter.city,
            &filter.country,
            filter.min_price.map(|m| m.cents()),
            filter.max_price.map(|m| m.cents()),
            filter.guests,
            filter
                .stay
                .map(|s| (s.check_in().to_string(), s.check_out().to_string())),
        ))
        .map_err(|e| ApiError::Internal(e.into()))?;
        let filter_tag = tag_of(&filters);
        let (page, position) = match (self.page, self.cursor) {
            (Some(_), Some(_)) => return Err(bad("send either page or cursor, not both")),
            (page, None) => {
                let page = page.unwrap_or(1);
                if page == 0 {
                    return Err(bad("page must be 1 or more"));
                }
                if u64::from(page) * u64::from(page_size) > MAX_PAGE_DEPTH {
                    return Err(bad(&format!(
                        "page × page_size must be at most {MAX_PAGE_DEPTH}: \
                         for deeper pages send cursor (each page's next_cursor)"
                    )));
                }
                let offset = i64::from(page - 1) * i64::from(page_size);
                (page, Position::Offset(offset))
            }
            (None, Some(text)) => {
                let cursor = Cursor::decode(&text).ok_or_else(|| {
                    bad("cursor is not one this list gave (send a next_cursor as it came)")
                })?;
                if cursor.filter_tag != filter_tag {
                    return Err(bad(
                        "cursor belongs to a query with other filters: send it with the \
                         filters of the page that gave it",
                    ));
                }
                (cursor.page, Position::After(cursor.last_id))
            }
        };
        // The page number and the position go into the key: two cursors
        // reaching the same id from different pages show different numbers.
        let (offset, after) = match position {
            Position::Offset(o) => (Some(o), None),
            Position::After(id) => (None, Some(id)),
        };
        let canonical = serde_json::to_string(&(page, page_size, offset, after, &filters))
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(NormalizedList {
            filter,
            page,
            page_size,
            position,
            canonical,
            filter_tag,
        })
    }
}

/// The stay a search asks for: both dates or neither, under the booking
/// rules (422 naming the field at fault, as a booking would be refused).
fn stay(
    check_in: Option<String>,
    check_out: Option<String>,
) -> Result<Option<StayDates>, ApiError> {
    let (check_in, check_out) = match (check_in, check_out) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(ApiError::field("check_out", "is required with check_in")),
        (None, Some(_)) => return Err(ApiError::field("check_in", "is required with check_out")),
        (Some(i), Some(o)) => (i, o),
    };
    let today = OffsetDateTime::now_utc().date();
    StayDates::parse(&check_in, &check_out, today)
        .map(Some)
        .map_err(|broken| {
            ApiError::Validation(
                broken
                    .into_iter()
                    .map(|(field, m)| (field.to_owned(), m))
                    .collect::<FieldErrors>(),
            )
        })
}

impl NormalizedList {
    /// True for a search by dates, whose answer changes with bookings.
    pub fn has_dates(&self) -> bool {
        self.filter.stay.is_some()
    }

    /// The cursor of the page after this one, whose last result is `last_id`.
    pub fn next_cursor(&self, last_id: i64) -> String {
        Cursor {
            last_id,
            page: self.page.saturating_add(1),
            filter_tag: self.filter_tag,
        }
        .encode()
    }
}

/// The first 8 bytes of the SHA-256 of the canonical filters: enough to
/// tell one query's cursors from another's (not a secret: a client that
/// forges a cursor only chooses where its own list starts).
fn tag_of(filters: &str) -> [u8; 8] {
    let digest = Sha256::digest(filters.as_bytes());
    let mut tag = [0; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

/// What a cursor holds: where the next page starts, its number, and the
/// filters it belongs to. Sent as base64url of a versioned byte layout, so
/// clients treat it as opaque and a later layout can be told apart.
#[derive(Debug, PartialEq, Eq)]
struct Cursor {
    last_id: i64,
    page: u32,
    filter_tag: [u8; 8],
}

/// The first byte of every cursor of this layout.
const CURSOR_VERSION: u8 = 1;
const CURSOR_LEN: usize = 1 + 8 + 4 + 8;

impl Cursor {
    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(CURSOR_LEN);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.last_id.to_be_bytes());
        bytes.extend_from_slice(&self.page.to_be_bytes());
        bytes.extend_from_slice(&self.filter_tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() != CURSOR_LEN || bytes[0] != CURSOR_VERSION {
            return None;
        }
        let last_id = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
        let page = u32::from_be_bytes(bytes[9..13].try_into().ok()?);
        let filter_tag = bytes[13..21].try_into().ok()?;
        (last_id >= 0 && page >= 2).then_some(Cursor {
            last_id,
            page,
            filter_tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(q: ListQuery) -> anyhow::Result<NormalizedList> {
        q.normalize().map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    #[test]
    fn equal_queries_share_one_canonical_text() -> anyhow::Result<()> {
        let a = normalize(ListQuery {
            page: Some(2),
            city: Some(" Nairobi ".into()),
            min_price: Some("50.00".into()),
            guests: Some(3),
            ..ListQuery::default()
        })?;
        let b = normalize(ListQuery {
            page: Some(2),
            page_size: Some(20),
            city: Some("nairobi".into()),
            min_price: Some("50.0".into()),
            guests: Some(3),
            ..ListQuery::default()
        })?;
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.position, Position::Offset(20));
        Ok(())
    }

    #[test]
    fn a_cursor_continues_only_its_own_query() -> anyhow::Result<()> {
        let first = normalize(ListQuery {
            city: Some("Accra".into()),
            ..ListQuery::default()
        })?;
        let cursor = first.next_cursor(41);
        let next = normalize(ListQuery {
            city: Some("ACCRA".into()),
            cursor: Some(cursor.clone()),
            ..ListQuery::default()
        })?;
        assert_eq!(next.position, Position::After(41));
        assert_eq!(next.page, 2);
        assert_ne!(next.canonical, first.canonical);
        for other in [
            ListQuery {
                city: Some("Lagos".into()),
                cursor: Some(cursor.clone()),
                ..ListQuery::default()
            },
            ListQuery {
                cursor: Some(cursor.clone()),
                ..ListQuery::default()
            },
            ListQuery {
                city: Some("Accra".into()),
                page: Some(2),
                cursor: Some(cursor.clone()),
                ..ListQuery::default()
            },
            ListQuery {
                city: Some("Accra".into()),
                cursor: Some(format!("{cursor}A")),
                ..ListQuery::default()
            },
        ] {
            let refused = other.normalize();
            assert!(
                matches!(refused, Err(ApiError::InvalidRequest(ref m)) if m.contains("cursor")),
                "{refused:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn pages_stop_at_the_depth_bound() {
        let at = |page, page_size| {
            ListQuery {
                page: Some(page),
                page_size: Some(page_size),
                ..ListQuery::default()
            }
            .normalize()
        };
        assert!(at(500, 20).is_ok());
        assert!(at(100, 100).is_ok());
        assert!(matches!(at(501, 20), Err(ApiError::InvalidRequest(m)) if m.contains("cursor")));
        assert!(matches!(
            at(u32::MAX, 100),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}
