//! Frames on the daemon side: tokio-util's [`LengthDelimitedCodec`] splits the byte
//! stream (u32 little-endian length, then the body), with one addition: the length is
//! announced before the body is buffered.
//!
//! [`FrameCodec`] yields [`Incoming::Announced`] as soon as a frame's header is in, and
//! only then (on the next poll) the whole [`Incoming::Frame`]. The reader reserves room
//! for the announced bytes in between, so a client cannot make the daemon hold more
//! than its budget by announcing big frames. A length over the limit is refused right
//! there, before any body byte is kept.
//!
//! [`ResponseEncoder`] writes each reply straight into the write buffer (header, then
//! the bincode body): the value of a load is copied once, from the store's buffer into
//! the socket's.

use borgstore_ipc::codec::{encode_frame_into, FrameError, HEADER};
use borgstore_ipc::protocol::{Reply, Response};
use borgstore_ipc::Error;
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Buffer capacity a connection keeps between frames, each way: a buffer grown for a
/// larger frame is let go once that frame is through, so idle connections hold little.
pub const KEEP_BUFFER: usize = 256 << 10;

/// What the request stream gives, in this order for each frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A frame of this many body bytes comes next (within the limit).
    Announced(u32),
    /// The body of the frame announced before.
    Frame(BytesMut),
}

/// Splits requests into frames of at most `max` bytes; see the module doc.
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: u32,
    /// The current frame's length was announced; its body comes next.
    announced: bool,
}

impl FrameCodec {
    /// Frames of at most `max` body bytes.
    pub fn new(max: u32) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .little_endian()
            .length_field_length(HEADER)
            .max_frame_length(max as usize)
            .new_codec();
        FrameCodec { inner, max, announced: false }
    }

    /// Change the limit (the handshake has a small one of its own).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
        self.inner.set_max_frame_length(max as usize);
    }
}

impl Decoder for FrameCodec {
    type Item = Incoming;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        if !self.announced {
            let Some(header) = src.get(..HEADER) else { return Ok(None) };
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if len > self.max {
                return Err(FrameError::TooLarge { len: len as u64, max: self.max });
            }
            self.announced = true;
            return Ok(Some(Incoming::Announced(len)));
        }
        match self.inner.decode(src)? {
            Some(body) => {
                self.announced = false;
                Ok(Some(Incoming::Frame(body)))
            }
            None => Ok(None),
        }
    }
}

/// Writes [`Response`]s as frames of at most `max` body bytes. A reply too large for a
/// frame (or one that cannot be encoded) goes out as an error reply with the same id.
pub struct ResponseEncoder {
    /// The largest body the client accepts.
    pub max: u32,
}

impl Encoder<Response> for ResponseEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> std::io::Result<()> {
        // A value's size is known: room for it at once, not by doubling as it is copied.
        if let Reply::Data(value) = &response.body {
            dst.reserve(HEADER + value.len() + 16);
        }
        if let Err(e) = encode_frame_into(&response, self.max, dst) {
            let refusal = Response { id: response.id, body: Reply::Err(Error::from(e)) };
            // An error reply is small; should even that fail, nothing is written.
            let _ = encode_frame_into(&refusal, self.max, dst);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borgstore_ipc::codec::{decode_body, encode_frame};
    use borgstore_ipc::protocol::{Op, Request};
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    /// Feed `stream` in pieces of the given sizes; collect every decoded item.
    fn decode_in_pieces(codec: &mut FrameCodec, stream: &[u8], cuts: &[usize]) -> (Vec<Incoming>, usize) {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        (got, buf.len())
    }

    #[test]
    fn an_oversize_frame_is_refused_from_its_header() {
        let mut codec = FrameCodec::new(1000);
        let mut buf = BytesMut::from(&5000u32.to_le_bytes()[..]);
        assert_eq!(codec.decode(&mut buf), Err(FrameError::TooLarge { len: 5000, max: 1000 }));
    }

    #[test]
    fn the_length_is_announced_before_the_body_is_in() {
        let mut codec = FrameCodec::new(MAX);
        let frame = encode_frame(&Request { id: 1, store: "s".into(), op: Op::Ping }, MAX).unwrap();
        let mut buf = BytesMut::from(&frame[..HEADER]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Incoming::Announced((frame.len() - HEADER) as u32)));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&frame[HEADER..]);
        assert!(matches!(codec.decode(&mut buf).unwrap(), Some(Incoming::Frame(_))));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_reply_too_large_for_a_frame_becomes_an_error_with_its_id() {
        let mut enc = ResponseEncoder { max: 100 };
        let mut dst = BytesMut::new();
        enc.encode(Response { id: 7, body: Reply::Data(vec![0; 1000]) }, &mut dst).unwrap();
        let reply: Response = decode_body(&dst[HEADER..]).unwrap();
        assert_eq!(reply.id, 7);
        assert!(matches!(reply.body, Reply::Err(e) if e.message.contains("exceeds the limit")));
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (any::<u64>(), "[a-z]{0,12}", proptest::collection::vec(any::<u8>(), 0..3000), "[a-z/0-9]{0,40}")
            .prop_map(|(id, store, value, name)| Request { id, store, op: Op::Store { name, value: value.into() } })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn requests_survive_any_split_into_pieces(
            reqs in proptest::collection::vec(arb_request(), 1..6),
            cuts in proptest::collection::vec(1usize..700, 1..40),
        ) {
            let mut stream = Vec::new();
            for r in &reqs {
                stream.extend(encode_frame(r, MAX).unwrap());
            }
            let (items, left) = decode_in_pieces(&mut FrameCodec::new(MAX), &stream, &cuts);
            let mut got = Vec::new();
            let mut announced = None;
            for item in items {
                match item {
                    Incoming::Announced(len) => {
                        prop_assert!(announced.is_none());
                        announced = Some(len);
                    }
                    Incoming::Frame(body) => {
                        prop_assert_eq!(announced.take(), Some(body.len() as u32));
                        got.push(decode_body::<Request>(&body).unwrap());
                    }
                }
            }
            prop_assert_eq!(got, reqs);
            prop_assert_eq!(left, 0);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::new(MAX);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(item)) = codec.decode(&mut buf) {
                if let Incoming::Frame(body) = item {
                    let _ = decode_body::<Request>(&body);
                }
            }
        }
    }
}
