//! Frames: a u32 little-endian body length, then a bincode body.
//!
//! Encoding and decoding of one frame live here, for both sides. Splitting a byte
//! stream into frames is each side's business: the daemon uses tokio-util's
//! `LengthDelimitedCodec` (reserving memory from the length before the body is read),
//! the client reads one frame at a time.
//!
//! The length is checked against the frame limit before any body byte is buffered, and
//! decoding is bounded by the body's own size, so a hostile length field inside a body
//! cannot make the decoder allocate more than the frame holds. Nothing here panics on
//! any input.

use crate::error::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of the length header.
pub const HEADER: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body is longer than the frame limit; nothing of it was buffered or sent.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Body length in bytes, as announced or as encoded.
        len: u64,
        /// The frame limit in bytes it was checked against.
        max: u32,
    },
    /// The body cannot be encoded, does not decode as the expected message, or has
    /// trailing bytes; the text says which.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream failed or ended inside a frame; becomes [`ErrorKind::ConnectionLost`].
    #[error("truncated frame")]
    Truncated,
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        let kind = match e {
            FrameError::Truncated => ErrorKind::ConnectionLost,
            _ => ErrorKind::InvalidArgument,
        };
        Error::new(kind, e.to_string())
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl From<std::io::Error> for FrameError {
    /// A stream that fails or ends inside a frame leaves it truncated.
    fn from(_: std::io::Error) -> Self {
        FrameError::Truncated
    }
}

/// Encode `msg` as one frame (header + body), refusing bodies over `max_frame`.
pub fn encode_frame<T: Serialize>(msg: &T, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = bytes::BytesMut::new();
    encode_frame_into(msg, max_frame, &mut out)?;
    Ok(out.into())
}

/// Append `msg` as one frame (header + body) to `out`, encoding straight into it. A
/// body over `max_frame` (or one that cannot be encoded) is an error and leaves `out`
/// as it was.
pub fn encode_frame_into<T: Serialize>(msg: &T, max_frame: u32, out: &mut bytes::BytesMut) -> Result<(), FrameError> {
    use bytes::BufMut;
    let start = out.len();
    out.put_bytes(0, HEADER);
    let mut writer = out.writer();
    let encoded = bincode::serde::encode_into_std_write(msg, &mut writer, config());
    let out = writer.into_inner();
    let len = (out.len() - start - HEADER) as u64;
    let failed = match encoded {
        Err(e) => Some(FrameError::Malformed(format!("cannot encode: {e}"))),
        Ok(_) if len > max_frame as u64 => Some(FrameError::TooLarge { len, max: max_frame }),
        Ok(_) => None,
    };
    if let Some(e) = failed {
        out.truncate(start);
        return Err(e);
    }
    out[start..start + HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// The frame of a `Reply::Data` response up to its value: header and encoded
/// `Response { id, body: Reply::Data(..) }` without the value's bytes, which follow it
/// on the wire as they are. Lets a sender write a large value from where it already is,
/// without copying it into the frame first; the bytes are the same as
/// [`encode_frame`]'s. Errors when the whole frame would exceed `max_frame`.
pub fn data_reply_head(id: u64, value_len: usize, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    // A struct is its fields in order, an enum variant its index as a u32, bytes their
    // length as a u64 then themselves (bincode's serde format, varint integers).
    head_before_value((id, DATA_VARIANT, value_len as u64), value_len, max_frame)
}

/// Header and the encoded `fields` (which end with the value's length) of a frame whose
/// last `value_len` bytes are a value sent on its own.
fn head_before_value<F: Serialize>(fields: F, value_len: usize, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER];
    bincode::serde::encode_into_std_write(fields, &mut out, config())
        .map_err(|e| FrameError::Malformed(format!("cannot encode: {e}")))?;
    let len = (out.len() - HEADER) as u64 + value_len as u64;
    if len > max_frame as u64 {
        return Err(FrameError::TooLarge { len, max: max_frame });
    }
    out[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// The `(id, head length, value length)` of a `Reply::Data` frame body that starts
/// with `prefix` (the first bytes after the length header), or None when it is some
/// other response or `prefix` is too short to tell. The inverse of [`data_reply_head`]:
/// a receiver can read a large value straight into its own buffer.
pub fn data_reply_of(prefix: &[u8]) -> Option<(u64, usize, u64)> {
    let ((id, variant, len), used) =
        bincode::serde::decode_from_slice::<(u64, u32, u64), _>(prefix, config().with_limit::<64>()).ok()?;
    (variant == DATA_VARIANT).then_some((id, used, len))
}

/// Bytes of the longest head [`data_reply_of`] needs (three varints).
pub const DATA_HEAD_MAX: usize = 9 + 5 + 9;

/// The index of `Reply::Data` among `Reply`'s variants (checked by a test).
const DATA_VARIANT: u32 = 2;

/// The index of `Op::Store` among `Op`'s variants (checked by a test).
const STORE_VARIANT: u32 = 6;

/// The frame of a `Request` with `Op::Store` up to its value: header and the encoded
/// request without the value's bytes, which follow on the wire as they are. Lets a
/// client send a large value from where it is instead of copying it into a frame; the
/// bytes are the same as [`encode_frame`]'s. Errors when the whole frame would exceed
/// `max_frame`.
pub fn store_request_head(
    id: u64,
    store: &str,
    name: &str,
    value_len: usize,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    // Request's fields in order; Op::Store's variant index, then its fields.
    head_before_value((id, store, STORE_VARIANT, name, value_len as u64), value_len, max_frame)
}

/// A store request as [`store_request_of`] reads it: everything but the value, and
/// where in the frame body the value starts (it runs to the body's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHead {
    /// The request's id.
    pub id: u64,
    /// The store's name.
    pub store: String,
    /// The item's name.
    pub name: String,
    /// Offset of the value's first byte in the body.
    pub value_at: usize,
}

/// The head of a frame `body` that holds a `Request` with `Op::Store` and nothing after
/// its value, or None for any other body (decode that with [`decode_body`], which also
/// says what is wrong with a bad one). The inverse of [`store_request_head`]: a receiver
/// can take the value as a slice of the frame it read, without decoding (copying) it.
pub fn store_request_of(body: &[u8]) -> Option<StoreHead> {
    // Names are short; a length field claiming more than this is not a store request
    // worth a fast path (decode_body judges it).
    let ((id, store, variant, name, len), used) =
        bincode::serde::decode_from_slice::<(u64, String, u32, String, u64), _>(
            body,
            config().with_limit::<{ 1 << 16 }>(),
        )
        .ok()?;
    let whole = (used as u64).checked_add(len)? == body.len() as u64;
    (variant == STORE_VARIANT && whole).then_some(StoreHead { id, store, name, value_at: used })
}

/// The body length announced by a header, checked against `max_frame`.
pub fn read_header(header: &[u8; HEADER], max_frame: u32) -> Result<u32, FrameError> {
    let len = u32::from_le_bytes(*header);
    if len > max_frame {
        return Err(FrameError::TooLarge { len: len as u64, max: max_frame });
    }
    Ok(len)
}

/// Decode one whole body; trailing bytes are an error.
///
/// The decoder may only claim (allocate) a bounded multiple of what the body holds: a
/// length field that announces more than that fails instead of allocating. Decoded
/// values legitimately take more room than their encoding (a listing's strings and
/// structs take about 1.2 times their bytes), so the limit is at least
/// [`DECODE_GROWTH`] times the body's size; bincode takes it as a constant, so it is the
/// smallest of a few fixed limits above that (at most 16 times more again).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let need = (body.len() as u64).saturating_mul(DECODE_GROWTH);
    macro_rules! with_limit {
        ($($n:expr),+) => {{
            $(
                if need <= $n {
                    return finish(body, bincode::serde::decode_from_slice::<T, _>(body, config().with_limit::<{ $n }>()));
                }
            )+
        }};
    }
    with_limit!(1 << 12, 1 << 16, 1 << 20, 1 << 24, 1 << 28, 1 << 32, 1 << 36);
    Err(FrameError::TooLarge { len: body.len() as u64, max: u32::MAX })
}

/// How much more room than its encoding a decoded message may claim.
pub const DECODE_GROWTH: u64 = 8;

fn finish<T>(body: &[u8], decoded: Result<(T, usize), bincode::error::DecodeError>) -> Result<T, FrameError> {
    let (value, used) = decoded.map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(value)
}
