//! Frames: a u32 little-endian body length, then a bincode body.
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
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("malformed frame: {0}")]
    Malformed(String),
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

/// Encode `msg` as one frame (header + body), refusing bodies over `max_frame`.
pub fn encode_frame<T: Serialize>(msg: &T, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER];
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .map_err(|e| FrameError::Malformed(format!("cannot encode: {e}")))?;
    let len = (out.len() - HEADER) as u64;
    if len > max_frame as u64 {
        return Err(FrameError::TooLarge { len, max: max_frame });
    }
    out[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
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

/// Incremental frame splitter for byte streams that arrive in pieces.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(max_frame: u32) -> Self {
        FrameDecoder { max_frame, buf: Vec::new() }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete body, if one is buffered. An oversize announcement is an error
    /// as soon as its header is in, before the body arrives.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.buf[..HEADER]);
        let len = read_header(&header, self.max_frame)? as usize;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let body = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(body))
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
