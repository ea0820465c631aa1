//! The byte format of every cached value, shared by all stores: one header
//! byte, then the payload. `0`: the payload is the value as is. `1`: the
//! payload is the value LZ4-compressed with its length prepended
//! (`lz4_flex::compress_prepend_size`). Values above [`COMPRESS_ABOVE`] bytes
//! are compressed when that makes them smaller; small ones are not, since
//! LZ4 would cost CPU for a few bytes, nor are stored responses
//! ([`super::response`]), which are sent as stored. The operator CLI (`stayafrica cache
//! get`) decodes the same format.

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};

/// Values of at most this many bytes are stored raw.
pub const COMPRESS_ABOVE: usize = 1024;

/// Largest value a compressed entry may claim to expand to: a corrupt or
/// foreign entry must not make us allocate gigabytes.
const MAX_DECODED: usize = 64 * 1024 * 1024;

const RAW: u8 = 0;
const LZ4: u8 = 1;

/// Frames `value` for storage, compressed when that pays.
pub fn encode(value: &[u8]) -> Bytes {
    // Stored responses carry their own compressed variants and are sent as
    // they are: LZ4 would make every hit decompress them.
    if value.len() > COMPRESS_ABOVE && !value.starts_with(&super::response::MARKER) {
        let packed = lz4_flex::compress_prepend_size(value);
        if packed.len() < value.len() {
            let mut out = BytesMut::with_capacity(packed.len() + 1);
            out.put_u8(LZ4);
            out.put_slice(&packed);
            return out.freeze();
        }
    }
    let mut out = BytesMut::with_capacity(value.len() + 1);
    out.put_u8(RAW);
    out.put_slice(value);
    out.freeze()
}

/// The value framed by [`encode`]. A raw value is returned without copying.
pub fn decode(stored: Bytes) -> anyhow::Result<Bytes> {
    match stored.first() {
        Some(&RAW) => Ok(stored.slice(1..)),
        Some(&LZ4) => {
            let body = &stored[1..];
            let claimed = body
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .context("compressed cache entry without a length")?;
            anyhow::ensure!(
                claimed <= MAX_DECODED,
                "compressed cache entry claims {claimed} bytes"
            );
            let value = lz4_flex::decompress_size_prepended(body)
                .context("corrupt compressed cache entry")?;
            Ok(Bytes::from(value))
        }
        Some(other) => anyhow::bail!("unknown cache entry format {other}"),
        None => anyhow::bail!("empty cache entry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_stay_raw_and_large_ones_shrink() -> anyhow::Result<()> {
        let small = b"{\"a\":1}".to_vec();
        let framed = encode(&small);
        assert_eq!(framed[0], RAW);
        assert_eq!(decode(framed)?, small);

        let large = "{\"title\":\"Lovely home in Nairobi\"},".repeat(200);
        let framed = encode(large.as_bytes());
        assert_eq!(framed[0], LZ4);
        assert!(framed.len() < large.len() / 4);
        assert_eq!(decode(framed)?, large.as_bytes());
        Ok(())
    }

    #[test]
    fn incompressible_values_round_trip() -> anyhow::Result<()> {
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let framed = encode(&noise);
        assert_eq!(decode(framed)?, noise);
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(Bytes::new()).is_err());
        assert!(decode(Bytes::from_static(&[7, 1, 2])).is_err());
        assert!(decode(Bytes::from_static(&[LZ4, 1])).is_err());
        assert!(decode(Bytes::from_static(&[LZ4, 0xff, 0xff, 0xff, 0x7f, 0])).is_err());
    }
}
